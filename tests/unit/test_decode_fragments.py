"""IPv4/IPv6 fragment reassembly: completion, bounds, hostile overlaps, packet-time expiry."""

from __future__ import annotations

import struct

from scapy.layers.inet import GRE, IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether

from trafficguard.capture.frames import LINKTYPE_ETHERNET, Frame
from trafficguard.config import DecodeConfig, FragmentConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import ENCAP_GRE, Packet

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth() -> Ether:
    """Ethernet with explicit addresses (scapy would otherwise ARP for the IP destination)."""
    return Ether(src=MAC_A, dst=MAC_B)


S = 1_000_000_000
PAYLOAD = bytes(range(256)) * 12  # 3072 bytes, distinct content at every offset


def frags4(ident: int = 7, payload: bytes = PAYLOAD, size: int = 1024) -> list[bytes]:
    dgram = IP(src="192.0.2.1", dst="192.0.2.2", id=ident) / UDP(sport=4000, dport=5060) / payload
    return [bytes(eth() / f) for f in fragment(dgram, fragsize=size)]


def frames_of(raws: list[bytes], t0: int = 10 * S, step: int = 1000) -> list[Frame]:
    return [(t0 + i * step, LINKTYPE_ETHERNET, r, len(r) + 4) for i, r in enumerate(raws)]


class Run:
    """A decoder plus the packets it returned, checking the accounting after every batch."""

    def __init__(self, cfg: DecodeConfig | None = None) -> None:
        self.d = Decoder(cfg or DecodeConfig())
        self.packets: list[Packet] = []

    def feed(self, frames: list[Frame]) -> list[Packet]:
        out = self.d.decode_batch(frames)
        self.packets += out
        assert self.d.accounted(sum(p.frames for p in self.packets)) == self.d.frames_in
        return out

    def errors(self) -> dict[str, int]:
        return {k: v for k, v in self.d.errors.items() if v}


def test_ipv4_in_order_reassembly() -> None:
    raws = frags4()
    assert len(raws) == 4
    frames = frames_of(raws)
    r = Run()
    (p,) = r.feed(frames)
    assert (p.frames, p.wire_len, p.ts_ns) == (4, sum(f[3] for f in frames), frames[-1][0])
    assert (p.proto, p.sport, p.dport, p.src) == (17, 4000, 5060, bytes([192, 0, 2, 1]))
    assert p.payload() == PAYLOAD
    assert p.ip_len == 20 + 8 + len(PAYLOAD)
    assert r.d.fragments_held == 0 and r.d.fragment_bytes_held == 0


def test_ipv4_out_of_order_across_batches_holds_then_completes() -> None:
    frames = frames_of(frags4())
    r = Run()
    assert r.feed([frames[3], frames[1]]) == []
    assert r.d.fragments_held == 2 and r.d.datagrams_held == 1
    assert r.feed([frames[2]]) == []
    (p,) = r.feed([frames[0]])
    assert p.payload() == PAYLOAD and p.frames == 4
    assert r.d.fragments_held == 0


def test_identical_duplicate_fragment_is_merged_and_counted() -> None:
    frames = frames_of(frags4())
    r = Run()
    (p,) = r.feed([frames[0], frames[1], frames[1], frames[2], frames[3]])
    assert p.frames == 5 and p.payload() == PAYLOAD
    assert r.errors() == {}


def test_overlap_with_different_content_drops_the_datagram() -> None:
    raws = frags4()
    evil = bytearray(raws[1])
    evil[-1] ^= 0xFF  # same offset, different last byte
    r = Run()
    assert r.feed(frames_of([raws[0], raws[1], bytes(evil), raws[2], raws[3]])) == []
    # 3 frames dropped with the datagram; the 2 later ones start a new incomplete datagram
    assert r.errors() == {"fragment_overlap": 3}
    assert r.d.fragments_held == 2


def test_teardrop_overlapping_offsets_never_crash_or_grow() -> None:
    # teardrop: the second fragment starts inside the first and ends before it
    first = IP(id=99, flags="MF", frag=0, proto=17) / (b"A" * 48)
    inside = IP(id=99, flags="MF", frag=3, proto=17) / (b"B" * 8)
    final_inside = IP(id=98, frag=3, proto=17) / (b"A" * 8)
    r = Run()
    raws = [bytes(eth() / first), bytes(eth() / inside)]
    first98 = IP(id=98, flags="MF", frag=0, proto=17) / (b"A" * 48)
    raws += [bytes(eth() / first98), bytes(eth() / final_inside)]
    assert r.feed(frames_of(raws)) == []
    assert r.errors() == {"fragment_overlap": 2, "fragment_bad_length": 2}
    assert r.d.fragments_held == 0 and r.d.fragment_bytes_held == 0


def test_last_fragment_shorter_than_held_data_is_bad_length() -> None:
    first = IP(id=5, flags="MF", frag=0, proto=17) / (b"A" * 64)
    last = IP(id=5, frag=2, proto=17) / (b"A" * 8)  # ends at 24, but 64 bytes are held
    r = Run()
    r.feed(frames_of([bytes(eth() / first), bytes(eth() / last)]))
    assert r.errors() == {"fragment_bad_length": 2}


def test_non_final_fragment_must_be_a_multiple_of_eight() -> None:
    odd = IP(id=5, flags="MF", frag=0, proto=17) / (b"A" * 13)
    r = Run()
    r.feed(frames_of([bytes(eth() / odd)]))
    assert r.errors() == {"fragment_bad_length": 1}


def test_max_datagrams_drops_the_oldest() -> None:
    cfg = DecodeConfig(fragments=FragmentConfig(max_datagrams=2))
    r = Run(cfg)
    firsts = [frags4(ident=i)[0] for i in range(3)]
    r.feed(frames_of(firsts))
    assert r.errors() == {"fragment_buffer_full": 1}
    assert r.d.datagrams_held == 2
    # the oldest (id 0) is gone: completing it now cannot succeed; id 2 still can
    (p,) = r.feed(frames_of(frags4(ident=2)[1:]))
    assert p.frames == 4


def test_max_datagram_bytes() -> None:
    cfg = DecodeConfig(fragments=FragmentConfig(max_datagram_bytes=2000))
    r = Run(cfg)
    assert r.feed(frames_of(frags4())) == []
    # fragments ending past 2000 bytes are refused and take their datagram with them
    assert r.errors()["fragment_too_large"] >= 2
    assert r.d.fragment_bytes_held <= 2000


def test_max_total_bytes_bound() -> None:
    cfg = DecodeConfig(fragments=FragmentConfig(max_total_bytes=65536))
    r = Run(cfg)
    firsts = [frags4(ident=i, size=1400)[0] for i in range(100)]  # ~1.4 KB each
    r.feed(frames_of(firsts))
    assert r.d.fragment_bytes_held <= 65536
    assert r.errors()["fragment_buffer_full"] > 0
    assert r.d.datagrams_held < 100


def test_too_many_fragments_per_datagram() -> None:
    raws = [
        bytes(eth() / IP(id=1, flags="MF", frag=i * 2, proto=17) / (b"x" * 8)) for i in range(300)
    ]
    r = Run()
    r.feed(frames_of(raws))
    assert r.errors()["fragment_too_many"] == 257
    assert r.d.fragments_held == 300 - 257


def test_explicit_expire_in_packet_time() -> None:
    frames = frames_of(frags4()[:2])
    r = Run()
    r.feed(frames)
    r.d.expire(frames[0][0] + 29 * S)
    assert r.d.fragments_held == 2
    r.d.expire(frames[0][0] + 30 * S)
    assert r.d.fragments_held == 0
    assert r.errors() == {"fragment_timeout": 2}


def test_decode_batch_expires_lazily_in_packet_time() -> None:
    r = Run()
    r.feed(frames_of(frags4()[:2], t0=10 * S))
    other = bytes(eth() / IP() / UDP() / b"x")
    r.feed([(50 * S, LINKTYPE_ETHERNET, other, len(other))])
    assert r.d.fragments_held == 0
    assert r.errors() == {"fragment_timeout": 2}


def test_ipv6_fragments_reassemble() -> None:
    dgram = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(id=0x1234)
        / UDP(sport=5060, dport=5060)
        / PAYLOAD
    )
    raws = [bytes(eth() / f) for f in fragment6(dgram, 1280)]
    assert len(raws) == 3
    r = Run()
    (p,) = r.feed(frames_of(list(reversed(raws))))
    assert (p.ip_version, p.proto, p.frames, p.payload()) == (6, 17, 3, PAYLOAD)
    assert p.ip_len == 40 + 8 + 8 + len(PAYLOAD)


def test_atomic_ipv6_fragment_is_a_plain_packet() -> None:
    raw = bytes(eth() / IPv6() / IPv6ExtHdrFragment(offset=0, m=0) / UDP(dport=9) / b"a")
    (p,) = Run().feed(frames_of([raw]))
    assert (p.dport, p.frames, p.payload()) == (9, 1, b"a")


def test_snapped_fragment_is_truncated() -> None:
    raw = frags4()[0]
    r = Run()
    r.feed([(1, LINKTYPE_ETHERNET, raw[:200], len(raw))])
    assert r.errors() == {"truncated": 1}


def test_reassembled_datagram_with_bad_l4_counts_all_its_frames() -> None:
    dgram = bytes(IP(id=3, proto=17, src="192.0.2.9") / UDP() / PAYLOAD)
    bad = dgram[:24] + struct.pack("!H", 4) + dgram[26:]  # UDP length 4
    raws = [bytes(eth() / f) for f in fragment(IP(bad), fragsize=1024)]
    r = Run()
    assert r.feed(frames_of(raws)) == []
    assert r.errors() == {"udp_bad_length": len(raws)}


def test_fragmented_tunnel_packet_yields_inner_flow() -> None:
    inner = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / PAYLOAD[:2000]
    outer = IP(src="203.0.113.1", dst="203.0.113.2", id=77) / GRE() / inner
    raws = [bytes(eth() / f) for f in fragment(outer, fragsize=1200)]
    (p,) = Run().feed(frames_of(raws))
    assert (p.encap, p.src, p.dport, p.frames) == (ENCAP_GRE, bytes([10, 0, 0, 1]), 2, 2)
    assert p.payload() == PAYLOAD[:2000]
