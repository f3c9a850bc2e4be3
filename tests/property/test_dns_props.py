"""The C core's DNS helpers equal their pure-Python references on hostile input.

``dns_question`` must read the same header bits, question type and labels as
``dns_message.question`` (and refuse the same messages: truncations, label and name
length limits, extended label types, compression pointers that loop, chain or point out
of bounds), and ``dns_name_features`` must give the same lengths, hash, byte histogram
(same order) and bit-identical entropy as ``dns_features.name_features``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trafficguard.analyzers.dns_features import name_features
from trafficguard.analyzers.dns_message import question
from trafficguard.fast import available

pytestmark = pytest.mark.usefixtures("fast_core")  # fails, not skips, without the core

if available():
    from trafficguard.fast._core import dns_name_features, dns_question

LABEL_BYTES = st.binary(min_size=1, max_size=70) | st.sampled_from(
    [b"www", b"Example", b"COM", b"a.b", b"xn--bcher-kva", b"\x00\xff.", b"_srv", b"-"]
)


@st.composite
def names(draw: st.DrawFn) -> bytes:
    """A wire-form name: labels (some too long or oversize in total), pointers, odd types."""
    out = b""
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind == 0:  # a compression pointer anywhere (header, itself, past the end)
            return out + struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))
        if kind == 1:  # extended label type (0x40/0x80): malformed
            return out + bytes([draw(st.sampled_from([0x40, 0x41, 0x80, 0xBF]))])
        if kind == 2:  # a length byte that overruns what follows
            return out + bytes([draw(st.integers(1, 63))])
        label = draw(LABEL_BYTES)[:63]
        out += bytes([len(label)]) + label
    return out + b"\x00"


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A buffer with one DNS message at ``off:end``, often cut, padded or mutated."""
    flags = draw(st.integers(0, 0xFFFF))
    qdcount = draw(st.sampled_from([0, 1, 1, 1, 2, 0xFFFF]))
    body = draw(names()) + struct.pack("!HH", draw(st.integers(0, 0xFFFF)), 1)
    extra = draw(st.lists(names(), max_size=3))  # pointer targets after the question
    msg = struct.pack("!HHHHHH", 0x1234, flags, qdcount, 0, 0, 0) + body + b"".join(extra)
    if draw(st.booleans()):  # flip a few bytes
        raw = bytearray(msg)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        msg = bytes(raw)
    cut = draw(st.integers(0, len(msg)))
    if draw(st.booleans()):
        msg = msg[:cut]
    pre, post = draw(st.binary(max_size=8)), draw(st.binary(max_size=8))
    return pre + msg + post, len(pre), len(pre) + len(msg)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_dns_question_matches_reference(case: tuple[bytes, int, int]) -> None:
    buf, off, end = case
    assert dns_question(buf, off, end) == question(buf, off, end)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_dns_question_on_random_bytes(buf: bytes, data: st.DataObject) -> None:
    off = data.draw(st.integers(0, len(buf)))
    end = data.draw(st.integers(off, len(buf)))
    assert dns_question(buf, off, end) == question(buf, off, end)


def test_dns_question_bounds_and_limits() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8183, 1, 0, 0, 0)
    msg = header + b"\x01a\xc0\x0c" + b"\x00\x10\x00\x01"  # pointer into the header
    assert dns_question(msg, 0, len(msg)) == question(msg, 0, len(msg))
    tail = b"\x00\x00\x01\x00\x01"  # root, qtype, qclass
    longest = header + (b"\x3f" + b"x" * 63) * 3 + b"\x3e" + b"y" * 62 + tail
    assert dns_question(longest, 0, len(longest)) is not None  # labels: 255 bytes on the wire
    over = header + (b"\x3f" + b"x" * 63) * 4 + tail
    assert dns_question(over, 0, len(over)) is None is question(over, 0, len(over))
    chain = header + b"".join(struct.pack("!H", 0xC000 | (14 + 2 * i)) for i in range(20))
    assert dns_question(chain, 0, len(chain)) is None is question(chain, 0, len(chain))
    for off, end in ((-1, 3), (3, 2), (0, len(msg) + 1)):
        with pytest.raises(ValueError, match="off"):
            dns_question(msg, off, end)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.binary(max_size=70) | LABEL_BYTES, min_size=1, max_size=10), st.data())
def test_dns_name_features_match_reference(labels: list[bytes], data: st.DataObject) -> None:
    count = data.draw(st.integers(1, len(labels)))
    native = dns_name_features(tuple(labels), count)
    python = name_features(tuple(labels), count)
    assert native == python
    assert list(native[4].items()) == list(python[4].items())  # pooled in this order
    assert native[2].hex() == python[2].hex()  # bit-identical, signed zero included


def test_dns_name_features_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count"):
        dns_name_features((b"a",), 2)
    with pytest.raises(ValueError, match="count"):
        dns_name_features((b"a",), 0)
    with pytest.raises(TypeError):
        dns_name_features((b"a", "b"), 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dns_name_features([b"a"], 1)  # type: ignore[arg-type]
