"""Decoding the real public captures in tests/data/real and real-ext (see SOURCES.md there).

Expected counts were taken from tshark 4.0 on the same files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dpkt
import pytest
from realdata import all_real_pcaps, real_pcap

from trafficguard.capture.frames import Frame
from trafficguard.config import DecodeConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import (
    ENCAP_GENEVE,
    ENCAP_GRE,
    ENCAP_IPIP,
    ENCAP_NONE,
    ENCAP_PPPOE,
    ENCAP_VXLAN,
    Packet,
)

FAR_FUTURE = 10**19


def read_frames(path: Path) -> list[Frame]:
    """Tiny dpkt-based reader: (ts_ns, linktype, data, wire_len) per record."""
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        return [(int(ts * 1e9), linktype, bytes(buf), len(buf)) for ts, buf in reader]


def decode_file(name: str, batch: int = 512) -> tuple[Decoder, list[Packet]]:
    frames = read_frames(real_pcap(name))
    d = Decoder(DecodeConfig())
    pkts: list[Packet] = []
    for i in range(0, len(frames), batch):
        pkts += d.decode_batch(frames[i : i + batch])
        assert d.accounted(sum(p.frames for p in pkts)) == d.frames_in
    assert d.frames_in == len(frames)
    return d, pkts


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


CLEAN = sorted(
    p.name
    for p in all_real_pcaps()
    if p.name not in {"ndpi-badpackets.pcap", "zeek-ipv4-fragmented.pcap"}
)


@pytest.mark.parametrize("name", CLEAN)
def test_clean_files_decode_without_errors(name: str) -> None:
    d, pkts = decode_file(name)
    assert nonzero(d.errors) == {}
    assert pkts, name
    if name != "zeek-ipv6-fragmented-dns.pcap":  # that one ends with a lone fragment
        assert d.fragments_held == 0


def test_vlan_and_qinq_give_the_same_packets_as_untagged() -> None:
    def key(p: Packet) -> tuple[object, ...]:
        return (p.src, p.dst, p.sport, p.dport, p.tcp_flags, p.payload_len, p.ip_len)

    _, plain = decode_file("zeek-http-get.pcap")
    _, vlan = decode_file("zeek-http-vlan.pcap")
    _, qinq = decode_file("zeek-http-qinq.pcap")
    assert len(plain) == 14
    assert [key(p) for p in plain] == [key(p) for p in vlan] == [key(p) for p in qinq]
    assert {p.vlan for p in vlan} == {0} and {p.vlan for p in qinq} == {0}
    assert {p.dport for p in plain} | {p.sport for p in plain} >= {80}


def test_gre_sample_inner_packets() -> None:
    _, pkts = decode_file("zeek-gre-sample.pcap")
    assert len(pkts) == 40
    assert {p.encap for p in pkts} == {ENCAP_GRE}
    assert Counter(p.proto for p in pkts) == {1: 10, 6: 22, 17: 8}
    assert {22} <= {p.dport for p in pkts if p.proto == 6} | {p.sport for p in pkts}
    assert {p.ip_version for p in pkts} == {4}


def test_vxlan_inner_icmp_and_arp() -> None:
    d, pkts = decode_file("zeek-vxlan.pcap")
    assert [(p.encap, p.proto) for p in pkts] == [(ENCAP_VXLAN, 1)] * 8
    assert {p.icmp_type for p in pkts} == {0, 8}
    assert nonzero(d.skipped) == {"arp": 2}


def test_geneve_inner_ssh_and_icmp() -> None:
    _, pkts = decode_file("tcpdump-geneve.pcap")
    assert {p.encap for p in pkts} == {ENCAP_GENEVE}
    assert Counter(p.proto for p in pkts) == {6: 33, 1: 6}
    assert all(22 in (p.sport, p.dport) for p in pkts if p.proto == 6)


def test_6in4_tunnel() -> None:
    _, pkts = decode_file("ndpi-6in4-tunnel.pcap")
    assert len(pkts) == 127
    assert {(p.encap, p.ip_version) for p in pkts} == {(ENCAP_IPIP, 6)}
    assert Counter(p.proto for p in pkts)[58] == 48


def test_pppoe_sessions_and_control() -> None:
    d, pkts = decode_file("zeek-pppoe.pcap")
    assert len(pkts) == 25
    assert {(p.encap, p.ip_version) for p in pkts} == {(ENCAP_PPPOE, 6)}
    assert Counter(p.proto for p in pkts)[58] == 21
    assert nonzero(d.skipped) == {"ppp_control": 36, "pppoe_discovery": 4}


def test_linux_sll2() -> None:
    d, pkts = decode_file("zeek-linux-sll2.pcap")
    assert sorted((p.ip_version, p.proto) for p in pkts) == [(4, 1), (4, 1), (6, 58), (6, 58)]
    assert nonzero(d.skipped) == {"arp": 2}


def test_sctp_on_sll() -> None:
    _, pkts = decode_file("heplify-sip-sctp-sll.pcap")
    assert [p.proto for p in pkts] == [132] * 5
    assert Counter(p.sport for p in pkts) == {5060: 2, 57098: 3}
    assert all(p.payload_len > 0 for p in pkts)


def test_ipv6_fragmented_sip_on_sll() -> None:
    _, pkts = decode_file("sngrep-sip-ipv6frag-sll.pcap")
    assert len(pkts) == 32 and sum(p.frames for p in pkts) == 34
    big = [p for p in pkts if p.frames > 1]
    assert len(big) == 2
    for p in big:
        assert p.proto == 17 and p.payload().startswith((b"INVITE", b"SIP/2.0"))
        assert p.payload_len > 1400


def test_ipv6_fragmented_dns() -> None:
    d, pkts = decode_file("zeek-ipv6-fragmented-dns.pcap")
    assert len(pkts) == 5
    reassembled = [p for p in pkts if p.frames > 1]
    assert [p.frames for p in reassembled] == [3]
    assert all(p.sport == 53 and p.proto == 17 for p in reassembled)
    assert d.fragments_held == 1  # frame 4: a lone last fragment
    d.expire(FAR_FUTURE)
    assert nonzero(d.errors) == {"fragment_timeout": 1}


def test_ipv4_fragments_held_then_expired() -> None:
    d, pkts = decode_file("zeek-ipv4-fragmented.pcap")
    assert pkts == []
    assert d.fragments_held == 5 and nonzero(d.errors) == {}
    d.expire(FAR_FUTURE)
    assert d.fragments_held == 0
    assert nonzero(d.errors) == {"fragment_timeout": 5}
    assert d.accounted(0) == d.frames_in == 5


def test_raw_ipv4_linktype() -> None:
    _, pkts = decode_file("zeek-sip-long-paths-rawip.pcap")
    assert [(p.proto, p.encap) for p in pkts] == [(17, ENCAP_NONE)] * 2
    assert all(p.payload().split(b" ", 1)[0] in (b"OPTIONS", b"SIP/2.0") for p in pkts)


def test_bad_packets_are_counted_not_raised() -> None:
    d, pkts = decode_file("ndpi-badpackets.pcap")
    # every IPv4 header claims more bytes than the (unsnapped) frame holds
    assert pkts == []
    assert nonzero(d.errors) == {"ipv4_bad_length": 93}


def test_plain_ethernet_matches_dpkt() -> None:
    frames = read_frames(real_pcap("wireshark-aaa-sip-dns.pcap"))
    pkts = Decoder(DecodeConfig()).decode_batch(frames)
    ours = [(p.src, p.dst, p.sport, p.dport, p.payload_len) for p in pkts]
    theirs = []
    for _, _, data, _ in frames:
        ip = dpkt.ethernet.Ethernet(data).data
        if isinstance(ip, dpkt.ip.IP):
            l4 = ip.data
            ports = (l4.sport, l4.dport) if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP) else (0, 0)
            plen = len(l4.data) if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP) else None
            theirs.append((ip.src, ip.dst, *ports, plen))
    assert len(ours) == len(theirs) == 647
    assert [o[:4] for o in ours] == [t[:4] for t in theirs]
    assert [o[4] for o in ours if o[2]] == [t[4] for t in theirs if t[2]]
