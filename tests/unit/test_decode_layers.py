"""Link layers, VLAN/MPLS/PPPoE, IPv4/IPv6 and L4 decoding on scapy-built frames."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, LLC, STP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.ppp import PPP, PPP_LCP, PPPoE, PPPoED
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from trafficguard.capture import frames as lt
from trafficguard.config import DecodeConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import (
    ENCAP_MPLS,
    ENCAP_NONE,
    ENCAP_PPPOE,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    Packet,
)
from trafficguard.decode.reasons import DECODE_REASONS, SKIP_REASONS

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth() -> Ether:
    """Ethernet with explicit addresses (scapy would otherwise ARP for the IP destination)."""
    return Ether(src=MAC_A, dst=MAC_B)


A4, B4 = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


def run(
    frame: bytes, linktype: int = lt.LINKTYPE_ETHERNET, wire_len: int | None = None
) -> tuple[Decoder, list[Packet]]:
    d = Decoder(DecodeConfig())
    pkts = d.decode_batch([(1_000, linktype, frame, len(frame) if wire_len is None else wire_len)])
    assert d.accounted(sum(p.frames for p in pkts)) == d.frames_in == 1
    return d, pkts


def one(frame: bytes, linktype: int = lt.LINKTYPE_ETHERNET, wire_len: int | None = None) -> Packet:
    d, pkts = run(frame, linktype, wire_len)
    assert len(pkts) == 1, ({k: v for k, v in d.errors.items() if v}, d.skipped)
    return pkts[0]


def error_of(
    frame: bytes, linktype: int = lt.LINKTYPE_ETHERNET, wire_len: int | None = None
) -> str:
    d, pkts = run(frame, linktype, wire_len)
    assert pkts == []
    (reason,) = [k for k, v in d.errors.items() if v]
    assert reason in DECODE_REASONS
    return reason


def skip_of(frame: bytes, linktype: int = lt.LINKTYPE_ETHERNET) -> str:
    d, pkts = run(frame, linktype)
    assert pkts == []
    (kind,) = [k for k, v in d.skipped.items() if v]
    assert kind in SKIP_REASONS
    return kind


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


# -- IPv4 / TCP / UDP ---------------------------------------------------------------------


def test_ipv4_tcp_fast_path_fields() -> None:
    frame = bytes(
        eth() / IP(src=A4, dst=B4) / TCP(sport=1234, dport=80, flags="PA") / Raw(b"x" * 10)
    )
    p = one(frame)
    assert (p.ip_version, p.src, p.dst, p.proto) == (4, ip4(A4), ip4(B4), 6)
    assert (p.sport, p.dport, p.tcp_flags) == (1234, 80, TCP_PSH | TCP_ACK)
    assert (p.payload_off, p.payload_len, p.ip_len) == (54, 10, 50)
    assert p.payload() == b"x" * 10
    assert (p.vlan, p.encap, p.frames, p.ts_ns, p.wire_len) == (0, ENCAP_NONE, 1, 1_000, 64)


def test_tcp_options_move_payload() -> None:
    tcp = TCP(sport=1, dport=2, flags="S", options=[("MSS", 1460), ("NOP", None), ("NOP", None)])
    p = one(bytes(eth() / IP(src=A4, dst=B4) / tcp / Raw(b"hello")))
    assert p.tcp_flags == TCP_SYN
    assert p.payload() == b"hello"
    assert p.payload_off == 14 + 20 + 28


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=53, dport=5353) / Raw(b"ab"))
    padded = frame + b"\x00" * (60 - len(frame))
    p = one(padded)
    assert (p.proto, p.sport, p.dport, p.payload_len, p.ip_len) == (17, 53, 5353, 2, 30)
    assert p.payload() == b"ab"


def test_ipv4_options_take_general_path_with_same_result() -> None:
    frame = bytes(
        eth() / IP(src=A4, dst=B4, options=[IPOption_RR()]) / UDP(sport=9, dport=10) / b"zz"
    )
    p = one(frame)
    assert (p.sport, p.dport, p.payload()) == (9, 10, b"zz")
    assert p.ip_len == len(frame) - 14


def test_snapped_frame_decodes_what_is_captured() -> None:
    full = bytes(eth() / IP(src=A4, dst=B4) / TCP(sport=5, dport=6) / Raw(b"y" * 100))
    p = one(full[:60], wire_len=len(full))
    assert (p.sport, p.dport, p.ip_len, p.wire_len) == (5, 6, 140, len(full))
    assert p.payload_len == 6 and p.payload() == b"y" * 6


def test_snapped_inside_tcp_options_keeps_ports() -> None:
    full = bytes(eth() / IP() / TCP(sport=7, dport=8, options=[("MSS", 1)] * 4) / b"q")
    p = one(full[:56], wire_len=len(full))
    assert (p.sport, p.dport, p.payload_len) == (7, 8, 0)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:14] + b"\x44" + b[15:], "ipv4_bad_header_len"),
        (lambda b: b[:16] + struct.pack("!H", 200) + b[18:], "ipv4_bad_length"),
        (lambda b: b[:16] + struct.pack("!H", 10) + b[18:], "ipv4_bad_length"),
        (lambda b: b[:14] + b"\x55" + b[15:], "bad_ip_version"),
        (lambda b: b[:20], "truncated"),
    ],
)
def test_ipv4_malformed(mutate: object, reason: str) -> None:
    frame = bytes(eth() / IP(src=A4, dst=B4) / TCP() / b"data")
    assert error_of(mutate(frame)) == reason  # type: ignore[operator]


def test_tcp_bad_data_offset() -> None:
    frame = bytearray(bytes(eth() / IP() / TCP() / b"data"))
    frame[46] = 0x40  # data offset 4
    assert error_of(bytes(frame)) == "tcp_bad_header_len"
    frame[46] = 0xF0  # 60 bytes: beyond the IP packet
    assert error_of(bytes(frame)) == "tcp_bad_header_len"


def test_udp_bad_length() -> None:
    frame = bytearray(bytes(eth() / IP() / UDP() / b"data"))
    frame[38:40] = struct.pack("!H", 4)
    assert error_of(bytes(frame)) == "udp_bad_length"
    frame[38:40] = struct.pack("!H", 99)
    assert error_of(bytes(frame)) == "udp_bad_length"


def test_udp_length_shorter_than_ip_payload_bounds_payload() -> None:
    frame = bytearray(bytes(eth() / IP() / UDP(sport=1, dport=2) / b"abcdef"))
    frame[38:40] = struct.pack("!H", 10)
    assert one(bytes(frame)).payload() == b"ab"


def test_icmp_and_sctp_and_other_protocols() -> None:
    p = one(bytes(eth() / IP(src=A4, dst=B4) / ICMP(type=8) / b"ping"))
    assert (p.proto, p.icmp_type, p.sport, p.dport, p.payload()) == (1, 8, 0, 0, b"ping")
    p = one(bytes(eth() / IP() / SCTP(sport=5060, dport=5061) / b"chunk"))
    assert (p.proto, p.sport, p.dport, p.payload()) == (132, 5060, 5061, b"chunk")
    p = one(bytes(eth() / IP(proto=89) / b"ospfdata"))
    assert (p.proto, p.sport, p.dport, p.icmp_type, p.payload()) == (89, 0, 0, -1, b"ospfdata")


# -- IPv6 ------------------------------------------------------------------------------


def test_ipv6_udp_and_icmpv6() -> None:
    p = one(bytes(eth() / IPv6(src=A6, dst=B6) / UDP(sport=5060, dport=5060) / b"INVITE"))
    assert (p.ip_version, p.proto, p.sport, p.payload(), p.ip_len) == (6, 17, 5060, b"INVITE", 54)
    assert len(p.src) == 16 and p.dst.endswith(b"\x00\x02")
    p = one(bytes(eth() / IPv6() / ICMPv6EchoRequest()))
    assert (p.proto, p.icmp_type) == (58, 128)


def test_ipv6_extension_header_chain() -> None:
    chain = (
        IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=[B6])
        / AH(nh=6, payloadlen=4, icv=b"\x00" * 12)
    )
    p = one(bytes(eth() / IPv6(src=A6, dst=B6) / chain / TCP(sport=3, dport=4) / b"x"))
    assert (p.proto, p.sport, p.dport, p.payload()) == (6, 3, 4, b"x")


def test_ipv6_no_next_header_and_esp_end_walk() -> None:
    p = one(bytes(eth() / IPv6(nh=59) / b""))
    assert (p.proto, p.sport) == (59, 0)
    p = one(bytes(eth() / IPv6(nh=60) / IPv6ExtHdrDestOpt(nh=50) / (b"\x00" * 16)))
    assert (p.proto, p.payload_len) == (50, 16)


def test_ipv6_too_many_extension_headers() -> None:
    chain = IPv6ExtHdrDestOpt()
    for _ in range(20):
        chain = chain / IPv6ExtHdrDestOpt()
    assert error_of(bytes(eth() / IPv6() / chain / UDP())) == "ipv6_too_many_ext_headers"


def test_ipv6_payload_length_beyond_frame() -> None:
    frame = bytearray(bytes(eth() / IPv6() / UDP() / b"abc"))
    frame[18:20] = struct.pack("!H", 500)
    assert error_of(bytes(frame)) == "ipv6_bad_length"


# -- VLAN / MPLS / PPPoE / non-IP ---------------------------------------------------------


def test_vlan_tags() -> None:
    p = one(bytes(eth() / Dot1Q(vlan=42) / IP() / UDP(dport=1) / b"v"))
    assert (p.vlan, p.payload()) == (42, b"v")
    p = one(bytes(eth() / Dot1AD(vlan=100) / Dot1Q(vlan=7) / IP() / UDP() / b"q"))
    assert (p.vlan, p.payload()) == (100, b"q")
    p = one(
        bytes(
            Ether(src=MAC_A, dst=MAC_B, type=0x9100)
            / Dot1Q(vlan=300)
            / Dot1Q(vlan=2)
            / IPv6()
            / UDP()
        )
    )
    assert (p.vlan, p.ip_version) == (300, 6)


def test_vlan_too_deep() -> None:
    stack = Dot1Q(vlan=1)
    for _ in range(10):
        stack = stack / Dot1Q(vlan=2)
    assert error_of(bytes(eth() / stack / IP() / UDP())) == "vlan_too_deep"


def test_mpls_label_stack() -> None:
    p = one(bytes(eth() / MPLS(label=16, s=0) / MPLS(label=17, s=1) / IP(src=A4) / UDP() / b"m"))
    assert (p.encap, p.src, p.payload()) == (ENCAP_MPLS, ip4(A4), b"m")
    p = one(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x8847) / MPLS(s=1) / IPv6() / TCP()))
    assert (p.encap, p.ip_version) == (ENCAP_MPLS, 6)
    pw = (
        Ether(src=MAC_A, dst=MAC_B, type=0x8847)
        / MPLS(s=1)
        / b"\x00\x00\x00\x00"
        / eth()
        / IP()
        / UDP()
    )
    assert one(bytes(pw)).proto == 17


def test_mpls_too_deep() -> None:
    stack = MPLS(s=0)
    for _ in range(20):
        stack = stack / MPLS(s=0)
    assert (
        error_of(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x8847) / stack / MPLS(s=1) / IP()))
        == "mpls_too_deep"
    )


def test_pppoe_session_and_discovery() -> None:
    p = one(bytes(eth() / PPPoE(sessionid=1) / PPP(proto=0x0021) / IP() / UDP() / b"p"))
    assert (p.encap, p.payload()) == (ENCAP_PPPOE, b"p")
    p = one(bytes(eth() / PPPoE() / PPP(proto=0x0057) / IPv6() / ICMPv6EchoRequest()))
    assert (p.encap, p.ip_version, p.icmp_type) == (ENCAP_PPPOE, 6, 128)
    assert skip_of(bytes(eth() / PPPoE() / PPP(proto=0xC021) / PPP_LCP())) == "ppp_control"
    assert skip_of(bytes(eth() / PPPoED())) == "pppoe_discovery"


def test_pppoe_bad_header() -> None:
    frame = bytearray(bytes(eth() / PPPoE() / PPP(proto=0x0021) / IP()))
    frame[14] = 0x22
    assert error_of(bytes(frame)) == "pppoe_bad_header"


def test_non_ip_frames_are_skipped_by_kind() -> None:
    assert skip_of(bytes(eth() / ARP())) == "arp"
    assert (
        skip_of(bytes(Ether(src=MAC_A, dst="01:80:c2:00:00:0e", type=0x88CC) / (b"\x02\x07" * 8)))
        == "lldp"
    )
    assert skip_of(bytes(Dot3() / LLC() / STP())) == "stp"
    assert skip_of(bytes(Dot3() / LLC(dsap=0xAA, ssap=0xAA) / b"snap")) == "llc"
    assert (
        skip_of(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x88B5) / (b"x" * 40))) == "other_ethertype"
    )
    assert skip_of(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x888E) / (b"x" * 40))) == "eapol"


# -- link types ------------------------------------------------------------------------


def _ip_udp() -> bytes:
    return bytes(IP(src=A4, dst=B4) / UDP(sport=11, dport=12) / b"link")


def test_linux_sll_and_sll2() -> None:
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x00" * 8, 0x0800) + _ip_udp()
    assert one(sll, lt.LINKTYPE_LINUX_SLL).payload() == b"link"
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x00" * 8) + _ip_udp()
    assert one(sll2, lt.LINKTYPE_LINUX_SLL2).sport == 11
    arp = struct.pack("!HHIHBB8s", 0x0806, 0, 2, 1, 0, 6, b"\x00" * 8) + bytes(ARP())
    assert skip_of(arp, lt.LINKTYPE_LINUX_SLL2) == "arp"


def test_null_and_loop_address_families() -> None:
    assert one(struct.pack("<I", 2) + _ip_udp(), lt.LINKTYPE_NULL).dport == 12
    assert one(struct.pack(">I", 2) + _ip_udp(), lt.LINKTYPE_NULL).dport == 12
    v6 = bytes(IPv6() / UDP(dport=99))
    for family in (24, 28, 30):
        assert one(struct.pack("<I", family) + v6, lt.LINKTYPE_NULL).ip_version == 6
    assert one(struct.pack(">I", 2) + _ip_udp(), lt.LINKTYPE_LOOP).src == ip4(A4)
    assert skip_of(struct.pack("<I", 7) + b"\x00" * 20, lt.LINKTYPE_NULL) == "other_family"


def test_raw_ip_linktypes() -> None:
    for linktype in (lt.LINKTYPE_RAW, lt.LINKTYPE_RAW_OPENBSD, lt.LINKTYPE_IPV4):
        assert one(_ip_udp(), linktype).payload() == b"link"
    v6 = bytes(IPv6() / UDP(dport=99))
    assert one(v6, lt.LINKTYPE_RAW).ip_version == 6
    assert one(v6, lt.LINKTYPE_IPV6).dport == 99
    assert error_of(b"\x50" + b"\x00" * 30, lt.LINKTYPE_RAW) == "bad_ip_version"
    assert error_of(v6, lt.LINKTYPE_IPV4) == "bad_ip_version"


def test_unknown_linktype_and_short_frames() -> None:
    assert error_of(_ip_udp(), 147) == "unknown_linktype"
    assert error_of(b"\x00" * 10) == "truncated"
    assert error_of(b"\x00" * 10, lt.LINKTYPE_LINUX_SLL) == "truncated"
    assert error_of(b"", lt.LINKTYPE_RAW) == "truncated"


def test_errors_and_skips_are_closed_sets() -> None:
    d = Decoder(DecodeConfig())
    assert set(d.errors) == set(DECODE_REASONS)
    assert set(d.skipped) == set(SKIP_REASONS)
    assert "Packet(" in repr(one(bytes(eth() / IP() / UDP() / b"secret")))
    assert "secret" not in repr(one(bytes(eth() / IP() / UDP() / b"secret")))
