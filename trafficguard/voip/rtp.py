"""RTP/RTCP media quality (RFC 3550): per-stream loss, reordering, jitter, RTT.

``RtpStreamStats.observe`` runs once per RTP packet, so it is a ``__slots__`` class doing
integer arithmetic only: no allocation, no exceptions, no dict lookups except the
codec table on the first packet. Sequence accounting follows RFC 3550 A.1 (16-bit wrap,
``MAX_DROPOUT``/``MAX_MISORDER``, restart after two packets of a large jump) with one
change: a sliding bitmap of the last ``WINDOW`` sequence numbers recognises duplicates,
so a duplicate is not counted as received twice and loss never goes negative because
of duplication. Interarrival jitter is RFC 3550 A.8 in RTP timestamp units, converted
to ms with the payload type's clock rate.

RTP payload bytes are never read (only the 12-byte header and its CSRC/extension
lengths). RTCP SDES items (CNAME, NAME, EMAIL, PHONE: personal data) are skipped
without being decoded; only SR/RR numbers are parsed.
"""

from __future__ import annotations

import struct
from array import array
from typing import Final, NamedTuple

from trafficguard.voip.records import RtpStreamRecord
from trafficguard.voip.sdp import codec_of

RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
WINDOW: Final = 128  # duplicates recognised within this many sequence numbers
_WINDOW_MASK: Final = (1 << WINDOW) - 1
NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000

_RTP_HDR: Final = struct.Struct("!BBHII")
_RTCP_HDR: Final = struct.Struct("!BBH")
_SR_INFO: Final = struct.Struct("!IQIII")  # sender SSRC, NTP, RTP ts, packets, octets
_REPORT_BLOCK: Final = struct.Struct("!IIIIII")
RTCP_SR: Final = 200
RTCP_RR: Final = 201


class RtpHeader(NamedTuple):
    """Fields of one RTP fixed header (RFC 3550 §5.1)."""

    seq: int
    rtp_ts: int
    ssrc: int
    pt: int
    marker: bool
    payload_off: int  # first byte after CSRCs and header extension
    payload_len: int  # without padding


def parse_rtp_header(data: bytes, off: int = 0, end: int | None = None) -> RtpHeader | None:
    """Parse the RTP header at ``data[off:end]``; None if it cannot be RTP v2.

    Payload types 72-76 are rejected: with the marker bit they are RTCP packet types
    200-204 (RFC 5761 §4), which is how RTP and RTCP are told apart on a muxed port.
    """
    if end is None:
        end = len(data)
    if end - off < 12:
        return None
    b0, b1, seq, rtp_ts, ssrc = _RTP_HDR.unpack_from(data, off)
    if b0 >> 6 != 2:
        return None
    pt = b1 & 0x7F
    if 72 <= pt <= 76:
        return None
    pos = off + 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if pos + 4 > end:
            return None
        pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
    if pos > end:
        return None
    stop = end
    if b0 & 0x20:  # padding: last byte says how much
        pad = data[end - 1]
        if pad == 0 or end - pad < pos:
            return None
        stop = end - pad
    return RtpHeader(seq, rtp_ts, ssrc, pt, bool(b1 & 0x80), pos, stop - pos)


class RtpStreamStats:
    """Quality counters of one RTP stream (one SSRC in one direction).

    ``lost = expected - received`` where ``expected`` is the RFC 3550 A.3 figure summed
    over sequence restarts and ``received`` counts distinct in-sequence packets.
    """

    __slots__ = (
        "_bad_seq",
        "_base",
        "_expected_prior",
        "_ext_max",
        "_jitter",
        "_last_arrival",
        "_last_rtp_ts",
        "_received",
        "_window",
        "clock_rate",
        "duplicates",
        "first_ns",
        "jitter_max",
        "jitter_samples",
        "jitter_sum",
        "last_ns",
        "max_delta_ns",
        "packets",
        "payload_bytes",
        "pt",
        "reordered",
        "seq_resets",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate  # 0: taken from the first payload type if static
        self.pt = -1
        self.packets = 0
        self.payload_bytes = 0
        self.duplicates = 0
        self.reordered = 0
        self.seq_resets = 0
        self.first_ns = 0
        self.last_ns = 0
        self.max_delta_ns = 0
        self.jitter_sum = 0.0  # in RTP timestamp units
        self.jitter_max = 0.0
        self.jitter_samples = 0
        self._jitter = 0.0
        self._base = 0
        self._ext_max = 0
        self._window = 0
        self._bad_seq = -1
        self._received = 0
        self._expected_prior = 0
        self._last_arrival = 0
        self._last_rtp_ts = 0

    @property
    def expected(self) -> int:
        """Packets expected from the sequence numbers (RFC 3550 A.3)."""
        if not self._received:
            return self._expected_prior
        return self._expected_prior + self._ext_max - self._base + 1

    @property
    def received(self) -> int:
        """Distinct packets counted for loss (duplicates and jump probes excluded)."""
        return self._received

    @property
    def lost(self) -> int:
        """Expected minus received, never negative."""
        return max(0, self.expected - self._received)

    def _ms(self, units: float) -> float:
        return units * 1000.0 / self.clock_rate if self.clock_rate else 0.0

    @property
    def jitter_ms(self) -> float:
        """Current RFC 3550 interarrival jitter estimate in ms."""
        return self._ms(self._jitter)

    @property
    def jitter_mean_ms(self) -> float:
        """Mean of the jitter estimate over the packets that updated it, in ms."""
        return self._ms(self.jitter_sum / self.jitter_samples) if self.jitter_samples else 0.0

    @property
    def jitter_max_ms(self) -> float:
        """Largest jitter estimate seen, in ms."""
        return self._ms(self.jitter_max)

    def observe(self, ts_ns: int, seq: int, rtp_ts: int, pt: int, payload_len: int) -> None:
        """Account one packet arriving at packet time ``ts_ns``."""
        self.packets += 1
        self.payload_bytes += payload_len
        if self.packets == 1:
            self.pt = pt
            if not self.clock_rate:
                self.clock_rate = codec_of(pt)[1]
            self.first_ns = self.last_ns = self._last_arrival = ts_ns
            self._last_rtp_ts = rtp_ts
            self._base = self._ext_max = seq
            self._window = 1
            self._received = 1
            return
        delta = ts_ns - self.last_ns
        if delta > self.max_delta_ns:  # noqa: PLR1730 (per packet: a compare is cheaper than max())
            self.max_delta_ns = delta
        self.last_ns = ts_ns

        udelta = (seq - self._ext_max) & 0xFFFF
        if udelta == 0:
            self.duplicates += 1
            return
        if udelta < MAX_DROPOUT:
            self._ext_max += udelta
            self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
            self._received += 1
            self._bad_seq = -1
        elif udelta > RTP_SEQ_MOD - MAX_MISORDER:
            back = RTP_SEQ_MOD - udelta
            self.reordered += 1
            if back < WINDOW:
                bit = 1 << back
                if self._window & bit:
                    self.reordered -= 1
                    self.duplicates += 1
                    return
                self._window |= bit
            self._received += 1
            ext = self._ext_max - back
            if ext < self._base:  # noqa: PLR1730 (per packet: a compare is cheaper than max())
                self._base = ext
        elif seq == self._bad_seq:
            # Two packets continue the jump: the source restarted (RFC 3550 A.1).
            self._expected_prior += self._ext_max - self._base + 1
            self._base = self._ext_max = seq
            self._window = 1
            self._received += 1
            self._bad_seq = -1
            self.seq_resets += 1
        else:
            self._bad_seq = (seq + 1) & 0xFFFF
            return

        rate = self.clock_rate
        if rate:
            # RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si), in timestamp units.
            arrival = (ts_ns - self._last_arrival) * rate / NS_PER_S
            sent = (rtp_ts - self._last_rtp_ts) & 0xFFFFFFFF
            if sent >= 0x80000000:
                sent -= 0x100000000
            d = abs(arrival - sent)
            jitter = self._jitter + (d - self._jitter) / 16.0
            self._jitter = jitter
            self.jitter_sum += jitter
            self.jitter_samples += 1
            if jitter > self.jitter_max:  # noqa: PLR1730 (per packet: a compare is cheaper than max())
                self.jitter_max = jitter
        self._last_arrival = ts_ns
        self._last_rtp_ts = rtp_ts

    def to_record(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        *,
        codec: str | None = None,
        call_id_hash: str = "",
        rtt_ms: float | None = None,
        r_factor: float | None = None,
        mos: float | None = None,
        sensor_loss: bool = False,
    ) -> RtpStreamRecord:
        """The stream's record; ``codec`` overrides the static payload-type table."""
        return RtpStreamRecord(
            ssrc=self.ssrc,
            src_addr=src[0],
            src_port=src[1],
            dst_addr=dst[0],
            dst_port=dst[1],
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            payload_type=self.pt,
            codec=codec if codec is not None else codec_of(self.pt)[0],
            clock_rate=self.clock_rate,
            packets=self.packets,
            expected=self.expected,
            lost=self.lost,
            duplicates=self.duplicates,
            reordered=self.reordered,
            seq_resets=self.seq_resets,
            jitter_mean_ms=self.jitter_mean_ms,
            jitter_max_ms=self.jitter_max_ms,
            max_delta_ms=self.max_delta_ns / NS_PER_MS,
            call_id_hash=call_id_hash,
            rtt_ms=rtt_ms,
            r_factor=r_factor,
            mos=mos,
            sensor_loss=sensor_loss,
        )


class RtpStreams:
    """The RTP streams of one flow direction, by SSRC (an SSRC change starts a stream).

    At most ``max_streams`` SSRCs are kept so a flood of random SSRCs cannot grow the
    state; the rest are counted in ``dropped``.
    """

    __slots__ = ("clock_rates", "dropped", "max_streams", "streams")

    def __init__(self, max_streams: int = 16, clock_rates: dict[int, int] | None = None) -> None:
        self.streams: dict[int, RtpStreamStats] = {}
        self.max_streams = max_streams
        self.dropped = 0
        self.clock_rates = clock_rates or {}  # pt -> rate from the SDP's rtpmap

    def observe(
        self, ts_ns: int, seq: int, rtp_ts: int, ssrc: int, pt: int, payload_len: int
    ) -> None:
        """Account one RTP packet of this direction."""
        stats = self.streams.get(ssrc)
        if stats is None:
            if len(self.streams) >= self.max_streams:
                self.dropped += 1
                return
            stats = RtpStreamStats(ssrc, self.clock_rates.get(pt, 0))
            self.streams[ssrc] = stats
        stats.observe(ts_ns, seq, rtp_ts, pt, payload_len)

    def observe_packet(self, ts_ns: int, data: bytes, off: int = 0, end: int | None = None) -> bool:
        """Parse and account one UDP payload; False if it is not an RTP packet."""
        hdr = parse_rtp_header(data, off, end)
        if hdr is None:
            return False
        self.observe(ts_ns, hdr.seq, hdr.rtp_ts, hdr.ssrc, hdr.pt, hdr.payload_len)
        return True


# -- the compiled core's RTP accounting (trafficguard.fast) -------------------------------------
# ``trafficguard.fast`` can run ``RtpStreams.observe_packet`` in C for a flow (same arithmetic,
# same rules); the VoIP stage then reads each stream's state as one tuple in this order.
STATE_FIELDS: Final = (
    "ssrc", "clock_rate", "pt", "packets", "payload_bytes", "duplicates", "reordered",
    "seq_resets", "first_ns", "last_ns", "max_delta_ns", "jitter_sum", "jitter_max",
    "jitter_samples", "_jitter", "_base", "_ext_max", "_window", "_bad_seq", "_received",
    "_expected_prior", "_last_arrival", "_last_rtp_ts",
)  # fmt: skip


def stats_state(stats: RtpStreamStats) -> tuple[int | float, ...]:
    """The full state of a stream, in ``STATE_FIELDS`` order (what the C core returns)."""
    return tuple(getattr(stats, name) for name in STATE_FIELDS)


def stats_from_state(state: tuple[int | float, ...]) -> RtpStreamStats:
    """An ``RtpStreamStats`` holding a state tuple from the compiled core."""
    stats = RtpStreamStats(int(state[0]))
    for name, value in zip(STATE_FIELDS, state, strict=True):
        setattr(stats, name, value)
    return stats


def clock_rate_table(clock_rates: dict[int, int]) -> bytes:
    """Per payload type 0-127, the clock rate a new stream gets (``RtpStreams.observe``):
    the SDP rtpmap's rate, else the static table's; as native uint32 for the C core."""
    return array("I", [clock_rates.get(pt, 0) or codec_of(pt)[1] for pt in range(128)]).tobytes()


# -- RTCP -------------------------------------------------------------------------------------
class RtcpReportBlock(NamedTuple):
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int  # the source this block reports on
    fraction_lost: int  # 0..255 (loss fraction × 256 since the previous report)
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, RTP timestamp units
    lsr: int  # middle 32 bits of the NTP timestamp of the last SR from ``ssrc``
    dlsr: int  # delay since that SR, 1/65536 s


class RtcpReport(NamedTuple):
    """A sender (SR, pt 200) or receiver (RR, pt 201) report."""

    pt: int
    ssrc: int  # the reporter
    ntp_ts: int  # 64-bit NTP timestamp (SR only, else 0)
    rtp_ts: int
    packet_count: int
    octet_count: int
    blocks: tuple[RtcpReportBlock, ...]


def parse_rtcp(data: bytes, off: int = 0, end: int | None = None) -> list[RtcpReport]:
    """SR and RR packets of an RTCP compound packet; never raises.

    Other packet types (SDES, BYE, APP, feedback, XR) are skipped by their length
    field without being decoded. Parsing stops at the first malformed header, keeping
    the reports before it.
    """
    if end is None:
        end = len(data)
    out: list[RtcpReport] = []
    pos = off
    while pos + 4 <= end:
        b0, pt, words = _RTCP_HDR.unpack_from(data, pos)
        size = 4 * (words + 1)
        if b0 >> 6 != 2 or pos + size > end or not 192 <= pt <= 223:
            break
        count = b0 & 0x1F
        body = pos + 4
        if pt == RTCP_SR and size >= 28:
            ssrc, ntp, rtp_ts, pkts, octets = _SR_INFO.unpack_from(data, body)
            blocks = _blocks(data, body + 24, pos + size, count)
            out.append(RtcpReport(pt, ssrc, ntp, rtp_ts, pkts, octets, blocks))
        elif pt == RTCP_RR and size >= 8:
            ssrc = int.from_bytes(data[body : body + 4], "big")
            blocks = _blocks(data, body + 4, pos + size, count)
            out.append(RtcpReport(pt, ssrc, 0, 0, 0, 0, blocks))
        pos += size
    return out


def _blocks(data: bytes, pos: int, end: int, count: int) -> tuple[RtcpReportBlock, ...]:
    out = []
    for _ in range(count):
        if pos + 24 > end:
            break
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, pos)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        out.append(RtcpReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr))
        pos += 24
    return tuple(out)


class RtcpRttEstimator:
    """Round-trip time from SR/RR pairs as seen by a passive monitor.

    An endpoint's RR block carries LSR (the middle 32 bits of the NTP time of the SR it
    answers) and DLSR (how long it held it). The monitor saw that SR at ``t_sr`` and the
    RR at ``t_rr`` (packet time), so ``t_rr - t_sr - DLSR`` is the round trip between
    the monitor and the reporting endpoint — the full RTT when the monitor sits next to
    the SR sender. Remembers at most ``max_srs`` SRs (oldest dropped first).
    """

    __slots__ = ("_srs", "last_rtt_ms", "max_srs")

    def __init__(self, max_srs: int = 256) -> None:
        self._srs: dict[tuple[int, int], int] = {}
        self.max_srs = max_srs
        self.last_rtt_ms: dict[int, float] = {}  # SR sender SSRC -> latest RTT

    def observe(self, ts_ns: int, reports: list[RtcpReport]) -> list[float]:
        """Account the reports of one RTCP packet; return RTTs (ms) they completed."""
        rtts: list[float] = []
        for rep in reports:
            for block in rep.blocks:
                if not block.lsr:
                    continue
                sent = self._srs.pop((block.ssrc, block.lsr), None)
                if sent is None:
                    continue
                rtt_ns = ts_ns - sent - block.dlsr * NS_PER_S // 65536
                if rtt_ns >= 0:
                    rtt = rtt_ns / NS_PER_MS
                    rtts.append(rtt)
                    self.last_rtt_ms[block.ssrc] = rtt
            if rep.pt == RTCP_SR:
                if len(self._srs) >= self.max_srs:
                    del self._srs[next(iter(self._srs))]
                self._srs[(rep.ssrc, (rep.ntp_ts >> 16) & 0xFFFFFFFF)] = ts_ns
        return rtts


# -- RTP without signalling ---------------------------------------------------------------
UNDECIDED: Final = "undecided"
IS_RTP: Final = "rtp"
NOT_RTP: Final = "not_rtp"


class RtpHeuristic:
    """Decides whether an unsignalled UDP flow direction carries RTP.

    RTP when ``min_packets`` consecutive packets are version 2 with the same SSRC,
    sequence numbers increasing by 1..``max_seq_step`` and timestamps not going back;
    not RTP after ``max_bad`` packets that break this or ``max_packets`` without a
    decision. Cheap enough to run on the first packets of every unknown UDP flow.
    """

    __slots__ = (
        "_bad",
        "_good",
        "_seen",
        "_seq",
        "_ssrc",
        "_ts",
        "max_bad",
        "max_packets",
        "max_seq_step",
        "min_packets",
        "verdict",
    )

    def __init__(
        self, min_packets: int = 3, max_packets: int = 10, max_bad: int = 2, max_seq_step: int = 8
    ) -> None:
        self.min_packets = min_packets
        self.max_packets = max_packets
        self.max_bad = max_bad
        self.max_seq_step = max_seq_step
        self.verdict = UNDECIDED
        self._seen = 0
        self._good = 0
        self._bad = 0
        self._ssrc = -1
        self._seq = 0
        self._ts = 0

    def feed(self, data: bytes, off: int = 0, end: int | None = None) -> str:
        """Look at one more UDP payload; return the (possibly final) verdict."""
        if self.verdict != UNDECIDED:
            return self.verdict
        self._seen += 1
        hdr = parse_rtp_header(data, off, end)
        if hdr is None:
            self._bad += 1
            self._good = 0
        elif self._good and hdr.ssrc == self._ssrc:
            step = (hdr.seq - self._seq) & 0xFFFF
            ts_step = (hdr.rtp_ts - self._ts) & 0xFFFFFFFF
            if step == 0 and ts_step == 0:
                pass  # a duplicate (mirrored twice, retransmitted): neither for nor against
            elif 1 <= step <= self.max_seq_step and ts_step < 0x80000000:
                self._good += 1
            else:
                self._bad += 1
                self._good = 1
        else:
            if self._good:
                self._bad += 1  # SSRC changed mid-run
            self._good = 1
        if hdr is not None:
            self._ssrc, self._seq, self._ts = hdr.ssrc, hdr.seq, hdr.rtp_ts
        if self._good >= self.min_packets:
            self.verdict = IS_RTP
        elif self._bad >= self.max_bad or self._seen >= self.max_packets:
            self.verdict = NOT_RTP
        return self.verdict
