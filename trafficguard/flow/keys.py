"""Flow keys: one bytes object per flow, direction-agnostic.

The key packs ``(addr_a, addr_b, port_a, port_b, proto, vlan)`` with the two endpoints in
canonical order (the smaller ``(addr, port)`` first), so both directions of a
conversation find the same flow. A bytes key costs one allocation, hashes once (CPython
caches a bytes object's hash) and compares with one ``memcmp``; a tuple key would keep
six objects alive per flow and compare element by element. IPv4 keys are 15 bytes and
IPv6 keys 39, so the two families never collide.
"""

from __future__ import annotations

import ipaddress
import struct
from socket import AF_INET, inet_ntop
from typing import Final

KEY4: Final = struct.Struct("!4s4sHHBH")
KEY6: Final = struct.Struct("!16s16sHHBH")
KEY4_LEN: Final = KEY4.size


def make_key(src: bytes, dst: bytes, sport: int, dport: int, *, proto: int, vlan: int) -> bytes:
    """The canonical key of a packet (slow path and tests; the table inlines this)."""
    pack = KEY4.pack if len(src) == 4 else KEY6.pack
    if src < dst or (src == dst and sport <= dport):
        return pack(src, dst, sport, dport, proto, vlan)
    return pack(dst, src, dport, sport, proto, vlan)


def split_key(key: bytes) -> tuple[bytes, bytes, int, int, int, int]:
    """``(addr_a, addr_b, port_a, port_b, proto, vlan)`` back from a key."""
    unpack = KEY4.unpack if len(key) == KEY4_LEN else KEY6.unpack
    a, b, pa, pb, proto, vlan = unpack(key)
    return a, b, pa, pb, proto, vlan


def addr_text(addr: bytes) -> str:
    """Compressed text form of a 4- or 16-byte address (only when a record is built).

    IPv4 goes through ``inet_ntop`` (5x faster, same text); IPv6 through ``ipaddress``,
    whose compressed form is the documented one (e.g. for IPv4-mapped addresses).
    """
    if len(addr) == 4:
        return inet_ntop(AF_INET, addr)
    return ipaddress.ip_address(addr).compressed
