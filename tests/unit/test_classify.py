"""Application classification: every label from real-looking payloads, and the negatives."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.ntp import NTP
from scapy.layers.quic import QUIC_Initial
from scapy.layers.rtp import RTP
from scapy.layers.tls.all import TLS, TLSClientHello, TLSServerHello
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName

from trafficguard.config import FlowConfig
from trafficguard.decode.packet import PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, Packet
from trafficguard.flow.classify import APP_LABELS, DEFAULT_PORTS, Classifier
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.table import FlowTable

A, B = ipaddress.ip_address("10.1.1.1").packed, ipaddress.ip_address("10.2.2.2").packed


def pkt(sport: int, dport: int, payload: bytes, proto: int = PROTO_UDP, t: int = 0) -> Packet:
    off = 42 if proto != PROTO_TCP else 54
    data = bytes(off) + payload
    flags = TCP_PSH | TCP_ACK if proto == PROTO_TCP else 0
    return Packet(
        t, len(data), 0, 4, A, B, proto, sport, dport, flags, data, off, len(payload),
        len(data) - 14,
    )  # fmt: skip


def reply(p: Packet, payload: bytes, t: int = 1) -> Packet:
    q = pkt(p.dport, p.sport, payload, p.proto, t)
    q.src, q.dst = p.dst, p.src
    return q


def classify(*packets: Packet, classify_packets: int = 4) -> FlowRecord:
    table = FlowTable(FlowConfig(classify_packets=classify_packets))
    table.update_batch(list(packets))
    table.flush_all()
    (rec,) = table.take_records()
    return rec


def label(*packets: Packet, classify_packets: int = 4) -> tuple[str, str]:
    rec = classify(*packets, classify_packets=classify_packets)
    return rec.app, rec.app_source


def client_hello(sni: str = "example.com") -> bytes:
    ext = [TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())])]
    return bytes(TLS(msg=[TLSClientHello(ext=ext)]))


SIP_INVITE = (
    b"INVITE sip:+15551234567@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bK776asdhds\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\nTo: <sip:+15551234567@example.com>\r\n"
    b"Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n"
)
SIP_OK = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.1.1.1:5062\r\nContent-Length: 0\r\n\r\n"
HTTP_GET = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n"
_DNS_MSG = bytes(DNS(id=7, qd=DNSQR(qname="a.example"), an=DNSRR(rrname="a.example")))
DNS_TCP = struct.pack("!H", len(_DNS_MSG)) + _DNS_MSG
STUN_BINDING = struct.pack("!HHI12s", 0x0001, 8, 0x2112A442, bytes(range(12))) + bytes(8)


def rtp(seq: int, ssrc: int = 0x1234ABCD, pt: int = 0) -> bytes:
    return bytes(
        RTP(sequence=seq, timestamp=seq * 160, sourcesync=ssrc, payload_type=pt) / bytes(160)
    )


SIGNATURE_CASES = [
    ("sip", [pkt(40000, 40002, SIP_INVITE)]),
    ("sip", [pkt(40000, 40002, SIP_OK)]),
    ("sip", [pkt(40000, 5070, SIP_INVITE, PROTO_TCP)]),
    ("sip", [pkt(40000, 5070, SIP_INVITE, PROTO_SCTP)]),
    ("sip-tls", [pkt(40000, 5061, client_hello(), PROTO_TCP)]),
    ("dns", [pkt(40000, 53, bytes(DNS(rd=1, qd=DNSQR(qname="example.com"))))]),
    ("dns", [pkt(40000, 40053, bytes(DNS(rd=1, qd=DNSQR(qname="example.com"))))]),
    ("mdns", [pkt(5353, 5353, bytes(DNS(qd=DNSQR(qname="_ipp._tcp.local", qtype="PTR"))))]),
    ("dns", [pkt(40000, 53, DNS_TCP, PROTO_TCP)]),
    ("http", [pkt(40000, 8081, HTTP_GET, PROTO_TCP)]),
    ("http", [pkt(40000, 443, HTTP_GET, PROTO_TCP)]),  # signature beats the port table
    ("http", [pkt(8081, 40000, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", PROTO_TCP)]),
    ("tls", [pkt(40000, 4443, client_hello(), PROTO_TCP)]),
    ("tls", [pkt(4443, 40000, bytes(TLS(msg=[TLSServerHello()])), PROTO_TCP)]),
    ("quic", [pkt(40000, 4433, bytes(QUIC_Initial()) + bytes(1100))]),
    ("quic", [pkt(40000, 4433, b"\x0d" + bytes(8) + b"Q043" + bytes(1000))]),
    ("ssh", [pkt(2222, 40000, b"SSH-2.0-OpenSSH_9.6\r\n", PROTO_TCP)]),
    ("smtp", [pkt(2525, 40000, b"220 mail.example.com ESMTP Postfix\r\n", PROTO_TCP)]),
    ("smtp", [pkt(40000, 2525, b"EHLO client.example.com\r\n", PROTO_TCP)]),
    ("imap", [pkt(1143, 40000, b"* OK [CAPABILITY IMAP4rev1] ready\r\n", PROTO_TCP)]),
    ("pop3", [pkt(1110, 40000, b"+OK POP3 server ready\r\n", PROTO_TCP)]),
    ("ntp", [pkt(40000, 123, bytes(NTP(version=4, mode=3)))]),
    ("ssdp", [pkt(40000, 1900, b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n")]),
    ("ssdp", [pkt(40000, 41900, b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n")]),
    ("memcached", [pkt(40000, 11212, b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n")]),
    ("stun", [pkt(40000, 40001, STUN_BINDING)]),
    ("rtcp", [pkt(30001, 40001, b"\x81\xc9\x00\x07" + bytes(28))]),
    ("rtp", [pkt(30000, 40000, rtp(100)), pkt(30000, 40000, rtp(101), t=20)]),
    # interleaved directions: each side confirms against its own previous packet
    (
        "rtp",
        [
            pkt(30000, 40000, rtp(100)),
            reply(pkt(30000, 40000, b""), rtp(7000, ssrc=99, pt=8)),
            pkt(30000, 40000, rtp(102), t=40),
        ],
    ),
]


@pytest.mark.parametrize(("expected", "packets"), SIGNATURE_CASES)
def test_signature_labels(expected: str, packets: list[Packet]) -> None:
    assert label(*packets) == (expected, "signature")


PORT_CASES = [
    ("ftp", PROTO_TCP, 21),
    ("telnet", PROTO_TCP, 23),
    ("rdp", PROTO_TCP, 3389),
    ("snmp", PROTO_UDP, 161),
    ("ldap", PROTO_TCP, 389),
    ("dhcp", PROTO_UDP, 67),
    ("netbios", PROTO_UDP, 137),
    ("sip", PROTO_UDP, 5060),
    ("tls", PROTO_TCP, 443),
]


@pytest.mark.parametrize(("expected", "proto", "port"), PORT_CASES)
def test_port_table_labels(expected: str, proto: int, port: int) -> None:
    assert label(pkt(40000, port, b"", proto)) == (expected, "port")


def test_every_label_is_reachable_and_known() -> None:
    reached = {e for e, _ in SIGNATURE_CASES} | {e for e, _, _ in PORT_CASES}
    assert reached | {"unknown"} == set(APP_LABELS)
    assert set(DEFAULT_PORTS.values()) <= set(APP_LABELS)


def test_random_payload_on_sip_port_keeps_port_label() -> None:
    rnd = random.Random(5060)
    for proto in (PROTO_UDP, PROTO_TCP):
        packets = [
            pkt(40000, 5060, rnd.randbytes(rnd.randint(1, 400)), proto, t=i) for i in range(6)
        ]
        assert label(*packets) == ("sip", "port")


def test_random_payload_on_unknown_ports_is_unknown() -> None:
    rnd = random.Random(7)
    for i in range(50):
        packets = [pkt(40000 + i, 41000, rnd.randbytes(rnd.randint(1, 300)), t=j) for j in range(4)]
        assert label(*packets) == ("unknown", "none")


def test_single_rtp_packet_is_not_enough() -> None:
    assert label(pkt(30000, 40000, rtp(100))) == ("unknown", "none")
    # same SSRC but a sequence jump is not "consecutive-ish"
    assert label(pkt(30000, 40000, rtp(100)), pkt(30000, 40000, rtp(5000), t=1)) == (
        "unknown",
        "none",
    )


def test_rtp_needs_both_ports_unprivileged() -> None:
    assert label(pkt(40000, 123, rtp(1)), pkt(40000, 123, rtp(2), t=1)) == ("ntp", "port")


def test_inspection_budget_is_bounded() -> None:
    junk = [pkt(40000, 2222, b"\x00junk", PROTO_TCP, t=i) for i in range(2)]
    late = pkt(40000, 2222, b"SSH-2.0-late\r\n", PROTO_TCP, t=5)
    assert label(*junk, late, classify_packets=2) == ("unknown", "none")
    assert label(*junk, late, classify_packets=3) == ("ssh", "signature")


def test_packets_without_payload_do_not_use_the_budget() -> None:
    empty = [pkt(40000, 2222, b"", PROTO_TCP, t=i) for i in range(5)]
    hello = pkt(40000, 2222, b"SSH-2.0-x\r\n", PROTO_TCP, t=9)
    assert label(*empty, hello, classify_packets=1) == ("ssh", "signature")


def test_decision_is_final() -> None:
    first = pkt(40000, 4443, client_hello(), PROTO_TCP)
    later = pkt(40000, 4443, HTTP_GET, PROTO_TCP, t=1)
    assert label(first, later) == ("tls", "signature")


def test_truncated_capture_is_read_within_bounds() -> None:
    p = pkt(40000, 4443, client_hello(), PROTO_TCP)
    p.data = p.data[: p.payload_off + 3]  # snaplen cut inside the TLS record header
    assert Classifier().inspect(p, True, 0) == (None, 0)


def test_sip_request_needs_uri_scheme_and_version() -> None:
    c = Classifier()
    assert c.inspect(pkt(1, 2, b"INVITE bob SIP/2.0\r\n\r\n"), True, 0)[0] is None
    assert c.inspect(pkt(1, 2, b"INVITE sip:bob@x HTTP/1.1\r\n\r\n"), True, 0)[0] is None
    assert c.inspect(pkt(1, 2, b"REGISTER sips:x.example SIP/2.0\r\n"), True, 0)[0] == "sip"
    assert c.inspect(pkt(1, 2, b"OPTIONS tel:+15551234 SIP/2.0\r\n"), True, 0)[0] == "sip"


def test_by_port_prefers_responder_port() -> None:
    c = Classifier()
    assert c.by_port(PROTO_TCP, 80, 22) == "ssh"
    assert c.by_port(PROTO_TCP, 22, 50000) == "ssh"
    assert c.by_port(PROTO_UDP, 50000, 50001) == "unknown"


def test_custom_port_table_is_validated() -> None:
    assert Classifier({(PROTO_TCP, 9999): "ssh"}).by_port(PROTO_TCP, 1, 9999) == "ssh"
    with pytest.raises(ValueError, match="bogus"):
        Classifier({(PROTO_TCP, 1): "bogus"})
