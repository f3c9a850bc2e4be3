"""RTP sequence accounting, RFC 3550 jitter, RTCP SR/RR round-trip time, heuristic, E-model."""

from __future__ import annotations

import struct

import pytest

from trafficguard.voip import emodel
from trafficguard.voip.rtp import (
    IS_RTP,
    NOT_RTP,
    RTCP_RR,
    RTCP_SR,
    RtcpRttEstimator,
    RtpHeuristic,
    RtpStreams,
    RtpStreamStats,
    parse_rtcp,
    parse_rtp_header,
)

MS = 1_000_000


def rtp(
    seq: int,
    ts: int,
    ssrc: int = 0x1234ABCD,
    pt: int = 0,
    payload: bytes = b"\xff" * 160,
    marker: bool = False,
    csrc: int = 0,
    ext: bytes = b"",
    pad: int = 0,
) -> bytes:
    b0 = 0x80 | csrc | (0x10 if ext else 0) | (0x20 if pad else 0)
    b1 = pt | (0x80 if marker else 0)
    hdr = struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    hdr += b"\x00\x00\x00\x01" * csrc
    if ext:
        hdr += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    tail = (b"\x00" * (pad - 1) + bytes([pad])) if pad else b""
    return hdr + payload + tail


def stream(seqs: list[int], start_seq_ts: int = 0) -> RtpStreamStats:
    """Packets sent every 20 ms (160 ticks at 8 kHz) and arriving exactly on time."""
    st = RtpStreamStats(0x1, 8000)
    base = seqs[0]
    for i, seq in enumerate(seqs):
        k = (seq - base) & 0xFFFF
        st.observe(i * 20 * MS, seq & 0xFFFF, (start_seq_ts + 160 * k) & 0xFFFFFFFF, 0, 160)
    return st


def test_parse_header_with_csrc_extension_padding() -> None:
    data = rtp(7, 1000, pt=8, csrc=2, ext=b"\x01\x02\x03\x04", pad=4, marker=True)
    hdr = parse_rtp_header(b"xx" + data, 2)
    assert hdr is not None
    assert (hdr.seq, hdr.rtp_ts, hdr.ssrc, hdr.pt, hdr.marker) == (7, 1000, 0x1234ABCD, 8, True)
    assert hdr.payload_off == 2 + 12 + 8 + 8 and hdr.payload_len == 160


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00" + b"\x00" * 9,  # 11 bytes
        b"\x40" + b"\x00" * 20,  # version 1
        b"\x80\xc8" + b"\x00" * 30,  # RTCP SR on a muxed port
        bytes([0x8F]) + b"\x00" * 20,  # 15 CSRCs announced, none present
        bytes([0xA0]) + b"\x00" * 11,  # padding flag, pad count 0
    ],
)
def test_parse_header_rejects(data: bytes) -> None:
    assert parse_rtp_header(data) is None


def test_clean_stream() -> None:
    st = stream(list(range(100, 150)))
    assert (st.packets, st.expected, st.lost, st.duplicates, st.reordered) == (50, 50, 0, 0, 0)
    assert st.jitter_mean_ms == 0.0 and st.max_delta_ns == 20 * MS


def test_loss() -> None:
    seqs = [s for s in range(1000, 1100) if s not in (1010, 1011, 1050)]
    st = stream(seqs)
    assert (st.packets, st.expected, st.lost) == (97, 100, 3)


def test_reorder_is_not_loss() -> None:
    st = stream([1, 2, 4, 3, 5, 6])
    assert (st.expected, st.lost, st.reordered, st.duplicates) == (6, 0, 1, 0)


def test_first_packet_late_extends_base() -> None:
    st = stream([11, 10, 12])
    assert (st.expected, st.lost, st.reordered) == (3, 0, 1)


def test_duplicates_not_counted_twice() -> None:
    st = stream([1, 2, 2, 3, 3, 3, 5, 4, 4])
    assert st.packets == 9
    assert (st.duplicates, st.expected, st.received, st.lost, st.reordered) == (4, 5, 5, 0, 1)


def test_sequence_wrap() -> None:
    seqs = [65530 + i for i in range(12)]  # 65530..65535, 0..5
    st = stream(seqs)
    assert (st.expected, st.lost) == (12, 0)
    seqs = [s for s in seqs if s != 65536]  # lose seq 0 exactly at the wrap
    st = stream(seqs)
    assert (st.expected, st.lost) == (12, 1)
    st = stream([65534, 65535, 1, 0, 2])  # reordered across the wrap
    assert (st.expected, st.lost, st.reordered) == (5, 0, 1)


def test_large_jump_probe_then_restart() -> None:
    # 10 packets, a single stray far-away seq (ignored), then the source restarts at 30000.
    st = RtpStreamStats(1, 8000)
    t = 0
    for seq in [*range(10), 20000, 11, 12, 30000, 30001, 30002]:
        st.observe(t, seq, 160 * t // (20 * MS), 0, 160)
        t += 20 * MS
    # First run 0..12 (10 lost: expected 13, received 12), the 20000 probe is not counted,
    # then 30000 probes and 30001 restarts the sequence: expected 2 (30001..30002).
    assert st.seq_resets == 1
    assert st.expected == 13 + 2
    assert st.lost == 1
    assert st.packets == 16


def test_ssrc_change_starts_a_new_stream() -> None:
    streams = RtpStreams()
    for i in range(5):
        streams.observe(i * 20 * MS, 100 + i, 160 * i, 0xAAAA, 0, 160)
    for i in range(5, 8):
        streams.observe(i * 20 * MS, 7 + i, 5000 + 160 * i, 0xBBBB, 8, 160)
    a, b = streams.streams[0xAAAA], streams.streams[0xBBBB]
    assert (a.packets, a.expected, a.lost, a.pt) == (5, 5, 0, 0)
    assert (b.packets, b.expected, b.lost, b.pt, b.clock_rate) == (3, 3, 0, 8, 8000)


def test_ssrc_bound() -> None:
    streams = RtpStreams(max_streams=2)
    for ssrc in range(5):
        streams.observe(0, 1, 1, ssrc, 0, 160)
    assert len(streams.streams) == 2 and streams.dropped == 3


def test_jitter_matches_hand_computed_rfc3550() -> None:
    # 8 kHz; sent every 20 ms (160 ticks); arrival offsets (ms): 0, 20, 45, 60, 80, 110.
    arrivals_ms = [0, 20, 45, 60, 80, 110]
    st = RtpStreamStats(1, 8000)
    for i, a in enumerate(arrivals_ms):
        st.observe(a * MS, i, 160 * i, 0, 160)
    # By hand, in ms: D = |Δarrival - 20|: 0, 5, 5, 0, 10
    # J1 = 0; J2 = 5/16 = 0.3125; J3 = 0.3125 + (5 - 0.3125)/16 = 0.60546875;
    # J4 = 0.60546875 - 0.60546875/16 = 0.567626953125;
    # J5 = 0.567626953125 + (10 - 0.567626953125)/16 = 1.157150268554...
    expected = [0.0, 0.3125, 0.60546875, 0.567626953125, 1.1571502685546875]
    assert st.jitter_ms == pytest.approx(expected[-1], abs=1e-9)
    assert st.jitter_max_ms == pytest.approx(max(expected), abs=1e-9)
    assert st.jitter_mean_ms == pytest.approx(sum(expected) / 5, abs=1e-9)
    assert st.max_delta_ns == 30 * MS


def test_jitter_handles_rtp_timestamp_wrap() -> None:
    st = RtpStreamStats(1, 8000)
    for i in range(10):
        st.observe(i * 20 * MS, i, (0xFFFFFF00 + 160 * i) & 0xFFFFFFFF, 0, 160)
    assert st.jitter_max_ms == pytest.approx(0.0, abs=1e-9)


def test_record() -> None:
    rec = stream([1, 2, 4]).to_record(("10.0.0.1", 4000), ("10.0.0.2", 5000), call_id_hash="t_x")
    assert (rec.lost, rec.expected, rec.codec, rec.clock_rate, rec.max_delta_ms) == (
        1,
        4,
        "PCMU",
        8000,
        20.0,
    )


# -- RTCP -----------------------------------------------------------------------------------
def sr(ssrc: int, ntp: int, blocks: list[bytes]) -> bytes:
    body = struct.pack("!IQIII", ssrc, ntp, 1234, 50, 8000) + b"".join(blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), RTCP_SR, (4 + len(body)) // 4 - 1) + body


def rr(ssrc: int, blocks: list[bytes]) -> bytes:
    body = struct.pack("!I", ssrc) + b"".join(blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), RTCP_RR, (4 + len(body)) // 4 - 1) + body


def block(ssrc: int, fraction: int, cumulative: int, lsr: int, dlsr: int) -> bytes:
    return struct.pack(
        "!IIIIII", ssrc, (fraction << 24) | (cumulative & 0xFFFFFF), 70000, 42, lsr, dlsr
    )


SDES = bytes([0x81, 202, 0, 4]) + struct.pack("!I", 7) + b"\x01\x08alice@ex" + b"\x00\x00"


def test_parse_rtcp_compound_sr_sdes_rr() -> None:
    data = sr(0xA, 0x0001_2345_6789_0000, [block(0xB, 25, -3, 0, 0)]) + SDES + rr(0xB, [])
    reports = parse_rtcp(data)
    assert [r.pt for r in reports] == [RTCP_SR, RTCP_RR]
    b = reports[0].blocks[0]
    assert (b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_seq, b.jitter) == (
        0xB,
        25,
        -3,
        70000,
        42,
    )
    assert reports[0].ntp_ts == 0x0001_2345_6789_0000 and reports[0].packet_count == 50
    assert parse_rtcp(b"\x80\xc8\xff\xff") == []  # length beyond the datagram
    assert parse_rtcp(b"") == []


def test_rtt_from_sr_and_rr() -> None:
    est = RtcpRttEstimator()
    ntp = (0x00AB_CD12 << 32) | 0x3456_0000
    lsr = (ntp >> 16) & 0xFFFFFFFF
    assert est.observe(1_000 * MS, parse_rtcp(sr(0xA, ntp, []))) == []
    # B held the SR for 0.5 s (32768/65536) and its RR reaches the monitor 620 ms later.
    rtts = est.observe(1_620 * MS, parse_rtcp(rr(0xB, [block(0xA, 0, 0, lsr, 32768)])))
    assert rtts == [pytest.approx(120.0)]
    assert est.last_rtt_ms[0xA] == pytest.approx(120.0)
    # An RR whose LSR matches no SR seen gives nothing.
    assert est.observe(2_000 * MS, parse_rtcp(rr(0xB, [block(0xA, 0, 0, lsr + 1, 0)]))) == []


# -- heuristic ------------------------------------------------------------------------------
def test_heuristic_accepts_rtp_after_three_packets() -> None:
    h = RtpHeuristic()
    assert h.feed(rtp(10, 0)) == "undecided"
    assert h.feed(rtp(11, 160)) == "undecided"
    assert h.feed(rtp(12, 320)) == IS_RTP


@pytest.mark.parametrize(
    "packets",
    [
        [b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12] * 3,  # STUN
        [rtp(10, 0, ssrc=1), rtp(11, 160, ssrc=2), rtp(12, 320, ssrc=3)],  # SSRC keeps changing
        [rtp(10, 0), rtp(500, 160), rtp(9, 320), rtp(3000, 0)],  # seq all over the place
    ],
)
def test_heuristic_rejects(packets: list[bytes]) -> None:
    h = RtpHeuristic()
    verdict = "undecided"
    for p in packets:
        verdict = h.feed(p)
    assert verdict == NOT_RTP


# -- E-model --------------------------------------------------------------------------------
def test_mos_known_points() -> None:
    assert emodel.mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)
    assert emodel.mos_from_r(50.0) == pytest.approx(2.58, abs=0.01)
    assert emodel.mos_from_r(-5) == 1.0 and emodel.mos_from_r(120) == 4.5


def test_r_factor_defaults_and_codecs() -> None:
    assert emodel.r_factor("PCMU", 0.0, 50.0) == pytest.approx(93.2)
    assert emodel.r_factor("G729", 0.0, 50.0) == pytest.approx(82.2)
    # G.711 with PLC, 2 % random loss: Ie_eff = 95 * 2 / (2 + 25.1)
    assert emodel.r_factor("PCMA", 2.0, 0.0) == pytest.approx(93.2 - 95 * 2 / 27.1)


def test_r_monotonic_in_loss_and_delay() -> None:
    rs = [emodel.r_factor("G729", loss, 80.0) for loss in (0, 0.5, 1, 2, 5, 10, 20)]
    assert rs == sorted(rs, reverse=True) and len(set(rs)) == len(rs)
    ds = [emodel.r_factor("PCMU", 0, d) for d in (50, 150, 200, 300, 400, 600)]
    assert ds == sorted(ds, reverse=True)
    assert emodel.delay_impairment(100) == 0.0 and emodel.delay_impairment(400) > 20
    burst = emodel.r_factor("PCMU", 3.0, 50, burst_r=2.0)
    assert burst < emodel.r_factor("PCMU", 3.0, 50)


def test_one_way_delay_estimate() -> None:
    assert emodel.one_way_delay_ms(None, 5.0) == 40.0  # 20 ms buffer floor + 20 ms frame
    assert emodel.one_way_delay_ms(100.0, 30.0) == 50.0 + 60.0 + 20.0
