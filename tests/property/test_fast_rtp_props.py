"""The C core's RTP accounting equals ``RtpStreams`` on generated sequences.

Loss, reordering, duplicates, 16-bit sequence wrap, restarts after large jumps, SSRC
changes (more SSRCs than ``max_streams``), CSRCs/extension/padding, RTCP and non-RTP
payloads, timestamp wrap and long gaps (the exact-division fallback): the state of every
stream (every field of ``RtpStreamStats``, private ones included) must be identical.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.fast import available
from trafficguard.voip.rtp import RtpStreams, clock_rate_table, stats_state

pytestmark = pytest.mark.usefixtures("fast_core")  # fails, not skips, without the core

if available():
    from trafficguard.fast._core import rtp_replay


Outcome = tuple[list[list[tuple[int | float, ...]]], list[int], list[int]]


def _native(
    rates: dict[int, int], max_streams: int, events: list[tuple[int, bool, bytes]]
) -> Outcome:
    (fwd, rev, dropped), flags = rtp_replay(clock_rate_table(rates), max_streams, events)
    return [list(fwd), list(rev)], list(dropped), list(flags)


def _python(
    rates: dict[int, int], max_streams: int, events: list[tuple[int, bool, bytes]]
) -> Outcome:
    streams = (RtpStreams(max_streams, rates), RtpStreams(max_streams, rates))
    flags = [int(streams[rev].observe_packet(ts, data)) for ts, rev, data in events]
    states = [[stats_state(s) for s in d.streams.values()] for d in streams]
    return states, [streams[0].dropped, streams[1].dropped], flags


def _rtp(seq: int, ts: int, ssrc: int, pt: int, marker: bool, extra: int, size: int) -> bytes:
    b0 = 0x80
    tail = b""
    head = b""
    if extra == 1:  # two CSRCs
        b0 |= 2
        head = b"\x00" * 8
    elif extra == 2:  # header extension of one word
        b0 |= 0x10
        head = b"\xbe\xde\x00\x01" + b"\x00" * 4
    elif extra == 3:  # padding
        b0 |= 0x20
        tail = b"\x00\x00\x03"
    elif extra == 4:  # bad padding length
        b0 |= 0x20
        tail = b"\xff"
    fixed = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF,
                        ts & 0xFFFFFFFF, ssrc)  # fmt: skip
    return fixed + head + b"\x11" * size + tail


@st.composite
def sequences(draw: st.DrawFn) -> tuple[dict[int, int], int, list[tuple[int, bool, bytes]]]:
    rates = draw(st.sampled_from([{}, {96: 48000}, {0: 16000, 101: 8000}]))
    max_streams = draw(st.integers(1, 3))
    n = draw(st.integers(1, 120))
    ssrcs = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4, unique=True))
    seq = draw(st.integers(0, 0xFFFF))
    rtp_ts = draw(st.integers(0, 2**32 - 1))
    ts_ns = draw(st.integers(0, 2**40))
    pt = draw(st.sampled_from([0, 8, 18, 96, 101, 127, 34]))
    events: list[tuple[int, bool, bytes]] = []
    for _ in range(n):
        op = draw(st.sampled_from(["next"] * 6 + ["loss", "back", "dup", "jump", "ssrc",
                                   "rtcp", "junk", "gap", "pt"]))  # fmt: skip
        if op == "loss":
            seq += draw(st.integers(2, 40))
        elif op == "back":
            seq -= draw(st.integers(1, 140))
        elif op == "jump":
            seq += draw(st.integers(2900, 70000))
        elif op == "ssrc":
            ssrcs.append(ssrcs.pop(0))
        elif op == "pt":
            pt = draw(st.integers(0, 127))
        elif op != "dup":
            seq += 1
        ts_ns += draw(st.integers(-5_000_000, 40_000_000))
        if op == "gap":
            ts_ns += draw(st.integers(10**11, 10**15))
        rtp_ts += draw(st.sampled_from([160, 160, 320, 0, -160, 2**31, 12345]))
        rev = draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else False
        if op == "rtcp":
            data = struct.pack("!BBHI", 0x81, 200, 1, ssrcs[0])
        elif op == "junk":
            data = draw(st.binary(max_size=20))
        else:
            extra = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4]))
            marker = draw(st.booleans())
            data = _rtp(seq, rtp_ts, ssrcs[0], pt, marker, extra, draw(st.integers(0, 40)))
        events.append((ts_ns, rev, data))
    return rates, max_streams, events


@settings(max_examples=400, deadline=None)
@given(sequences())
def test_c_rtp_accounting_equals_python(
    case: tuple[dict[int, int], int, list[tuple[int, bool, bytes]]],
) -> None:
    rates, max_streams, events = case
    assert _native(rates, max_streams, events) == _python(rates, max_streams, events)


def test_wrap_reorder_restart_by_hand() -> None:
    """A hand-made sequence hitting wrap, reorder inside/outside the window and restart."""
    seqs = [65530, 65531, 65533, 65532, 65535, 1, 0, 0, 2, 5000, 5001, 5002, 3, 4, 4,
            5003, 20000, 20000, 20001]  # fmt: skip
    events = [(i * 20_000_000 + (i % 3) * 1_000_000, False, _rtp(s, i * 160, 7, 0, False, 0, 10))
              for i, s in enumerate(seqs)]  # fmt: skip
    native = _native({}, 16, events)
    assert native == _python({}, 16, events)
    state = native[0][0][0]
    assert state[0] == 7 and state[3] == len(seqs)
