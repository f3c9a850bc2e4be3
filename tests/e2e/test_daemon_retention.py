"""The live daemon purges its store per record type while it runs (privacy.purge_interval_s).

``trafficguard run`` in its own namespace on a veth pair (tests/livenet.py); the store is
prepared with records older and younger than their retention period, by the wall clock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from livenet import DaemonProc, Veth, metrics, veth_netns, write_config

from trafficguard.config import SqliteConfig
from trafficguard.flow.records import FlowRecord
from trafficguard.sinks.sqlite import SqliteSink

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

S = 1_000_000_000
DAY = 86_400 * S


@pytest.fixture
def veth() -> Veth:
    with veth_netns() as v:
        yield v


def flow(n: int, end_ns: int) -> FlowRecord:
    return FlowRecord(
        flow_id=f"{n:016x}", seq=0, first_seen_ns=end_ns - S, start_ns=end_ns - S,
        end_ns=end_ns, vlan=0, ip_version=4, proto=17, src_addr="192.0.2.1",
        src_port=40000 + n, dst_addr="203.0.113.9", dst_port=53, packets_fwd=1, packets_rev=1,
        bytes_fwd=80, bytes_rev=120, ip_bytes_fwd=66, ip_bytes_rev=106, payload_bytes_fwd=30,
        payload_bytes_rev=70, tcp_flags_fwd=0, tcp_flags_rev=0, tcp_state="", app="dns",
        app_source="port", encap="", end_reason="idle",
    )  # fmt: skip


def flow_ids(db: Path) -> set[str]:
    with sqlite3.connect(db, timeout=10) as conn:
        return {r[0] for r in conn.execute("SELECT flow_id FROM flow")}


def test_daemon_purges_at_start_and_every_interval(veth: Veth, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    now = time.time_ns()
    with SqliteSink(SqliteConfig(path=db)) as sink:  # flows are kept 30 days by default
        sink.write([flow(1, now - 40 * DAY), flow(2, now - 31 * DAY), flow(3, now - 29 * DAY)])
    config = write_config(
        tmp_path / "c.yaml", tmp_path, privacy={"keys_dir": str(tmp_path / "keys"),
                                                "purge_interval_s": 1.5}
    )  # fmt: skip
    daemon = DaemonProc(veth, config, tmp_path / "d.log", "--ipfix", "127.0.0.1:4739")
    try:
        first = daemon.wait_event("retention.purged")
        assert first["records"] == 2 and first["kind"] == ["flow"] and first["clock"] == "wall"
        assert flow_ids(db) == {f"{3:016x}"}
        # a record that ages past retention while the daemon runs goes at the next interval
        with SqliteSink(SqliteConfig(path=db)) as sink:
            sink.write([flow(4, time.time_ns() - 35 * DAY)])
        second = daemon.wait_event("retention.purged", count=2, timeout=15)
        assert second["records"] == 1
        assert flow_ids(db) == {f"{3:016x}"}
        m = metrics(veth)
        assert m['trafficguard_retention_purged_records_total{kind="flow"}'] == 3
        assert m["trafficguard_retention_purge_failures_total"] == 0
        assert m["trafficguard_ipfix_messages_total"] >= 1  # sink metrics are on /metrics
        rc, _ = daemon.stop()
        assert rc == 0, daemon.log.read_text()
    finally:
        daemon.close()
    assert len([e for e in daemon.events() if e.get("event") == "retention.failed"]) == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
