"""The daemon's life: SIGHUP (good and bad config), SIGTERM under traffic, SIGKILL + restart.

Each test runs ``trafficguard run`` in its own namespace on a veth pair (tests/livenet.py).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from livenet import (
    DaemonProc,
    Veth,
    metrics,
    replay_onto,
    tcpdump_count,
    veth_netns,
    wait_metric,
    write_config,
)

from trafficguard.daemon import changed_keys, merge_snapshots
from trafficguard.sinks.metrics import PipelineSnapshot
from trafficguard.sinks.sqlite import query_records

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
DNS = PCAPS / "dns.pcap"
TLS = PCAPS / "tls.pcap"
SIP = PCAPS / "sip-call-rtp.pcap"
DRAIN_BOUND_S = 10.0


@pytest.fixture
def veth() -> Veth:
    with veth_netns() as v:
        yield v


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_sighup_applies_good_config_and_rejects_bad(veth: Veth, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path)
    daemon = DaemonProc(veth, config, tmp_path / "d.log")
    try:
        daemon.wait_event("capture.started")
        # good: only DNS over UDP from now on (tcpdump counts what the filter must pass)
        data = yaml.safe_load(config.read_text())
        data["live"]["bpf_filter"] = "udp port 53"
        config.write_text(yaml.safe_dump(data))
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_event("daemon.reloaded")
        assert reloaded["key_path"] == ["live.bpf_filter"]
        udp53 = tcpdump_count(DNS, "udp port 53")
        assert 0 < udp53 < 17
        replay_onto(veth, [TLS, DNS])
        wait_metric(veth, "trafficguard_capture_packets_total", udp53)
        time.sleep(0.5)
        assert metrics(veth)["trafficguard_capture_packets_total"] == udp53

        # bad: an unknown key and an invalid filter are rejected, the old filter stays
        config.write_text(config.read_text() + "bogus_section: {}\n")
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_event("config.rejected")
        assert "bogus_section" in str(rejected["error"])
        data["live"]["bpf_filter"] = "udp prt 53"
        config.write_text(yaml.safe_dump(data))
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_event("config.rejected", count=2)
        assert "bpf_filter" in str(rejected["error"])
        assert daemon.proc.poll() is None
        replay_onto(veth, [TLS, DNS])
        m = wait_metric(veth, "trafficguard_capture_packets_total", 2 * udp53)
        assert m['trafficguard_daemon_reloads_total{result="applied"}'] == 1
        assert m['trafficguard_daemon_reloads_total{result="rejected"}'] == 2
        rc, _ = daemon.stop()
        assert rc == 0
    finally:
        daemon.close()
    flows = query_records(tmp_path / "store.db", "flow")
    assert {r.proto for r in flows} == {17}
    assert sum(r.packets_fwd + r.packets_rev for r in flows) == 2 * udp53


def test_sigterm_during_traffic_drains_every_flow(veth: Veth, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path)
    daemon = DaemonProc(veth, config, tmp_path / "d.log", "--workers", "2")
    sender = None
    try:
        daemon.wait_event("capture.started")
        sender = subprocess.Popen(
            veth.cmd("tcpreplay", "-q", "--pps=3000", "--loop=100", "-i", veth.inject, str(SIP)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_metric(veth, "trafficguard_capture_packets_total", 1000)
        assert sender.poll() is None  # still sending while we stop the daemon
        rc, took = daemon.stop()
        assert rc == 0, daemon.log.read_text()
        assert took < DRAIN_BOUND_S
        stopped = daemon.wait_event("daemon.stopped")
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
        daemon.close()
    db = tmp_path / "store.db"
    assert _integrity(db) == "ok"
    flows = query_records(db, "flow")
    # the SIP call's three UDP flows, open when SIGTERM came, are flushed as records and
    # hold every packet the kernel handed over
    assert {r.end_reason for r in flows} == {"flush"}
    assert len({(r.src_port, r.dst_port) for r in flows}) == 3
    assert sum(r.packets_fwd + r.packets_rev for r in flows) == stopped["packets"]
    assert stopped["drops"] == 0


def test_sigkill_then_restart_keeps_flushed_records(veth: Veth, tmp_path: Path) -> None:
    fast_expiry = {
        "idle_timeout_s": {"udp": 0.5, "tcp": 0.5, "tcp_closing": 0.5, "tcp_embryonic": 0.5},
        "tick_interval_s": 0.2,
    }
    config = write_config(tmp_path / "c.yaml", tmp_path, flow=fast_expiry)
    db = tmp_path / "store.db"
    daemon = DaemonProc(veth, config, tmp_path / "d.log", "--workers", "2")
    try:
        daemon.wait_event("capture.started")
        workers = [
            int(str(e["pid"])) for e in daemon.events() if e.get("event") == "worker.started"
        ]
        assert len(workers) == 2
        replay_onto(veth, [DNS])
        wait_metric(veth, 'trafficguard_records_written_total{kind="flow",sink="sqlite"}', 5)
        time.sleep(2.5)  # > store.flush_interval_s: the parent has committed them
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{pid}") for pid in workers):
            assert time.monotonic() < deadline, "workers outlived a SIGKILLed parent"
            time.sleep(0.05)
    finally:
        daemon.close()
    assert _integrity(db) == "ok"
    before = query_records(db, "flow")
    assert len(before) == 5  # every DNS flow ended (idle) and was committed before the kill

    again = DaemonProc(veth, config, tmp_path / "d2.log")
    try:
        again.wait_event("capture.started")
        replay_onto(veth, [TLS])
        wait_metric(veth, "trafficguard_capture_packets_total", 22)
        rc, _ = again.stop()
        assert rc == 0
    finally:
        again.close()
    assert _integrity(db) == "ok"
    after = query_records(db, "flow")
    assert len(after) == 6
    assert {r.dst_port for r in after if r not in before} == {443}


def test_changed_keys_and_snapshot_merge() -> None:
    old = {"live": {"bpf_filter": "", "workers": 1}, "logging": {"level": "info"}}
    new = {"live": {"bpf_filter": "udp", "workers": 1}, "logging": {"level": "debug"}}
    assert changed_keys(old, new) == ["live.bpf_filter", "logging.level"]
    a = PipelineSnapshot(capture_packets=3, app_packets={("dns", "fwd"): 2}, last_packet_ts_s=5)
    b = PipelineSnapshot(capture_packets=4, app_packets={("dns", "fwd"): 1}, last_packet_ts_s=9)
    merged = merge_snapshots([a, b])
    assert merged.capture_packets == 7
    assert merged.app_packets == {("dns", "fwd"): 3}
    assert merged.last_packet_ts_s == 9
