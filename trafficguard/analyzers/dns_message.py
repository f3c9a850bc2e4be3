"""Reads the header and first question of one DNS message, transiently.

Only what the DNS metadata analyzer needs: query/response bit, rcode, the question's
type, and the question name as a list of raw labels (the caller reduces them to features
and a keyed hash at once and keeps neither). Compression pointers are followed with a
bound, so a hostile message can neither loop nor read outside its buffer: a malformed
message gives ``None`` and is counted by the caller.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

_HEADER: Final = struct.Struct("!HHHHHH")
_QTAIL: Final = struct.Struct("!HH")
HEADER_LEN: Final = 12
MAX_POINTER_HOPS: Final = 16
MAX_NAME_LEN: Final = 255  # RFC 1035 §2.3.4 (wire form)

QTYPE_NAMES: Final[dict[int, str]] = {
    1: "a",
    2: "ns",
    5: "cname",
    6: "soa",
    10: "null",
    12: "ptr",
    15: "mx",
    16: "txt",
    28: "aaaa",
    33: "srv",
    35: "naptr",
    64: "svcb",
    65: "https",
    255: "any",
}
QTYPE_LABELS: Final = (*QTYPE_NAMES.values(), "other")  # closed set, for records and metrics
RCODE_NAMES: Final[dict[int, str]] = {
    0: "noerror",
    1: "formerr",
    2: "servfail",
    3: "nxdomain",
    4: "notimp",
    5: "refused",
}
RCODE_LABELS: Final = (*RCODE_NAMES.values(), "other")


Question = tuple[bool, int, int, tuple[bytes, ...]]
"""(is_response, rcode, qtype, labels): what the analyzer reads of one message."""


class DnsQuestion(NamedTuple):
    """The parts of one message the analyzer reads (labels are raw bytes, not kept)."""

    is_response: bool
    rcode: int
    qtype: int
    labels: list[bytes]


def _read_name(buf: bytes, off: int, end: int) -> tuple[list[bytes], int] | None:
    """Labels of the name at ``off`` and the offset after it (after the first pointer)."""
    labels: list[bytes] = []
    total = 0
    after = -1
    hops = 0
    while True:
        if off >= end:
            return None
        length = buf[off]
        if length == 0:
            return labels, (off + 1 if after < 0 else after)
        if length & 0xC0 == 0xC0:
            if off + 1 >= end or hops >= MAX_POINTER_HOPS:
                return None
            if after < 0:
                after = off + 2
            off = ((length & 0x3F) << 8) | buf[off + 1]
            hops += 1
            continue
        if length & 0xC0:
            return None  # extended label types (RFC 6891 obsoleted them): malformed here
        start = off + 1
        off = start + length
        total += length + 1
        if off > end or total > MAX_NAME_LEN:
            return None
        labels.append(buf[start:off])


def parse_question(buf: bytes, off: int, end: int) -> DnsQuestion | None:
    """The header flags and first question of the message ``buf[off:end]``, or None."""
    if end - off < HEADER_LEN:
        return None
    _, flags, qdcount, _, _, _ = _HEADER.unpack_from(buf, off)
    if qdcount == 0:
        return None
    # Pointers are relative to the start of the message: parse a view that starts there.
    msg = buf[off:end]
    name = _read_name(msg, HEADER_LEN, len(msg))
    if name is None:
        return None
    labels, after = name
    if after + 4 > len(msg):
        return None
    qtype, _ = _QTAIL.unpack_from(msg, after)
    return DnsQuestion(bool(flags & 0x8000), flags & 0x000F, qtype, labels)


def question(buf: bytes, off: int, end: int) -> Question | None:
    """``parse_question`` as a plain tuple, labels as a (hashable) tuple.

    The reference of the C core's ``dns_question``, which the analyzer uses when built.
    """
    q = parse_question(buf, off, end)
    return None if q is None else (q.is_response, q.rcode, q.qtype, tuple(q.labels))
