"""SDP parsing (endpoints, codecs, hold) and number extraction / classification."""

from __future__ import annotations

import pydantic
import pytest

from trafficguard.voip.numbers import NumberClassifier, NumberPlan, extract_user
from trafficguard.voip.sdp import STATIC_PAYLOAD_TYPES, parse_sdp

SDP = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 192.168.1.2\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.168.1.2\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/AVP 8 0 18 101 96\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=rtpmap:96 +4915112345678/8000\r\n"  # free text from the wire must not survive
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"m=video 0 RTP/AVP 34\r\n"
    b"m=audio 40000 RTP/SAVP 0\r\n"
    b"c=IN IP6 2001:DB8::1\r\n"
    b"a=inactive\r\n"
)


def test_parse_sdp_media_and_codecs() -> None:
    info = parse_sdp(SDP)
    assert info.address == "192.168.1.2" and info.direction == "sendrecv"
    audio, video, audio2 = info.media
    assert (audio.media, audio.port, audio.proto, audio.payload_types) == (
        "audio",
        30000,
        "RTP/AVP",
        (8, 0, 18, 101, 96),
    )
    assert audio.codecs() == ["PCMA", "PCMU", "G729", "telephone-event", "other"]
    assert audio.ptime_ms == 20 and audio.direction == "sendrecv"
    assert (video.port, video.endpoint()) == (0, "")
    assert audio2.address == "2001:db8::1" and audio2.direction == "inactive"
    assert info.endpoints() == ["192.168.1.2:30000", "[2001:db8::1]:40000"]
    assert info.codecs() == ["PCMA", "PCMU", "G729", "telephone-event", "other"]
    assert not info.on_hold  # one audio stream still sendrecv
    assert b"4915112345678" not in repr(info).encode()


@pytest.mark.parametrize(
    ("body", "held"),
    [
        (b"c=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n", True),
        (b"c=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 4000 RTP/AVP 0\r\n", True),
        (b"c=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n", True),  # RFC 2543 hold
        (b"c=IN IP4 10.0.0.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n", False),
        (b"c=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n", False),
    ],
)
def test_hold_detection(body: bytes, held: bool) -> None:
    assert parse_sdp(body).on_hold is held


def test_parse_sdp_garbage_never_raises() -> None:
    for body in (
        b"",
        b"\xff\xfe\x00",
        b"m=\r\nc=IN IP4 nonsense\r\nm=audio x y\r\n",
        b"m=audio 99999 RTP/AVP 0\r\n",
        b"c=IN IP4 host.example.net\r\nm=audio 1 RTP/AVP 0",
    ):
        info = parse_sdp(body)
        assert all(m.address == "" or m.address[0].isdigit() for m in info.media)


def test_static_payload_types() -> None:
    assert STATIC_PAYLOAD_TYPES[0] == ("PCMU", 8000)
    assert STATIC_PAYLOAD_TYPES[8] == ("PCMA", 8000)
    assert STATIC_PAYLOAD_TYPES[9] == ("G722", 8000)
    assert STATIC_PAYLOAD_TYPES[18] == ("G729", 8000)
    assert STATIC_PAYLOAD_TYPES[3] == ("GSM", 8000)
    assert STATIC_PAYLOAD_TYPES[4] == ("G723", 8000)


@pytest.mark.parametrize(
    ("value", "user"),
    [
        ('"Alice" <sip:alice@example.com>;tag=1928301774', "alice"),
        ("<sip:+1-555-0100@example.com;user=phone>", "+1-555-0100"),
        ("sip:bob:secret@example.com;transport=tcp", "bob"),
        ("sips:%2B4930123@example.com", "+4930123"),
        ("tel:+1-201-555-0123;phone-context=example.com", "+1-201-555-0123"),
        ("<tel:911>", "911"),
        ("sip:example.com", ""),
        ("mailto:a@b", ""),
        ("garbage", ""),
        ("<sip:alice;day=tuesday@example.com>", "alice"),  # user-params (§19.1.1)
    ],
)
def test_extract_user(value: str, user: str) -> None:
    assert extract_user(value) == user


@pytest.mark.parametrize(
    ("user", "cls", "canonical"),
    [
        ("+49 30 1234567", "international", "+49301234567"),
        ("0049301234567", "international", "+49301234567"),
        ("030-1234567", "domestic", "0301234567"),
        ("112", "emergency", "112"),
        ("911", "emergency", "911"),
        ("+112", "international", "+112"),
        ("0900123456", "premium", "0900123456"),
        ("1-900-555-1234", "premium", "19005551234"),
        ("+1 900 555 1234", "premium", "+19005551234"),
        ("12345", "short_code", "12345"),
        ("*67", "short_code", "*67"),
        ("alice", "non_numeric", "alice"),
        ("", "unknown", ""),
        ("(  )", "unknown", ""),
    ],
)
def test_default_plan(user: str, cls: str, canonical: str) -> None:
    assert NumberClassifier().classify(user) == (cls, canonical)


def test_country_code_plan() -> None:
    plan = NumberPlan(country_code="49", premium_prefixes=("0900", "+49900"))
    c = NumberClassifier(plan)
    assert c.classify("030 1234567") == ("domestic", "+49301234567")
    assert c.classify("+49301234567") == ("domestic", "+49301234567")
    assert c.classify("+33123456789") == ("international", "+33123456789")
    assert c.classify("0900 123456") == ("premium", "+49900123456")
    assert c.classify("+49 900 123456") == ("premium", "+49900123456")


def test_number_plan_forbids_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError):
        NumberPlan.model_validate({"premium": ["900"]})
    with pytest.raises(pydantic.ValidationError):
        NumberPlan(country_code="abc")
