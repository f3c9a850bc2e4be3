"""Property tests: the C fast path and the Python path agree on random and mutated input.

Hypothesis builds frames from header fields (Ethernet, VLAN tags, IPv4/IPv6, TCP/UDP/
ICMP/SCTP and odd protocols, random payloads that sometimes start like SIP/DNS/TLS/RTP)
and mutates them; both paths must produce the same records and counters and never raise.
A short fixed-seed slice of the file fuzzer (bench/fuzz_fast.py) covers pcap framing.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trafficguard.config import Config
from trafficguard.pipeline import Pipeline
from trafficguard.privacy.keys import SensorKeys, init_keys
from trafficguard.sinks.memory import MemorySink
from trafficguard.wiring import build_context, build_stages

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import fuzz_fast  # noqa: E402

T0 = 1_700_000_000 * 10**9
PAYLOAD_STARTS = (
    b"", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01\x00\x50\x01", b"\x80\x00\x00\x01\x00\x00\x00\xa0\x11\x22\x33\x44",
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01",
    b"\x81\xc8\x00\x06", b"SSH-2.0-x\r\n", b"220 mail SMTP\r\n", b"\xc3\x00\x00\x00\x01",
)  # fmt: skip
ADDRS4 = st.sampled_from([b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", b"\xc0\x00\x02\x07"])
ADDRS6 = st.sampled_from([bytes(15) + b"\x01", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02",
                          bytes(10) + b"\xff\xff\x0a\x00\x00\x01"])  # fmt: skip
PORTS = st.sampled_from([53, 80, 443, 5060, 5061, 123, 1900, 4789, 2152, 10000, 20000, 40000])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([6, 17, 17, 1, 58, 132, 4, 47, 0, 43, 99]))
    payload = draw(st.sampled_from(PAYLOAD_STARTS)) + draw(st.binary(max_size=40))
    sport, dport = draw(PORTS), draw(PORTS)
    if proto == 6:
        flags = draw(st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x00]))
        l4 = struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            1,
            1,
            draw(st.sampled_from([0x50, 0x60, 0x40, 0xF0])),
            flags,
            1,
            0,
            0,
        )
    elif proto == 17:
        ulen = 8 + len(payload) + draw(st.sampled_from([0, 0, 0, 1, -1, -9]))
        l4 = struct.pack("!HHHH", sport, dport, max(ulen, 0) & 0xFFFF, 0)
    elif proto == 132:
        l4 = struct.pack("!HHII", sport, dport, 0, 0)
    else:
        l4 = draw(st.binary(min_size=0, max_size=12))
    body = l4 + payload
    if v6:
        plen = len(body) + draw(st.sampled_from([0, 0, 0, 3, -2]))
        ip = struct.pack("!IHBB", 0x60000000, max(plen, 0) & 0xFFFF, proto, 64)
        ip += draw(ADDRS6) + draw(ADDRS6)
        et = 0x86DD
    else:
        frag = draw(st.sampled_from([0x4000, 0x4000, 0x0000, 0x2000, 0x0010]))
        ihl = draw(st.sampled_from([5, 5, 5, 6, 4]))
        total = 4 * ihl + len(body) + draw(st.sampled_from([0, 0, 0, 2, -1]))
        ip = struct.pack("!BBHHHBBH", 0x40 | ihl, 0, max(total, 0) & 0xFFFF, 1, frag, 64, proto, 0)
        ip += draw(ADDRS4) + draw(ADDRS4) + bytes(4 * max(ihl - 5, 0))
        et = 0x0800
    tags = b"".join(
        struct.pack("!HH", tpid, draw(st.integers(0, 0xFFFF)))
        for tpid in draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=3))
    )
    frame = (
        bytes(12) + tags + struct.pack("!H", et) + ip + body
        if tags
        else bytes(12) + struct.pack("!H", et) + ip + body
    )
    cut = draw(st.sampled_from([None, None, None, 10, 20, 40]))
    return frame[:cut] if cut is not None else frame


def _mutated(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, value in edits:
        if b:
            b[pos % len(b)] = value
    return bytes(b)


FRAME_LISTS = st.lists(
    st.tuples(
        frames(),
        st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=2),
        st.sampled_from([0, 1000, 10**7, 3 * 10**8, 2 * 10**9]),
        st.sampled_from([1, 1, 1, 1, 101, 113, 0]),
    ),
    min_size=1,
    max_size=60,
)
STRESS: dict[str, Any] = fuzz_fast.STRESS


_STAGE_KEYS: list[SensorKeys] = []


def _run(
    batch: list[tuple[int, int, bytes, int]], mode: str, stages: bool = False
) -> tuple[Any, ...]:
    """Records, decode errors and skips, packets per label; with ``stages`` every default
    stage (VoIP, DNS analyzer, detectors) runs too, so on the fast path the start filter
    and the DNS payload tap decide what comes back to Python."""
    cfg = Config.model_validate({**STRESS, "capture": {"batch_frames": 16, "fast_path": mode}})
    memory = MemorySink()
    if stages:
        if not _STAGE_KEYS:
            _STAGE_KEYS.append(init_keys(Path(tempfile.mkdtemp(prefix="tg-props-")) / "k"))
        ctx = build_context(cfg, _STAGE_KEYS[0])
        pipeline = Pipeline(cfg, [("m", memory)], stages=build_stages(ctx),
                            record_transform=ctx.record_transform)  # fmt: skip
    else:
        pipeline = Pipeline(cfg, [("m", memory)])
    for i in range(0, len(batch), 7):
        pipeline.process_batch(batch[i : i + 7])
    pipeline.finish()
    return (list(memory.records), dict(pipeline.decoder.errors), dict(pipeline.decoder.skipped),
            pipeline.snapshot().app_packets)  # fmt: skip


def _batch(items: list[tuple[bytes, list[tuple[int, int]], int, int]]) -> list[Any]:
    """Frames of a FRAME_LISTS example: mutated, at increasing packet times."""
    ts = T0
    batch = []
    for data, edits, gap, linktype in items:
        ts += gap
        batch.append((ts, linktype, _mutated(data, edits), len(data) + 4))
    return batch


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAME_LISTS)
def test_random_frames_same_records(
    items: list[tuple[bytes, list[tuple[int, int]], int, int]],
) -> None:
    batch = _batch(items)
    assert _run(batch, "on") == _run(batch, "off")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=100), min_size=1, max_size=30))
def test_garbage_frames_same_records(blobs: list[bytes]) -> None:
    batch = [(T0 + i * 10**6, 1, b, len(b)) for i, b in enumerate(blobs)]
    assert _run(batch, "on") == _run(batch, "off")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAME_LISTS)
def test_random_frames_same_records_with_default_stages(
    items: list[tuple[bytes, list[tuple[int, int]], int, int]],
) -> None:
    batch = _batch(items)
    assert _run(batch, "on", stages=True) == _run(batch, "off", stages=True)


def test_fuzzer_short_run() -> None:
    """300 mutated pcaps (framing, link types, corrupt tails) through both paths agree."""
    assert fuzz_fast.run(cases=300, seed=11) == 0
