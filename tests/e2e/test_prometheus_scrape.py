"""A real Prometheus scrapes a replaying trafficguard; every shipped query runs against it.

The replay of the sample captures implies exact values (packets and bytes in the files,
flows and records in the store, the SIP requests of the sample call); Prometheus must
hold them, and every expression of deploy/grafana/trafficguard.json and
deploy/prometheus/alerts.yml must evaluate without error on the scraped data.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, SAMPLE_PCAP_DIR
from trafficguard.sinks.sqlite import query_records

pytestmark = pytest.mark.e2e

PCAPS = ["sip-call-rtp.pcap", "dns.pcap", "http.pcap", "tls.pcap", "mix.pcap"]
RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "trafficguard.json"


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pcap_totals(paths: list[Path]) -> tuple[int, int]:
    """(frames, wire bytes) of classic little-endian µs pcaps, read by hand."""
    frames = wire = 0
    for path in paths:
        data = path.read_bytes()
        assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
        off = 24
        while off < len(data):
            _, _, incl, orig = struct.unpack_from("<IIII", data, off)
            frames += 1
            wire += orig
            off += 16 + incl
    return frames, wire


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        result: dict[str, Any] = _get(url)
    except urllib.error.HTTPError as err:  # 400 carries the PromQL error as JSON
        result = json.loads(err.read())
    return result


def _value(base: str, expr: str) -> float | None:
    res = _query(base, expr)
    assert res["status"] == "success", (expr, res)
    vector = res["data"]["result"]
    return float(vector[0]["value"][1]) if vector else None


def _wait(what: str, check: Any, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
    )


def test_prometheus_scrapes_the_replay_and_every_query_evaluates(tmp_path: Path) -> None:
    metrics_port, prom_port = _free_tcp_port(), _free_tcp_port()
    store = tmp_path / "tg.db"
    jsonl = tmp_path / "records.jsonl"
    config = tmp_path / "trafficguard.yaml"
    config.write_text(yaml.safe_dump({"privacy": {"keys_dir": str(tmp_path / "keys")}}))
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "trafficguard",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    check = subprocess.run(
        ["promtool", "check", "config", str(prom_config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    pcaps = [SAMPLE_PCAP_DIR / p for p in PCAPS]
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trafficguard",
            "--config",
            str(config),
            "replay",
            "-q",
            "--speed",
            "50",
            "--keep-serving",
            "--metrics",
            f"127.0.0.1:{metrics_port}",
            "--store",
            str(store),
            "--jsonl",
            str(jsonl),
            *map(str, pcaps),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{prom_port}"
    procs: list[subprocess.Popen[bytes]] = [daemon, prom]
    frames, wire_bytes = _pcap_totals(pcaps)
    try:
        # the replay is done (and its store flushed) once /metrics shows every frame
        def replayed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                text = r.read().decode()
            return f"trafficguard_capture_packets_total {float(frames)}" in text

        _wait("the replay", replayed, 60, [daemon])
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=exposition, capture_output=True, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

        _wait(
            "the first scrape",
            lambda: (
                _value(base, 'trafficguard_capture_packets_total{job="trafficguard"}') is not None
            ),
            30,
            procs,
        )
        flows = query_records(store, "flow", limit=None)
        kinds = Counter(json.loads(line)["kind"] for line in jsonl.read_text().splitlines())
        assert _value(base, 'up{job="trafficguard"}') == 1
        assert _value(base, "trafficguard_capture_packets_total") == frames
        assert _value(base, "trafficguard_capture_bytes_total") == wire_bytes
        assert _value(base, "trafficguard_capture_drops_total") == 0
        assert _value(base, "trafficguard_flows_started_total") == len({f.flow_id for f in flows})
        assert _value(base, "sum(trafficguard_flows_ended_total)") == len(flows)
        assert _value(base, "sum(trafficguard_packets_total)") == sum(
            f.packets_fwd + f.packets_rev for f in flows
        )
        assert _value(base, "sum(trafficguard_bytes_total)") == sum(
            f.bytes_fwd + f.bytes_rev for f in flows
        )
        assert (
            _value(base, 'trafficguard_records_written_total{sink="sqlite", kind="flow"}')
            == kinds["flow"]
            == len(flows)
        )
        assert _value(base, "trafficguard_rtp_streams_total") == kinds["rtp_stream"] == 2
        # the sample call: one INVITE, one ACK, one BYE
        for method in ("invite", "ack", "bye"):
            assert _value(base, f'trafficguard_sip_requests_total{{method="{method}"}}') == 1
        assert _value(base, "sum(trafficguard_sip_requests_total)") == 3

        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [
            _grafana_to_promql(t["expr"])
            for panel in dashboard["panels"]
            for t in panel.get("targets", [])
        ]
        rules = yaml.safe_load(RULES.read_text())
        exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
        failed = {e: r.get("error") for e in exprs if (r := _query(base, e))["status"] != "success"}
        assert failed == {}
        # the dashboard's own headline queries see the replayed data
        assert _value(base, _grafana_to_promql(dashboard_expr(dashboard, "Sensors up"))) == 1

        def rules_evaluated() -> bool:
            groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return bool(rules) and all(r["lastEvaluation"][:4] != "0001" for r in rules)

        _wait("rule evaluation", rules_evaluated, 20, procs)
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
        health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        assert len(health) == sum(len(g["rules"]) for g in rules["groups"])
        assert set(health.values()) == {"ok"}, health
        firing = [a["labels"]["alertname"] for a in _get(f"{base}/api/v1/alerts")["data"]["alerts"]]
        assert "TrafficguardDown" not in firing
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert daemon.returncode == 0, daemon.stderr.read().decode() if daemon.stderr else ""


def dashboard_expr(dashboard: dict[str, Any], title: str) -> str:
    """The first query of the panel with this title."""
    for panel in dashboard["panels"]:
        if panel["title"] == title:
            return str(panel["targets"][0]["expr"])
    raise KeyError(title)
