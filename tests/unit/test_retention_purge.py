"""The periodic retention purge (privacy.purge_interval_s): scheduling, a real store, audit."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from trafficguard.cli import EXIT_OK, main
from trafficguard.config import Config, SqliteConfig
from trafficguard.detect.alerts import AlertRecord
from trafficguard.escalation.audit import AuditLog, AuditWriteError, read_entries, verify_audit
from trafficguard.flow.records import FlowRecord
from trafficguard.privacy.keys import init_keys
from trafficguard.privacy.purger import StorePurger
from trafficguard.privacy.retention import RetentionPolicy
from trafficguard.sinks.sqlite import SqliteSink
from trafficguard.voip.records import RtpStreamRecord
from trafficguard.wiring import (  # also registers the alert table
    SinkOverrides,
    build_purger,
    build_sinks,
)

S = 1_000_000_000
DAY = 86_400 * S
NOW = 1_800_000_000 * S
SUB = "10.1.0.7"


def flow(n: int, end_ns: int) -> FlowRecord:
    return FlowRecord(
        flow_id=f"{n:016x}", seq=0, first_seen_ns=end_ns - S, start_ns=end_ns - S,
        end_ns=end_ns, vlan=0, ip_version=4, proto=17, src_addr=SUB, src_port=40000 + n,
        dst_addr="203.0.113.9", dst_port=53, packets_fwd=1, packets_rev=1, bytes_fwd=80,
        bytes_rev=120, ip_bytes_fwd=66, ip_bytes_rev=106, payload_bytes_fwd=30,
        payload_bytes_rev=70, tcp_flags_fwd=0, tcp_flags_rev=0, tcp_state="", app="dns",
        app_source="port", encap="", end_reason="idle",
    )  # fmt: skip


def rtp(n: int, last_ns: int) -> RtpStreamRecord:
    return RtpStreamRecord(
        ssrc=n, src_addr=SUB, src_port=40000, dst_addr="203.0.113.20", dst_port=50000,
        first_ns=last_ns - S, last_ns=last_ns, payload_type=0, codec="pcmu", clock_rate=8000,
        packets=50, expected=50, lost=0, duplicates=0, reordered=0, seq_resets=0,
        jitter_mean_ms=1.0, jitter_max_ms=2.0, max_delta_ms=20.0, mos=4.2,
    )  # fmt: skip


def alert(n: int, last_ns: int) -> AlertRecord:
    return AlertRecord(
        alert_id=f"{n:016x}", seq=0, detector="syn_flood", rule="r", severity="high",
        status="open", first_seen_ns=last_ns - S, last_seen_ns=last_ns, source="198.51.100.7",
        target=SUB, evidence={"syns": 1000},
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Flows 40 and 10 days old, RTP 40 and 10, alerts 200 and 100 days old (defaults:
    flows 30 d, RTP 30 d, alerts 180 d): one row of each kind is past retention."""
    path = tmp_path / "store.db"
    with SqliteSink(SqliteConfig(path=path)) as sink:
        sink.write([flow(1, NOW - 40 * DAY), flow(2, NOW - 10 * DAY), flow(3, NOW - 40 * DAY)])
        sink.write([rtp(1, NOW - 40 * DAY), rtp(2, NOW - 10 * DAY)])
        sink.write([alert(1, NOW - 200 * DAY), alert(2, NOW - 100 * DAY)])
    return path


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return n


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def nonzero(counts: dict[str, int] | None) -> dict[str, int]:
    assert counts is not None
    return {k: v for k, v in counts.items() if v}


def samples(purger: StorePurger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fam in purger.collect():
        for s in fam.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{label}}}" if label else s.name] = s.value
    return out


def test_schedule_first_purge_at_start_then_every_interval(store: Path) -> None:
    clock = Clock()
    purger = StorePurger(store, RetentionPolicy(), 3600, clock="wall", monotonic=clock)
    asked: list[int] = []

    def now_ns() -> int:
        asked.append(1)
        return NOW

    assert nonzero(purger.maybe_purge(now_ns)) == {"alert": 1, "flow": 2, "rtp_stream": 1}
    clock.t += 3599
    assert purger.maybe_purge(now_ns) is None  # not due: the clock is not even read
    assert len(asked) == 1
    clock.t += 1
    second = purger.maybe_purge(now_ns)
    assert second is not None and "flow" in second and nonzero(second) == {}
    assert purger.runs == 2 and len(asked) == 2


def test_interval_zero_never_purges(store: Path) -> None:
    clock = Clock()
    purger = StorePurger(store, RetentionPolicy(), 0, clock="wall", monotonic=clock)
    clock.t += 10**6
    assert not purger.due() and purger.maybe_purge(lambda: NOW) is None
    assert rows(store, "flow") == 3


def test_purge_per_record_type_on_a_real_store(store: Path) -> None:
    purger = StorePurger(store, RetentionPolicy(), 3600, clock="wall")
    with capture_logs() as logs:
        counts = nonzero(purger.purge(NOW))
    assert counts == {"alert": 1, "flow": 2, "rtp_stream": 1}
    assert (rows(store, "flow"), rows(store, "rtp_stream"), rows(store, "alert")) == (1, 1, 1)
    with sqlite3.connect(store) as conn:  # the survivors are the young ones
        assert conn.execute("SELECT flow_id FROM flow").fetchall() == [(f"{2:016x}",)]
        assert conn.execute("SELECT alert_id FROM alert").fetchall() == [(f"{2:016x}",)]
    assert samples(purger) == {
        "trafficguard_retention_purged_records_total{kind=alert}": 1,
        "trafficguard_retention_purged_records_total{kind=flow}": 2,
        "trafficguard_retention_purged_records_total{kind=rtp_stream}": 1,
        "trafficguard_retention_purge_failures_total": 0,
    }
    [event] = [e for e in logs if e["event"] == "retention.purged"]
    assert event["records"] == 4 and event["kind"] == ["alert", "flow", "rtp_stream"]
    assert event["count"] == [1, 2, 1] and event["clock"] == "wall"
    assert SUB not in repr(logs) and "203.0.113" not in repr(logs)
    with capture_logs() as logs:  # nothing left to purge: no event
        assert sum(purger.purge(NOW).values()) == 0
    assert [e for e in logs if e["event"] == "retention.purged"] == []
    assert samples(purger)["trafficguard_retention_purged_records_total{kind=flow}"] == 2


def test_custom_retention_periods(store: Path) -> None:
    policy = RetentionPolicy(flows_s=5 * 86_400, rtp_s=60 * 86_400, alerts_s=365 * 86_400)
    assert nonzero(StorePurger(store, policy, 1, clock="packet").purge(NOW)) == {"flow": 3}


def test_each_purge_that_deletes_rows_is_audited(store: Path, tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys")
    log_path = tmp_path / "audit.jsonl"

    def opener() -> AuditLog:
        return AuditLog(log_path, keys.audit_private)

    purger = StorePurger(store, RetentionPolicy(), 60, clock="wall", audit_opener=opener)
    purger.purge(NOW)
    purger.purge(NOW)  # deletes nothing: no entry
    entries = [e for e in read_entries(log_path) if e["event"] == "retention.purged"]
    assert len(entries) == 1
    assert entries[0]["ts_ns"] == NOW
    assert entries[0]["details"] == {
        "tables": ["alert", "flow", "rtp_stream"], "rows": [1, 2, 1],
        "record_types": ["alerts", "flows", "rtp"], "total": 4, "clock": "wall",
    }  # fmt: skip
    assert verify_audit(log_path, keys.audit_public).ok


class FullAudit(AuditLog):
    def append(self, event, ts_ns, details=None):  # type: ignore[no-untyped-def]
        raise AuditWriteError(f"{self.path}: No space left on device")


def test_purge_fails_closed_when_the_audit_entry_cannot_be_written(
    store: Path, tmp_path: Path
) -> None:
    keys = init_keys(tmp_path / "keys")
    purger = StorePurger(
        store, RetentionPolicy(), 60, clock="wall",
        audit_opener=lambda: FullAudit(tmp_path / "audit.jsonl", keys.audit_private),
    )  # fmt: skip
    with capture_logs() as logs:
        assert purger.purge(NOW) == {}
    assert (rows(store, "flow"), rows(store, "rtp_stream"), rows(store, "alert")) == (3, 2, 2)
    assert purger.errors == 1
    assert samples(purger)["trafficguard_retention_purge_failures_total"] == 1
    assert [e["event"] for e in logs] == ["retention.failed"]
    assert "AuditWriteError" in logs[0]["error"]


def test_busy_store_is_retried_later_not_fatal(store: Path) -> None:
    blocker = sqlite3.connect(store, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the store
    try:
        purger = StorePurger(store, RetentionPolicy(), 60, clock="wall", busy_timeout_s=0.1)
        assert purger.purge(NOW) == {} and purger.errors == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert nonzero(purger.purge(NOW)) == {"alert": 1, "flow": 2, "rtp_stream": 1}


def test_missing_store_is_not_an_error(tmp_path: Path) -> None:
    purger = StorePurger(tmp_path / "none.db", RetentionPolicy(), 60, clock="wall")
    assert purger.purge(NOW) == {} and purger.errors == 0 and purger.runs == 0
    assert not (tmp_path / "none.db").exists()


def test_replay_purge_flag_purges_as_of_the_newest_packet(
    tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = repo_root / "pcaps" / "http.pcap"  # 2023-11-14 22:13:20 .. 22:13:50 UTC
    newest = 1_700_000_030 * S  # the capture's last second
    db = tmp_path / "r.db"
    with SqliteSink(SqliteConfig(path=db)) as sink:
        sink.write([flow(900, newest - 31 * DAY), flow(901, newest - 29 * DAY)])
    cfg = tmp_path / "tg.yaml"
    cfg.write_text(
        f"privacy:\n  keys_dir: {tmp_path / 'keys'}\nmetrics:\n  enabled: false\n"
        f"logging:\n  format: json\n"
    )
    base = ["--config", str(cfg), "replay", "--store", str(db), "--no-metrics", str(pcap)]
    assert main(base) == EXIT_OK  # without --purge: nothing is purged
    replayed = rows(db, "flow") - 2
    assert replayed > 0
    assert main([*base, "--purge"]) == EXIT_OK
    assert "retention: 1 record(s) purged as of the newest packet" in capsys.readouterr().err
    with sqlite3.connect(db) as conn:
        ids = {r[0] for r in conn.execute("SELECT flow_id FROM flow")}
    assert f"{900:016x}" not in ids and f"{901:016x}" in ids  # by packet time, not wall time
    assert len(ids) == replayed + 1


def test_build_purger_finds_the_store_and_audits_only_with_escalation(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys")
    cfg = Config.model_validate(
        {"privacy": {"purge_interval_s": 60, "retention": {"flows_s": 86_400}}}
    )
    sinks = build_sinks(cfg, SinkOverrides(store=tmp_path / "s.db"))
    purger = build_purger(cfg, sinks, keys, clock="wall")
    assert purger is not None and purger.path == tmp_path / "s.db"
    assert purger.policy.flows_s == 86_400 and purger.enabled
    assert purger._audit_opener is None  # escalation off: log and metric only
    for _, sink in sinks:
        sink.close()
    assert build_purger(cfg, build_sinks(cfg, SinkOverrides(no_store=True)), keys, "wall") is None
