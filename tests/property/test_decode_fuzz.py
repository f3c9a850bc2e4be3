"""Hostile input: decode_batch never raises, every frame is accounted, buffers stay bounded."""

from __future__ import annotations

import struct
from functools import cache

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realdata import real_pcap

from trafficguard.capture import frames as lt
from trafficguard.capture.frames import Frame
from trafficguard.config import DecodeConfig, FragmentConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import Packet
from trafficguard.decode.reasons import DECODE_REASONS, SKIP_REASONS

LINKTYPES = [
    lt.LINKTYPE_NULL,
    lt.LINKTYPE_ETHERNET,
    lt.LINKTYPE_RAW,
    lt.LINKTYPE_RAW_OPENBSD,
    lt.LINKTYPE_RAW_BSDOS,
    lt.LINKTYPE_LOOP,
    lt.LINKTYPE_LINUX_SLL,
    lt.LINKTYPE_IPV4,
    lt.LINKTYPE_IPV6,
    lt.LINKTYPE_LINUX_SLL2,
    147,  # a linktype the decoder does not know
]
SAMPLES = [
    "zeek-gre-sample.pcap",
    "zeek-vxlan.pcap",
    "tcpdump-geneve.pcap",
    "ndpi-6in4-tunnel.pcap",
    "zeek-pppoe.pcap",
    "zeek-http-qinq.pcap",
    "zeek-linux-sll2.pcap",
    "heplify-sip-sctp-sll.pcap",
    "sngrep-sip-ipv6frag-sll.pcap",
    "zeek-ipv6-fragmented-dns.pcap",
    "zeek-ipv4-fragmented.pcap",
    "zeek-sip-long-paths-rawip.pcap",
    "heplify-sip-tcp-retrans-sll.pcap",
]
SMALL_FRAGS = FragmentConfig(max_datagrams=8, max_datagram_bytes=2000, max_total_bytes=65536)


@cache
def real_frames() -> tuple[Frame, ...]:
    out: list[Frame] = []
    for name in SAMPLES:
        with real_pcap(name).open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            linktype = reader.datalink()
            out += [(int(ts * 1e9), linktype, bytes(b), len(b)) for ts, b in reader]
    return tuple(out)


def check(d: Decoder, packets: list[Packet]) -> None:
    assert set(d.errors) == set(DECODE_REASONS)
    assert set(d.skipped) == set(SKIP_REASONS)
    assert all(v >= 0 for v in d.errors.values()) and all(v >= 0 for v in d.skipped.values())
    assert d.accounted(sum(p.frames for p in packets)) == d.frames_in
    for p in packets:
        assert 0 <= p.payload_off <= len(p.data)
        assert 0 <= p.payload_len <= len(p.data) - p.payload_off
        assert len(p.src) == len(p.dst) == (4 if p.ip_version == 4 else 16)
        assert 0 <= p.sport <= 0xFFFF and 0 <= p.dport <= 0xFFFF


def run_batches(d: Decoder, batches: list[list[Frame]]) -> list[Packet]:
    packets: list[Packet] = []
    for batch in batches:
        packets += d.decode_batch(batch)
        check(d, packets)
    return packets


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=200), st.integers(0, 64)),
        min_size=1,
        max_size=20,
    )
)
def test_random_bytes_under_every_linktype(items: list[tuple[int, bytes, int]]) -> None:
    frames = [
        (i * 1000, linktype, data, len(data) + extra)
        for i, (linktype, data, extra) in enumerate(items)
    ]
    d = Decoder(DecodeConfig(fragments=SMALL_FRAGS))
    packets = run_batches(d, [frames])
    d.expire(10**19)
    assert d.fragments_held == 0
    check(d, packets)


@st.composite
def mutated(draw: st.DrawFn) -> Frame:
    frames = real_frames()
    ts, linktype, data, wire = frames[draw(st.integers(0, len(frames) - 1))]
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "set16"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "truncate":
            del buf[pos:]
        elif op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "set16" and len(buf) >= pos + 2:
            buf[pos : pos + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 0xFFFF, 0x8000])))
    snapped = draw(st.booleans())
    return ts, linktype, bytes(buf), max(wire, len(buf)) + (100 if snapped else 0)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=30), st.integers(1, 30))
def test_mutated_real_frames_never_raise(frames: list[Frame], batch: int) -> None:
    d = Decoder(DecodeConfig(fragments=SMALL_FRAGS))
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    packets = run_batches(d, batches)
    d.expire(10**19)
    assert d.fragments_held == 0 and d.fragment_bytes_held == 0
    check(d, packets)


def test_unmutated_real_frames_decode_cleanly() -> None:
    d = Decoder(DecodeConfig())
    packets = run_batches(d, [list(real_frames())])
    assert packets
    # only the held IPv4 fragments, expired lazily once later files move packet time on
    assert {k for k, v in d.errors.items() if v} <= {"fragment_timeout"}


@st.composite
def ipv4_fragment(draw: st.DrawFn) -> Frame:
    ident = draw(st.integers(0, 12))
    offset = draw(st.integers(0, 300))  # in 8-byte units
    more = draw(st.booleans())
    size = draw(st.sampled_from([0, 8, 16, 64, 13, 512, 1480]))
    fill = draw(st.sampled_from([b"A", b"B"]))
    payload = fill * size
    ihl_total = 20 + size
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, ihl_total, ident, (0x2000 if more else 0) | offset, 64, 17, 0,
        b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02",
    )  # fmt: skip
    ts = draw(st.integers(0, 100)) * 1_000_000_000
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    data = eth + hdr + payload
    return ts, lt.LINKTYPE_ETHERNET, data, len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(ipv4_fragment(), min_size=1, max_size=80))
def test_fragment_buffer_stays_within_bounds(frames: list[Frame]) -> None:
    frames.sort(key=lambda f: f[0])
    d = Decoder(DecodeConfig(fragments=SMALL_FRAGS))
    packets: list[Packet] = []
    for frame in frames:
        packets += d.decode_batch([frame])
        check(d, packets)
        assert d.datagrams_held <= SMALL_FRAGS.max_datagrams
        assert d.fragment_bytes_held <= SMALL_FRAGS.max_total_bytes
        assert d.fragment_bytes_held <= d.datagrams_held * SMALL_FRAGS.max_datagram_bytes
    for p in packets:
        if p.frames > 1:
            assert len(p.data) <= SMALL_FRAGS.max_datagram_bytes
    d.expire(10**19)
    assert d.fragments_held == 0 and d.datagrams_held == 0
    check(d, packets)
