"""The compiled fast path and the Python reference path give identical records.

Every capture we ship (pcaps/, tests/data/*/) is replayed both ways; flow records, decode
error and skip counts, capture counters and the metrics snapshot must be equal. Small
batches, a tiny table and short timeouts push the eviction, tick and interim paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trafficguard.capture.pcapfile import open_capture
from trafficguard.config import Config
from trafficguard.decode.packet import Packet
from trafficguard.fast import available, make_fast_path
from trafficguard.flow.state import Flow
from trafficguard.pipeline import Pipeline, ReplayDriver, replay_records
from trafficguard.sinks.memory import MemorySink

REPO = Path(__file__).resolve().parents[2]
CAPTURES = sorted(
    p
    for pattern in ("pcaps/*.pcap*", "tests/data/*/*.pcap*")
    for p in REPO.glob(pattern)
    if p.is_file()
)
STRESS = {
    "capture": {"batch_frames": 7},
    "flow": {
        "max_flows": 16,
        "expiry_scan_per_tick": 3,
        "tick_interval_s": 0.05,
        "active_timeout_s": 2.0,
        "classify_packets": 2,
        "idle_timeout_s": {"tcp": 5, "tcp_embryonic": 1, "tcp_closing": 0.5, "udp": 3,
                           "icmp": 1, "other": 1, "dns": 0.7},
    },
}  # fmt: skip


def _config(mode: str, extra: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {k: dict(v) for k, v in (extra or {}).items()}
    data.setdefault("capture", {})["fast_path"] = mode
    return Config.model_validate(data)


def _replay(paths: list[Path], mode: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    memory = MemorySink()
    pipeline = Pipeline(_config(mode, extra), [("memory", memory)])
    assert (pipeline.fast is not None) == (mode == "on")
    result = ReplayDriver(pipeline).run(paths)
    snap = pipeline.snapshot()
    return {
        "records": list(memory.records),
        "errors": [str(f.error) for f in result.files],
        "frames": [f.frames for f in result.files],
        "decode_errors": dict(pipeline.decoder.errors),
        "skipped": dict(pipeline.decoder.skipped),
        "capture": (pipeline.capture_packets, pipeline.capture_bytes, pipeline.last_ts_ns),
        "flows": (snap.flows_started, snap.flows_ended, snap.flows_evicted, snap.app_packets,
                  snap.app_bytes, snap.flow_table_flows),
    }  # fmt: skip


def test_extension_is_built() -> None:
    """The build ships the C core (a failed optional build would silently lose it)."""
    assert available()


def test_captures_found() -> None:
    assert len(CAPTURES) >= 30
    assert any(p.suffix == ".pcapng" for p in CAPTURES)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_same_records_as_python(path: Path) -> None:
    fast = _replay([path], "on")
    slow = _replay([path], "off")
    assert fast == slow


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_same_records_under_stress(path: Path) -> None:
    """Tiny batches and table, short timeouts: eviction, ticks and interim records agree."""
    fast = _replay([path], "on", STRESS)
    slow = _replay([path], "off", STRESS)
    assert fast == slow


def test_all_captures_in_one_run() -> None:
    """One replay of every file: flows spanning files and the final flush agree."""
    fast = _replay(CAPTURES, "on")
    assert fast == _replay(CAPTURES, "off")
    assert len(fast["records"]) > 1000


def test_frame_batches_match_file_chunks(tmp_path: Path) -> None:
    """``process_batch`` (Frames, as live capture feeds it) gives what the chunk path gives."""
    path = REPO / "pcaps" / "mix.pcap"
    memory = MemorySink()
    pipeline = Pipeline(_config("on", {"capture": {"batch_frames": 5}}), [("m", memory)])
    with open_capture(path) as source:
        for frames in source.batches(5):
            pipeline.process_batch(frames)
    pipeline.finish()
    assert list(memory.records) == _replay([path], "off")["records"]
    assert pipeline.fast is not None
    assert pipeline.fast.fast_frames > 0


class _Recorder:
    """A hook that logs what it sees; with ``only`` it follows flows of one start label."""

    def __init__(self, only: str | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.only = only
        self.followed: set[tuple[bytes, int]] = set()

    def _flow(self, flow: Flow) -> tuple[Any, ...]:
        return (flow.key, flow.first_ns, flow.label, flow.app_source, flow.packets_fwd,
                flow.packets_rev, flow.bytes_fwd, flow.payload_rev, flow.flags_fwd,
                flow.tcp_state, flow.endpoints(), flow.ip_version)  # fmt: skip

    def _follows(self, flow: Flow) -> bool:
        return self.only is None or (flow.key, flow.first_ns) in self.followed

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        self.events.append(("start", pkt.ts_ns, pkt.payload(), *self._flow(flow)))
        if flow.label == self.only:
            self.followed.add((flow.key, flow.first_ns))

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        if self._follows(flow):
            self.events.append(("packet", direction, pkt.ts_ns, pkt.payload(), *self._flow(flow)))

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        if self._follows(flow):
            self.events.append(("end", reason, *self._flow(flow)))


class _Selective(_Recorder):
    def wants_packets(self, pkt: Packet, flow: Flow) -> bool:
        return self._follows(flow)


@pytest.mark.parametrize("name", ["mix.pcap", "sip-call-rtp.pcap", "dns.pcap"])
@pytest.mark.parametrize("selective", [False, True])
def test_hooks_see_the_same_flows(name: str, selective: bool) -> None:
    """Hooks get the same calls with the same packets and flow state on both paths;
    one that declares interest in SIP flows only still sees exactly those."""
    seen = {}
    for mode in ("on", "off"):
        hook = _Selective("sip") if selective else _Recorder()
        pipeline = Pipeline(_config(mode), [("m", MemorySink())])
        pipeline.flows.add_hook(hook)
        ReplayDriver(pipeline).run([REPO / "pcaps" / name])
        seen[mode] = hook.events
    assert seen["on"] == seen["off"]
    assert any(e[0] == "start" for e in seen["on"])
    if name == "sip-call-rtp.pcap" or (not selective and name != "dns.pcap"):
        assert any(e[0] == "packet" for e in seen["on"])
        assert any(e[0] == "end" for e in seen["on"])


def test_fast_path_off_and_auto() -> None:
    from trafficguard.decode.decoder import Decoder  # noqa: PLC0415

    cfg = _config("off")
    assert make_fast_path(cfg, Decoder(cfg.decode)) is None
    cfg = _config("auto")
    assert make_fast_path(cfg, Decoder(cfg.decode)) is not None


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_same_records_with_default_stages(path: Path, tmp_path: Path) -> None:
    """The whole default pipeline (VoIP, analyzers, detectors, gate) agrees on both paths."""
    out = {}
    for mode in ("on", "off"):
        cfg = Config.model_validate(
            {"capture": {"fast_path": mode}, "privacy": {"keys_dir": str(tmp_path / "keys")}}
        )
        out[mode] = replay_records([path], cfg)
    assert out["on"] == out["off"]


def test_chunked_final_flush_keeps_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path's final flush in chunks of 3 flows: same records, same order."""
    import trafficguard.pipeline as pipeline_mod  # noqa: PLC0415

    out = {}
    for mode in ("on", "off"):
        cfg = Config.model_validate(
            {"capture": {"fast_path": mode}, "privacy": {"keys_dir": str(tmp_path / "keys")}}
        )
        with monkeypatch.context() as m:
            m.setattr(pipeline_mod, "FLUSH_CHUNK", 3)
            out[mode] = replay_records(CAPTURES, cfg)
    assert out["on"] == out["off"]
    assert len(out["on"]) > 1000


def test_chunked_final_flush_gives_what_one_step_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flows and the stages' last records (the DNS analyzer's summaries) in chunks of 3:
    the same records, in the same order, as in one step."""
    import trafficguard.pipeline as pipeline_mod  # noqa: PLC0415

    cfg = Config.model_validate({"privacy": {"keys_dir": str(tmp_path / "keys")}})
    out = {}
    for chunk in (3, 10**9):
        with monkeypatch.context() as m:
            m.setattr(pipeline_mod, "FLUSH_CHUNK", chunk)
            out[chunk] = replay_records(CAPTURES, cfg)
    assert out[3] == out[10**9]
    kinds = [type(r).kind for r in out[3]]  # type: ignore[attr-defined]
    assert kinds.count("dns_summary") > 3  # more than one chunk of summaries


@pytest.fixture(scope="module")
def workload_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ``bench/make_workload.py`` file (RTP-heavy, SIP, DNS, scans, VLAN, IPv6)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    path = tmp_path_factory.mktemp("workload") / "sample.pcap"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "make_workload.py"), "--packets", "60000",
         "--calls", "40", "--out", str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("stress", [False, True])
def test_workload_sample_with_default_stages(
    workload_sample: Path, tmp_path: Path, stress: bool
) -> None:
    """The benchmark's mix with every default stage: VoIP records (RTP accounted in C on
    the fast path) and the rest agree; under stress eviction and interim records cut calls."""
    out = {}
    for mode in ("on", "off"):
        data: dict[str, Any] = {k: dict(v) for k, v in (STRESS if stress else {}).items()}
        data.setdefault("capture", {})["fast_path"] = mode
        data["privacy"] = {"keys_dir": str(tmp_path / "keys")}
        out[mode] = replay_records([workload_sample], Config.model_validate(data))
    assert out["on"] == out["off"]
    if not stress:
        kinds = [type(r).kind for r in out["on"]]  # type: ignore[attr-defined]
        assert kinds.count("rtp_stream") >= 40
