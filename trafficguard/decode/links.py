"""Link-layer headers: where the network layer starts and what it is.

Each link type is reduced to ``(kind, offset)``: ``kind`` is an ethertype (>= 0x0600)
or one of the negative pseudo-kinds below, so the decoder has one dispatch table for
link payloads, Ethernet/VLAN payloads and tunnel payloads alike.
"""

from __future__ import annotations

from struct import Struct
from typing import Final

from trafficguard.capture import frames
from trafficguard.decode import reasons
from trafficguard.errors import DecodeError

# Pseudo-kinds (negative, so they never collide with an ethertype or an 802.3 length).
KIND_IP: Final = -1  # IPv4 or IPv6, the version nibble decides
KIND_LLC: Final = -2  # 802.3 length frame / SLL 802.2 protocol: an LLC header follows
KIND_OTHER_FAMILY: Final = -3  # loopback address family that is not IP
KIND_PPP_CONTROL: Final = -4  # PPP protocol that is not IPv4/IPv6
KIND_NONE: Final = -5  # tunnel header that does not decapsulate (the outer packet stands)

ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD
ETH_TEB: Final = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows

_U16: Final = Struct("!H")
_AF_IPV4: Final = 2
_AF_IPV6: Final = frozenset((10, 24, 28, 30))  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin
_ARPHRD_NETLINK: Final = 824


def ethertype_kind(ethertype: int) -> int:
    """Map an Ethernet type/length field to a kind (802.3 lengths become KIND_LLC)."""
    return ethertype if ethertype >= 0x0600 else KIND_LLC


def _family_kind(family: int) -> int:
    if family == _AF_IPV4:
        return ETH_IPV4
    if family in _AF_IPV6:
        return ETH_IPV6
    return KIND_OTHER_FAMILY


def link_payload(linktype: int, buf: bytes) -> tuple[int, int]:
    """Return ``(kind, offset)`` of the network layer of a frame of ``linktype``."""
    n = len(buf)
    if linktype == frames.LINKTYPE_ETHERNET:
        if n < 14:
            raise DecodeError(reasons.TRUNCATED)
        return ethertype_kind(_U16.unpack_from(buf, 12)[0]), 14
    if linktype == frames.LINKTYPE_LINUX_SLL:
        if n < 16:
            raise DecodeError(reasons.TRUNCATED)
        if _U16.unpack_from(buf, 2)[0] == _ARPHRD_NETLINK:
            return KIND_OTHER_FAMILY, 16
        return ethertype_kind(_U16.unpack_from(buf, 14)[0]), 16
    if linktype == frames.LINKTYPE_LINUX_SLL2:
        if n < 20:
            raise DecodeError(reasons.TRUNCATED)
        if _U16.unpack_from(buf, 8)[0] == _ARPHRD_NETLINK:
            return KIND_OTHER_FAMILY, 20
        return ethertype_kind(_U16.unpack_from(buf, 0)[0]), 20
    if linktype in (frames.LINKTYPE_RAW, frames.LINKTYPE_RAW_OPENBSD, frames.LINKTYPE_RAW_BSDOS):
        return KIND_IP, 0
    if linktype == frames.LINKTYPE_IPV4:
        return ETH_IPV4, 0
    if linktype == frames.LINKTYPE_IPV6:
        return ETH_IPV6, 0
    if linktype == frames.LINKTYPE_NULL:
        if n < 4:
            raise DecodeError(reasons.TRUNCATED)
        family = int.from_bytes(buf[:4], "little")
        if family > 0xFFFF:  # written by a big-endian host
            family = int.from_bytes(buf[:4], "big")
        return _family_kind(family), 4
    if linktype == frames.LINKTYPE_LOOP:
        if n < 4:
            raise DecodeError(reasons.TRUNCATED)
        return _family_kind(int.from_bytes(buf[:4], "big")), 4
    raise DecodeError(reasons.UNKNOWN_LINKTYPE)
