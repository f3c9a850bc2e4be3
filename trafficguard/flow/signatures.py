"""Payload signatures: is this the start of an SIP, TLS, DNS, ... message?

Each check reads ``data[off:end]`` (the L4 payload of one packet, already clipped to the
captured bytes) without copying more than a bounded first line, and answers with an
application label or ``None``. Nothing here keeps a reference to the payload. The
checks are ordered by ``detect`` from strong (a fixed magic or protocol line) to weak
(RTP/RTCP header heuristics), so a weak check never overrides a strong one.
"""

from __future__ import annotations

import struct
from typing import Final

from trafficguard.decode.packet import PROTO_SCTP, PROTO_TCP, PROTO_UDP

_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_DNS_HDR: Final = struct.Struct("!HHHHHH")

FIRST_LINE_MAX: Final = 512  # a request/status line longer than this is not one we know

SIP_METHODS: Final = (
    b"INVITE", b"REGISTER", b"OPTIONS", b"ACK", b"BYE", b"CANCEL", b"PRACK", b"SUBSCRIBE",
    b"NOTIFY", b"PUBLISH", b"INFO", b"REFER", b"MESSAGE", b"UPDATE",
)  # fmt: skip
_SIP_URI_SCHEMES: Final = (b"sip:", b"sips:", b"tel:", b"SIP:", b"SIPS:", b"TEL:")
HTTP_METHODS: Final = (
    b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"PATCH ",
    b"TRACE ",
)  # fmt: skip
_SSDP_STARTS: Final = (b"M-SEARCH * HTTP/1.1", b"NOTIFY * HTTP/1.1")
_MEMCACHED_WORDS: Final = (
    b"get ", b"gets ", b"set ", b"add ", b"replace ", b"append ", b"prepend ", b"cas ",
    b"delete ", b"incr ", b"decr ", b"touch ", b"stats", b"version", b"flush_all", b"VALUE ",
    b"STAT ", b"END\r\n", b"STORED", b"NOT_", b"DELETED", b"ERROR", b"mn\r\n", b"me ", b"mg ",
    b"ms ", b"md ", b"ma ",
)  # fmt: skip
_QUIC_VERSIONS: Final = frozenset({0x00000001, 0x6B3343CF, 0x709A50C4})  # v1, v2, v2 draft
_STUN_COOKIE: Final = 0x2112A442
_RTP_MIN: Final = 12
_BANNER_FIRST: Final = b"0123456789*+"  # SMTP "220", IMAP "* OK", POP3 "+OK"


def _first_line(data: bytes, off: int, end: int) -> bytes | None:
    """The first line (without CRLF) when it ends within FIRST_LINE_MAX bytes."""
    stop = min(end, off + FIRST_LINE_MAX)
    eol = data.find(b"\r\n", off, stop)
    if eol < 0:
        return None
    return data[off:eol]


def is_sip(data: bytes, off: int, end: int) -> bool:
    """SIP request line ``METHOD uri SIP/2.0`` or status line ``SIP/2.0 NNN``."""
    if data.startswith(b"SIP/2.0 ", off):
        return end - off >= 11 and data[off + 8 : off + 11].isdigit()
    if not data.startswith(SIP_METHODS, off):
        return False
    line = _first_line(data, off, end)
    if line is None or not line.endswith(b" SIP/2.0"):
        return False
    sp = line.find(b" ")
    return sp > 0 and line.startswith(_SIP_URI_SCHEMES, sp + 1)


def is_http(data: bytes, off: int, end: int) -> bool:
    """HTTP/1.x request line or status line."""
    if data.startswith(b"HTTP/1.", off):
        return end - off >= 9 and data[off + 7 : off + 9] in (b"0 ", b"1 ")
    if not data.startswith(HTTP_METHODS, off):
        return False
    line = _first_line(data, off, end)
    return line is not None and line[-9:-1] == b" HTTP/1." and line[-1:] in (b"0", b"1")


def is_tls(data: bytes, off: int, end: int) -> bool:
    """TLS handshake record carrying a ClientHello or ServerHello."""
    if end - off < 6 or data[off] != 22 or data[off + 1] != 3 or data[off + 2] > 4:
        return False
    rec_len = _U16.unpack_from(data, off + 3)[0]
    return 4 <= rec_len <= 18432 and data[off + 5] in (1, 2)


def is_quic(data: bytes, off: int, end: int) -> bool:
    """QUIC long header (v1, v2, drafts) or a Google QUIC version tag."""
    if end - off < 7:
        return False
    first = data[off]
    if first & 0xC0 == 0xC0:  # long header with the fixed bit
        version = _U32.unpack_from(data, off + 1)[0]
        if version in _QUIC_VERSIONS or version >> 8 == 0xFF0000:
            return True
        return data.startswith(b"Q0", off + 1) and data[off + 3 : off + 5].isdigit()
    # gQUIC <= Q043: public flags with the version bit, 8-byte connection id, version tag
    return (
        first & 0x09 == 0x09
        and end - off >= 13
        and data.startswith(b"Q0", off + 9)
        and data[off + 11 : off + 13].isdigit()
    )


def is_stun(data: bytes, off: int, end: int) -> bool:
    """STUN/TURN message: magic cookie at offset 4, length fits the datagram."""
    if end - off < 20 or data[off] & 0xC0:
        return False
    if _U32.unpack_from(data, off + 4)[0] != _STUN_COOKIE:
        return False
    msg_len: int = _U16.unpack_from(data, off + 2)[0]
    return msg_len % 4 == 0 and 20 + msg_len <= end - off


def is_ntp(data: bytes, off: int, end: int) -> bool:
    """NTPv1-4 packet: 48 bytes (optionally a 20/24-byte MAC), a valid mode."""
    if end - off not in (48, 68, 72):
        return False
    b0 = data[off]
    return 1 <= (b0 >> 3) & 7 <= 4 and 1 <= b0 & 7 <= 5


def is_memcached_udp(data: bytes, off: int, end: int) -> bool:
    """memcached UDP frame header (seq < total, reserved 0) followed by an ASCII command."""
    if end - off < 12 or data[off + 6] or data[off + 7]:
        return False
    seq = _U16.unpack_from(data, off + 2)[0]
    total = _U16.unpack_from(data, off + 4)[0]
    return seq < total and data.startswith(_MEMCACHED_WORDS, off + 8)


def _dns_name_end(data: bytes, pos: int, end: int) -> int:
    """Offset after an uncompressed question name, or -1 when it is not one."""
    for _ in range(128):
        if pos >= end:
            return -1
        n = data[pos]
        if n == 0:
            return pos + 1
        if n > 63:
            return -1
        pos += 1 + n
    return -1


def is_dns(data: bytes, off: int, end: int, strict: bool) -> bool:
    """DNS header sanity; ``strict`` (off-port) also parses the question."""
    if end - off < 12:
        return False
    _, flags, qd, an, ns, ar = _DNS_HDR.unpack_from(data, off)
    opcode = (flags >> 11) & 0xF
    if qd != 1 or opcode not in (0, 1, 2, 4, 5) or an > 64 or ns > 64 or ar > 64:
        return False
    if not strict:
        return True
    if flags & 0x0040:  # the Z bit is always zero
        return False
    name_end = _dns_name_end(data, off + 12, end)
    if name_end < 0 or name_end + 4 > end:
        return False
    qclass = _U16.unpack_from(data, name_end + 2)[0] & 0x7FFF  # top bit: mDNS unicast-response
    return qclass in (1, 3, 4, 255)


def is_dns_tcp(data: bytes, off: int, end: int) -> bool:
    """DNS over TCP: a 2-byte length prefix covering the segment, then a sane header."""
    if end - off < 14 or _U16.unpack_from(data, off)[0] != end - off - 2:
        return False
    return is_dns(data, off + 2, end, strict=False)


def is_rtcp(data: bytes, off: int, end: int) -> bool:
    """An RTCP (compound) packet: every part is version 2 and the lengths add up exactly."""
    if end - off < 8 or not 200 <= data[off + 1] <= 204:
        return False
    pos = off
    for _ in range(16):
        if data[pos] >> 6 != 2 or not 192 <= data[pos + 1] <= 223:
            return False
        pos += (_U16.unpack_from(data, pos + 2)[0] + 1) * 4
        if pos == end:
            return True
        if pos + 4 > end:
            return False
    return False


def rtp_header(data: bytes, off: int, end: int) -> int:
    """``ssrc << 16 | seq`` for a plausible RTP header, else -1."""
    if end - off < _RTP_MIN:
        return -1
    b0 = data[off]
    pt = data[off + 1] & 0x7F
    if b0 >> 6 != 2 or not (pt <= 34 or pt >= 96):
        return -1
    if _RTP_MIN + 4 * (b0 & 0x0F) > end - off:
        return -1
    seq: int = _U16.unpack_from(data, off + 2)[0]
    ssrc: int = _U32.unpack_from(data, off + 8)[0]
    return ssrc << 16 | seq


def strong_label(data: bytes, off: int, end: int, proto: int, sport: int, dport: int) -> str | None:
    """The label decided by an unambiguous signature, or None."""
    if end <= off:
        return None
    text = 0x41 <= data[off] <= 0x5A  # text protocols start with an upper-case letter
    if proto == PROTO_UDP:
        if text:
            if is_sip(data, off, end):
                return "sip"
            if data.startswith(_SSDP_STARTS, off) or (
                1900 in (sport, dport) and data.startswith(b"HTTP/1.1 ", off)
            ):
                return "ssdp"
        if is_quic(data, off, end):
            return "quic"
        if is_stun(data, off, end):
            return "stun"
        if 123 in (sport, dport) and is_ntp(data, off, end):
            return "ntp"
        if is_memcached_udp(data, off, end):
            return "memcached"
        return None
    if proto == PROTO_TCP:
        if is_tls(data, off, end):
            return "sip-tls" if 5061 in (sport, dport) else "tls"
        if not text and data[off] not in _BANNER_FIRST:
            return None
        if is_sip(data, off, end):
            return "sip"
        if data.startswith(b"SSH-", off) and end - off >= 8:
            return "ssh"
        if is_http(data, off, end):
            return "http"
        return _tcp_banner(data, off, end)
    if proto == PROTO_SCTP and text and is_sip(data, off, end):
        return "sip"
    return None


def _tcp_banner(data: bytes, off: int, end: int) -> str | None:
    """Mail protocol greetings and client openers."""
    if data.startswith(b"220 ", off) or data.startswith(b"220-", off):
        line = _first_line(data, off, end)
        return "smtp" if line is not None and b"SMTP" in line else None
    if data.startswith((b"EHLO ", b"HELO "), off):
        return "smtp"
    if data.startswith(b"* OK", off):
        return "imap"
    if data.startswith(b"+OK", off):
        return "pop3"
    return None


def dns_label(data: bytes, off: int, end: int, sport: int, dport: int) -> str | None:
    """``dns``/``mdns`` for a sane DNS header (strict parse when off the DNS ports)."""
    if 5353 in (sport, dport):
        return "mdns" if is_dns(data, off, end, strict=False) else None
    if 53 in (sport, dport):
        return "dns" if is_dns(data, off, end, strict=False) else None
    return "dns" if is_dns(data, off, end, strict=True) else None
