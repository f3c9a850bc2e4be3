"""Tunnel stripping: GRE (incl. ERSPAN I/II/III, PPTP), IP-in-IP, VXLAN, Geneve, GTP-U."""

from __future__ import annotations

import struct

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from trafficguard.capture.frames import LINKTYPE_ETHERNET
from trafficguard.config import DecodeConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import (
    ENCAP_ERSPAN,
    ENCAP_GENEVE,
    ENCAP_GRE,
    ENCAP_GTPU,
    ENCAP_IPIP,
    ENCAP_NONE,
    ENCAP_VXLAN,
    Packet,
)

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth() -> Ether:
    """Ethernet with explicit addresses (scapy would otherwise ARP for the IP destination)."""
    return Ether(src=MAC_A, dst=MAC_B)


OUTER = IP(src="203.0.113.1", dst="203.0.113.2")
INNER = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1111, dport=2222) / b"inner"
INNER_SRC = bytes([10, 0, 0, 1])


def run(frame: bytes, cfg: DecodeConfig | None = None) -> tuple[Decoder, list[Packet]]:
    d = Decoder(cfg or DecodeConfig())
    pkts = d.decode_batch([(5, LINKTYPE_ETHERNET, frame, len(frame))])
    assert d.accounted(sum(p.frames for p in pkts)) == d.frames_in == 1
    return d, pkts


def one(frame: bytes, cfg: DecodeConfig | None = None) -> Packet:
    d, pkts = run(frame, cfg)
    assert len(pkts) == 1, {k: v for k, v in d.errors.items() if v}
    return pkts[0]


def assert_inner(p: Packet, encap: int) -> None:
    assert (p.src, p.sport, p.dport, p.payload(), p.encap) == (
        INNER_SRC,
        1111,
        2222,
        b"inner",
        encap,
    )


def error_of(frame: bytes, cfg: DecodeConfig | None = None) -> str:
    d, pkts = run(frame, cfg)
    assert pkts == []
    (reason,) = [k for k, v in d.errors.items() if v]
    return reason


# -- GRE ---------------------------------------------------------------------------------


def test_gre_ipv4_with_optional_fields() -> None:
    assert_inner(one(bytes(eth() / OUTER / GRE() / INNER)), ENCAP_GRE)
    gre = GRE(chksum_present=1, key_present=1, seqnum_present=1, key=7, sequence_number=9)
    assert_inner(one(bytes(eth() / OUTER / gre / INNER)), ENCAP_GRE)


def test_gre_ipv6_and_transparent_ethernet() -> None:
    p = one(bytes(eth() / OUTER / GRE(proto=0x86DD) / IPv6() / UDP(dport=53)))
    assert (p.ip_version, p.dport, p.encap) == (6, 53, ENCAP_GRE)
    p = one(bytes(eth() / OUTER / GRE(proto=0x6558) / eth() / Dot1Q(vlan=9) / INNER))
    assert_inner(p, ENCAP_GRE)
    assert p.vlan == 9  # the first (outermost) tag seen on the path


def test_gre_unknown_payload_keeps_outer_packet() -> None:
    p = one(bytes(eth() / OUTER / GRE(proto=0x883E) / b"wccp-redirect"))
    assert (p.proto, p.src, p.encap) == (47, bytes([203, 0, 113, 1]), ENCAP_NONE)


def test_gre_bad_version_and_routing() -> None:
    assert error_of(bytes(eth() / OUTER / GRE(version=3) / INNER)) == "gre_bad_header"
    assert error_of(bytes(eth() / OUTER / GRE(routing_present=1) / INNER)) == "gre_bad_header"


def test_pptp_enhanced_gre_carries_ppp() -> None:
    ppp = b"\xff\x03\x00\x21" + bytes(INNER)
    hdr = struct.pack("!HHHHI", 0x3001, 0x880B, len(ppp), 5, 1)  # K, S set, version 1
    p = one(bytes(eth() / IP(src="203.0.113.1", dst="203.0.113.2", proto=47) / (hdr + ppp)))
    assert_inner(p, ENCAP_GRE)
    ack_only = struct.pack("!HHHHI", 0x2081, 0x880B, 0, 5, 7)
    p = one(bytes(eth() / IP(proto=47) / ack_only))
    assert (p.proto, p.encap) == (47, ENCAP_NONE)
    ccp = struct.pack("!HHHH", 0x2001, 0x880B, 4, 5) + b"\x80\xfd\x01\x01"
    d, pkts = run(bytes(eth() / IP(proto=47) / ccp))
    assert pkts == [] and d.skipped["ppp_control"] == 1


def test_erspan_type_ii() -> None:
    frame = eth() / OUTER / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=3)
    p = one(bytes(frame / eth() / INNER))
    assert_inner(p, ENCAP_ERSPAN)


def test_erspan_type_i_without_sequence() -> None:
    p = one(bytes(eth() / OUTER / GRE(proto=0x88BE) / eth() / INNER))
    assert_inner(p, ENCAP_ERSPAN)


def test_erspan_type_iii_with_and_without_platform_subheader() -> None:
    base = eth() / OUTER / GRE(proto=0x22EB, seqnum_present=1)
    assert_inner(one(bytes(base / ERSPAN_III() / eth() / INNER)), ENCAP_ERSPAN)
    sub = ERSPAN_III(o=1) / ERSPAN_PlatformSpecific()
    assert_inner(one(bytes(base / sub / eth() / INNER)), ENCAP_ERSPAN)


def test_erspan_bad_version() -> None:
    frame = bytearray(
        bytes(eth() / OUTER / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II() / eth())
    )
    frame[14 + 20 + 8] = 0x70
    assert error_of(bytes(frame)) == "erspan_bad_header"


# -- IP in IP ----------------------------------------------------------------------------


def test_ip_in_ip_and_6in4() -> None:
    assert_inner(one(bytes(eth() / OUTER / INNER)), ENCAP_IPIP)
    p = one(bytes(eth() / OUTER / IPv6() / TCP(sport=443, dport=5000)))
    assert (p.ip_version, p.sport, p.encap) == (6, 443, ENCAP_IPIP)
    assert p.ip_len == 60


# -- UDP tunnels ------------------------------------------------------------------------


def test_vxlan_inner_ethernet() -> None:
    p = one(bytes(eth() / OUTER / UDP(sport=5, dport=4789) / VXLAN(vni=5) / eth() / INNER))
    assert_inner(p, ENCAP_VXLAN)
    d, pkts = run(bytes(eth() / OUTER / UDP(dport=4789) / VXLAN() / eth() / ARP()))
    assert pkts == [] and d.skipped["arp"] == 1


def test_vxlan_without_i_flag_is_plain_udp() -> None:
    p = one(bytes(eth() / OUTER / UDP(dport=4789) / (b"\x00" * 8) / eth() / INNER))
    assert (p.proto, p.dport, p.encap) == (17, 4789, ENCAP_NONE)


def test_geneve_ethernet_and_ip_payloads() -> None:
    frame = eth() / OUTER / UDP(dport=6081) / GENEVE(proto=0x6558) / eth() / INNER
    assert_inner(one(bytes(frame)), ENCAP_GENEVE)
    with_options = struct.pack("!BBHI", 2, 0, 0x0800, 0x000500) + b"\x01" * 8  # 8 option bytes
    assert_inner(one(bytes(eth() / OUTER / UDP(dport=6081) / with_options / INNER)), ENCAP_GENEVE)


def test_geneve_version_not_zero_is_plain_udp() -> None:
    raw = bytearray(bytes(eth() / OUTER / UDP(dport=6081) / GENEVE(proto=0x0800) / INNER))
    raw[42] |= 0x40
    assert one(bytes(raw)).encap == ENCAP_NONE


def test_gtpu_plain_and_with_extension_headers() -> None:
    frame = eth() / OUTER / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=1) / INNER
    assert_inner(one(bytes(frame)), ENCAP_GTPU)
    frame = eth() / OUTER / UDP(dport=2152) / GTP_U_Header(S=1, seq=4) / INNER
    assert_inner(one(bytes(frame)), ENCAP_GTPU)
    hdr = GTP_U_Header(E=1, next_ex=0x85) / GTPPDUSessionContainer(QFI=5)
    assert_inner(one(bytes(eth() / OUTER / UDP(dport=2152) / hdr / INNER)), ENCAP_GTPU)


def test_gtpu_echo_is_the_outer_packet() -> None:
    p = one(bytes(eth() / OUTER / UDP(dport=2152) / GTP_U_Header(gtp_type=1) / b"\x00\x00"))
    assert (p.dport, p.encap) == (2152, ENCAP_NONE)


def test_gtpu_zero_length_extension_header_is_an_error() -> None:
    hdr = struct.pack("!BBHIHBB", 0x34, 0xFF, 8, 1, 0, 0, 0x85) + b"\x00\x00\x00\x00"
    assert error_of(bytes(eth() / OUTER / UDP(dport=2152) / hdr)) == "gtpu_bad_header"


# -- depth -------------------------------------------------------------------------------


def test_nested_tunnels_report_the_outermost_encap() -> None:
    inner_vx = UDP(dport=4789) / VXLAN() / eth() / INNER
    p = one(bytes(eth() / OUTER / GRE() / IP() / inner_vx))
    assert_inner(p, ENCAP_GRE)


def test_tunnel_depth_bound() -> None:
    frame = eth() / OUTER
    for _ in range(5):
        frame = frame / GRE() / IP(src="10.9.9.9", dst="10.9.9.8")
    raw = bytes(frame / ICMP())
    assert error_of(raw) == "tunnel_too_deep"
    assert one(raw, DecodeConfig(max_tunnel_depth=5)).proto == 1
    assert error_of(bytes(eth() / OUTER / INNER), DecodeConfig(max_tunnel_depth=0)) == (
        "tunnel_too_deep"
    )


def test_custom_tunnel_ports() -> None:
    cfg = DecodeConfig(vxlan_ports=(9999,))
    frame = bytes(eth() / OUTER / UDP(dport=9999) / VXLAN() / eth() / INNER)
    assert_inner(one(frame, cfg), ENCAP_VXLAN)
    default = bytes(eth() / OUTER / UDP(dport=4789) / VXLAN() / eth() / INNER)
    assert one(default, cfg).encap == ENCAP_NONE
