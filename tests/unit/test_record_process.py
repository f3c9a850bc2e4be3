"""The record process: the detectors, the privacy edge and the sinks in a second process.

What it must keep from the in-process tail: the same records, alerts, sensor-loss marks
and pseudonyms in the same order, the sinks' own errors, the detectors' metrics. What only
a second process can do wrong: a full disk there, a killed child, a killed parent, signals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_sink_sqlite import flow
from tests.unit.test_store_writer import grow_tmpfs, kill_parent_and_await_child, small_tmpfs
from trafficguard.config import Config
from trafficguard.errors import StoreError
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.privacy.keys import SensorKeys, init_keys
from trafficguard.record_process import RemoteTail, usable
from trafficguard.sinks.jsonl import JsonlSink
from trafficguard.sinks.sqlite import count_records, query_records
from trafficguard.wiring import SinkOverrides, build_context, build_sinks, build_stages

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
S = 1_000_000_000

# alerts (floods, scans, spam, beacons), calls with RTP, DNS summaries; one home network
# so that the privacy edge pseudonymizes addresses in both tails
CAPTURES = [
    *sorted((DATA / "attacks").glob("*.pcap")),
    DATA / "voip" / "answered.pcap",
    REPO / "pcaps" / "dns.pcap",
]
CFG = Config.model_validate({"home_networks": ["10.0.0.0/8", "192.168.0.0/16"]})


def _keys(tmp_path: Path) -> SensorKeys:
    return init_keys(tmp_path / "keys")


def _replay(pipeline: Pipeline, capture: Path, loss: tuple[int, int] | None) -> None:
    if loss is not None:
        pipeline.note_sensor_loss(*loss)
    ReplayDriver(pipeline).run([capture])
    pipeline.close()


def _local(cfg: Config, keys: SensorKeys, out: Path) -> Pipeline:
    ctx = build_context(cfg, keys)
    sinks = [("jsonl", JsonlSink(str(out)))]
    return Pipeline(cfg, sinks, stages=build_stages(ctx), record_transform=ctx.record_transform)


def _remote(cfg: Config, keys: SensorKeys, overrides: SinkOverrides) -> Pipeline:
    ctx = build_context(cfg, keys)
    tail = RemoteTail(cfg, keys, overrides)
    pipeline = Pipeline(cfg, [], stages=build_stages(ctx, record_process=True), tail=tail)
    tail.wait_ready()
    return pipeline


def _first_ts_ns(capture: Path) -> int:
    from trafficguard.capture.pcapfile import open_capture  # noqa: PLC0415 (one helper)

    with open_capture(capture) as source:
        for frames in source.batches(1):
            return int(frames[0][0])
    raise AssertionError(f"{capture} has no packets")


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_the_record_process_writes_what_the_local_tail_writes(
    tmp_path: Path, capture: Path
) -> None:
    """Same JSON lines, byte for byte and in order: flows, calls, DNS summaries, alerts
    (made in the child), sensor-loss marks and pseudonyms (the child's privacy edge)."""
    keys = _keys(tmp_path)
    start = _first_ts_ns(capture)
    loss = (start + S // 2, start + 2 * S)  # a window early in the capture
    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    local = _local(CFG, keys, local_out)
    _replay(local, capture, loss)
    remote = _remote(CFG, keys, SinkOverrides(no_store=True, jsonl=str(remote_out)))
    _replay(remote, capture, loss)
    expected = local_out.read_bytes()
    assert expected  # every capture gives records
    assert remote_out.read_bytes() == expected
    assert remote.records_written == local.records_written
    assert remote.sensor_loss_windows == local.sensor_loss_windows == 1


def test_the_alert_captures_do_raise_alerts_and_loss_marks(tmp_path: Path) -> None:
    """The comparison above is not vacuous: alerts and marked records are in it."""
    keys = _keys(tmp_path)
    capture = DATA / "attacks" / "syn_flood.pcap"
    start = _first_ts_ns(capture)
    out = tmp_path / "remote.jsonl"
    remote = _remote(CFG, keys, SinkOverrides(no_store=True, jsonl=str(out)))
    _replay(remote, capture, (start, start + 3600 * S))
    text = out.read_text()
    assert remote.records_written.get(("jsonl", "alert"), 0) >= 1
    assert '"sensor_loss":true' in text


def test_detector_metrics_come_back_with_each_flush(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    remote = _remote(CFG, keys, SinkOverrides(no_store=True))
    collectors = remote.collectors()  # as start_metrics does, before any record
    assert [m for collect in remote.tail.collectors() for m in collect()] == []  # not yet
    ReplayDriver(remote).run([DATA / "attacks" / "port_scan.pcap"])
    remote.flush()
    families = {m.name: m for collect in collectors for m in collect()}
    assert "trafficguard_alerts" in families
    opened = families["trafficguard_alerts"].samples
    assert sum(s.value for s in opened if s.name.endswith("_total")) >= 1
    remote.close()


def test_a_store_that_does_not_open_fails_with_the_sinks_own_message(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(StoreError) as local_err:
        build_sinks(CFG, SinkOverrides(store=bad))
    with pytest.raises(StoreError) as remote_err:
        _remote(CFG, _keys(tmp_path), SinkOverrides(store=bad))
    assert str(remote_err.value) == str(local_err.value)
    assert str(bad) in str(remote_err.value)


def test_full_disk_in_the_record_process_stops_at_the_next_flush(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path) as small:
        db = small / "t.db"
        tail = RemoteTail(Config(), _keys(tmp_path), SinkOverrides(store=db))
        tail.wait_ready()
        tail.route([flow(i) for i in range(100)])
        tail.flush()
        assert count_records(db) == 100
        with pytest.raises(StoreError) as err:
            for lo in range(100, 5100, 500):  # 10 more batches of 500
                tail.route([flow(i) for i in range(lo, lo + 500)])
            tail.flush()
        assert str(db) in str(err.value) and "full" in str(err.value)
        assert tail.store_errors >= 1
        grow_tmpfs(small)
        tail.close()  # the sink kept what it could not commit and commits it now
        assert count_records(db) == 5100
        assert query_records(db, limit=None) == [flow(i) for i in range(5100)]


def test_a_killed_record_process_is_reported(tmp_path: Path) -> None:
    tail = RemoteTail(Config(), _keys(tmp_path), SinkOverrides(store=tmp_path / "t.db"))
    tail.wait_ready()
    tail._proc.kill()
    tail._proc.wait()
    with pytest.raises(StoreError, match="record process exited"):
        tail.route([flow(1)])
        tail.flush()
    tail.close()  # already closed: no second error


def test_the_child_ignores_the_signals_sent_to_the_whole_group(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tail = RemoteTail(Config(), _keys(tmp_path), SinkOverrides(store=db))
    tail.wait_ready()  # past start-up: the child has set its signal handling
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        tail._proc.send_signal(sig)
    tail.route([flow(1), flow(2)])
    tail.flush()
    assert tail._proc.poll() is None
    tail.close()
    assert tail._proc.returncode == 0
    assert count_records(db) == 2


def test_records_handed_over_survive_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the packet process: the child sees end of input and commits."""
    db = tmp_path / "t.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tests.unit.test_sink_sqlite import flow
        from trafficguard.config import Config
        from trafficguard.privacy.keys import init_keys
        from trafficguard.record_process import RemoteTail
        from trafficguard.wiring import SinkOverrides
        tail = RemoteTail(Config(), init_keys(Path({str(tmp_path / "keys")!r})),
                          SinkOverrides(store=Path({str(db)!r})))
        tail.wait_ready()
        tail.route([flow(i) for i in range(250)])
        print(tail._proc.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    kill_parent_and_await_child(script, "the record process")
    assert query_records(db, limit=None) == [flow(i) for i in range(250)]


def test_used_only_where_the_packet_process_needs_no_alerts_or_store() -> None:
    assert usable(Config())
    assert not usable(Config(), purge=True)  # the purger reads the store in this process
    assert not usable(Config.model_validate({"escalation": {"enabled": True}}))
    assert not usable(Config.model_validate({"store": {"record_process": False}}))
    no_detect = Config.model_validate({"detect": {"enabled": False}})
    assert usable(no_detect, sqlite=True)  # the store alone is worth a core
    assert not usable(no_detect, sqlite=False)  # JSON lines alone: one process


def test_a_tail_and_its_own_sinks_do_not_mix(tmp_path: Path) -> None:
    tail = RemoteTail(CFG, _keys(tmp_path), SinkOverrides(no_store=True))
    try:
        with pytest.raises(ValueError, match="belong to the tail"):
            Pipeline(CFG, [("jsonl", JsonlSink(str(tmp_path / "x.jsonl")))], tail=tail)
    finally:
        tail.close()


def test_the_module_help_says_what_it_is() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trafficguard.record_process", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "record process" in out and "store.record_process" in out
