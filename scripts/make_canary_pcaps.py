#!/usr/bin/env python3
"""Write the canary capture for the privacy leak test (deterministically).

Three subscribers inside home_networks (10.1.1.11, 10.1.1.22 and 2001:db8:1::33) each
talk HTTP (URL, Host and a POST body), DNS, TLS (ClientHello SNI), SIP (caller number,
callee user, display name, SDP body), RTP (payload) and SMTP (envelope and message body)
to external servers. Every one of those places carries a unique *canary* string; the
test replays the capture and looks for each canary in every output.

Writes ``canary.pcap`` and ``canaries.json`` (subscriber -> place -> canary) into the
output directory (default: tests/data/canary/ next to this script's repo). Running it
twice gives byte-identical files. Documentation ranges only; nothing is ever sent.

Usage: scripts/make_canary_pcaps.py [OUT_DIR]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

BASE_US = 1_700_000_000 * 1_000_000
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
SUBSCRIBERS = {"s1": "10.1.1.11", "s2": "10.1.1.22", "s3": "2001:db8:1::33"}
SERVERS_V4 = {
    "http": "203.0.113.80",
    "dns": "198.51.100.53",
    "tls": "203.0.113.43",
    "sip": "198.51.100.60",
    "rtp": "198.51.100.61",
    "smtp": "203.0.113.25",
}
SERVERS_V6 = {k: f"2001:db8:ff::{i + 1}" for i, k in enumerate(SERVERS_V4)}
NUMBERS = {"s1": "+4915550001001", "s2": "+4915550002002", "s3": "+4915550003003"}
HOME_NETWORKS = ["10.0.0.0/8", "2001:db8:1::/48"]
PLACES = (
    "http_url",
    "http_host",
    "http_body",
    "dns_name",
    "tls_sni",
    "sip_number",
    "sip_user",
    "sip_display",
    "sip_body",
    "rtp_payload",
    "smtp_from",
    "smtp_rcpt",
    "smtp_body",
)


def canary(sub: str, place: str) -> str:
    """Unique, never-otherwise-occurring token (letters only: survives DNS/URL/SIP)."""
    return "zqx" + sub + place.replace("_", "") + "q"


def canaries() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for sub in SUBSCRIBERS:
        out[sub] = {p: canary(sub, p) for p in PLACES}
        out[sub]["sip_number"] = NUMBERS[sub]
    return out


class Writer:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []
        self.t_us = BASE_US

    def add(self, pkt: Packet, gap_us: int = 1000) -> None:
        self.t_us += gap_us
        self.records.append((self.t_us, bytes(pkt)))

    def pcap(self) -> bytes:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
        for t_us, data in self.records:
            out.append(
                struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(data), len(data))
            )
            out.append(data)
        return b"".join(out)


def _ip(src: str, dst: str) -> Packet:
    if ":" in src:
        return Ether(src=MAC_A, dst=MAC_B) / IPv6(src=src, dst=dst, hlim=64)
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst, id=1, ttl=64)


def _tcp_session(
    w: Writer, cli: str, srv: str, sport: int, dport: int, client_msgs: list[bytes],
    server_msgs: list[bytes],
) -> None:  # fmt: skip
    c, s = 1000, 5000
    w.add(_ip(cli, srv) / TCP(sport=sport, dport=dport, flags="S", seq=c, window=8192))
    w.add(_ip(srv, cli) / TCP(sport=dport, dport=sport, flags="SA", seq=s, ack=c + 1, window=8192))
    c, s = c + 1, s + 1
    w.add(_ip(cli, srv) / TCP(sport=sport, dport=dport, flags="A", seq=c, ack=s, window=8192))
    for i in range(max(len(client_msgs), len(server_msgs))):
        if i < len(client_msgs):
            m = client_msgs[i]
            w.add(_ip(cli, srv) / TCP(sport=sport, dport=dport, flags="PA", seq=c, ack=s) / Raw(m))
            c += len(m)
        if i < len(server_msgs):
            m = server_msgs[i]
            w.add(_ip(srv, cli) / TCP(sport=dport, dport=sport, flags="PA", seq=s, ack=c) / Raw(m))
            s += len(m)
    w.add(_ip(cli, srv) / TCP(sport=sport, dport=dport, flags="FA", seq=c, ack=s))
    w.add(_ip(srv, cli) / TCP(sport=dport, dport=sport, flags="FA", seq=s, ack=c + 1))
    w.add(_ip(cli, srv) / TCP(sport=sport, dport=dport, flags="A", seq=c + 1, ack=s + 1))


def _client_hello(sni: str) -> bytes:
    name = sni.encode("ascii")
    sni_ext = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    ext = struct.pack("!HH", 0, len(sni_ext)) + sni_ext
    body = (
        b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01"
        + b"\x01\x00" + struct.pack("!H", len(ext)) + ext
    )  # fmt: skip
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def subscriber_traffic(w: Writer, sub: str, addr: str, k: dict[str, str], n: int) -> None:
    srv = SERVERS_V6 if ":" in addr else SERVERS_V4
    base_port = 40000 + n * 100
    # HTTP: URL, Host, body
    req = (
        f"POST /{k['http_url']}/index.html HTTP/1.1\r\nHost: {k['http_host']}.example\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(k['http_body'])}\r\n\r\n{k['http_body']}"
    ).encode()
    _tcp_session(w, addr, srv["http"], base_port + 1, 80, [req],
                 [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"])  # fmt: skip
    # DNS query and answer
    q = DNS(id=0x1000 + n, rd=1, qd=DNSQR(qname=f"{k['dns_name']}.example", qtype="A"))
    w.add(_ip(addr, srv["dns"]) / UDP(sport=base_port + 2, dport=53) / q)
    name = f"{k['dns_name']}.example"
    a = DNS(id=0x1000 + n, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"),
            an=DNSRR(rrname=name, type="A", ttl=60, rdata="192.0.2.7"))  # fmt: skip
    w.add(_ip(srv["dns"], addr) / UDP(sport=53, dport=base_port + 2) / a)
    # TLS ClientHello with SNI
    _tcp_session(
        w, addr, srv["tls"], base_port + 3, 443, [_client_hello(f"{k['tls_sni']}.example")], []
    )
    # SIP INVITE (number, user, display name, SDP body), 200 OK, ACK, BYE, 200
    media_port = 30000 + n * 2
    sdp = (
        f"v=0\r\no=- 1 1 IN IP{6 if ':' in addr else 4} {addr}\r\ns={k['sip_body']}\r\n"
        f"c=IN IP{6 if ':' in addr else 4} {addr}\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    )
    host = f"[{addr}]" if ":" in addr else addr
    call_id = f"{k['sip_user']}-call@{host}"
    common = (
        f'From: "{k["sip_display"]}" <sip:{k["sip_number"]}@voip.example>;tag=a{n}\r\n'
        f"To: <sip:{k['sip_user']}@voip.example>\r\nCall-ID: {call_id}\r\n"
    )

    def sip(start: str, cseq: str, body: str = "", to_tag: bool = False) -> bytes:
        hdrs = common.replace(">\r\nCall-ID", ">;tag=b1\r\nCall-ID") if to_tag else common
        method = cseq.split(maxsplit=1)[0]
        return (
            f"{start}\r\nVia: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{n}{method}\r\n"
            f"Max-Forwards: 70\r\n{hdrs}CSeq: {cseq}\r\n"
            f"Contact: <sip:{k['sip_number']}@{host}:5060>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    sip_srv = srv["sip"]
    ruri = f"sip:{k['sip_user']}@voip.example"
    u = UDP(sport=5060, dport=5060)
    w.add(_ip(addr, sip_srv) / u / Raw(sip(f"INVITE {ruri} SIP/2.0", "1 INVITE", sdp)))
    w.add(
        _ip(sip_srv, addr)
        / u
        / Raw(sip("SIP/2.0 200 OK", "1 INVITE", sdp.replace(addr, sip_srv), True))
    )
    w.add(_ip(addr, sip_srv) / u / Raw(sip(f"ACK {ruri} SIP/2.0", "1 ACK", to_tag=True)))
    # RTP with a canary payload
    for i in range(5):
        rtp = struct.pack("!BBHII", 0x80, 0, 100 + i, 160 * i, 0x1234 + n) + (
            k["rtp_payload"].encode() + b"\x00" * 140
        )
        w.add(_ip(addr, srv["rtp"]) / UDP(sport=media_port, dport=20000) / Raw(rtp), 20000)
    w.add(_ip(addr, sip_srv) / u / Raw(sip(f"BYE {ruri} SIP/2.0", "2 BYE", to_tag=True)))
    w.add(_ip(sip_srv, addr) / u / Raw(sip("SIP/2.0 200 OK", "2 BYE", to_tag=True)))
    # SMTP envelope and body
    _tcp_session(
        w, addr, srv["smtp"], base_port + 5, 25,
        [b"EHLO client.example\r\n", f"MAIL FROM:<{k['smtp_from']}@example.org>\r\n".encode(),
         f"RCPT TO:<{k['smtp_rcpt']}@example.net>\r\n".encode(), b"DATA\r\n",
         f"Subject: hello\r\n\r\n{k['smtp_body']}\r\n.\r\n".encode(), b"QUIT\r\n"],
        [b"220 mx.example ESMTP\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
         b"250 queued\r\n", b"221 bye\r\n"],
    )  # fmt: skip


def build() -> tuple[bytes, dict[str, dict[str, str]]]:
    w = Writer()
    ks = canaries()
    for n, (sub, addr) in enumerate(SUBSCRIBERS.items()):
        subscriber_traffic(w, sub, addr, ks[sub], n)
    return w.pcap(), ks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "canary"
    ap.add_argument("out", nargs="?", type=Path, default=default)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pcap, ks = build()
    (args.out / "canary.pcap").write_bytes(pcap)
    doc = {"home_networks": HOME_NETWORKS, "subscribers": SUBSCRIBERS, "canaries": ks}
    (args.out / "canaries.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"{args.out}: canary.pcap ({len(pcap)} bytes), canaries.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
