"""WebSocket deframer (RFC 6455 framing of SIP, RFC 7118) under random input.

Random, segmented, masked and truncated streams never raise, only count reasons of the
closed set and stay bounded; a message split across frames (masked or not, control frames
between) and across TCP segments is reassembled byte for byte.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_voip_websocket import frame
from trafficguard.voip.sip import SIP_PARSE_REASONS
from trafficguard.voip.websocket import (
    WS_PARSE_REASONS,
    WsDeframer,
    WsSipFramer,
)

MAX = 2048


keys = st.one_of(st.none(), st.binary(min_size=4, max_size=4))


@st.composite
def framed(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Messages and a stream carrying them in random frames with control frames between."""
    messages = draw(st.lists(st.binary(max_size=600), min_size=1, max_size=5))
    stream = bytearray()
    for i, msg in enumerate(messages):
        cuts = sorted(draw(st.lists(st.integers(0, len(msg)), max_size=4)))
        parts = [msg[a:b] for a, b in zip([0, *cuts], [*cuts, len(msg)], strict=True)]
        for j, part in enumerate(parts):
            if draw(st.booleans()):
                ctl = draw(st.sampled_from([0x8, 0x9, 0xA]))
                stream += frame(draw(st.binary(max_size=125)), ctl, key=draw(keys))
            opcode = (1 + i % 2) if j == 0 else 0
            stream += frame(part, opcode, fin=j == len(parts) - 1, key=draw(keys))
    return messages, bytes(stream)


def feed_cut(d: WsDeframer, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pos = i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += d.feed(data[pos : pos + step])
        assert d.buffered <= 2 * MAX + 14
        pos += step
        i += 1
    return out


segments = st.lists(st.integers(1, 400), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(framed(), segments)
def test_messages_survive_any_framing_and_segmentation(
    case: tuple[list[bytes], bytes], cuts: list[int]
) -> None:
    messages, stream = case
    d = WsDeframer(MAX)
    assert feed_cut(d, stream, cuts) == messages
    assert d.errors == {} and d.buffered == 0


@settings(max_examples=200, deadline=None)
@given(framed(), st.data())
def test_truncated_stream_gives_a_prefix(
    case: tuple[list[bytes], bytes], data: st.DataObject
) -> None:
    messages, stream = case
    cut = data.draw(st.integers(0, len(stream)))
    got = WsDeframer(MAX).feed(stream[:cut])
    assert got == messages[: len(got)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    _, stream = draw(framed())
    data = bytearray(stream)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[pos : pos + draw(st.integers(1, 12))]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=4096), mutated()), segments)
def test_garbage_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    d = WsDeframer(MAX)
    for msg in feed_cut(d, data, cuts):
        assert len(msg) <= MAX
    assert set(d.errors) <= set(WS_PARSE_REASONS)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.one_of(st.binary(max_size=2048), mutated()), segments)
def test_sip_framer_counts_only_known_reasons(head: bytes, data: bytes, cuts: list[int]) -> None:
    framer = WsSipFramer(request=False)
    stream = b"HTTP/1.1 101 Switching Protocols\r\n" + head + b"\r\n\r\n" + data
    pos = i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        framer.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert set(framer.errors) <= set(WS_PARSE_REASONS) | set(SIP_PARSE_REASONS)
