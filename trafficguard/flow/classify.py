"""Application classification: a port table plus payload signatures.

The flow table asks ``by_port`` once when a flow starts, then hands the first
``classify_packets`` payload-carrying packets to ``inspect`` until a signature decides.
A signature beats the port table; once one decides, the flow is not inspected again,
so the cost per flow is bounded. Payload is read in place and never kept: the only
state carried between packets is an int (RTP candidates waiting for confirmation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from trafficguard.decode.packet import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Packet
from trafficguard.flow import signatures as sig

APP_LABELS: Final = (
    "sip", "sip-tls", "rtp", "rtcp", "dns", "mdns", "http", "tls", "quic", "ssh", "smtp",
    "imap", "pop3", "ntp", "ssdp", "memcached", "stun", "ftp", "telnet", "rdp", "snmp", "ldap",
    "dhcp", "netbios", "unknown",
)  # fmt: skip
UNKNOWN: Final = "unknown"

_T, _U, _S = PROTO_TCP, PROTO_UDP, PROTO_SCTP
DEFAULT_PORTS: Final[Mapping[tuple[int, int], str]] = {
    **{(p, 5060): "sip" for p in (_T, _U, _S)},
    (_T, 5061): "sip-tls",
    (_S, 5061): "sip-tls",
    (_U, 53): "dns",
    (_T, 53): "dns",
    (_U, 5353): "mdns",
    **{(_T, p): "http" for p in (80, 8000, 8008, 8080)},
    **{(_T, p): "tls" for p in (443, 8443)},
    (_U, 443): "quic",
    (_T, 22): "ssh",
    **{(_T, p): "smtp" for p in (25, 465, 587)},
    **{(_T, p): "imap" for p in (143, 993)},
    **{(_T, p): "pop3" for p in (110, 995)},
    (_U, 123): "ntp",
    (_U, 1900): "ssdp",
    (_U, 11211): "memcached",
    (_T, 11211): "memcached",
    **{(p, 3478): "stun" for p in (_T, _U)},
    (_U, 5349): "stun",
    (_T, 5349): "stun",
    (_T, 21): "ftp",
    (_T, 20): "ftp",
    (_T, 23): "telnet",
    (_T, 3389): "rdp",
    (_U, 3389): "rdp",
    **{(_U, p): "snmp" for p in (161, 162)},
    **{(p, 389): "ldap" for p in (_T, _U)},
    (_T, 636): "ldap",
    **{(_U, p): "dhcp" for p in (67, 68, 546, 547)},
    **{(_U, p): "netbios" for p in (137, 138)},
    (_T, 139): "netbios",
}

_RTP_MIN_PORT: Final = 1024
_RTP_VALID: Final = 1 << 48  # marks a stored candidate (ssrc << 16 | seq)
_RTP_SLOT: Final = (1 << 49) - 1
_RTP_REV_SHIFT: Final = 49
_RTP_MAX_SEQ_STEP: Final = 16  # "consecutive-ish": a few lost or reordered packets


class Classifier:
    """Decides a flow's application label from ports and first-payload signatures."""

    __slots__ = ("_ports",)

    def __init__(self, ports: Mapping[tuple[int, int], str] | None = None) -> None:
        table = dict(DEFAULT_PORTS if ports is None else ports)
        bad = sorted({label for label in table.values() if label not in APP_LABELS})
        if bad:
            raise ValueError("port table labels not in APP_LABELS: " + ", ".join(bad))
        self._ports = table

    def by_port(self, proto: int, src_port: int, dst_port: int) -> str:
        """Label from the port table (the responder's port first), UNKNOWN if none."""
        ports = self._ports
        label = ports.get((proto, dst_port))
        if label is None:
            label = ports.get((proto, src_port), UNKNOWN)
        return label

    def inspect(self, pkt: Packet, fwd: bool, pending: int) -> tuple[str | None, int]:
        """Look at one payload packet: ``(label, pending)``; a label means decided.

        ``pending`` is the flow's opaque classifier state (0 at the start); the flow
        table stores the returned one and passes it back with the next packet.
        """
        data = pkt.data
        off = pkt.payload_off
        end = min(off + pkt.payload_len, len(data))
        if end <= off:
            return None, pending
        proto = pkt.proto
        sport = pkt.sport
        dport = pkt.dport
        label = sig.strong_label(data, off, end, proto, sport, dport)
        if label is not None:
            return label, 0
        if proto == PROTO_UDP:
            label = sig.dns_label(data, off, end, sport, dport)
            if label is not None:
                return label, 0
            if sport >= _RTP_MIN_PORT and dport >= _RTP_MIN_PORT:
                return _media(data, off, end, fwd, pending)
        elif proto == PROTO_TCP and 53 in (sport, dport) and sig.is_dns_tcp(data, off, end):
            return "dns", 0
        return None, pending


def _media(data: bytes, off: int, end: int, fwd: bool, pending: int) -> tuple[str | None, int]:
    """RTCP on one packet; RTP once two packets of one SSRC have near-consecutive seqs."""
    if sig.is_rtcp(data, off, end):
        return "rtcp", 0
    head = sig.rtp_header(data, off, end)
    if head < 0:
        return None, pending
    shift = 0 if fwd else _RTP_REV_SHIFT
    prev = (pending >> shift) & _RTP_SLOT
    if prev & _RTP_VALID and (prev >> 16) & 0xFFFFFFFF == head >> 16:
        step = ((head & 0xFFFF) - (prev & 0xFFFF)) & 0xFFFF
        if 0 < step <= _RTP_MAX_SEQ_STEP:
            return "rtp", 0
    pending = (pending & ~(_RTP_SLOT << shift)) | ((_RTP_VALID | head) << shift)
    return None, pending
