"""The replay benchmark runs end to end on a tiny workload (a smoke test, not a timing test),
and on that workload the compiled fast path gives the records of the Python path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "replay_bench.py"
sys.path.insert(0, str(BENCH.parent))
from replay_bench import TOOLS  # noqa: E402 - every row the benchmark prints

assert {"trafficguard", "tg-metadata", "tg-python", "softflowd", "dpkt_loop"} <= set(TOOLS)

pytestmark = pytest.mark.e2e


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_bench_reports_every_tool(tmp_path: Path) -> None:
    """Generates a 5000-packet workload, times all tools, reports a positive rate for each."""
    proc = run_bench("--packets", "5000", "--workdir", str(tmp_path), "--json")
    doc = json.loads(proc.stdout)
    assert (tmp_path / "workload-5000.pcap").exists()
    assert doc["packets"] >= 5000
    rows = {r["tool"]: r for r in doc["results"]}
    assert sorted(rows) == sorted(TOOLS)
    for tool, row in rows.items():
        assert row["ok"], f"{tool}: {row['error']}"
        assert row["rate_pps"] > 0, tool
        assert row["peak_rss_mb"] > 0, tool
        assert row["cpu_seconds"] >= 0, tool
    assert rows["trafficguard"]["cpu_seconds"] > 0  # Python start-up alone is measurable
    assert rows["softflowd"]["vs_softflowd"] == pytest.approx(1.0)
    assert proc.returncode == 0, proc.stderr

    # The human-readable table on the same (now cached) workload names every tool.
    table = run_bench("--pcap", str(tmp_path / "workload-5000.pcap"))
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    for tool in TOOLS:
        row = next(line for line in lines if line.startswith(tool + " "))
        assert float(row.split()[2]) > 0, row  # packets/s column


def test_fast_path_agrees_on_workload(tmp_path: Path) -> None:
    """The CLI replays the benchmark workload with the fast path on and off: same records."""
    gen = run_bench("--packets", "5000", "--workdir", str(tmp_path), "--tools", "dpkt_loop")
    assert gen.returncode == 0, gen.stderr
    pcap = tmp_path / "workload-5000.pcap"
    out = {}
    for mode in ("on", "off"):
        cfg = tmp_path / f"{mode}.yaml"
        cfg.write_text(f'capture:\n  fast_path: "{mode}"\n')
        jsonl = tmp_path / f"{mode}.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "trafficguard", "--config", str(cfg), "replay", "--no-store",
             "--no-metrics", "--jsonl", str(jsonl), str(pcap)],
            capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out[mode] = jsonl.read_text().splitlines()
    assert len(out["on"]) > 100
    assert out["on"] == out["off"]
    flows = [json.loads(line) for line in out["on"] if '"flow_id"' in line]
    assert len({f["flow_id"] for f in flows}) > 50
