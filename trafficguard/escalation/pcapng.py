"""Targeted packet capture (scope ``pcap``) as pcapng blocks, for the evidence store.

The first ``pcap`` item of each evidence segment starts with a Section Header Block and
an Interface Description Block (LINKTYPE_RAW, nanosecond timestamps); every item after it
is one Enhanced Packet Block holding the IP packet. Concatenating the payloads of a
grant's ``pcap`` items in order therefore gives a valid pcapng file (one section per
segment) that tshark/tcpdump read.
"""

from __future__ import annotations

import struct
from typing import Final

LINKTYPE_RAW: Final = 101
_SHB_MAGIC: Final = 0x1A2B3C4D


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def header() -> bytes:
    """Section Header Block + one Interface Description Block (raw IP, ns resolution)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", _SHB_MAGIC, 1, 0, -1))
    tsresol = struct.pack("<HHB", 9, 1, 9) + b"\x00" * 3  # if_tsresol = 10^-9
    idb = _block(1, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + tsresol + b"\x00" * 4)
    return shb + idb


def packet(ts_ns: int, ip_packet: bytes) -> bytes:
    """One Enhanced Packet Block on interface 0."""
    body = struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(ip_packet), len(ip_packet))
    return _block(6, body + _pad4(ip_packet))


def ip_bytes(data: bytes, payload_off: int, payload_len: int, ip_len: int) -> bytes | None:
    """The IP packet inside a decoded frame (the IP packet ends where its payload does)."""
    end = payload_off + payload_len
    start = end - ip_len
    if start < 0 or end > len(data) or ip_len <= 0:
        return None
    version = data[start] >> 4
    return data[start:end] if version in (4, 6) else None
