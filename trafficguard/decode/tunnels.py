"""Tunnel and PPP headers: validate one header, say where the inner packet starts.

Each parser takes ``(buf, off, end)`` (``off`` = first byte of the tunnel header, ``end``
= end of the carrying payload) and returns ``(encap, kind, inner_off, inner_end)``.
``kind`` is an ethertype or a pseudo-kind from ``links``; ``KIND_NONE`` means the
header is not a tunnel we strip (unknown GRE payload, GTP-U echo, VXLAN without the I
flag, ...) and the outer packet stands as the flow. A header that claims to be a tunnel
but is malformed raises ``DecodeError``.
"""

from __future__ import annotations

from struct import Struct
from typing import Final

from trafficguard.decode import reasons
from trafficguard.decode.links import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_TEB,
    KIND_IP,
    KIND_NONE,
    KIND_PPP_CONTROL,
)
from trafficguard.decode.packet import (
    ENCAP_ERSPAN,
    ENCAP_GENEVE,
    ENCAP_GRE,
    ENCAP_GTPU,
    ENCAP_VXLAN,
)
from trafficguard.errors import DecodeError

Tunnel = tuple[int, int, int, int]  # (encap, kind, inner_off, inner_end)

ETH_PPP: Final = 0x880B  # PPP in enhanced GRE (PPTP)
ETH_ERSPAN2: Final = 0x88BE
ETH_ERSPAN3: Final = 0x22EB
ETH_MPLS: Final = 0x8847
ETH_MPLS_MC: Final = 0x8848

_HH: Final = Struct("!HH")
_U16: Final = Struct("!H")
_NOT_A_TUNNEL: Final = (0, KIND_NONE, 0, 0)

_GRE_C: Final = 0x8000
_GRE_R: Final = 0x4000
_GRE_K: Final = 0x2000
_GRE_S: Final = 0x1000
_GRE_A: Final = 0x0080  # acknowledgment number present (version 1)
# GRE payloads we strip (ERSPAN and PPP are handled by name below).
_GRE_PAYLOADS: Final = frozenset((ETH_IPV4, ETH_IPV6, ETH_TEB, ETH_MPLS, ETH_MPLS_MC))
_MAX_GTP_EXT: Final = 16


def _need(off: int, n: int, end: int) -> None:
    if off + n > end:
        raise DecodeError(reasons.TRUNCATED)


def gre(buf: bytes, off: int, end: int) -> Tunnel:
    """GRE (RFC 2784/2890, version 0) incl. ERSPAN I/II/III, or enhanced GRE (v1, PPTP)."""
    _need(off, 4, end)
    flags, ptype = _HH.unpack_from(buf, off)
    version = flags & 7
    if version == 0:
        if flags & _GRE_R:  # RFC 1701 source routing: obsolete, not supported
            raise DecodeError(reasons.GRE_BAD_HEADER)
        hlen = 4
        if flags & _GRE_C:
            hlen += 4
        if flags & _GRE_K:
            hlen += 4
        if flags & _GRE_S:
            hlen += 4
        inner = off + hlen
        _need(off, hlen, end)
        if ptype in _GRE_PAYLOADS:
            return ENCAP_GRE, ptype, inner, end
        if ptype == ETH_ERSPAN2:
            if not flags & _GRE_S:  # ERSPAN type I: the Ethernet frame follows directly
                return ENCAP_ERSPAN, ETH_TEB, inner, end
            _need(inner, 8, end)
            if buf[inner] >> 4 != 1:
                raise DecodeError(reasons.ERSPAN_BAD_HEADER)
            return ENCAP_ERSPAN, ETH_TEB, inner + 8, end
        if ptype == ETH_ERSPAN3:
            return erspan3(buf, inner, end)
        return _NOT_A_TUNNEL
    if version == 1:
        if ptype != ETH_PPP or not flags & _GRE_K:
            raise DecodeError(reasons.GRE_BAD_HEADER)
        hlen = 8
        if flags & _GRE_S:
            hlen += 4
        if flags & _GRE_A:
            hlen += 4
        _need(off, hlen, end)
        length = _U16.unpack_from(buf, off + 4)[0]
        if length == 0:  # acknowledgment only
            return _NOT_A_TUNNEL
        inner = off + hlen
        return ENCAP_GRE, ETH_PPP, inner, min(end, inner + length)
    raise DecodeError(reasons.GRE_BAD_HEADER)


def erspan3(buf: bytes, off: int, end: int) -> Tunnel:
    """ERSPAN type III: 12-byte header, +8-byte platform subheader when O is set."""
    _need(off, 12, end)
    if buf[off] >> 4 != 2:
        raise DecodeError(reasons.ERSPAN_BAD_HEADER)
    word = _U16.unpack_from(buf, off + 10)[0]
    inner = off + 12
    if word & 1:
        inner += 8
    _need(inner, 0, end)
    frame_type = (word >> 10) & 0x1F
    if frame_type == 0:
        return ENCAP_ERSPAN, ETH_TEB, inner, end
    if frame_type == 2:
        return ENCAP_ERSPAN, KIND_IP, inner, end
    raise DecodeError(reasons.ERSPAN_BAD_HEADER)


def ppp(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """PPP protocol field (optional FF 03 address/control, compressed protocol)."""
    _need(off, 1, end)
    if buf[off] == 0xFF:
        _need(off, 3, end)
        if buf[off + 1] != 0x03:
            return KIND_PPP_CONTROL, off
        off += 2
    proto = buf[off]
    if proto & 1:
        off += 1
    else:
        _need(off, 2, end)
        proto = _U16.unpack_from(buf, off)[0]
        off += 2
    if proto == 0x21:
        return ETH_IPV4, off
    if proto == 0x57:
        return ETH_IPV6, off
    return KIND_PPP_CONTROL, off


def vxlan(buf: bytes, off: int, end: int) -> Tunnel:
    """VXLAN (RFC 7348): 8-byte header whose I flag says a VNI and an Ethernet frame follow."""
    if off + 8 > end or not buf[off] & 0x08:
        return _NOT_A_TUNNEL
    return ENCAP_VXLAN, ETH_TEB, off + 8, end


def geneve(buf: bytes, off: int, end: int) -> Tunnel:
    """Geneve (RFC 8926): version 0, options in 4-byte units, protocol type."""
    if off + 8 > end or buf[off] >> 6 != 0:
        return _NOT_A_TUNNEL
    ptype = _U16.unpack_from(buf, off + 2)[0]
    if ptype not in (ETH_TEB, ETH_IPV4, ETH_IPV6):
        return _NOT_A_TUNNEL
    inner = off + 8 + ((buf[off] & 0x3F) << 2)
    _need(inner, 0, end)
    return ENCAP_GENEVE, ptype, inner, end


def gtpu(buf: bytes, off: int, end: int) -> Tunnel:
    """GTP-U v1 G-PDU (3GPP TS 29.281): optional seq/N-PDU/next-ext, extension headers."""
    if off + 8 > end:
        return _NOT_A_TUNNEL
    flags = buf[off]
    if flags >> 5 != 1 or not flags & 0x10 or buf[off + 1] != 0xFF:
        return _NOT_A_TUNNEL  # not GTPv1, GTP' or a signalling message (echo, end marker)
    inner_end = min(end, off + 8 + _U16.unpack_from(buf, off + 2)[0])
    inner = off + 8
    if flags & 0x07:
        _need(off, 12, inner_end)
        next_type = buf[off + 11]
        inner = off + 12
        count = 0
        while flags & 0x04 and next_type:
            count += 1
            _need(inner, 1, inner_end)
            size = buf[inner] << 2
            if size == 0 or count > _MAX_GTP_EXT:
                raise DecodeError(reasons.GTPU_BAD_HEADER)
            _need(inner, size, inner_end)
            next_type = buf[inner + size - 1]
            inner += size
    return ENCAP_GTPU, KIND_IP, inner, inner_end
