"""Alert rules and the Grafana dashboard, checked with promtool (the real Prometheus parser).

The rule unit tests live in deploy/prometheus/alerts_test.yml; here we run them, prove
they can fail, and check that every alert is tested both firing and quiet, and that every
dashboard query parses and names a metric the package really exports.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def promtool(*args: str | Path, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def load_dashboard_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "trafficguard.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's macros and variables so Prometheus can parse the query."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
    )


def test_promtool_accepts_the_rules() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


def test_alert_unit_tests_pass() -> None:
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_alert_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    rules = (PROM / "alerts.yml").read_text()
    broken = rules.replace("trafficguard_voip_mos_mean < 3.5", "trafficguard_voip_mos_mean < 3.0")
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    res = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert res.returncode == 1
    assert "TrafficguardMosLow" in res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()) >= 15
    assert names - firing == set()
    assert names - quiet == set()


def test_every_alert_has_severity_and_text_without_subscriber_labels() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        text = json.dumps(rule)
        for forbidden in ("src_addr", "dst_addr", "caller", "callee", "number", "uri"):
            assert f"$labels.{forbidden}" not in text, rule["alert"]


def test_required_noc_alerts_exist() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert 'up{job="trafficguard"} == 0' in exprs["TrafficguardDown"]
    wanted = {
        "TrafficguardCaptureDrops": "trafficguard_capture_drops_total",
        "TrafficguardFlowTableEvictions": "trafficguard_flows_evicted_total",
        "TrafficguardDecodeErrorSpike": "trafficguard_decode_errors_total",
        "TrafficguardAsrDrop": "trafficguard_voip_asr_ratio",
        "TrafficguardNerLow": "trafficguard_voip_ner_ratio",
        "TrafficguardMosLow": "< 3.5",
        "TrafficguardPddHigh": "trafficguard_call_pdd_seconds_bucket",
        "TrafficguardAttackActive": "trafficguard_alerts_active",
        "TrafficguardEscalationOpen": "increase(trafficguard_escalations_opened_total[5m]) > 0",
        "TrafficguardAuditWriteFailure": "trafficguard_audit_write_failures_total",
    }
    for alert, fragment in wanted.items():
        assert fragment in exprs[alert], alert


def test_dashboard_file_is_generated_from_make_dashboard() -> None:
    module = load_dashboard_module()
    assert (GRAFANA / "trafficguard.json").read_text() == module.render()


def test_dashboard_model_is_well_formed() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"]["uid"] == "${datasource}"
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [
        "Capture health",
        "Traffic by application",
        "VoIP quality and KPIs",
        "Security alerts",
        "Privacy escalations",
    ]
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
    # panels of one row never overlap
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    res = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in res.stdout


def metric_names(exprs: list[str]) -> set[str]:
    names: set[str] = set()
    for expr in exprs:
        names.update(re.findall(r"\b(trafficguard_[a-z0-9_]+)", expr))
    return names


def test_every_metric_in_rules_and_dashboard_is_exported_by_the_package() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "trafficguard").rglob("*.py"))
    used = metric_names(dashboard_exprs() + [r["expr"] for r in alert_rules()])
    assert len(used) >= 30
    missing = []
    for name in sorted(used):
        base = name
        for suffix in SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        short = base.removeprefix("trafficguard_")
        # the full family name, or the part after the prefix the collector adds
        # (metrics.py: _PREFIX + "capture_packets"; voip/metrics.py: ("asr_ratio", ...))
        candidates = (f'"{base}"', f'"{short}"', f'("{short.removeprefix("voip_")}",')
        if not any(c in source for c in candidates):
            missing.append(name)
    assert missing == []
