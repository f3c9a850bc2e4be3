"""Frames to packets: link layers, VLAN/MPLS/PPPoE, IPv4/IPv6, tunnels, fragments, L4.

``Decoder.decode_batch`` is the one place that catches decoding errors and counts them
by reason. It runs a straight-line fast path for the common frame (Ethernet → IPv4
without options, not fragmented → TCP, or UDP not on a tunnel port) and hands every
other frame to the general walk, which returns a ``Packet``, a skip kind (``str``) or
``None`` (the frame went into the fragment buffer, or was counted there as dropped).

Accounting: every frame lands in exactly one bucket, weighted by frames, so
``frames_in == accounted()`` always holds (see ``accounted``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from struct import Struct
from typing import Final

from trafficguard.capture.frames import LINKTYPE_ETHERNET, Frame
from trafficguard.config import NS_PER_S, DecodeConfig
from trafficguard.decode import reasons, tunnels
from trafficguard.decode.fragments import FragmentKey, Reassembler
from trafficguard.decode.links import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_TEB,
    KIND_IP,
    KIND_LLC,
    KIND_NONE,
    KIND_OTHER_FAMILY,
    KIND_PPP_CONTROL,
    ethertype_kind,
    link_payload,
)
from trafficguard.decode.packet import ENCAP_IPIP, ENCAP_MPLS, ENCAP_PPPOE, Packet
from trafficguard.errors import DecodeError

Result = Packet | str | None
_Handler = Callable[[bytes, int, int, "_Ctx"], Result]

# Ethernet(12..14) + IPv4 without options(14..34) + the first 14 bytes of TCP/UDP.
_FAST: Final = Struct("!HBxHxxHxBxx4s4sHHH6xBB")
_FAST_MIN: Final = 14 + 20 + 14
_IP4: Final = Struct("!BxHHHxBxx4s4s")
_IP6: Final = Struct("!IHBx16s16s")
_FRAG6: Final = Struct("!HI")
_TCP: Final = Struct("!HH8xBB")
_UDP: Final = Struct("!HHH")
_HH: Final = Struct("!HH")
_U16: Final = Struct("!H")
_U32: Final = Struct("!I")

_VLAN_TPIDS: Final = (0x8100, 0x88A8, 0x9100)
_MAX_VLAN_TAGS: Final = 8
_MAX_MPLS_LABELS: Final = 16
_MAX_IPV6_EXT: Final = 16
_IPV6_EXT: Final = frozenset((0, 43, 44, 51, 60, 135))
_ICMP: Final = frozenset((1, 58))
_STP_SAP: Final = 0x42

_SKIP_BY_TYPE: Final = {
    0x0806: reasons.SKIP_ARP,
    0x8035: reasons.SKIP_ARP,
    0x88CC: reasons.SKIP_LLDP,
    0x8863: reasons.SKIP_PPPOE_DISCOVERY,
    0x888E: reasons.SKIP_EAPOL,
    0x8809: reasons.SKIP_SLOW_PROTOCOLS,
    0x8808: reasons.SKIP_MAC_CONTROL,
    KIND_OTHER_FAMILY: reasons.SKIP_OTHER_FAMILY,
    KIND_PPP_CONTROL: reasons.SKIP_PPP_CONTROL,
}


class _Ctx:
    """Per-frame walk state, reused for every slow-path frame (no allocation)."""

    __slots__ = (
        "clipped",
        "depth",
        "dst",
        "encap",
        "frames",
        "ip_len",
        "ip_off",
        "snapped",
        "src",
        "ts_ns",
        "version",
        "vlan",
        "wire_len",
    )

    def __init__(self) -> None:
        self.reset(0, 0, snapped=False)

    def reset(self, ts_ns: int, wire_len: int, snapped: bool) -> None:
        self.ts_ns = ts_ns
        self.wire_len = wire_len
        self.frames = 1  # frames this unit stands for (>1 after reassembly)
        self.vlan = -1  # -1 until the outermost tag is seen
        self.encap = 0
        self.depth = 0  # tunnels stripped so far
        self.snapped = snapped  # caplen < wire length
        self.clipped = False  # an IP/UDP length was cut short by the snap length
        # the innermost IP header seen so far
        self.version = 0
        self.src = self.dst = b""
        self.ip_len = 0
        self.ip_off = 0


class Decoder:
    """Decodes batches of frames into ``Packet`` objects and counts everything else."""

    def __init__(self, cfg: DecodeConfig) -> None:
        self.errors: dict[str, int] = dict.fromkeys(reasons.DECODE_REASONS, 0)
        self.skipped: dict[str, int] = dict.fromkeys(reasons.SKIP_REASONS, 0)
        self.frames_in = 0
        self._max_depth = cfg.max_tunnel_depth
        self._frags = Reassembler(cfg.fragments, self.errors)
        self._expire_every_ns = NS_PER_S
        self._next_expire_ns = 0
        self._ctx = _Ctx()
        udp: dict[int, Callable[[bytes, int, int], tunnels.Tunnel]] = {}
        udp.update(dict.fromkeys(cfg.gtpu_ports, tunnels.gtpu))
        udp.update(dict.fromkeys(cfg.geneve_ports, tunnels.geneve))
        udp.update(dict.fromkeys(cfg.vxlan_ports, tunnels.vxlan))
        self._udp_tunnels = udp
        self._udp_tunnel_ports = frozenset(udp)
        by_type: dict[int, _Handler] = {
            ETH_IPV4: self._ipv4,
            ETH_IPV6: self._ipv6,
            KIND_IP: self._ip_any,
            ETH_TEB: self._ethernet,
            tunnels.ETH_MPLS: self._mpls,
            tunnels.ETH_MPLS_MC: self._mpls,
            0x8864: self._pppoe,
            tunnels.ETH_PPP: self._ppp,
            KIND_LLC: self._llc,
        }
        for tpid in _VLAN_TPIDS:
            by_type[tpid] = self._vlan
        self._by_type = by_type

    # -- accounting --------------------------------------------------------------------
    @property
    def fragments_held(self) -> int:
        """Frames whose fragments are buffered, waiting for the rest of their datagram."""
        return self._frags.held_frames

    @property
    def fragment_bytes_held(self) -> int:
        return self._frags.held_bytes

    @property
    def datagrams_held(self) -> int:
        return len(self._frags)

    def accounted(self, packets: int) -> int:
        """Frames accounted for, given the summed ``Packet.frames`` returned so far.

        Equals ``frames_in`` at every batch boundary: decoded + held + errors + skipped.
        """
        return (
            packets + self.fragments_held + sum(self.errors.values()) + sum(self.skipped.values())
        )

    def expire(self, now_ns: int) -> None:
        """Drop incomplete datagrams older than the fragment timeout (packet time)."""
        self._frags.expire(now_ns)
        self._next_expire_ns = now_ns + self._expire_every_ns

    def expire_if_due(self, now_ns: int) -> None:
        """``expire`` when fragments are held and the expiry interval has passed."""
        if self._frags.held_frames and now_ns >= self._next_expire_ns:
            self.expire(now_ns)

    # -- the packet loop ---------------------------------------------------------------
    def decode_batch(self, frames: list[Frame], expire: bool = True) -> list[Packet]:
        """Decode a batch; the one place decode errors are caught and counted.

        ``expire=False`` leaves fragment expiry to the caller (``expire_if_due``), for a
        caller that decodes one batch's frames one at a time (the fast path).
        """
        out: list[Packet] = []
        append = out.append
        fast = _FAST.unpack_from
        tunnel_ports = self._udp_tunnel_ports
        slow = self._slow
        errors = self.errors
        skipped = self.skipped
        ctx = self._ctx
        eth = LINKTYPE_ETHERNET
        self.frames_in += len(frames)
        for ts, lt, data, wl in frames:
            try:
                # fmt: off
                if lt == eth and len(data) >= _FAST_MIN:
                    (et, vihl, tot, frag, proto, src, dst,
                     sport, dport, ulen, doff, flags) = fast(data, 12)
                    if (et == 0x0800 and vihl == 0x45 and not frag & 0x3FFF
                            and 20 <= tot <= len(data) - 14):
                        if proto == 6:
                            poff = 34 + ((doff >> 4) << 2)
                            if 54 <= poff <= tot + 14:
                                append(Packet(ts, wl, 0, 4, src, dst, 6, sport, dport, flags,
                                              data, poff, tot + 14 - poff, tot))
                                continue
                        elif proto == 17 and 8 <= ulen <= tot - 20 and dport not in tunnel_ports:
                            append(Packet(ts, wl, 0, 4, src, dst, 17, sport, dport, 0,
                                          data, 42, ulen - 8, tot))
                            continue
                # fmt: on
                result = slow(ts, lt, data, wl)
                if result is None:
                    continue
                if isinstance(result, str):
                    skipped[result] += ctx.frames
                else:
                    append(result)
            except DecodeError as err:
                errors[err.reason] += ctx.frames
            except (struct.error, IndexError):
                errors[reasons.TRUNCATED] += ctx.frames
            except ValueError:
                errors[reasons.MALFORMED] += ctx.frames
        if expire and frames:
            self.expire_if_due(frames[-1][0])
        return out

    # -- the general walk --------------------------------------------------------------
    def _slow(self, ts_ns: int, linktype: int, data: bytes, wire_len: int) -> Result:
        ctx = self._ctx
        ctx.reset(ts_ns, wire_len, len(data) < wire_len)
        kind, off = link_payload(linktype, data)
        return self._dispatch(kind, data, off, len(data), ctx)

    def _dispatch(self, kind: int, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        handler = self._by_type.get(kind)
        if handler is not None:
            return handler(buf, off, end, ctx)
        return _SKIP_BY_TYPE.get(kind, reasons.SKIP_OTHER_ETHERTYPE)

    def _ethernet(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        if off + 14 > end:
            raise DecodeError(reasons.TRUNCATED)
        kind = ethertype_kind(_U16.unpack_from(buf, off + 12)[0])
        return self._dispatch(kind, buf, off + 14, end, ctx)

    def _llc(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        if off < end and buf[off] == _STP_SAP:
            return reasons.SKIP_STP
        return reasons.SKIP_LLC

    def _vlan(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        """802.1Q/802.1ad/QinQ tags (entered after the first TPID was read)."""
        for _ in range(_MAX_VLAN_TAGS):
            if off + 4 > end:
                raise DecodeError(reasons.TRUNCATED)
            tci, kind = _HH.unpack_from(buf, off)
            off += 4
            if ctx.vlan < 0:
                ctx.vlan = tci & 0x0FFF
            if kind not in _VLAN_TPIDS:
                return self._dispatch(ethertype_kind(kind), buf, off, end, ctx)
        raise DecodeError(reasons.VLAN_TOO_DEEP)

    def _mpls(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        """Walk the label stack to bottom-of-stack; IP by nibble, 0 = pseudowire + CW."""
        if not ctx.encap:
            ctx.encap = ENCAP_MPLS
        for _ in range(_MAX_MPLS_LABELS):
            if off + 4 > end:
                raise DecodeError(reasons.TRUNCATED)
            entry = _U32.unpack_from(buf, off)[0]
            off += 4
            if entry & 0x100:
                if off >= end:
                    raise DecodeError(reasons.TRUNCATED)
                nibble = buf[off] >> 4
                if nibble == 4:
                    return self._ipv4(buf, off, end, ctx)
                if nibble == 6:
                    return self._ipv6(buf, off, end, ctx)
                if nibble == 0:  # Ethernet pseudowire with its 4-byte control word
                    return self._ethernet(buf, off + 4, end, ctx)
                return reasons.SKIP_MPLS_OTHER
        raise DecodeError(reasons.MPLS_TOO_DEEP)

    def _pppoe(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        """PPPoE session stage: 6-byte header, then a PPP protocol field."""
        if off + 6 > end:
            raise DecodeError(reasons.TRUNCATED)
        if buf[off] != 0x11 or buf[off + 1] != 0:
            raise DecodeError(reasons.PPPOE_BAD_HEADER)
        length = _U16.unpack_from(buf, off + 4)[0]
        if not ctx.encap:
            ctx.encap = ENCAP_PPPOE
        return self._ppp(buf, off + 6, min(end, off + 6 + length), ctx)

    def _ppp(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        kind, inner = tunnels.ppp(buf, off, end)
        return self._dispatch(kind, buf, inner, end, ctx)

    # -- IP ------------------------------------------------------------------------------
    def _ip_any(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        if off >= end:
            raise DecodeError(reasons.TRUNCATED)
        version = buf[off] >> 4
        if version == 4:
            return self._ipv4(buf, off, end, ctx)
        if version == 6:
            return self._ipv6(buf, off, end, ctx)
        raise DecodeError(reasons.BAD_IP_VERSION)

    def _ipv4(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        if off + 20 > end:
            raise DecodeError(reasons.TRUNCATED)
        vihl, total, ident, frag, proto, src, dst = _IP4.unpack_from(buf, off)
        if vihl >> 4 != 4:
            raise DecodeError(reasons.BAD_IP_VERSION)
        hlen = (vihl & 15) << 2
        if hlen < 20:
            raise DecodeError(reasons.IPV4_BAD_HEADER_LEN)
        if total < hlen:
            raise DecodeError(reasons.IPV4_BAD_LENGTH)
        ip_end = _clip(off + total, end, buf, ctx, reasons.IPV4_BAD_LENGTH)
        l4 = off + hlen
        if l4 > ip_end:
            raise DecodeError(reasons.TRUNCATED)
        ctx.version = 4
        ctx.src = src
        ctx.dst = dst
        ctx.ip_len = total
        if frag & 0x3FFF:
            return self._fragment(
                (4, src, dst, proto, ident),
                buf[l4:ip_end],
                ctx,
                start=(frag & 0x1FFF) << 3,
                more=bool(frag & 0x2000),
                hdr_len=hlen,
            )
        return self._l4(proto, buf, l4, ip_end, ctx)

    def _ipv6(self, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        if off + 40 > end:
            raise DecodeError(reasons.TRUNCATED)
        vtcfl, plen, nh, src, dst = _IP6.unpack_from(buf, off)
        if vtcfl >> 28 != 6:
            raise DecodeError(reasons.BAD_IP_VERSION)
        ip_end = _clip(off + 40 + plen, end, buf, ctx, reasons.IPV6_BAD_LENGTH)
        ctx.version = 6
        ctx.src = src
        ctx.dst = dst
        ctx.ip_len = 40 + plen
        ctx.ip_off = off
        return self._ipv6_ext(nh, buf, off + 40, ip_end, ctx)

    def _ipv6_ext(self, nh: int, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        """Walk extension headers (bounded) to the upper layer; 59/50 end the walk."""
        count = 0
        while nh in _IPV6_EXT:
            count += 1
            if count > _MAX_IPV6_EXT:
                raise DecodeError(reasons.IPV6_TOO_MANY_EXT)
            if off + 8 > end:
                raise DecodeError(reasons.TRUNCATED)
            nxt = buf[off]
            if nh == 44:
                offset_flags, ident = _FRAG6.unpack_from(buf, off + 2)
                if offset_flags & 0xFFF9:  # offset != 0 or M set: a real fragment
                    return self._fragment(
                        (6, ctx.src, ctx.dst, nxt, ident),
                        buf[off + 8 : end],
                        ctx,
                        start=offset_flags & 0xFFF8,
                        more=bool(offset_flags & 1),
                        hdr_len=off + 8 - ctx.ip_off,
                    )
                size = 8  # atomic fragment (RFC 6946): nothing to reassemble
            elif nh == 51:
                size = (buf[off + 1] + 2) << 2
            else:
                size = (buf[off + 1] + 1) << 3
            off += size
            if off > end:
                raise DecodeError(reasons.TRUNCATED)
            nh = nxt
        return self._l4(nh, buf, off, end, ctx)

    def _fragment(
        self,
        key: FragmentKey,
        chunk: bytes,
        ctx: _Ctx,
        *,
        start: int,
        more: bool,
        hdr_len: int,
    ) -> Result:
        """Hand a fragment to the reassembler; decode the datagram once it is complete."""
        if ctx.clipped:  # a snapped fragment can never be reassembled
            raise DecodeError(reasons.TRUNCATED)
        done = self._frags.add(
            key, start, chunk, more=more, ts_ns=ctx.ts_ns, frames=ctx.frames,
            wire_len=ctx.wire_len,
        )  # fmt: skip
        if done is None:
            return None
        data, ctx.frames, ctx.wire_len = done
        ctx.ip_len = hdr_len + len(data)
        ctx.ip_off = 0
        if key[0] == 4:
            return self._l4(key[3], data, 0, len(data), ctx)
        return self._ipv6_ext(key[3], data, 0, len(data), ctx)

    # -- L4 and tunnels ------------------------------------------------------------------
    def _l4(self, proto: int, buf: bytes, off: int, end: int, ctx: _Ctx) -> Result:
        """TCP/UDP/ICMP/SCTP ports and payload bounds; IP-in-IP, GRE and UDP tunnels."""
        sport = dport = flags = 0
        icmp_type = -1
        payload = off
        if proto == 6:
            if off + 20 > end:
                raise DecodeError(reasons.TRUNCATED)
            sport, dport, doff, flags = _TCP.unpack_from(buf, off)
            payload = off + ((doff >> 4) << 2)
            if payload < off + 20:
                raise DecodeError(reasons.TCP_BAD_HEADER_LEN)
            if payload > end:
                if not ctx.clipped:
                    raise DecodeError(reasons.TCP_BAD_HEADER_LEN)
                payload = end
        elif proto == 17:
            if off + 8 > end:
                raise DecodeError(reasons.TRUNCATED)
            sport, dport, ulen = _UDP.unpack_from(buf, off)
            if ulen < 8:
                raise DecodeError(reasons.UDP_BAD_LENGTH)
            if off + ulen <= end:
                end = off + ulen
            elif not ctx.clipped:
                raise DecodeError(reasons.UDP_BAD_LENGTH)
            payload = off + 8
            parse = self._udp_tunnels.get(dport)
            if parse is not None:
                encap, kind, inner, inner_end = parse(buf, payload, end)
                if kind != KIND_NONE:
                    self._enter(encap, ctx)
                    return self._dispatch(kind, buf, inner, inner_end, ctx)
        elif proto in _ICMP:
            if off + 4 > end:
                raise DecodeError(reasons.TRUNCATED)
            icmp_type = buf[off]
            payload = min(off + 8, end)
        elif proto == 132:
            if off + 12 > end:
                raise DecodeError(reasons.TRUNCATED)
            sport, dport = _HH.unpack_from(buf, off)
            payload = off + 12
        elif proto == 4:
            self._enter(ENCAP_IPIP, ctx)
            return self._ipv4(buf, off, end, ctx)
        elif proto == 41:
            self._enter(ENCAP_IPIP, ctx)
            return self._ipv6(buf, off, end, ctx)
        elif proto == 47:
            encap, kind, inner, inner_end = tunnels.gre(buf, off, end)
            if kind != KIND_NONE:
                self._enter(encap, ctx)
                return self._dispatch(kind, buf, inner, inner_end, ctx)
        return Packet(
            ctx.ts_ns, ctx.wire_len, ctx.vlan if ctx.vlan >= 0 else 0, ctx.version,
            ctx.src, ctx.dst, proto, sport, dport, flags, buf, payload, end - payload,
            ctx.ip_len, ctx.encap, ctx.frames, icmp_type,
        )  # fmt: skip

    def _enter(self, encap: int, ctx: _Ctx) -> None:
        """Strip one more tunnel: bounded depth; the outermost one names the encap."""
        ctx.depth += 1
        if ctx.depth > self._max_depth:
            raise DecodeError(reasons.TUNNEL_TOO_DEEP)
        if not ctx.encap:
            ctx.encap = encap


def _clip(ip_end: int, end: int, buf: bytes, ctx: _Ctx, reason: str) -> int:
    """The end of an IP packet: a length beyond the capture is fine only if snapped."""
    if ip_end <= end:
        return ip_end
    if ctx.snapped and end == len(buf):
        ctx.clipped = True
        return end
    raise DecodeError(reason)
