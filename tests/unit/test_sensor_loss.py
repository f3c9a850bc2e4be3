"""Sensor-loss windows: records overlapping a window in which the sensor itself dropped
packets carry ``sensor_loss=True`` (DESIGN "Outputs"); the daemon's drop accounting."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from trafficguard import daemon
from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.capture.frames import LINKTYPE_RAW, Frame
from trafficguard.capture.live import KernelCounters
from trafficguard.config import NS_PER_S, Config
from trafficguard.daemon import SensorLossWatch, Worker
from trafficguard.detect.alerts import AlertRecord
from trafficguard.flow.records import FlowRecord
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.privacy.keys import init_keys, load_keys
from trafficguard.sensor_loss import LOSS_SPAN_FIELDS, MAX_LOSS_WINDOWS, loss_horizon_ns
from trafficguard.sinks.memory import MemorySink
from trafficguard.voip.kpi import VoipIntervalRecord
from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord
from trafficguard.wiring import build_context, build_stages

REPO = Path(__file__).resolve().parents[2]
S = NS_PER_S


def _pipeline(cfg: Config | None = None) -> tuple[Pipeline, MemorySink]:
    memory = MemorySink()
    return Pipeline(cfg or Config(), [("memory", memory)]), memory


def _make(cls: type[msgspec.Struct], **values: Any) -> Any:
    """A record of ``cls`` with every required field zero/empty except ``values``."""
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        if f.name in values or f.required is False:
            continue
        t = f.type
        if t is int or t == int | None:
            out[f.name] = 0
        elif t is float or t == float | None:
            out[f.name] = 0.0
        elif t is bool:
            out[f.name] = False
        elif t is str:
            out[f.name] = ""
        else:
            out[f.name] = ()
    out.update(values)
    return cls(**out)


def _flow(start: int, end: int, first_seen: int | None = None) -> FlowRecord:
    return cast(
        FlowRecord,
        _make(
            FlowRecord,
            flow_id=f"{start:016x}",
            first_seen_ns=start if first_seen is None else first_seen,
            start_ns=start,
            end_ns=end,
        ),
    )


def _emit(pipeline: Pipeline, memory: MemorySink, records: list[Any]) -> list[Any]:
    before = len(memory.records)
    pipeline._route(records)
    return list(memory.records)[before:]


def test_no_window_no_work() -> None:
    pipeline, memory = _pipeline()
    recs = [_flow(0, 10**18)]
    out = _emit(pipeline, memory, recs)
    assert out == recs and out[0] is recs[0]
    assert pipeline.sensor_loss_windows == 0


def test_flow_overlap_uses_the_records_own_interval() -> None:
    pipeline, memory = _pipeline()
    pipeline.note_sensor_loss(100, 200)
    recs = [
        _flow(0, 99),  # before
        _flow(0, 100),  # touches the start
        _flow(150, 160),  # inside
        _flow(50, 250),  # around
        _flow(200, 300),  # touches the end
        _flow(201, 300),  # after
        _flow(250, 300, first_seen=0),  # interim record: its own interval is after
    ]
    out = _emit(pipeline, memory, recs)
    assert [r.sensor_loss for r in out] == [False, True, True, True, True, False, False]
    assert [r.flow_id for r in out] == [r.flow_id for r in recs]
    assert pipeline.snapshot().sensor_loss_windows == 1


@pytest.mark.parametrize(
    ("cls", "start", "end"),
    [
        (CallRecord, "invite_ns", "end_ns"),
        (RegistrationRecord, "ts_ns", "end_ns"),
        (RtpStreamRecord, "first_ns", "last_ns"),
    ],
)
def test_voip_kinds(cls: type[msgspec.Struct], start: str, end: str) -> None:
    assert LOSS_SPAN_FIELDS[cls.kind] == (start, end)  # type: ignore[attr-defined]
    pipeline, memory = _pipeline()
    pipeline.note_sensor_loss(1000, 2000)
    recs = [
        _make(cls, **{start: 0, end: 999}),
        _make(cls, **{start: 0, end: 1500}),
        _make(cls, **{start: 1999, end: 5000}),
        _make(cls, **{start: 2001, end: 5000}),
    ]
    out = _emit(pipeline, memory, recs)
    assert [r.sensor_loss for r in out] == [False, True, True, False]


def test_kinds_without_the_field_are_untouched() -> None:
    pipeline, memory = _pipeline()
    pipeline.note_sensor_loss(0, 10**19)
    recs = [
        _make(cls, interval_start_ns=5, interval_end_ns=10)
        for cls in (VoipIntervalRecord, DnsSummaryRecord)
    ]
    recs.append(_make(AlertRecord, first_seen_ns=5, last_seen_ns=10))
    out = _emit(pipeline, memory, recs)
    for a, b in zip(out, recs, strict=True):
        assert a is b
        assert "sensor_loss" not in msgspec.structs.asdict(a)


def test_windows_merge_and_stay_sorted() -> None:
    pipeline, _ = _pipeline()
    pipeline.note_sensor_loss(100, 200)
    pipeline.note_sensor_loss(150, 300)  # overlapping
    pipeline.note_sensor_loss(301, 400)  # adjacent
    pipeline.note_sensor_loss(500, 600)  # new
    pipeline.note_sensor_loss(20, 10)  # reversed bounds, earlier than the rest
    assert pipeline.tail.loss.starts == [10, 100, 500]
    assert pipeline.tail.loss.ends == [20, 400, 600]
    pipeline.note_sensor_loss(15, 550)  # bridges everything
    assert (pipeline.tail.loss.starts, pipeline.tail.loss.ends) == ([10], [600])
    assert pipeline.sensor_loss_windows == 6


def test_old_windows_are_forgotten_and_count_is_bounded() -> None:
    cfg = Config()
    horizon = loss_horizon_ns(cfg)
    assert horizon >= (cfg.flow.active_timeout_s + cfg.flow.idle_timeout_s.tcp) * S
    pipeline, _ = _pipeline(cfg)
    pipeline.note_sensor_loss(0, 10)
    pipeline.tick(10 + horizon)  # still reachable
    assert pipeline.tail.loss.ends == [10]
    pipeline.tick(11 + horizon)
    assert pipeline.tail.loss.ends == []
    for i in range(MAX_LOSS_WINDOWS + 5):
        pipeline.note_sensor_loss(100 + 10 * i, 100 + 10 * i + 1)
    assert len(pipeline.tail.loss.ends) == MAX_LOSS_WINDOWS
    assert pipeline.tail.loss.starts[0] == 100  # the oldest merged, not lost
    assert pipeline.tail.loss.ends[0] == 100 + 10 * 5 + 1


# -- the fast path and the Python path flag the same records ----------------------------
def _plain_flows(pcap: Path) -> list[Any]:
    memory = MemorySink()
    pipeline = Pipeline(Config(), [("memory", memory)])
    ReplayDriver(pipeline).run([pcap])
    return list(memory.records)


@pytest.mark.usefixtures("fast_core")
@pytest.mark.parametrize("name", ["mix.pcap", "sip-call-rtp.pcap"])
def test_fast_and_python_paths_flag_the_same_records(name: str, tmp_path: Path) -> None:
    pcap = REPO / "pcaps" / name
    keys = tmp_path / "keys"
    init_keys(keys)
    runs = {}
    for mode in ("off", "on"):
        cfg = Config.model_validate({"capture": {"fast_path": mode, "batch_frames": 16}})
        ctx = build_context(cfg, load_keys(keys))
        memory = MemorySink()
        pipeline = Pipeline(
            cfg,
            [("memory", memory)],
            stages=build_stages(ctx),
            record_transform=ctx.record_transform,
        )
        assert (pipeline.fast is not None) == (mode == "on")
        flows = [r for r in _plain_flows(pcap) if isinstance(r, FlowRecord)]
        lo = min(r.start_ns for r in flows)
        hi = max(r.end_ns for r in flows)
        window = (lo + (hi - lo) // 2, lo + (hi - lo) // 2 + (hi - lo) // 20)
        pipeline.note_sensor_loss(*window)
        ReplayDriver(pipeline).run([pcap])
        pipeline.close()
        runs[mode] = list(memory.records)
    assert runs["on"] == runs["off"]
    flagged = [r for r in runs["on"] if getattr(r, "sensor_loss", False)]
    assert flagged, "the window overlaps some record"
    for r in runs["on"]:
        if isinstance(r, FlowRecord):
            assert r.sensor_loss == (r.start_ns <= window[1] and r.end_ns >= window[0])
    assert any(isinstance(r, FlowRecord) and not r.sensor_loss for r in runs["on"])


# -- the daemon worker: kernel drop counters → windows → flagged flows -------------------
def _udp(ts: int, sport: int, dport: int = 9999) -> Frame:
    payload = b"x" * 20
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
    )  # fmt: skip
    data = ip + udp
    return (ts, LINKTYPE_RAW, data, len(data))


class _FakeCapture:
    """Batches at given packet times; the kernel drop counters grow before one of them."""

    def __init__(self, batches: list[list[Frame]], drop_before: int, clock: list[int]) -> None:
        self._batches = batches
        self._drop_before = drop_before
        self._clock = clock
        self._served = 0
        self.sockets: list[Any] = []

    def batches(self, max_frames: int) -> Iterator[list[Frame]]:
        for batch in self._batches:
            self._clock[0] = batch[-1][0] + 1000  # processed as it arrives (live)
            yield batch
            self._served += 1

    def counters(self) -> KernelCounters:
        # read before batch number _served is processed
        lost = 37 if self._served >= self._drop_before else 0
        return KernelCounters(packets=1000, drops=lost, freeze_q_cnt=1 if lost else 0)


class _Out:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def put(self, msg: Any) -> None:
        self.messages.append(msg)


class _Control:
    def poll(self) -> bool:
        return False


def test_worker_drop_accounting_flags_flows_active_during_the_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = 1_700_000_000 * S
    clock = [t0]
    monkeypatch.setattr(daemon.time, "time_ns", lambda: clock[0])
    # flow 1001: 0-1 s (before the drop); 1002: 0.5-5 s (across it); 1003: 8-9 s (after)
    times = {1001: (0.0, 1.0), 1002: (0.5, 2.0, 3.0, 4.0, 5.0), 1003: (8.0, 9.0)}
    slices: dict[float, list[Frame]] = {}
    for port, ts in times.items():
        for t in ts:
            slices.setdefault(t, []).append(_udp(t0 + int(t * S), port))
    batches = [sorted(slices[t]) for t in sorted(slices)]
    # the counters grew between the batch of t=3 s and the batch of t=4 s
    drop_before = sorted(slices).index(4.0)
    cfg = Config()
    pipeline, memory = _pipeline(cfg)
    capture = _FakeCapture(batches, drop_before, clock)
    worker = Worker(0, cfg, cast(Any, None), [], _Out(), cast(Any, _Control()))
    worker.loss = SensorLossWatch(pipeline)
    worker._loop(cast(Any, capture), pipeline)
    pipeline.finish()
    assert pipeline.sensor_loss_windows == 1
    assert pipeline.tail.loss.starts == [t0 + 3 * S]
    assert pipeline.tail.loss.ends == [t0 + 4 * S + 1000]
    flows = {r.src_port: r for r in memory.records if isinstance(r, FlowRecord)}
    assert set(flows) == {1001, 1002, 1003}
    assert not flows[1001].sensor_loss
    assert flows[1002].sensor_loss
    assert not flows[1003].sensor_loss


def test_loss_watch_notes_only_growth() -> None:
    pipeline, _ = _pipeline()
    watch = SensorLossWatch(pipeline)
    assert not watch.check(KernelCounters(packets=5), 10, 20, 25)
    assert watch.check(KernelCounters(packets=9, drops=2), 30, 40, 45)
    assert not watch.check(KernelCounters(packets=12, drops=2), 50, 60, 65)  # no growth
    assert watch.check(KernelCounters(packets=15, drops=2, freeze_q_cnt=1), 70, 80, 85)
    assert (pipeline.tail.loss.starts, pipeline.tail.loss.ends) == ([20, 60], [45, 85])
    first = SensorLossWatch(_pipeline()[0])  # drops before the first batch
    assert first.check(KernelCounters(drops=1), 100, 200, 210)
    assert (first.pipeline.tail.loss.starts, first.pipeline.tail.loss.ends) == ([100], [210])
