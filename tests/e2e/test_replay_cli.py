"""End to end through the real CLI: store, JSON lines, truncation, query, signals, /metrics."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

CLI = [sys.executable, "-m", "trafficguard"]


def _make_pcap(
    path: Path, n_flows: int = 20, per_flow: int = 10, gap_s: float = 0.01
) -> tuple[int, int]:
    """UDP and TCP flows between documentation addresses; returns (packets, wire bytes)."""
    pkts = []
    t = 1_700_000_000.0
    for i in range(n_flows):
        for j in range(per_flow):
            if i % 2:
                p = (
                    Ether()
                    / IP(src="192.0.2.1", dst=f"198.51.100.{i}")
                    / UDP(sport=40000 + i, dport=53)
                    / (b"x" * (j + 1))
                )
            else:
                flags = "S" if j == 0 else "A"
                p = (
                    Ether()
                    / IP(src="192.0.2.2", dst=f"203.0.113.{i}")
                    / TCP(sport=50000 + i, dport=80, flags=flags)
                    / (b"y" * j)
                )
            p.time = t
            t += gap_s
            pkts.append(p)
    wrpcap(str(path), pkts)
    return len(pkts), sum(len(bytes(p)) for p in pkts)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _flow_totals(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(db) as con:
        row = con.execute(
            "SELECT COUNT(DISTINCT flow_id), SUM(packets_fwd + packets_rev),"
            " SUM(bytes_fwd + bytes_rev) FROM flow"
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def test_replay_writes_store_and_jsonl(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    n_pkts, n_bytes = _make_pcap(pcap)
    db, jl = tmp_path / "s.db", tmp_path / "f.jsonl"
    proc = _run("replay", str(pcap), "--store", str(db), "--jsonl", str(jl), "--no-metrics")
    assert proc.returncode == 0, proc.stderr
    assert _flow_totals(db) == (20, n_pkts, n_bytes)
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 20 and all(x["kind"] == "flow" for x in lines)
    assert "replayed 1 file(s)" in proc.stderr and f"{n_pkts:,} packets" in proc.stderr
    # the same file again: identical store content (INSERT OR REPLACE on (flow_id, seq))
    before = sqlite3.connect(db).execute("SELECT * FROM flow ORDER BY flow_id, seq").fetchall()
    assert _run("replay", str(pcap), "--store", str(db), "--no-metrics").returncode == 0
    after = sqlite3.connect(db).execute("SELECT * FROM flow ORDER BY flow_id, seq").fetchall()
    assert before == after


def test_truncated_capture_keeps_earlier_records(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    _make_pcap(pcap, n_flows=10, per_flow=10)
    data = pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # ends inside the last record
    good = tmp_path / "good.pcap"
    _make_pcap(good, n_flows=4, per_flow=2)
    db = tmp_path / "s.db"
    proc = _run("replay", str(cut), str(good), "--store", str(db), "--no-metrics")
    assert proc.returncode == 1
    assert str(cut) in proc.stderr and re.search(r"byte offset \d+", proc.stderr)
    flows, packets, _ = _flow_totals(db)
    # 99 of 100 packets of the cut file survive, plus all 8 of the file after it
    assert packets == 99 + 8
    assert flows == 10  # the good file's flows are the same 5-tuples as 4 of the cut file's


def test_query_flows_table_and_json(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    _make_pcap(pcap)
    db = tmp_path / "s.db"
    assert _run("replay", str(pcap), "--store", str(db), "--no-metrics").returncode == 0
    proc = _run("query", "flows", "--store", str(db), "--app", "dns", "--json", "--limit", "100")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(rows) == 10 and {r["app"] for r in rows} == {"dns"}
    table = _run("query", "flows", "--store", str(db), "--limit", "3")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 4
    missing = _run("query", "flows", "--store", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no such store" in missing.stderr


def test_sigterm_during_paced_replay_flushes_open_flows(tmp_path: Path) -> None:
    pcap = tmp_path / "slow.pcap"
    _make_pcap(pcap, n_flows=4, per_flow=50, gap_s=0.05)  # 10 s of packet time
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [*CLI, "replay", str(pcap), "--speed", "1", "--store", str(db), "--no-metrics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err  # SIGTERM is an orderly drain
    assert "interrupted" in err
    flows, packets, _ = _flow_totals(db)
    assert flows >= 1 and 0 < packets < 200  # what was read before the signal, all flushed


def test_metrics_scraped_during_and_after_replay(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    n_pkts, n_bytes = _make_pcap(pcap, n_flows=10, per_flow=20, gap_s=0.01)  # 2 s of packet time
    port = _free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "replay",
            str(pcap),
            "--speed",
            "1",
            "--no-store",
            "--metrics",
            f"127.0.0.1:{port}",
            "--keep-serving",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        during: dict[str, float] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                during = _scrape(port)
            except OSError:
                time.sleep(0.1)
                continue
            if 0 < during.get("trafficguard_capture_packets_total", 0) < n_pkts:
                break
            time.sleep(0.05)
        assert 0 < during["trafficguard_capture_packets_total"] < n_pkts  # seen mid-replay
        final: dict[str, float] = {}
        while time.monotonic() < deadline:
            final = _scrape(port)
            if final.get("trafficguard_capture_packets_total") == n_pkts and final.get(
                'trafficguard_flows_ended_total{reason="flush"}'
            ):
                break
            time.sleep(0.1)
        assert final["trafficguard_capture_packets_total"] == n_pkts
        assert final["trafficguard_capture_bytes_total"] == n_bytes
        assert final["trafficguard_flows_started_total"] == 10
        assert final['trafficguard_flows_ended_total{reason="flush"}'] == 10
        assert final["trafficguard_flow_table_flows"] == 0
        app_pkts = sum(v for k, v in final.items() if k.startswith("trafficguard_packets_total{"))
        assert app_pkts == n_pkts
        dns = sum(
            v
            for k, v in final.items()
            if k.startswith("trafficguard_packets_total{") and 'app="dns"' in k
        )
        assert dns == 100
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_gzip_input_gives_same_records(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    _make_pcap(pcap)
    gz = tmp_path / "t.pcap.gz"
    gz.write_bytes(gzip.compress(pcap.read_bytes()))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert (
        _run("replay", str(pcap), "--no-store", "--no-metrics", "--jsonl", str(a)).returncode == 0
    )
    assert _run("replay", str(gz), "--no-store", "--no-metrics", "--jsonl", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 0


def test_env_config_is_used(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    db = tmp_path / "from-config.db"
    cfg.write_text(f"store:\n  sqlite:\n    path: {db}\nmetrics:\n  enabled: false\n")
    pcap = tmp_path / "t.pcap"
    _make_pcap(pcap, n_flows=2, per_flow=2)
    env = dict(os.environ, TRAFFICGUARD_CONFIG=str(cfg))
    proc = subprocess.run(
        [*CLI, "replay", str(pcap)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert _flow_totals(db)[0] == 2
