"""Random and mutated bytes into the SIP parser and framer: only counted errors, bounded."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trafficguard.voip.sdp import parse_sdp
from trafficguard.voip.sip import (
    SIP_PARSE_REASONS,
    SipParseError,
    SipStreamFramer,
    parse_sip,
    parse_sip_datagram,
)

SEED = (
    b"INVITE sip:+4930123456@voip.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.168.1.2:5060;branch=z9hG4bK-1\r\n"
    b"f: <sip:alice@example.net>;tag=1\r\nt: <sip:bob@example.net>\r\n"
    b"i: abc@192.168.1.2\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"l: 51\r\n\r\n"
    b"v=0\r\nc=IN IP4 192.168.1.2\r\nm=audio 4000 RTP/AVP 0\r\n"
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED * draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


inputs = st.one_of(st.binary(max_size=2048), mutated())


@settings(max_examples=400, deadline=None)
@given(inputs)
@example(b"A : SIP/2.0\n*:\ni:\x00\nCSeq:0 \x00\nl:\xb2")  # "\xb2" decodes to a Unicode digit
def test_parse_sip_only_raises_counted_reasons(data: bytes) -> None:
    try:
        msg = parse_sip(data)
    except SipParseError as exc:
        assert exc.reason in SIP_PARSE_REASONS
    else:
        if msg is not None:
            assert msg.call_id and msg.cseq >= 0
            parse_sdp(msg.body)
    _, reason = parse_sip_datagram(data)
    assert reason is None or reason in SIP_PARSE_REASONS


@settings(max_examples=300, deadline=None)
@given(inputs, st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_framer_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    framer = SipStreamFramer(max_header_bytes=512, max_body_bytes=256)
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        framer.feed(data[pos : pos + step])
        assert framer.buffered <= framer.max_buffer
        pos += step
        i += 1
    assert set(framer.errors) <= set(SIP_PARSE_REASONS)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_framer_segmentation_does_not_change_messages(cuts: list[int]) -> None:
    stream = SEED * 4
    whole = SipStreamFramer().feed(stream)
    framer = SipStreamFramer()
    got = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got.extend(framer.feed(stream[pos : pos + step]))
        pos += step
        i += 1
    assert [(m.method, m.cseq, m.body) for m in got] == [(m.method, m.cseq, m.body) for m in whole]
    assert len(got) == 4 and framer.errors == {}
