"""SIP parser and TCP framer: byte-literal messages shaped like real traffic."""

from __future__ import annotations

import pytest

from trafficguard.errors import DecodeError
from trafficguard.voip import sip
from trafficguard.voip.sip import (
    SIP_PARSE_REASONS,
    SipParseError,
    SipStreamFramer,
    parse_sip,
    parse_sip_datagram,
)

INVITE = (
    b"INVITE sip:+4930123456@voip.example.net;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK-d8754z-1;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-older, "
    b"SIP/2.0/TCP 10.0.0.9;branch=z9hG4bK-x\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Example" <sip:alice@voip.example.net>;tag=6433ef9\r\n'
    b"To: <sip:+4930123456@voip.example.net;user=phone>\r\n"
    b"Call-ID: 105090259-446faf7a@192.168.1.2\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.168.1.2:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1\r\n"
)

COMPACT = (
    b"SIP/2.0 180 Ringing\r\n"
    b"v: SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK-d8754z-1;rport=5060\r\n"
    b"f: <sip:alice@voip.example.net>;tag=6433ef9\r\n"
    b"t: <sip:+4930123456@voip.example.net>;tag=as5a1\r\n"
    b"i: 105090259-446faf7a@192.168.1.2\r\n"
    b"CSEQ: 1 INVITE\r\n"
    b"m: <sip:bob@203.0.113.5>\r\n"
    b"k: 100rel\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def test_request_fields() -> None:
    msg = parse_sip(INVITE)
    assert msg is not None
    assert msg.is_request and msg.method == "INVITE" and msg.status == 0
    assert msg.uri == "sip:+4930123456@voip.example.net;user=phone"
    assert msg.call_id == "105090259-446faf7a@192.168.1.2"
    assert msg.cseq == 1
    assert msg.from_tag == "6433ef9" and msg.to_tag == ""
    assert msg.branch == "z9hG4bK-d8754z-1"
    assert len(msg.header_values("via")) == 3  # two lines, one of them comma-joined
    assert msg.content_length == 12
    assert msg.body == b"v=0\r\no=- 1 1"[:12]
    assert msg.header("max-forwards") == "70"
    # No header value in the repr (it ends up in tracebacks).
    assert "alice" not in repr(msg) and "4930123456" not in repr(msg)


def test_compact_forms_and_case_insensitive_names() -> None:
    msg = parse_sip(COMPACT)
    assert msg is not None
    assert msg.status == 180 and msg.method == "INVITE" and not msg.is_request
    assert msg.call_id == "105090259-446faf7a@192.168.1.2"
    assert msg.to_tag == "as5a1" and msg.from_tag == "6433ef9"
    assert msg.header("contact") == "<sip:bob@203.0.113.5>"
    assert msg.header("supported") == "100rel"
    assert msg.content_length == 0 and msg.body == b""
    assert msg.branch == "z9hG4bK-d8754z-1"


def test_folded_header_lines_and_bare_lf() -> None:
    raw = (
        b"OPTIONS sip:gw.example.net SIP/2.0\n"
        b"Via: SIP/2.0/UDP 10.1.1.1:5060\n"
        b"  ;branch=z9hG4bKfold\n"
        b"Subject: first part\n"
        b"\tsecond part\n"
        b"From: <sip:mon@example.net>;tag=1\n"
        b"To: <sip:gw.example.net>\n"
        b"Call-ID: fold@x\n"
        b"CSeq: 7 OPTIONS\n"
        b"\n"
    )
    msg = parse_sip(raw)
    assert msg is not None
    assert msg.header("subject") == "first part second part"
    assert msg.branch == "z9hG4bKfold"
    assert msg.cseq == 7 and msg.method == "OPTIONS"


def test_display_name_with_comma_in_contact_is_not_split() -> None:
    raw = (
        b"REGISTER sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.net>;tag=1\r\nTo: <sip:a@example.net>\r\nCall-ID: c\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b'Contact: "Doe, John" <sip:a@10.0.0.1>;expires=60, <sip:a@10.0.0.2>\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_sip(raw)
    assert msg is not None
    assert msg.header_values("contact") == [
        '"Doe, John" <sip:a@10.0.0.1>;expires=60',
        "<sip:a@10.0.0.2>",
    ]


def test_keepalive_is_none() -> None:
    assert parse_sip(b"\r\n\r\n") is None
    assert parse_sip(b"") is None
    assert parse_sip_datagram(b"\r\n") == ([], None)


def test_udp_without_content_length_takes_rest_of_datagram() -> None:
    raw = INVITE.replace(b"Content-Length: 12\r\n", b"")
    msg = parse_sip(raw)
    assert msg is not None and msg.content_length is None
    assert msg.body == b"v=0\r\no=- 1 1\r\n"


def test_several_messages_in_one_datagram() -> None:
    msgs, reason = parse_sip_datagram(COMPACT + b"\r\n" + INVITE)
    assert reason is None
    assert [m.status for m in msgs] == [180, 0]
    msgs, reason = parse_sip_datagram(COMPACT + b"\x16\x03\x01garbage\r\n\r\n")
    assert [m.status for m in msgs] == [180]
    assert reason == sip.TRAILING_GARBAGE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", sip.NOT_SIP),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", sip.NOT_SIP),
        (b"SIP/2.0 99 Odd\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", sip.BAD_STATUS_CODE),
        (b"SIP/3.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", sip.BAD_START_LINE),
        (b"invite sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", sip.BAD_START_LINE),
        (b"INVITE nocolon SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", sip.BAD_START_LINE),
        (b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", sip.BAD_HEADER_LINE),
        (b"INVITE sip:a@b SIP/2.0\r\n folded first\r\n\r\n", sip.BAD_HEADER_LINE),
        (b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n", sip.MISSING_HEADER),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: one INVITE\r\n\r\n", sip.BAD_CSEQ),
        (b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 invite\r\n\r\n", sip.BAD_CSEQ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nl: -1\r\n\r\n",
            sip.BAD_CONTENT_LENGTH,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nl: 1\r\nl: 2\r\n\r\nab",
            sip.BAD_CONTENT_LENGTH,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nl: 50\r\n\r\nshort",
            sip.TRUNCATED_BODY,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
            + b"X-Pad: y\r\n" * 300
            + b"\r\n",
            sip.TOO_MANY_HEADERS,
        ),
    ],
)
def test_garbage_raises_a_counted_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_sip(raw)
    assert info.value.reason == reason
    assert reason in SIP_PARSE_REASONS
    assert isinstance(info.value, DecodeError)  # counted by the packet loop like decode errors


def test_oversize_header_section() -> None:
    raw = b"INVITE sip:a@b SIP/2.0\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    with pytest.raises(SipParseError) as info:
        parse_sip(raw)
    assert info.value.reason == sip.OVERSIZE


# -- TCP framing ----------------------------------------------------------------------------
TCP_MSG = INVITE.replace(b"SIP/2.0/UDP 192.168.1.2", b"SIP/2.0/TCP 192.168.1.2")


def test_framer_several_messages_in_one_segment() -> None:
    framer = SipStreamFramer()
    out = framer.feed(TCP_MSG + COMPACT + b"\r\n\r\n" + TCP_MSG)  # with a CRLF keep-alive
    assert [m.status for m in out] == [0, 180, 0]
    assert out[0].body == out[2].body == b"v=0\r\no=- 1 1"
    assert framer.buffered == 0 and framer.errors == {} and framer.messages == 3


@pytest.mark.parametrize("cut", [1, 5, 60, len(TCP_MSG) - 14, len(TCP_MSG) - 12, len(TCP_MSG) - 3])
def test_framer_message_split_across_segments(cut: int) -> None:
    framer = SipStreamFramer()
    assert framer.feed(TCP_MSG[:cut]) == []
    out = framer.feed(TCP_MSG[cut:] + COMPACT[:10])
    assert len(out) == 1 and out[0].body == b"v=0\r\no=- 1 1"
    out = framer.feed(COMPACT[10:])
    assert len(out) == 1 and out[0].status == 180
    assert framer.buffered == 0


def test_framer_byte_by_byte() -> None:
    framer = SipStreamFramer()
    stream = (TCP_MSG + COMPACT) * 3
    got = []
    for i in range(len(stream)):
        got.extend(framer.feed(stream[i : i + 1]))
    assert [m.status for m in got] == [0, 180] * 3
    assert framer.errors == {}


def test_framer_resyncs_after_garbage_head() -> None:
    framer = SipStreamFramer()
    out = framer.feed(b"HELLO THERE\r\nfoo\r\n\r\n" + TCP_MSG)
    assert len(out) == 1 and out[0].method == "INVITE"
    assert framer.errors == {sip.NOT_SIP: 1}


def test_framer_bounds_header_section() -> None:
    framer = SipStreamFramer(max_header_bytes=1024, max_body_bytes=1024)
    assert framer.feed(b"x" * 5000) == []
    assert framer.buffered <= framer.max_buffer
    assert framer.errors == {sip.OVERSIZE: 1}
    out = framer.feed(b"\r\n\r\n" + TCP_MSG)  # the end of the garbage, then a real message
    assert [m.method for m in out] == ["INVITE"]


def test_framer_skips_oversize_body_by_count() -> None:
    framer = SipStreamFramer(max_header_bytes=4096, max_body_bytes=100)
    big = TCP_MSG.replace(b"Content-Length: 12", b"Content-Length: 1000")
    assert framer.feed(big) == []  # 14 bytes after the head present, 986 still to skip
    assert framer.buffered == 0
    assert framer.feed(b"z" * 900) == []
    out = framer.feed(b"z" * 86 + TCP_MSG)
    assert [m.method for m in out] == ["INVITE"]
    assert framer.errors == {sip.OVERSIZE: 1}


def test_framer_holds_incomplete_body_only_within_bound() -> None:
    framer = SipStreamFramer(max_header_bytes=4096, max_body_bytes=4096)
    msg = TCP_MSG.replace(b"Content-Length: 12", b"Content-Length: 4000")
    framer.feed(msg)
    assert 0 < framer.buffered <= framer.max_buffer
    out = framer.feed(b"b" * (4000 - 12))
    assert len(out) == 1 and len(out[0].body) == 4000
