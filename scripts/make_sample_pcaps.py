#!/usr/bin/env python3
"""Write the small sample captures in ``pcaps/`` (deterministically).

The files are test fixtures and demo inputs, so they must be reproducible: every field
that scapy would otherwise fill from the host (MACs, routes, IP ids, ports, sequence
numbers) is set explicitly, payload bytes come from a seeded ``random.Random``, and the
pcap records are written here with fixed microsecond timestamps instead of scapy's writer.
Running the script twice gives byte-identical files; ``tests/unit/test_sample_pcaps.py``
checks that against the committed copies.

Only documentation/private ranges are used (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 10/8, 2001:db8::/32, example.* names). Nothing is ever sent.

Usage: scripts/make_sample_pcaps.py [OUT_DIR]   (default: pcaps/ next to this script)
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, GRE, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

BASE_US = 1_700_000_000 * 1_000_000  # 2023-11-14T22:13:20Z, start of every file
MAC_CLIENT = "02:00:00:00:00:01"
MAC_SERVER = "02:00:00:00:00:02"

PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144

Record = tuple[int, bytes]  # (timestamp in µs since the epoch, frame bytes)


def write_pcap(path: Path, records: Iterable[Record]) -> int:
    """Write a classic little-endian µs pcap; return the number of records.

    Written by hand (not scapy's writer) so the header fields and timestamps are exactly
    what we say they are, whatever the scapy version.
    """
    n = 0
    with path.open("wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        for ts_us, frame in sorted(records, key=lambda r: r[0]):
            f.write(PCAP_RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
            n += 1
    return n


def eth(fwd: bool = True) -> Ether:
    """Ethernet header with fixed MACs (scapy would otherwise ARP/route for them)."""
    if fwd:
        return Ether(src=MAC_CLIENT, dst=MAC_SERVER)
    return Ether(src=MAC_SERVER, dst=MAC_CLIENT)


class TcpConn:
    """Builds the frames of one TCP connection with consistent seq/ack numbers."""

    def __init__(
        self,
        client: tuple[str, int],
        server: tuple[str, int],
        isn_c: int,
        isn_s: int,
        l3: Callable[[bool], Packet],
    ) -> None:
        self.client, self.server = client, server
        self.seq_c, self.seq_s = isn_c, isn_s
        self.l3 = l3  # fwd -> link+IP layers for that direction

    def seg(self, from_client: bool, flags: str, payload: bytes = b"") -> bytes:
        """One segment; advances the sender's sequence number by payload (+SYN/FIN)."""
        if from_client:
            sport, dport, seq, ack = self.client[1], self.server[1], self.seq_c, self.seq_s
        else:
            sport, dport, seq, ack = self.server[1], self.client[1], self.seq_s, self.seq_c
        tcp = TCP(
            sport=sport,
            dport=dport,
            seq=seq,
            ack=ack if "A" in flags else 0,
            flags=flags,
            window=64240,
        )
        pkt = self.l3(from_client) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        adv = len(payload) + (1 if "S" in flags else 0) + (1 if "F" in flags else 0)
        if from_client:
            self.seq_c = (self.seq_c + adv) & 0xFFFFFFFF
        else:
            self.seq_s = (self.seq_s + adv) & 0xFFFFFFFF
        return bytes(pkt)

    def handshake(self, t: int, rtt_us: int = 20_000) -> list[Record]:
        """SYN, SYN/ACK, ACK starting at ``t``."""
        return [
            (t, self.seg(True, "S")),
            (t + rtt_us // 2, self.seg(False, "SA")),
            (t + rtt_us, self.seg(True, "A")),
        ]

    def close(self, t: int, rtt_us: int = 20_000) -> list[Record]:
        """Client FIN, server FIN/ACK, client ACK."""
        return [
            (t, self.seg(True, "FA")),
            (t + rtt_us // 2, self.seg(False, "FA")),
            (t + rtt_us, self.seg(True, "A")),
        ]


def ipv4_l3(client_ip: str, server_ip: str, ttl: int = 64) -> Callable[[bool], Packet]:
    """Link + IPv4 layers for a client/server pair, fixed IP id 0 and DF set."""

    def build(fwd: bool) -> Packet:
        src, dst = (client_ip, server_ip) if fwd else (server_ip, client_ip)
        return eth(fwd) / IP(src=src, dst=dst, id=0, flags="DF", ttl=ttl)

    return build


# --------------------------------------------------------------------------- SIP + RTP

SIP_CALLER = "10.0.0.10"
SIP_PROXY = "203.0.113.10"
MEDIA_GW = "203.0.113.20"


def sip_message(first_line: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    """A SIP message with CRLF line ends and a correct Content-Length."""
    lines = [first_line, *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp(addr: str, port: int, session_id: int) -> str:
    """Offer/answer for G.711 µ-law plus telephone-event, 20 ms packetisation."""
    return (
        "v=0\r\n"
        f"o=- {session_id} {session_id} IN IP4 {addr}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {addr}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def rtcp_sr(ssrc: int, ntp_s: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    """RTCP compound packet: Sender Report (no report blocks) + SDES CNAME."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_s, 0, rtp_ts, packets, octets)
    cname = b"tg@example.com"
    item = bytes([1, len(cname)]) + cname + b"\x00"
    item += b"\x00" * (-(len(item) + 4) % 4)
    sdes = struct.pack("!BBHI", 0x81, 202, (4 + len(item)) // 4, ssrc) + item
    return sr + sdes


def make_sip_call() -> list[Record]:
    """INVITE/100/180/200/ACK with SDP, 3 s of bidirectional G.711 RTP + RTCP, BYE/200."""
    rnd = random.Random(5060)
    out: list[Record] = []
    t = BASE_US
    call_id = "a84b4c76e66710@10.0.0.10"
    frm = "<sip:alice@example.com>;tag=1928301774"
    to = "<sip:bob@example.net>"
    to_tag = to + ";tag=a6c85cf"
    via_c = "SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK776asdhds"

    def sip(t_us: int, from_caller: bool, msg: bytes) -> Record:
        src, dst = (SIP_CALLER, SIP_PROXY) if from_caller else (SIP_PROXY, SIP_CALLER)
        pkt = eth(from_caller) / IP(src=src, dst=dst, id=0, ttl=64) / UDP(sport=5060, dport=5060)
        return (t_us, bytes(pkt / Raw(msg)))

    common = [("Max-Forwards", "70"), ("Call-ID", call_id)]
    invite_hdrs = [
        ("Via", via_c),
        ("From", frm),
        ("To", to),
        *common,
        ("CSeq", "314159 INVITE"),
        ("Contact", "<sip:alice@10.0.0.10:5060>"),
    ]
    out.append(
        sip(
            t,
            True,
            sip_message(
                "INVITE sip:bob@example.net SIP/2.0",
                invite_hdrs,
                sdp(SIP_CALLER, 40000, 2890844526),
            ),
        )
    )
    resp_hdrs = [
        ("Via", via_c),
        ("From", frm),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", "314159 INVITE"),
    ]
    out.append(sip(t + 30_000, False, sip_message("SIP/2.0 100 Trying", resp_hdrs)))
    ringing = [(k, to_tag if k == "To" else v) for k, v in resp_hdrs]
    out.append(sip(t + 400_000, False, sip_message("SIP/2.0 180 Ringing", ringing)))
    ok = [*ringing, ("Contact", "<sip:bob@203.0.113.10:5060>")]
    out.append(
        sip(
            t + 2_000_000,
            False,
            sip_message("SIP/2.0 200 OK", ok, sdp(MEDIA_GW, 50000, 2890844527)),
        )
    )
    ack = [
        ("Via", "SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK776asdhdt"),
        ("From", frm),
        ("To", to_tag),
        *common,
        ("CSeq", "314159 ACK"),
    ]
    out.append(sip(t + 2_030_000, True, sip_message("ACK sip:bob@203.0.113.10:5060 SIP/2.0", ack)))

    # Media: 150 packets each way (3 s at 20 ms), offset by 7 ms between directions.
    media_start = t + 2_100_000
    legs = [  # (src, sport, dst, dport, ssrc, first seq, from caller)
        (SIP_CALLER, 40000, MEDIA_GW, 50000, 0x11223344, 1000, True),
        (MEDIA_GW, 50000, SIP_CALLER, 40000, 0x55667788, 2000, False),
    ]
    for idx, (src, sport, dst, dport, ssrc, seq0, fwd) in enumerate(legs):
        for i in range(150):
            ts_us = media_start + idx * 7_000 + i * 20_000
            marker = 0x80 if i == 0 else 0
            hdr = struct.pack("!BBHII", 0x80, marker | 0, seq0 + i, 160 * i, ssrc)
            payload = bytes(rnd.randrange(256) for _ in range(160))
            pkt = eth(fwd) / IP(src=src, dst=dst, id=0, ttl=64) / UDP(sport=sport, dport=dport)
            out.append((ts_us, bytes(pkt / Raw(hdr + payload))))
            sent = i + 1
            if i % 50 == 49:  # an RTCP SR each second on port+1
                rtcp = rtcp_sr(ssrc, 3_909_000_000 + i // 50, 160 * i, sent, sent * 160)
                pkt = (
                    eth(fwd)
                    / IP(src=src, dst=dst, id=0, ttl=64)
                    / UDP(sport=sport + 1, dport=dport + 1)
                )
                out.append((ts_us + 1_000, bytes(pkt / Raw(rtcp))))

    bye_t = media_start + 150 * 20_000 + 100_000
    bye = [
        ("Via", "SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK776asdhdu"),
        ("From", frm),
        ("To", to_tag),
        *common,
        ("CSeq", "314160 BYE"),
    ]
    out.append(sip(bye_t, True, sip_message("BYE sip:bob@203.0.113.10:5060 SIP/2.0", bye)))
    bye_ok = [(k, v) for k, v in bye if k != "Max-Forwards"]
    out.append(sip(bye_t + 30_000, False, sip_message("SIP/2.0 200 OK", bye_ok)))
    return out


# --------------------------------------------------------------------------------- DNS

DNS_CLIENT = "10.0.0.20"
DNS_SERVER = "198.51.100.53"


def make_dns() -> list[Record]:
    """UDP A/AAAA/TXT queries with answers, one NXDOMAIN, and one TXT query over TCP."""
    out: list[Record] = []
    t = BASE_US

    def udp_pair(
        t_us: int,
        sport: int,
        qid: int,
        qname: str,
        qtype: str,
        answers: list[DNSRR],
        rcode: int = 0,
    ) -> None:
        q = DNS(id=qid, rd=1, qd=DNSQR(qname=qname, qtype=qtype))
        r = DNS(
            id=qid,
            qr=1,
            aa=0,
            rd=1,
            ra=1,
            rcode=rcode,
            qd=DNSQR(qname=qname, qtype=qtype),
            an=answers,
        )
        fwd = (
            eth(True)
            / IP(src=DNS_CLIENT, dst=DNS_SERVER, id=0, ttl=64)
            / UDP(sport=sport, dport=53)
        )
        rev = (
            eth(False)
            / IP(src=DNS_SERVER, dst=DNS_CLIENT, id=0, ttl=64)
            / UDP(sport=53, dport=sport)
        )
        out.append((t_us, bytes(fwd / q)))
        out.append((t_us + 12_000, bytes(rev / r)))

    udp_pair(
        t,
        33001,
        0x1001,
        "www.example.com.",
        "A",
        [DNSRR(rrname="www.example.com.", type="A", ttl=300, rdata="192.0.2.80")],
    )
    udp_pair(
        t + 100_000,
        33002,
        0x1002,
        "www.example.com.",
        "AAAA",
        [DNSRR(rrname="www.example.com.", type="AAAA", ttl=300, rdata="2001:db8::80")],
    )
    udp_pair(
        t + 200_000,
        33003,
        0x1003,
        "example.org.",
        "TXT",
        [DNSRR(rrname="example.org.", type="TXT", ttl=3600, rdata=["v=spf1 -all"])],
    )
    udp_pair(t + 300_000, 33004, 0x1004, "nonexistent.example.net.", "A", [], rcode=3)

    # DNS over TCP (RFC 7766): two-byte length prefix on each message.
    conn = TcpConn(
        (DNS_CLIENT, 33005),
        (DNS_SERVER, 53),
        0x0DD50000,
        0x5EED0000,
        ipv4_l3(DNS_CLIENT, DNS_SERVER),
    )
    tt = t + 500_000
    out += conn.handshake(tt)
    q = bytes(DNS(id=0x1005, rd=1, qd=DNSQR(qname="example.net.", qtype="TXT")))
    txt = ["tg-sample " + "x" * 200, "second string"]
    r = bytes(
        DNS(
            id=0x1005,
            qr=1,
            rd=1,
            ra=1,
            qd=DNSQR(qname="example.net.", qtype="TXT"),
            an=DNSRR(rrname="example.net.", type="TXT", ttl=60, rdata=txt),
        )
    )
    out.append((tt + 21_000, conn.seg(True, "PA", struct.pack("!H", len(q)) + q)))
    out.append((tt + 33_000, conn.seg(False, "PA", struct.pack("!H", len(r)) + r)))
    out.append((tt + 34_000, conn.seg(True, "A")))
    out += conn.close(tt + 40_000)
    return out


# -------------------------------------------------------------------------------- HTTP

HTTP_CLIENT = "10.0.0.30"
HTTP_SERVER = "192.0.2.80"


def make_http() -> list[Record]:
    """GET with FIN teardown; a second connection ending in RST; port reuse 30 s later."""
    out: list[Record] = []
    l3 = ipv4_l3(HTTP_CLIENT, HTTP_SERVER)
    get = (
        b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n"
        b"User-Agent: trafficguard-sample/1.0\r\nAccept: */*\r\n\r\n"
    )
    body = b"<html><body>" + b"sample page " * 100 + b"</body></html>\n"
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    def exchange(conn: TcpConn, t: int) -> list[Record]:
        recs = conn.handshake(t)
        recs.append((t + 21_000, conn.seg(True, "PA", get)))
        recs.append((t + 40_000, conn.seg(False, "A", resp[:1200])))
        recs.append((t + 40_100, conn.seg(False, "PA", resp[1200:])))
        recs.append((t + 41_000, conn.seg(True, "A")))
        return recs

    t = BASE_US
    c1 = TcpConn((HTTP_CLIENT, 49152), (HTTP_SERVER, 80), 0x1000_0000, 0x2000_0000, l3)
    out += exchange(c1, t)
    out += c1.close(t + 100_000)

    # Second connection: the client aborts after the response with RST.
    c2 = TcpConn((HTTP_CLIENT, 49153), (HTTP_SERVER, 80), 0x3000_0000, 0x4000_0000, l3)
    t2 = t + 500_000
    out += exchange(c2, t2)
    out.append((t2 + 60_000, c2.seg(True, "RA")))

    # Third connection reuses the first one's client port 30 s after it closed (longer
    # than any closing timeout): a new flow for trafficguard, a known tshark difference.
    c3 = TcpConn((HTTP_CLIENT, 49152), (HTTP_SERVER, 80), 0x5000_0000, 0x6000_0000, l3)
    t3 = t + 30_000_000
    out += exchange(c3, t3)
    out += c3.close(t3 + 100_000)
    return out


# --------------------------------------------------------------------------------- TLS

TLS_CLIENT = "10.0.0.40"
TLS_SERVER = "192.0.2.43"


def tls_record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    """One TLS record."""
    return struct.pack("!BHH", content_type, version, len(body)) + body


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    """One handshake message (type + 24-bit length)."""
    return struct.pack("!B", msg_type) + len(body).to_bytes(3, "big") + body


def ext(ext_type: int, data: bytes) -> bytes:
    """One TLS extension."""
    return struct.pack("!HH", ext_type, len(data)) + data


def client_hello(rnd: random.Random, sni: str) -> bytes:
    """TLS 1.3 ClientHello (legacy 1.2 framing) with SNI, groups, versions, key share."""
    name = sni.encode()
    sni_ext = ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    groups = ext(10, struct.pack("!HHH", 4, 0x001D, 0x0017))
    versions = ext(43, bytes([4]) + struct.pack("!HH", 0x0304, 0x0303))
    sigalgs = ext(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401))
    alpn_list = b"\x02h2\x08http/1.1"
    alpn = ext(16, struct.pack("!H", len(alpn_list)) + alpn_list)
    key = rnd.randbytes(32)
    key_share = ext(51, struct.pack("!HHH", 36, 0x001D, 32) + key)
    exts = sni_ext + groups + versions + sigalgs + alpn + key_share
    suites = struct.pack("!HHHH", 6, 0x1301, 0x1302, 0xC02F)
    body = (
        struct.pack("!H", 0x0303)
        + rnd.randbytes(32)
        + b"\x20"
        + rnd.randbytes(32)
        + suites
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    return tls_record(22, tls_handshake(1, body), version=0x0301)


def server_hello(rnd: random.Random) -> bytes:
    """TLS 1.3 ServerHello (supported_versions + key_share), then CCS."""
    exts = ext(43, struct.pack("!H", 0x0304)) + ext(
        51, struct.pack("!HH", 0x001D, 32) + rnd.randbytes(32)
    )
    body = (
        struct.pack("!H", 0x0303)
        + rnd.randbytes(32)
        + b"\x20"
        + rnd.randbytes(32)
        + struct.pack("!HB", 0x1301, 0)
        + struct.pack("!H", len(exts))
        + exts
    )
    return tls_record(22, tls_handshake(2, body)) + tls_record(20, b"\x01")


def make_tls() -> list[Record]:
    """Handshake, ClientHello with SNI, ServerHello, application data both ways, FIN."""
    rnd = random.Random(443)
    out: list[Record] = []
    conn = TcpConn(
        (TLS_CLIENT, 49200),
        (TLS_SERVER, 443),
        0x7000_0000,
        0x8000_0000,
        ipv4_l3(TLS_CLIENT, TLS_SERVER),
    )
    t = BASE_US
    out += conn.handshake(t)
    out.append((t + 21_000, conn.seg(True, "PA", client_hello(rnd, "www.example.com"))))
    # ServerHello + CCS + encrypted handshake (as application_data, as TLS 1.3 does)
    flight = server_hello(rnd) + tls_record(23, rnd.randbytes(900))
    out.append((t + 40_000, conn.seg(False, "PA", flight)))
    out.append(
        (
            t + 41_000,
            conn.seg(True, "PA", tls_record(20, b"\x01") + tls_record(23, rnd.randbytes(74))),
        )
    )
    tt = t + 60_000
    for i in range(4):  # request/response pairs of application data
        out.append((tt, conn.seg(True, "PA", tls_record(23, rnd.randbytes(200 + 10 * i)))))
        out.append((tt + 18_000, conn.seg(False, "PA", tls_record(23, rnd.randbytes(1300)))))
        out.append((tt + 19_000, conn.seg(True, "A")))
        tt += 100_000
    out.append((tt, conn.seg(True, "PA", tls_record(21, rnd.randbytes(26)))))  # close_notify
    out += conn.close(tt + 1_000)
    return out


# --------------------------------------------------------------------------------- mix


def make_mix() -> list[Record]:
    """VLAN, QinQ, IPv6 TCP/UDP, a 3-fragment IPv4 UDP datagram, GRE (ICMP + DNS), ARP."""
    rnd = random.Random(8021)
    out: list[Record] = []
    t = BASE_US

    # ARP who-has / is-at
    out.append(
        (
            t,
            bytes(
                Ether(src=MAC_CLIENT, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=MAC_CLIENT, psrc="10.1.0.1", pdst="10.1.0.2")
            ),
        )
    )
    out.append(
        (
            t + 1_000,
            bytes(
                Ether(src=MAC_SERVER, dst=MAC_CLIENT)
                / ARP(op=2, hwsrc=MAC_SERVER, psrc="10.1.0.2", hwdst=MAC_CLIENT, pdst="10.1.0.1")
            ),
        )
    )

    # 802.1Q VLAN 10: a UDP request/response (NTP-like, port 123)
    t += 100_000
    for i in range(2):
        fwd = i == 0
        src, dst = ("10.10.0.5", "198.51.100.123") if fwd else ("198.51.100.123", "10.10.0.5")
        sp, dp = (40123, 123) if fwd else (123, 40123)
        pkt = (
            eth(fwd)
            / Dot1Q(vlan=10)
            / IP(src=src, dst=dst, id=0, ttl=64)
            / UDP(sport=sp, dport=dp)
            / Raw(bytes([0x23 if fwd else 0x24]) + bytes(47))
        )
        out.append((t + i * 5_000, bytes(pkt)))

    # QinQ (802.1ad S-tag 100, 802.1Q C-tag 200): a short TCP connection
    def qinq_l3(fwd: bool) -> Packet:
        src, dst = ("10.20.0.7", "203.0.113.25") if fwd else ("203.0.113.25", "10.20.0.7")
        return eth(fwd) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(src=src, dst=dst, id=0, ttl=64)

    t += 100_000
    conn = TcpConn(("10.20.0.7", 50025), ("203.0.113.25", 25), 0x0A0A_0000, 0x0B0B_0000, qinq_l3)
    out += conn.handshake(t)
    out.append((t + 30_000, conn.seg(False, "PA", b"220 mail.example.com ESMTP\r\n")))
    out.append((t + 31_000, conn.seg(True, "PA", b"QUIT\r\n")))
    out.append((t + 40_000, conn.seg(False, "PA", b"221 Bye\r\n")))
    out += conn.close(t + 50_000)

    # IPv6 TCP
    def v6_l3(fwd: bool) -> Packet:
        src, dst = (
            ("2001:db8:1::10", "2001:db8:2::80") if fwd else ("2001:db8:2::80", "2001:db8:1::10")
        )
        return eth(fwd) / IPv6(src=src, dst=dst, hlim=64, fl=0)

    t += 200_000
    conn6 = TcpConn(
        ("2001:db8:1::10", 50080), ("2001:db8:2::80", 80), 0x0C0C_0000, 0x0D0D_0000, v6_l3
    )
    out += conn6.handshake(t)
    out.append((t + 21_000, conn6.seg(True, "PA", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")))
    out.append((t + 40_000, conn6.seg(False, "PA", b"HTTP/1.1 204 No Content\r\n\r\n")))
    out += conn6.close(t + 60_000)

    # IPv6 UDP: a DNS AAAA query/response
    t += 200_000
    q = DNS(id=0x6006, rd=1, qd=DNSQR(qname="example.com.", qtype="AAAA"))
    r = DNS(
        id=0x6006,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname="example.com.", qtype="AAAA"),
        an=DNSRR(rrname="example.com.", type="AAAA", ttl=60, rdata="2001:db8::1"),
    )
    out.append((t, bytes(v6_l3(True) / UDP(sport=53535, dport=53) / q)))
    out.append((t + 9_000, bytes(v6_l3(False) / UDP(sport=53, dport=53535) / r)))

    # IPv4 UDP datagram of 3000 payload bytes fragmented into 3 frames (1480+1480+48)
    t += 200_000
    big = (
        IP(src="10.30.0.9", dst="192.0.2.99", id=0x4242, flags=0, ttl=64)
        / UDP(sport=45000, dport=9999)
        / Raw(rnd.randbytes(3000))
    )
    big = IP(bytes(big))  # fix lengths and checksums before splitting
    for i, frag in enumerate(fragment(big, fragsize=1480)):
        out.append((t + i * 100, bytes(eth(True) / frag)))

    # GRE tunnel 198.51.100.1 <-> 198.51.100.2 carrying ICMP echo and a DNS query
    def gre(fwd: bool, inner: Packet) -> bytes:
        outer_src, outer_dst = (
            ("198.51.100.1", "198.51.100.2") if fwd else ("198.51.100.2", "198.51.100.1")
        )
        return bytes(
            eth(fwd)
            / IP(src=outer_src, dst=outer_dst, id=0, ttl=64, proto=47)
            / GRE(proto=0x0800)
            / inner
        )

    t += 200_000
    out.append(
        (
            t,
            gre(
                True,
                IP(src="10.40.0.1", dst="10.50.0.1", id=0, ttl=64)
                / ICMP(type=8, id=0x77, seq=1)
                / Raw(bytes(range(48))),
            ),
        )
    )
    out.append(
        (
            t + 2_000,
            gre(
                False,
                IP(src="10.50.0.1", dst="10.40.0.1", id=0, ttl=64)
                / ICMP(type=0, id=0x77, seq=1)
                / Raw(bytes(range(48))),
            ),
        )
    )
    qg = DNS(id=0x0911, rd=1, qd=DNSQR(qname="www.example.org.", qtype="A"))
    rg = DNS(
        id=0x0911,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname="www.example.org.", qtype="A"),
        an=DNSRR(rrname="www.example.org.", type="A", ttl=60, rdata="192.0.2.10"),
    )
    out.append(
        (
            t + 10_000,
            gre(
                True,
                IP(src="10.40.0.1", dst="10.50.0.53", id=0, ttl=64)
                / UDP(sport=41000, dport=53)
                / qg,
            ),
        )
    )
    out.append(
        (
            t + 14_000,
            gre(
                False,
                IP(src="10.50.0.53", dst="10.40.0.1", id=0, ttl=64)
                / UDP(sport=53, dport=41000)
                / rg,
            ),
        )
    )
    return out


FILES: dict[str, Callable[[], list[Record]]] = {
    "sip-call-rtp.pcap": make_sip_call,
    "dns.pcap": make_dns,
    "http.pcap": make_http,
    "tls.pcap": make_tls,
    "mix.pcap": make_mix,
}


def generate(out_dir: Path) -> dict[str, int]:
    """Write every sample into ``out_dir``; return packets per file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: write_pcap(out_dir / name, build()) for name, build in FILES.items()}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent / "pcaps"
    )
    args = ap.parse_args(argv)
    for name, n in generate(args.out_dir).items():
        print(f"{n:5d} packets -> {args.out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
