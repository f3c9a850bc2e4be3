"""The VoIP stage: SIP and RTP/RTCP analysis attached to the flow table.

``VoipStage`` registers one flow hook. When a flow starts, the hook decides once what
the flow is for VoIP and keeps a small per-flow *handler* keyed by the flow key:

* SIP — UDP/TCP/SCTP on a configured SIP port, or labelled ``sip`` by the classifier:
  datagrams (UDP, SCTP DATA chunks) are parsed whole, TCP goes through one
  ``SipStreamFramer`` per direction (segments split or joined anywhere, retransmitted
  bytes skipped by sequence number). Messages feed the ``CallTracker``.
* SIP over WebSocket (RFC 7118, ``websocket.py``) — a TCP flow on a SIP port or on
  ``WS_PORTS`` whose first payload is an HTTP upgrade: frames instead of Content-Length,
  transport ``ws``. A ``WS_PORTS`` flow that does not upgrade loses its handler at its
  first payload, so only upgraded flows cost anything after the handshake.
* SIP over TLS (5061) — only counted; the flow table records it as a flow.
* RTP/RTCP — UDP flows whose endpoint an SDP announced (``CallTracker.media_owner``,
  updated by re-INVITEs), flows the classifier labelled ``rtp``/``rtcp``, and, with
  ``rtp_heuristic``, unknown UDP flows whose first packets look like one RTP stream.
Anything else gets no handler, so a non-VoIP packet costs one dict lookup (keyed by the
flow object itself), and on the compiled fast path (``wants_packets``) nothing at all:
only flows with a handler come back to Python. SIP over TCP on a port outside
``sip_ports`` is found only when its first packet already names it (the classifier
labels it ``sip``); operators list such ports in ``voip.sip_ports``. Records: ``CallRecord`` and
``RegistrationRecord`` from the tracker, ``RtpStreamRecord`` per SSRC and direction when
its flow ends, and ``VoipIntervalRecord`` KPIs (``kpi.py``). Counters are plain ints,
read by ``collect`` at scrape time (``metrics.py``). Identities leave only as pseudonyms.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
from msgspec import Struct

from trafficguard.config import NS_PER_S, VoipConfig
from trafficguard.decode.packet import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Packet
from trafficguard.flow.hooks import HookHost, StartFilter
from trafficguard.flow.keys import addr_text
from trafficguard.flow.state import DIR_FWD, Flow
from trafficguard.voip.dialogs import CallTimeouts, CallTracker
from trafficguard.voip.emodel import CODEC_IMPAIRMENTS, mos_from_r, one_way_delay_ms, r_factor
from trafficguard.voip.kpi import KpiAggregator, VoipIntervalRecord
from trafficguard.voip.metrics import VoipMetrics
from trafficguard.voip.numbers import NumberClassifier, NumberPlan
from trafficguard.voip.pseudo import Pseudonymizer
from trafficguard.voip.records import CallRecord, RegistrationRecord
from trafficguard.voip.rtp import (
    IS_RTP,
    NOT_RTP,
    RtcpRttEstimator,
    RtpHeuristic,
    RtpStreams,
    RtpStreamStats,
    clock_rate_table,
    parse_rtcp,
    parse_rtp_header,
    stats_from_state,
)
from trafficguard.voip.sdp import codec_of
from trafficguard.voip.sip import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    OVERSIZE,
    SipStreamFramer,
    parse_sip_datagram,
)
from trafficguard.voip.websocket import FAILED as WS_FAILED
from trafficguard.voip.websocket import HANDSHAKE as WS_HANDSHAKE
from trafficguard.voip.websocket import (
    WS_BAD_HANDSHAKE,
    WS_PORTS,
    WsSipFramer,
    looks_like_http_request,
)

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

NS_PER_MS: Final = 1_000_000
_RTP_MIN_PORT: Final = 1024
MAX_PORT: Final = 65535
_MAX_RTCP_SOURCES: Final = 65536  # SSRCs whose latest RTCP figures are remembered
_SEQ_MASK: Final = 0xFFFFFFFF
_TCP_PORTS_SEQ: Final = struct.Struct("!HHI")
_RTP_FIXED: Final = struct.Struct("!BBHII")
_SCTP_DATA: Final = 0
MAX_SCTP_MESSAGE: Final = MAX_HEADER_BYTES + MAX_BODY_BYTES
_VOIP_PROTOS: Final = frozenset({PROTO_UDP, PROTO_TCP, PROTO_SCTP})
_SCTP_DATA_HDR: Final = 16  # chunk header 4 + TSN 4 + stream 2 + SSN 2 + PPID 4

# Transport events (not parse errors): counted in trafficguard_sip_transport_events_total.
TCP_RETRANSMISSION: Final = "tcp_retransmission"
TCP_GAP: Final = "tcp_gap"
SCTP_FRAGMENT: Final = "sctp_fragment"
SCTP_RETRANSMISSION: Final = "sctp_retransmission"
WS_UPGRADE: Final = "ws_upgrade"  # a watched TCP flow upgraded to SIP over WebSocket

Endpoint = tuple[str, int]


class NativeRtp(Protocol):
    """What the compiled fast path (``trafficguard.fast.path.FastPath``) offers the stage:
    RTP accounting in C for a flow, and per-hook release of a flow."""

    def track_rtp(self, flow: Flow, rates: bytes, max_streams: int) -> bool: ...

    def untrack_rtp(self, flow: Flow) -> None: ...

    def rtp_only_rest(self, flow: Flow, hook: Any) -> None: ...

    def release(self, flow: Flow, hook: Any) -> None: ...

    def rtp_streams(self, flow: Flow) -> tuple[Any, Any, Any]: ...


def tcp_seq(pkt: Packet) -> int:
    """Sequence number of a TCP segment (the decoder keeps only payload offsets), or -1.

    The header ends at ``payload_off``; its length is found as the one whose data-offset
    field agrees and whose ports match the packet's.
    """
    data = pkt.data
    off = pkt.payload_off
    for hlen in range(20, 64, 4):
        start = off - hlen
        if start < 0:
            break
        if data[start + 12] >> 4 == hlen >> 2:
            sport, dport, seq = _TCP_PORTS_SEQ.unpack_from(data, start)
            if sport == pkt.sport and dport == pkt.dport:
                return int(seq)
    return -1


class _Handler:
    """Per-flow VoIP work; ``packet`` runs for each packet of the flow."""

    __slots__ = ("ends", "stage")

    def __init__(self, stage: VoipStage, ends: tuple[tuple[Endpoint, Endpoint], ...]) -> None:
        self.stage = stage
        self.ends = ends  # ((src, dst) fwd, (src, dst) rev)

    def packet(self, pkt: Packet, direction: str) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """The flow ended: emit what this handler holds."""


class _SipDatagrams(_Handler):
    """SIP over UDP: every datagram holds whole messages (§18.3)."""

    __slots__ = ()

    def packet(self, pkt: Packet, direction: str) -> None:
        n = pkt.payload_len
        if n:
            off = pkt.payload_off
            src, dst = self.ends[0] if direction == DIR_FWD else self.ends[1]
            self.stage.sip_datagram(bytes(pkt.data[off : off + n]), pkt.ts_ns, src, dst, "udp")


class _SipStream(_Handler):
    """SIP over TCP: one framer per direction, bytes de-duplicated by sequence number.

    A flow whose first payload is an HTTP ``GET`` switches to SIP over WebSocket (RFC
    7118, ``websocket.py``): the upgrade is checked, then frames carry the messages
    (transport ``ws``). ``probe`` flows (``WS_PORTS``, not SIP ports) are kept only if
    they upgrade: anything else drops the handler, so the fast path stops sending them.
    """

    __slots__ = ("flow", "framers", "fresh", "next_seq", "probe", "transport")

    def __init__(
        self,
        stage: VoipStage,
        ends: tuple[tuple[Endpoint, Endpoint], ...],
        flow: Flow,
        probe: bool = False,
    ) -> None:
        super().__init__(stage, ends)
        self.flow = flow
        self.probe = probe
        self.fresh = True  # no payload seen yet: it may be an HTTP upgrade
        self.transport = "tcp"
        self.framers: list[SipStreamFramer | WsSipFramer] = [SipStreamFramer(), SipStreamFramer()]
        self.next_seq = [-1, -1]

    def packet(self, pkt: Packet, direction: str) -> None:
        n = pkt.payload_len
        if not n:
            return
        i = 0 if direction == DIR_FWD else 1
        off = pkt.payload_off
        data = bytes(pkt.data[off : off + n])
        stage = self.stage
        if self.fresh:
            self.fresh = False
            if looks_like_http_request(data):
                self.transport = "ws"
                self.framers = [WsSipFramer(i == 0), WsSipFramer(i == 1)]
            elif self.probe:
                stage.drop_handler(self.flow)
                return
        seq = tcp_seq(pkt)
        expected = self.next_seq[i]
        if seq >= 0:
            if expected >= 0:
                ahead = (seq - expected) & _SEQ_MASK
                if ahead >= 0x80000000:  # starts before what we have: retransmitted bytes
                    overlap = (expected - seq) & _SEQ_MASK
                    if overlap >= n:
                        stage.count_transport(TCP_RETRANSMISSION)
                        return
                    data = data[overlap:]
                    seq = expected
                elif ahead:  # a segment is missing: restart framing at this one
                    stage.count_transport(TCP_GAP)
                    self._merge_errors(i)
                    framer = self.framers[i]
                    if isinstance(framer, WsSipFramer):
                        framer.restart()
                    else:
                        self.framers[i] = SipStreamFramer()
            self.next_seq[i] = (seq + len(data)) & _SEQ_MASK
        framer = self.framers[i]
        msgs = framer.feed(data)
        if framer.errors:
            self._merge_errors(i)
        if isinstance(framer, WsSipFramer) and framer.state != WS_HANDSHAKE:
            if framer.state == WS_FAILED:
                self._ws_failed()
                return
            if not framer.request and self.probe:
                self.probe = False  # upgraded: a SIP-over-WebSocket flow from now on
                stage.count_transport(WS_UPGRADE)
        if msgs:
            src, dst = self.ends[i]
            ts = pkt.ts_ns
            observe = stage.tracker.observe
            transport = self.transport
            for msg in msgs:
                observe(msg, ts, src, dst, transport)

    def _ws_failed(self) -> None:
        """The HTTP exchange was no WebSocket upgrade: not SIP (unless on a SIP port)."""
        if self.probe:
            self.stage.drop_handler(self.flow)
            return
        if self.transport == "ws":  # on a SIP port: counted once, nothing more is read
            self.transport = "http"
            self.stage.count_parse_error(WS_BAD_HANDSHAKE)
            for framer in self.framers:
                if isinstance(framer, WsSipFramer):
                    framer.state = WS_FAILED

    def _merge_errors(self, i: int) -> None:
        framer = self.framers[i]
        for reason, count in framer.errors.items():
            self.stage.count_parse_error(reason, count)
        framer.errors.clear()

    def end(self) -> None:
        self._merge_errors(0)
        self._merge_errors(1)


class _SipSctp(_Handler):
    """SIP over SCTP (RFC 4168): each user message (DATA chunks B..E) is one SIP message.

    Fragmented messages are joined per direction in TSN order (bounded by
    ``MAX_SCTP_MESSAGE``); a retransmitted TSN is skipped.
    """

    __slots__ = ("last_tsn", "parts")

    def __init__(self, stage: VoipStage, ends: tuple[tuple[Endpoint, Endpoint], ...]) -> None:
        super().__init__(stage, ends)
        self.last_tsn = [-1, -1]
        self.parts: list[bytearray | None] = [None, None]

    def packet(self, pkt: Packet, direction: str) -> None:
        data = pkt.data
        pos = pkt.payload_off
        end = min(pos + pkt.payload_len, len(data))
        i = 0 if direction == DIR_FWD else 1
        while pos + 4 <= end:
            ctype = data[pos]
            clen = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if clen < 4 or pos + clen > end:
                break
            if ctype == _SCTP_DATA and clen > _SCTP_DATA_HDR:
                self._data(pkt, i, data[pos + 1], pos, clen)
            pos += (clen + 3) & ~3

    def _data(self, pkt: Packet, i: int, flags: int, pos: int, clen: int) -> None:
        data = pkt.data
        stage = self.stage
        tsn = int.from_bytes(data[pos + 4 : pos + 8], "big")
        last = self.last_tsn[i]
        if tsn == last or (last >= 0 and (tsn - last) & _SEQ_MASK >= 0x80000000):
            stage.count_transport(SCTP_RETRANSMISSION)
            return
        self.last_tsn[i] = tsn
        body = data[pos + _SCTP_DATA_HDR : pos + clen]
        first, last_part = flags & 0x02, flags & 0x01
        if first and last_part:
            stage.sip_datagram(bytes(body), pkt.ts_ns, *self.ends[i], "sctp")
            return
        stage.count_transport(SCTP_FRAGMENT)
        parts = bytearray(body) if first else self.parts[i]
        if parts is None:
            return  # a middle or last fragment whose first one we missed
        if not first:
            parts += body
        if len(parts) > MAX_SCTP_MESSAGE:
            self.parts[i] = None
            stage.count_parse_error(OVERSIZE)
            return
        if last_part:
            self.parts[i] = None
            stage.sip_datagram(bytes(parts), pkt.ts_ns, *self.ends[i], "sctp")
        else:
            self.parts[i] = parts


class _Media(_Handler):
    """RTP (and RTCP multiplexed on the same port) of one UDP flow, both directions.

    ``heuristics`` is None once the flow is known to be RTP (announced by SDP or confirmed
    by the heuristic); before that, one ``RtpHeuristic`` per direction decides and the
    packets are metered meanwhile, so a confirmed stream misses none of its first ones.

    ``native`` (the compiled fast path): the C core meters the streams from the flow's
    first packet (the same ``RtpStreams`` arithmetic); this handler then sees packets only
    for the heuristic and, once confirmed, only those that are not RTP (RTCP muxed on
    the port), and reads the streams when the flow ends.
    """

    __slots__ = ("call_id_hash", "flow", "heuristics", "native", "rtpmap", "streams")

    def __init__(
        self,
        stage: VoipStage,
        ends: tuple[tuple[Endpoint, Endpoint], ...],
        flow: Flow,
        call_id_hash: str,
        rtpmap: dict[int, tuple[str, int]],
        confirmed: bool,
    ) -> None:
        super().__init__(stage, ends)
        self.flow = flow
        self.call_id_hash = call_id_hash
        self.rtpmap = rtpmap
        rates = {pt: rate for pt, (_, rate) in rtpmap.items() if rate}
        limit = stage.cfg.max_rtp_streams
        self.streams = (RtpStreams(limit, rates), RtpStreams(limit, rates))
        self.heuristics: tuple[RtpHeuristic, RtpHeuristic] | None = (
            None if confirmed else (RtpHeuristic(), RtpHeuristic())
        )
        self.native = stage.native
        if self.native is not None and not self.native.track_rtp(
            flow, clock_rate_table(rates), limit
        ):
            self.native = None

    def packet(self, pkt: Packet, direction: str) -> None:
        off = pkt.payload_off
        n = pkt.payload_len
        data = pkt.data
        i = 0 if direction == DIR_FWD else 1
        heuristics = self.heuristics
        if self.native is not None:
            # The C core accounts the RTP packets; only the heuristic and RTCP remain here.
            end = off + n
            if heuristics is not None:
                verdict = heuristics[i].feed(data, off, end)
                if verdict == NOT_RTP:
                    self.stage.drop_handler(self.flow)
                elif verdict == IS_RTP:
                    self.heuristics = None
                    self.stage.media_confirmed(self)
                    self.native.rtp_only_rest(self.flow, self.stage)
            elif n >= 8 and 200 <= data[off + 1] <= 204:  # never RTP: RTCP (RFC 5761)
                self.stage.rtcp_packet(pkt.ts_ns, data, off, end)
            return
        if heuristics is None and n >= 12 and data[off] == 0x80:
            # The common case inline: RTP v2 without padding, extension or CSRCs, of an
            # SSRC already known (no header object, two calls fewer per packet).
            _, b1, seq, rtp_ts, ssrc = _RTP_FIXED.unpack_from(data, off)
            stats = self.streams[i].streams.get(ssrc)
            pt = b1 & 0x7F
            if stats is not None and not 72 <= pt <= 76:
                stats.observe(pkt.ts_ns, seq, rtp_ts, pt, n - 12)
                return
        end = off + n
        if heuristics is not None:
            verdict = heuristics[i].feed(data, off, end)
            if verdict == NOT_RTP:
                self.stage.drop_handler(self.flow)
                return
            if verdict == IS_RTP:
                self.heuristics = None
                self.stage.media_confirmed(self)
        if (
            not self.streams[i].observe_packet(pkt.ts_ns, data, off, end)
            and heuristics is None
            and end - off >= 8
            and 200 <= data[off + 1] <= 204  # RTCP muxed on the RTP port (RFC 5761)
        ):
            self.stage.rtcp_packet(pkt.ts_ns, data, off, end)

    def tie(self, call_id_hash: str, rtpmap: dict[int, tuple[str, int]]) -> None:
        """SDP announced this flow after it started: tie it to the call."""
        self.call_id_hash = call_id_hash
        if rtpmap:
            self.rtpmap = rtpmap
            rates = {pt: rate for pt, (_, rate) in rtpmap.items() if rate}
            for streams in self.streams:
                streams.clock_rates = rates
            if self.native is not None:
                self.native.track_rtp(self.flow, clock_rate_table(rates), 1)

    def end(self) -> None:
        if self.heuristics is not None:
            return  # never confirmed as RTP: nothing to report
        if self.native is not None:
            fwd, rev, _dropped = self.native.rtp_streams(self.flow)
            for i, states in enumerate((fwd, rev)):
                src, dst = self.ends[i]
                for state in states:
                    stats = stats_from_state(state)
                    self.stage.stream_ended(stats, src, dst, self.call_id_hash, self.rtpmap)
            return
        for i, streams in enumerate(self.streams):
            src, dst = self.ends[i]
            for stats in streams.streams.values():
                self.stage.stream_ended(stats, src, dst, self.call_id_hash, self.rtpmap)


class _Rtcp(_Handler):
    """An RTCP flow (RTP port + 1): SR/RR figures per reported SSRC, RTT from SR/RR pairs."""

    __slots__ = ()

    def packet(self, pkt: Packet, direction: str) -> None:
        off = pkt.payload_off
        self.stage.rtcp_packet(pkt.ts_ns, pkt.data, off, off + pkt.payload_len)


class _RtcpFigures:
    """Latest RTCP report about one SSRC."""

    __slots__ = ("fraction_lost", "jitter", "rtt_ms")

    def __init__(self) -> None:
        self.fraction_lost = 0.0
        self.jitter = 0  # RTP timestamp units
        self.rtt_ms: float | None = None


def _endpoint_text(addr: str, port: int) -> str:
    """``addr:port`` as SDP endpoints are written (``[v6]:port``)."""
    if ":" in addr:
        return "[" + addr + "]:" + str(port)
    return addr + ":" + str(port)


class VoipStage:
    """SIP dialogs, RTP/RTCP quality and KPIs as one pipeline stage (see the module doc)."""

    name = "voip"

    def __init__(self, cfg: VoipConfig, pseudonymizer: Pseudonymizer) -> None:
        self.cfg = cfg
        plan = NumberPlan(**cfg.number_plan.model_dump())
        timeouts = CallTimeouts(**cfg.timeouts.model_dump())
        self.tracker = CallTracker(
            pseudonymizer,
            NumberClassifier(plan),
            timeouts,
            max_calls=cfg.max_calls,
            max_registrations=cfg.max_registrations,
        )
        self._sip_ports = frozenset(cfg.sip_ports)
        self._tls_ports = frozenset(cfg.sip_tls_ports)
        self._ws_ports = WS_PORTS - self._tls_ports
        self._heuristic = cfg.rtp_heuristic
        # every flow _decide could give a handler or count (announced media ports are
        # watched while they are known, see attach)
        self.start_filter = StartFilter(
            _VOIP_PROTOS,
            self._sip_ports | self._tls_ports | self._ws_ports,
            frozenset({"sip", "sip-tls", "rtp", "rtcp"}),
            _RTP_MIN_PORT if self._heuristic else 0,
        )
        self._handlers: dict[Flow, _Handler] = {}  # by identity: one lookup per packet
        self._untied: dict[Flow, _Media] = {}  # confirmed media flows no SDP named yet
        self._rtcp: dict[int, _RtcpFigures] = {}
        self._rtt = RtcpRttEstimator()
        self._kpi = KpiAggregator(
            int(cfg.kpi_interval_s * NS_PER_S), int(cfg.kpi_grace_s * NS_PER_S)
        )
        self._out: list[Struct] = []
        self._decided: Flow | None = None  # the flow _decide saw last (asked twice per start)
        self.native: NativeRtp | None = None  # the compiled fast path, when attached to it
        self.metrics = VoipMetrics()

    # -- the Stage protocol ----------------------------------------------------------------
    def attach(self, host: HookHost) -> None:
        host.add_hook(self)
        if hasattr(host, "track_rtp"):
            self.native = host  # type: ignore[assignment]
        watch_port = getattr(host, "watch_port", None)
        if watch_port is not None:

            def watch(port: int, delta: int) -> None:
                # a flow is media if a port or the port below it (RTCP) was announced
                for p in (port, port + 1):
                    if 0 <= p <= MAX_PORT:
                        watch_port(p, delta)

            self.tracker.port_watch = watch

    def on_records(self, records: Sequence[Struct]) -> None:
        """The VoIP stage is first: it reads no other stage's records."""

    def tick(self, now_ns: int) -> None:
        self.tracker.tick(now_ns)
        if self._untied and self.tracker.media_known:
            self._tie_untied()
        self._collect_tracker()
        self._add_intervals(self._kpi.close_due(now_ns))

    def take_records(self) -> list[Struct]:
        self._collect_tracker()
        out = self._out
        self._out = []
        return out

    def finish(self, now_ns: int) -> None:
        """Close every open call, registration and interval (flows were flushed already)."""
        for flow in list(self._handlers):
            self._end_handler(flow)
        self._untied.clear()
        self.tracker.flush_all()
        self._collect_tracker()
        self._add_intervals(self._kpi.close_all())

    def collect(self) -> Iterable[Metric]:
        return self.metrics.families(self.tracker)

    # -- the flow hook ---------------------------------------------------------------------
    def wants_packets(self, pkt: Packet, flow: Flow) -> bool:
        """Fast path: only flows with a handler come back to Python."""
        if flow is not self._decided:
            self._decide(pkt, flow)
        return flow in self._handlers

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        # The fast path may ask wants_packets before or after this; decide once.
        if flow is not self._decided:
            self._decide(pkt, flow)

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        handler = self._handlers.get(flow)
        if handler is not None:
            handler.packet(pkt, direction)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        if flow in self._handlers:
            self._end_handler(flow)

    def _end_handler(self, flow: Flow) -> None:
        handler = self._handlers.pop(flow)
        self._untied.pop(flow, None)
        if isinstance(handler, _Media) and handler.heuristics is None:
            self.metrics.rtp_active_flows -= 1
        handler.end()

    def _decide(self, pkt: Packet, flow: Flow) -> None:
        """Decide once what the flow is for VoIP; non-VoIP flows get no handler."""
        self._decided = flow
        proto = pkt.proto
        if proto not in _VOIP_PROTOS:
            return
        sport = pkt.sport
        dport = pkt.dport
        label = flow.label
        sip_ports = self._sip_ports
        if sport in sip_ports or dport in sip_ports or label == "sip":
            ends = self._ends(flow)
            if proto == PROTO_UDP:
                self._handlers[flow] = _SipDatagrams(self, ends)
            elif proto == PROTO_TCP:
                self._handlers[flow] = _SipStream(self, ends, flow)
            else:
                self._handlers[flow] = _SipSctp(self, ends)
            return
        if sport in self._tls_ports or dport in self._tls_ports or label == "sip-tls":
            self.metrics.sip_tls_flows += 1
            return
        if proto == PROTO_TCP and (sport in self._ws_ports or dport in self._ws_ports):
            # maybe SIP over WebSocket: watched until its first payload (an upgrade or not)
            self._handlers[flow] = _SipStream(self, self._ends(flow), flow, probe=True)
            return
        if proto != PROTO_UDP:
            return
        tracker = self.tracker
        known = tracker.media_port_known  # the four ports below, in either orientation
        if known(dport) or known(sport) or known(dport - 1) or known(sport - 1):
            # the SDP endpoints this flow could be: its destination and source, then the
            # RTCP port below each; address text is built once per side, and only when
            # one of those ports is announced at all
            a, pa, b, pb, _proto, _vlan = flow.endpoints()
            src_addr = addr_text(a)
            dst_addr = addr_text(b)
            src_head = "[" + src_addr + "]:" if ":" in src_addr else src_addr + ":"
            dst_head = "[" + dst_addr + "]:" if ":" in dst_addr else dst_addr + ":"
            for endpoint, rtcp in (
                (dst_head + str(pb), False),
                (src_head + str(pa), False),
                (dst_head + str(pb - 1), True),
                (src_head + str(pa - 1), True),
            ):
                owner = tracker.media_owner(endpoint)
                if owner is not None:
                    src: Endpoint = (src_addr, pa)
                    dst: Endpoint = (dst_addr, pb)
                    ends = ((src, dst), (dst, src))
                    if rtcp:
                        self._handlers[flow] = _Rtcp(self, ends)
                    else:
                        rtpmap = self.tracker.media_rtpmap(endpoint)
                        self._add_media(_Media(self, ends, flow, owner, rtpmap, True))
                    return
        if label == "rtcp":
            self._handlers[flow] = _Rtcp(self, self._ends(flow))
        elif label == "rtp" or (
            self._heuristic
            and label == "unknown"
            and sport >= _RTP_MIN_PORT
            and dport >= _RTP_MIN_PORT
            # the first packet must already look like RTP v2: most other traffic stops here
            and parse_rtp_header(pkt.data, pkt.payload_off, pkt.payload_off + pkt.payload_len)
            is not None
        ):
            media = _Media(self, self._ends(flow), flow, "", {}, label == "rtp")
            self._handlers[flow] = media
            if label == "rtp":
                self.media_confirmed(media)
                if media.native is not None:
                    media.native.rtp_only_rest(flow, self)

    # -- called by the handlers ------------------------------------------------------------
    def sip_datagram(self, data: bytes, ts_ns: int, src: Endpoint, dst: Endpoint, tr: str) -> None:
        """Every message of one datagram to the tracker; a bad rest is counted."""
        msgs, reason = parse_sip_datagram(data)
        observe = self.tracker.observe
        for msg in msgs:
            observe(msg, ts_ns, src, dst, tr)
        if reason is not None:
            self.count_parse_error(reason)

    def count_parse_error(self, reason: str, count: int = 1) -> None:
        errors = self.metrics.parse_errors
        errors[reason] = errors.get(reason, 0) + count

    def count_transport(self, event: str) -> None:
        events = self.metrics.transport_events
        events[event] = events.get(event, 0) + 1

    def drop_handler(self, flow: Flow) -> None:
        """The flow is not VoIP after all: stop looking at it (the fast path stops sending it)."""
        self._handlers.pop(flow, None)
        if self.native is not None:
            self.native.untrack_rtp(flow)
            self.native.release(flow, self)

    def media_confirmed(self, media: _Media) -> None:
        """The heuristic (or the classifier) says the flow is RTP: meter and try to tie it."""
        self.metrics.rtp_active_flows += 1
        if not media.call_id_hash:
            self._untied[media.flow] = media

    def rtcp_packet(self, ts_ns: int, data: bytes, off: int, end: int) -> None:
        """Remember the latest RR/SR block per reported SSRC, and the RTT it completes."""
        reports = parse_rtcp(data, off, end)
        if not reports:
            self.count_parse_error("rtcp_malformed")
            return
        self.metrics.rtcp_packets += 1
        self._rtt.observe(ts_ns, reports)
        figures = self._rtcp
        last_rtt = self._rtt.last_rtt_ms
        for rep in reports:
            for block in rep.blocks:
                fig = figures.get(block.ssrc)
                if fig is None:
                    if len(figures) >= _MAX_RTCP_SOURCES:
                        del figures[next(iter(figures))]
                    fig = figures[block.ssrc] = _RtcpFigures()
                fig.fraction_lost = block.fraction_lost / 256.0
                fig.jitter = block.jitter
                rtt = last_rtt.pop(block.ssrc, None)
                if rtt is not None:
                    fig.rtt_ms = rtt

    def stream_ended(
        self,
        stats: RtpStreamStats,
        src: Endpoint,
        dst: Endpoint,
        call_id_hash: str,
        rtpmap: dict[int, tuple[str, int]],
    ) -> None:
        """One SSRC of an ended flow becomes an ``RtpStreamRecord`` (with MOS if voice)."""
        codec = codec_of(stats.pt, rtpmap)[0]
        fig = self._rtcp.pop(stats.ssrc, None)
        rtt = fig.rtt_ms if fig is not None else None
        r = mos = None
        expected = stats.expected
        if stats.clock_rate and expected and codec in CODEC_IMPAIRMENTS:
            loss_pct = 100.0 * stats.lost / expected
            delay = one_way_delay_ms(rtt, stats.jitter_mean_ms)
            r = round(r_factor(codec, loss_pct, delay), 2)
            mos = round(mos_from_r(r), 2)
        rtcp_jitter = None
        if fig is not None and stats.clock_rate:
            rtcp_jitter = fig.jitter * 1000.0 / stats.clock_rate
        rec = stats.to_record(
            src,
            dst,
            codec=codec,
            call_id_hash=call_id_hash,
            rtt_ms=rtt,
            r_factor=r,
            mos=mos,
        )
        if fig is not None:
            rec = msgspec.structs.replace(
                rec, rtcp_fraction_lost=fig.fraction_lost, rtcp_jitter_ms=rtcp_jitter
            )
        self.metrics.stream_record(rec)
        self._kpi.add_stream(rec)
        self._out.append(rec)

    # -- internals -------------------------------------------------------------------------
    def _ends(self, flow: Flow) -> tuple[tuple[Endpoint, Endpoint], ...]:
        a, pa, b, pb, _proto, _vlan = flow.endpoints()
        src = (addr_text(a), pa)
        dst = (addr_text(b), pb)
        return ((src, dst), (dst, src))

    def _add_media(self, media: _Media) -> None:
        self._handlers[media.flow] = media
        self.metrics.rtp_active_flows += 1
        if media.native is not None:
            media.native.rtp_only_rest(media.flow, self)

    def _tie_untied(self) -> None:
        tracker = self.tracker
        for flow, media in list(self._untied.items()):
            (a, b), _ = media.ends
            for addr, port in (b, a):
                endpoint = _endpoint_text(addr, port)
                owner = tracker.media_owner(endpoint)
                if owner is not None:
                    media.tie(owner, tracker.media_rtpmap(endpoint))
                    del self._untied[flow]
                    break

    def _collect_tracker(self) -> None:
        for rec in self.tracker.take_records():
            if isinstance(rec, CallRecord):
                self.metrics.call_record(rec)
                self._kpi.add_call(rec)
            elif isinstance(rec, RegistrationRecord):
                self.metrics.registration_record(rec)
                self._kpi.add_registration(rec)
            self._out.append(rec)

    def _add_intervals(self, intervals: list[VoipIntervalRecord]) -> None:
        for rec in intervals:
            self.metrics.last_interval = rec
            self._out.append(rec)
        self.metrics.kpi_late_records = self._kpi.late_records
