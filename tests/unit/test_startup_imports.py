"""Start-up stays light: a command imports only what it (and its configuration) uses.

Every ``trafficguard`` invocation builds the whole parser, and a short replay is
dominated by imports; these tests pin the modules made lazy so a top-level import does
not quietly bring them back. Each check runs in a fresh interpreter: this one has long
since imported everything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, SAMPLE_PCAP_DIR
from trafficguard.privacy.keys import init_keys

# The grant/keys/audit/... handlers and what they pull in (cryptography, pydantic policy
# models, the audit log): imported only when one of those commands runs.
ESCALATION = (
    "trafficguard.escalation.commands",
    "trafficguard.escalation.audit",
    "trafficguard.escalation.evidence",
    "trafficguard.escalation.grants",
    "trafficguard.escalation.policy",
    "trafficguard.escalation.gate",
)
# sinks and the metrics server: imported only when configured
STORE = ("sqlite3", "trafficguard.sinks.sqlite", "trafficguard.privacy.purger")
METRICS = ("prometheus_client", "prometheus_client.exposition", "trafficguard.sinks.metrics")

METADATA_CONFIG = """\
voip: {enabled: false}
analyzers: {dns: {enabled: false}}
detect: {enabled: false}
escalation: {enabled: false}
"""


def _config(tmp_path: Path, body: str = "") -> Path:
    """A configuration file: ``body``, with the sensor keys made in ``tmp_path``."""
    path = tmp_path / "trafficguard.yaml"
    keys_dir = json.dumps(str(tmp_path / "keys"))
    path.write_text(f"{body}privacy: {{keys_dir: {keys_dir}}}\n", encoding="utf-8")
    return path


def _modules_after(code: str, cwd: Path) -> set[str]:
    """Run ``code`` in a fresh interpreter; the names in its ``sys.modules`` at the end."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_parser_imports_no_command_machinery(tmp_path: Path) -> None:
    """``trafficguard --help`` (any parse) needs neither the config models nor a stage."""
    loaded = _modules_after(
        "from trafficguard.cli import _build_parser\n_build_parser().format_help()", tmp_path
    )
    heavy = (
        *ESCALATION,
        *STORE,
        *METRICS,
        "cryptography",
        "pydantic",
        "yaml",
        "structlog",
        "msgspec",
        "trafficguard.config",
        "trafficguard.pipeline",
        "trafficguard.wiring",
    )
    assert sorted(loaded.intersection(heavy)) == []


def test_metadata_replay_imports_only_what_it_uses(tmp_path: Path) -> None:
    """A metadata-only replay with --no-store --no-metrics: no escalation, store, metrics."""
    cfg = _config(tmp_path, METADATA_CONFIG)
    out = tmp_path / "m.jsonl"
    argv = [
        "--config", str(cfg), "replay", "--fast", "--no-metrics", "--no-store", "--quiet",
        "--jsonl", str(out), str(SAMPLE_PCAP_DIR / "dns.pcap"),
    ]  # fmt: skip
    loaded = _modules_after(
        f"from trafficguard.cli import main\nassert main({argv!r}) == 0", tmp_path
    )
    assert out.stat().st_size > 0  # the replay did run and write its flow records
    assert "trafficguard.pipeline" in loaded
    assert sorted(loaded.intersection((*ESCALATION, *STORE, *METRICS))) == []
    assert "trafficguard.sinks.ipfix" not in loaded


def test_default_config_replay_skips_escalation_and_metrics(tmp_path: Path) -> None:
    """With the default stages (VoIP, DNS, detectors) still no escalation or /metrics."""
    cfg = _config(tmp_path)
    init_keys(tmp_path / "keys")  # a sensor's second start: the keys are read, not made
    argv = [
        "--config", str(cfg), "replay", "--no-metrics", "--no-store", "--quiet",
        str(SAMPLE_PCAP_DIR / "dns.pcap"),
    ]  # fmt: skip
    loaded = _modules_after(
        f"from trafficguard.cli import main\nassert main({argv!r}) == 0", tmp_path
    )
    # the detectors run in the record process (store.record_process), not in this one
    assert "trafficguard.record_process" in loaded
    assert "trafficguard.detect.stage" not in loaded
    assert "trafficguard.analyzers.public_suffix" in loaded  # dns.pcap names were split
    # the stages' collect() import prometheus_client's families only when scraped
    # datasketches (and numpy under it): only once a distinct counter outgrows its exact set;
    # the DNS analyzer reads the bundled suffix list itself: no tldextract, requests, urllib3;
    # the audit key pair init_keys wrote is read without cryptography's serialization package
    unused = (
        *ESCALATION, *STORE, *METRICS, "datasketches", "numpy",
        "tldextract", "requests", "cryptography.hazmat.primitives.serialization",
    )  # fmt: skip
    assert sorted(loaded.intersection(unused)) == []


def test_every_lazy_escalation_handler_exists() -> None:
    """Handlers are bound by name: each name must resolve in ``escalation.commands``."""
    from trafficguard.cli import _build_parser  # noqa: PLC0415
    from trafficguard.escalation import commands  # noqa: PLC0415

    def handlers(p: argparse.ArgumentParser) -> list[str]:
        found = []
        func = p.get_default("func")
        if func is not None and func.__module__ == "trafficguard.escalation.cli_args":
            found.append(func.__name__)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found.extend(handlers(sub))
        return found

    names = handlers(_build_parser())
    # grant: 5, keys: 2, audit: 2, evidence: 2, reveal, retention run, subject: 2
    assert len(names) == 15
    for name in names:
        assert callable(getattr(commands, name)), name
