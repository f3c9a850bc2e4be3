"""IPFIX export read back by a real collector: nfcapd receives, nfdump decodes.

The same replay writes the SQLite store and exports IPFIX; nfdump must show exactly the
stored flows (tuples, VLAN, packets and IP-layer bytes per direction, times, TCP flags).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLE_PCAP_DIR, RunCli
from trafficguard.sinks.sqlite import query_records

pytestmark = pytest.mark.e2e

PCAPS = ["sip-call-rtp.pcap", "dns.pcap", "http.pcap", "tls.pcap", "mix.pcap"]
FLAG_LETTERS = "CEUAPRSF"  # nfdump's tcp_flags string, most significant bit first


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_nfcapd(flow_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(5):
        port = _free_udp_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["nfcapd", "-w", str(flow_dir), "-b", "127.0.0.1", "-p", str(port), "-t", "3600"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if "Startup nfcapd" in log.read_text(errors="replace"):
                return proc, port
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise AssertionError("nfcapd did not start: " + log.read_text(errors="replace"))


def _ms(text: str) -> int:
    stamp = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return round(stamp.timestamp() * 1000)


def _flags(text: str) -> int:
    text = text.rjust(8, ".")
    return sum(1 << (7 - i) for i, c in enumerate(text) if c != ".")


def _nfdump(flow_dir: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["nfdump", "-R", str(flow_dir), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    return list(json.loads(out))


def test_replayed_flows_arrive_in_nfcapd_as_stored(run_cli: RunCli, tmp_path: Path) -> None:
    flow_dir = tmp_path / "flows"
    flow_dir.mkdir()
    log = tmp_path / "nfcapd.log"
    store = tmp_path / "tg.db"
    jsonl = tmp_path / "records.jsonl"
    proc, port = _start_nfcapd(flow_dir, log)
    try:
        res = run_cli(
            "replay",
            "-q",
            "--no-metrics",
            "--store",
            store,
            "--jsonl",
            jsonl,
            "--ipfix",
            f"127.0.0.1:{port}",
            *(SAMPLE_PCAP_DIR / p for p in PCAPS),
        )
        assert res.returncode == 0, res.stderr
        time.sleep(0.3)  # let nfcapd drain its socket before the shutdown flush
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    nf_log = log.read_text(errors="replace")
    stats = re.search(r"Flows: (\d+), Packets: (\d+), Bytes: (\d+), Sequence Errors: (\d+)", nf_log)
    assert stats, nf_log
    assert "Bad Packets: 0" in nf_log
    assert int(stats.group(4)) == 0  # our sequence numbers are what nfcapd expects

    flows = query_records(store, "flow", limit=None)
    assert len(flows) >= 19
    rtp_streams = sum(
        1 for line in jsonl.read_text().splitlines() if json.loads(line)["kind"] == "rtp_stream"
    )
    expected = Counter(
        (
            f.src_addr,
            f.src_port,
            f.dst_addr,
            f.dst_port,
            f.proto,
            f.vlan,
            f.packets_fwd,
            f.ip_bytes_fwd,
            f.packets_rev,
            f.ip_bytes_rev,
            f.start_ns // 1_000_000,
            f.end_ns // 1_000_000,
            f.tcp_flags_fwd,
        )
        for f in flows
    )
    nf_records = _nfdump(flow_dir)
    got = Counter(
        (
            r.get("src4_addr") or r.get("src6_addr"),
            r.get("src_port", 0),  # ICMP: nfdump shows type/code instead of ports
            r.get("dst4_addr") or r.get("dst6_addr"),
            r.get("dst_port", r.get("icmp_type", 0) * 256 + r.get("icmp_code", 0)),
            r["proto"],
            r.get("src_vlan", 0),
            r.get("in_packets", 0),
            r.get("in_bytes", 0),
            r.get("out_packets", 0),
            r.get("out_bytes", 0),
            _ms(r["first"]),
            _ms(r["last"]),
            _flags(r.get("tcp_flags", "")),
        )
        for r in nf_records
        if r.get("in_packets", 0)
        or r.get("out_packets", 0)  # RTP quality records carry no counters
    )
    assert got == expected
    assert len(nf_records) == len(flows) + rtp_streams
    # nfcapd's own totals: every flow, every packet, every IP-layer byte
    assert int(stats.group(1)) == len(flows) + rtp_streams
    assert int(stats.group(2)) == sum(f.packets_fwd + f.packets_rev for f in flows)
    assert int(stats.group(3)) == sum(f.ip_bytes_fwd + f.ip_bytes_rev for f in flows)
    # IPv6 and VLAN-tagged flows are in the comparison, not just plain IPv4
    assert any(":" in key[0] for key in expected) and any(key[5] for key in expected)
