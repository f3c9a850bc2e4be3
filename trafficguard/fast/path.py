"""``FastPath``: the C decoder + flow table behind the interface the pipeline uses.

It stands where ``FlowTable`` stands (``add_hook``, ``tick``, ``take_records``,
``flush_all``, ``stats``) and replaces ``Decoder.decode_batch`` + ``FlowTable.update_batch``
with ``process_frames`` (a list of Frames) or ``pcap_batches`` (raw pcap file chunks, no
Python object per frame). Frames the C decoder does not cover are decoded one at a time by
the pipeline's own ``Decoder`` and their packets update the C table in frame order, so
records, decode error counts and fragment handling are those of the Python path.

Hooks: every hook sees ``on_flow_start``; then its optional ``wants_packets(pkt, flow)``
decides whether that flow's packets (``on_packet``) and end (``on_flow_end``) come back
to Python for it. A hook without it wants every flow, as with the Python table; flows no
hook wants cost nothing in Python after their first packet. Later, a hook may
``release`` a flow (no more calls for it), and the VoIP stage may ``track_rtp`` a flow:
the C core then runs ``RtpStreams.observe_packet`` on every packet and the hook, once it
calls ``rtp_only_rest``, gets only the packets that are not RTP (RTCP muxed on the port);
it reads the streams with ``rtp_streams`` when the flow ends.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from typing import Final

from trafficguard.capture.frames import Frame
from trafficguard.capture.live import RingBlock
from trafficguard.capture.pcap import (
    FILE_HEADER_LEN,
    LINKTYPE_MASK,
    MAX_CAPLEN,
    PCAP_MAGICS,
    RECORD_HEADER_LEN,
)
from trafficguard.capture.pcapfile import ChunkReader
from trafficguard.config import NS_PER_S, Config
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import Packet
from trafficguard.errors import CaptureError
from trafficguard.fast._core import Core, scan_block
from trafficguard.fast.records import record_factory
from trafficguard.fast.stats import FastStats
from trafficguard.fast.view import FastFlow
from trafficguard.flow.classify import APP_LABELS, DEFAULT_PORTS
from trafficguard.flow.hooks import FlowHook, PayloadTap, StartFilter
from trafficguard.flow.records import FLOW_END_REASONS, FlowRecord
from trafficguard.flow.state import DIR_FWD, DIR_REV, Flow

# Core.feed_pcap status codes and hook events (enums in _core.c)
_FULL: Final = 0
_MORE: Final = 1
_SLOW: Final = 2
_BAD: Final = 3
_MAX_RECORD: Final = RECORD_HEADER_LEN + MAX_CAPLEN  # the core frames with the same bound
_EV_START: Final = 0
_EV_PACKET: Final = 1
_W_PKT: Final = 1  # flow_t.wanted bits: every packet, the end, packets that are not RTP
_W_END: Final = 2
_W_NONRTP: Final = 4
_RTP_DONE: Final = 2  # in a packet event's arg: the C core accounted it as RTP
_LINKTYPE: Final = {bo: struct.Struct(bo + "I") for bo in "<>"}

BatchInfo = tuple[int, int, int]  # (frames, wire bytes, ts_ns of the last frame)


def ring_block(ring: mmap.mmap | bytes, base: int, linktype: int) -> RingBlock:
    """The TPACKET_V3 block at ``base`` of ``ring``, every header checked in C, as a
    ``RingBlock`` for ``FastPath.process_block`` (``ValueError`` where ``parse_block``
    raises ``struct.error``)."""
    first_off, packets, first_ts, last_ts, wire = scan_block(ring, base, linktype)
    return RingBlock(ring, first_off, packets, linktype, first_ts, last_ts, wire)


class FastPath:
    """The compiled common path with the Python decoder for everything else."""

    ring_block = staticmethod(ring_block)  # a capture.live.BlockScanner

    def __init__(self, cfg: Config, decoder: Decoder) -> None:
        fc = cfg.flow
        idle = fc.idle_timeout_s
        dc = cfg.decode
        self._core = Core(
            idle_ns=tuple(
                int(s * NS_PER_S)
                for s in (
                    idle.tcp,
                    idle.tcp_embryonic,
                    idle.tcp_closing,
                    idle.udp,
                    idle.icmp,
                    idle.other,
                    idle.dns,
                )
            ),
            active_ns=int(fc.active_timeout_s * NS_PER_S),
            max_flows=fc.max_flows,
            scan_per_tick=fc.expiry_scan_per_tick,
            classify_packets=fc.classify_packets,
            ports=[
                (proto, port, APP_LABELS.index(label))
                for (proto, port), label in DEFAULT_PORTS.items()
            ],
            tunnel_ports=(*dc.vxlan_ports, *dc.geneve_ports, *dc.gtpu_ports),
        )
        self._core.set_record_factory(*record_factory())
        self._decoder = decoder
        self._hooks: tuple[FlowHook, ...] = ()
        # open flows some hook wants: slot -> (view, hooks, hooks that get non-RTP packets only)
        self._open: dict[int, tuple[FastFlow, tuple[FlowHook, ...], frozenset[FlowHook]]] = {}
        self._starting: FastFlow | None = None  # the flow whose start event is running
        self._ending: FastFlow | None = None  # the flow whose end event is running
        self._combos: dict[tuple[FlowHook, ...], tuple[FlowHook, ...]] = {}
        self._start_modes: dict[FlowHook, int] = {}  # release/rtp_only_rest during it
        self._packets = Decoder(dc)  # turns fast frames into Packets for hooks only
        self._tap: PayloadTap | None = None
        self.stats = FastStats(self._core, fc.max_flows)

    # -- hooks -----------------------------------------------------------------------
    def add_hook(self, hook: FlowHook) -> None:
        """Register an analyzer; flows only come back to Python for hooks that want them."""
        self._hooks = (*self._hooks, hook)
        self._core.set_callback(self._on_event, Packet)
        filters = [getattr(h, "start_filter", None) for h in self._hooks]
        if any(f is None for f in filters):  # a hook that may act on any flow
            self._core.set_start_filter(None, (), (), 0)
            return
        union = StartFilter.union(filters)  # type: ignore[arg-type]
        labels = [APP_LABELS.index(label) for label in union.labels]
        self._core.set_start_filter(union.protos, union.ports, labels, union.unknown_udp_min_port)

    def watch_port(self, port: int, delta: int) -> None:
        """Count (+1) or uncount (-1) a port whose flows pass the start filter: ports a
        hook learns while running, such as announced media."""
        self._core.watch_port(port, delta)

    def add_tap(self, ports: frozenset[int], tap: PayloadTap) -> None:
        """Hand ``tap`` the payloads of TCP/UDP packets with one of ``ports`` on either
        side, in packet order, at the end of each batch (before the pipeline's tick).
        One tap (the DNS analyzer's) is all a pipeline has."""
        if self._tap is not None:
            raise ValueError("the fast path has one payload tap")
        self._tap = tap
        self._core.set_tap(ports)

    def _packet(self, obj: object) -> Packet:
        """The C core builds Packets from its own decode (no second decode here)."""
        if isinstance(obj, Packet):
            return obj
        assert isinstance(obj, tuple)
        return self._packets.decode_batch([obj])[0]

    def _on_event(self, event: int, slot: int, obj: object, arg: int) -> int:
        """Called by the C table: a flow starts, a wanted flow's packet, a wanted flow ends.

        The answer to a start is the events the C table sends for the flow (``_W_*``)."""
        if event == _EV_START:
            pkt = self._packet(obj)
            view = FastFlow(self._core, slot)
            flow = _as_flow(view)
            self._starting = view
            modes = self._start_modes
            try:
                for h in self._hooks:
                    h.on_flow_start(pkt, flow)
                wanting = tuple(
                    h for h in self._hooks if _wants(h, pkt, flow) and modes.get(h) != _RELEASED
                )
            finally:
                self._starting = None
            narrow = frozenset(h for h in wanting if modes.get(h) == _NONRTP) if modes else _NOBODY
            modes.clear()
            if not wanting:
                return 0
            wanting = self._combos.setdefault(wanting, wanting)  # one tuple per combination
            self._open[slot] = (view, wanting, narrow)
            direction = DIR_FWD if arg & 1 else DIR_REV
            for h in wanting:
                h.on_packet(pkt, flow, direction)
            entry = self._open.get(slot)
            return _interest(entry[1], entry[2]) if entry is not None and entry[0] is view else 0
        if event == _EV_PACKET:
            view, wanting, narrow = self._open[slot]
            pkt = self._packet(obj)
            direction = DIR_FWD if arg & 1 else DIR_REV
            flow = _as_flow(view)
            if arg & _RTP_DONE and narrow:
                for h in wanting:
                    if h not in narrow:
                        h.on_packet(pkt, flow, direction)
            else:
                for h in wanting:
                    h.on_packet(pkt, flow, direction)
            return 0
        view, wanting, _ = self._open.pop(slot)
        view.freeze()
        self._ending = view  # its slot (RTP state included) is freed after this returns
        try:
            for h in wanting:
                h.on_flow_end(_as_flow(view), FLOW_END_REASONS[arg])
        finally:
            self._ending = None
        return 0

    # -- per-flow interest and RTP accounting (called by hooks while the flow is open) ----
    def _slot_of(self, flow: Flow) -> int | None:
        """The slot of ``flow`` if it is the open flow there (its start may be running)."""
        view: FastFlow = flow  # type: ignore[assignment]
        slot = view._slot
        if view is self._starting or view is self._ending:
            return slot
        entry = self._open.get(slot)
        return slot if entry is not None and entry[0] is view else None

    def _set_mode(self, flow: Flow, hook: FlowHook, mode: int) -> None:
        view: FastFlow = flow  # type: ignore[assignment]
        if view is self._starting:
            self._start_modes[hook] = mode
            return
        slot = view._slot
        entry = self._open.get(slot)
        if entry is None or entry[0] is not view or hook not in entry[1]:
            return
        _, wanting, narrow = entry
        if mode == _RELEASED:
            wanting = tuple(h for h in wanting if h is not hook)
            narrow = narrow - {hook}
        else:
            narrow = narrow | {hook}
        if wanting:
            self._open[slot] = (view, wanting, narrow)
        else:
            del self._open[slot]
        self._core.set_interest(slot, _interest(wanting, narrow))

    def release(self, flow: Flow, hook: FlowHook) -> None:
        """``hook`` wants no more ``on_packet``/``on_flow_end`` calls for this open flow."""
        self._set_mode(flow, hook, _RELEASED)

    def rtp_only_rest(self, flow: Flow, hook: FlowHook) -> None:
        """From now on ``hook`` gets only this flow's packets the C core did not account as
        RTP (call ``track_rtp`` first), and its end."""
        self._set_mode(flow, hook, _NONRTP)

    def track_rtp(self, flow: Flow, rates: bytes, max_streams: int) -> bool:
        """Run ``RtpStreams.observe_packet`` in C on every packet of this open flow from
        the current one on (``rates``: ``voip.rtp.clock_rate_table``); called again, it
        only replaces the rates. False if the flow is not open here."""
        slot = self._slot_of(flow)
        if slot is None:
            return False
        self._core.rtp_track(slot, rates, max_streams)
        return True

    def untrack_rtp(self, flow: Flow) -> None:
        """Stop the C RTP accounting of this open flow and drop its state."""
        slot = self._slot_of(flow)
        if slot is not None:
            self._core.rtp_untrack(slot)

    def rtp_streams(self, flow: Flow) -> RtpStates:
        """The RTP stream states of a tracked flow, readable until its ``on_flow_end``
        returns: ``(fwd states, rev states, (dropped fwd, dropped rev))``."""
        slot = self._slot_of(flow)
        if slot is None:
            return (), (), (0, 0)
        states: RtpStates = self._core.rtp_streams(slot)
        return states

    # -- frames in -------------------------------------------------------------------
    def process_frames(self, frames: list[Frame]) -> None:
        """Decode a batch of Frames and account them to flows, in frame order."""
        feed = self._core.feed_frames
        n = len(frames)
        i = feed(frames, 0)
        while i < n:
            self._decode_one(frames[i])
            i = feed(frames, i + 1)
        if frames:
            self._batch_end(frames[-1][0])

    def process_block(self, block: RingBlock) -> None:
        """A TPACKET_V3 ring block in place (``capture.live.RingBlock``): the C core walks
        its headers, restores VLAN tags and decodes; only frames it cannot decode become
        Frames, for ``Decoder``. Same flows and records as ``parse_block`` +
        ``process_frames``."""
        if not block.packets:
            return
        feed = self._core.feed_block
        ring, linktype = block.ring, block.linktype
        off, left = block.first_off, block.packets
        while left:
            off, left, _last, slow = feed(ring, off, left, linktype)
            if slow is not None:
                self._decode_one(slow)
        self._batch_end(block.last_ts)

    def _decode_one(self, frame: Frame) -> None:
        """The reference decoder on one frame; its packet (if any) updates the C table.

        Fragment expiry is held back to the batch end (``_batch_end``), where
        ``Decoder.decode_batch`` would run it for the whole batch.
        """
        packets = self._decoder.decode_batch([frame], expire=False)
        if packets:
            self._core.update_packets(packets)

    def _batch_end(self, last_ts_ns: int) -> None:
        self._decoder.expire_if_due(last_ts_ns)
        if self._tap is not None:
            taps = self._core.take_taps()
            if taps:
                self._tap(taps)

    def pcap_batches(self, reader: ChunkReader, buf: bytes, max_frames: int) -> Iterator[BatchInfo]:
        """Process a classic pcap stream in batches of ``max_frames`` frames.

        Mirrors ``capture.pcap.read_pcap`` (same batches, same errors at the same
        offsets), but the C core frames the records in place and yields only
        ``(frames, wire bytes, last ts)`` per batch, after processing it.
        """
        path = reader.path
        buf = reader.fill(buf, FILE_HEADER_LEN)
        if len(buf) < FILE_HEADER_LEN:
            raise reader.truncated(0, "file ends inside the file header")
        order, frac_ns = PCAP_MAGICS[buf[:4]]
        linktype = _LINKTYPE[order].unpack_from(buf, 20)[0] & LINKTYPE_MASK
        big = order == ">"
        feed = self._core.feed_pcap
        # One buffer for the whole file: the unparsed tail (less than one record) moves to
        # the front and the next chunk is read in behind it.
        work = bytearray(max(len(buf), reader.chunk_size) + _MAX_RECORD)
        view = memoryview(work)
        end = len(buf)
        view[:end] = buf
        base = 0
        off = FILE_HEADER_LEN
        count = wire = last = 0
        err: CaptureError | None = None
        while True:
            off, done, status, last_ts, w, slow = feed(
                view[:end], off, big, frac_ns, linktype, max_frames - count
            )
            if done:
                count += done
                wire += w
                last = last_ts
            if slow is not None:
                self._decode_one(slow)
            if count == max_frames:
                self._batch_end(last)
                yield count, wire, last
                count = wire = 0
                continue
            if status == _SLOW:
                continue
            if status == _BAD:
                err = CaptureError(path, base + off, "record caplen too large")
                break
            left = end - off
            if off:
                view[:left] = view[off:end]
                base += off
                off = 0
            got = reader.readinto(view[left:])
            if not got:
                if left:
                    err = reader.truncated(base, "file ends inside a record")
                else:
                    err = reader.deferred(base)
                break
            end = left + got
        if count:
            self._batch_end(last)
            yield count, wire, last
        if err is not None:
            raise err

    # -- the FlowTable interface -----------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """End flows idle past their lane's timeout (bounded scan, as ``FlowTable.tick``)."""
        self._core.tick(now_ns)

    def flush_all(self) -> None:
        """End every open flow with reason "flush", oldest first."""
        self._core.flush_all()

    def flush_chunks(self, max_flows: int) -> Iterator[None]:
        """``flush_all`` in steps of at most ``max_flows`` flows, same order; after each
        step ``take_records`` holds that step's records (so they need not all exist at once)."""
        while True:
            left = self._core.flush_some(max_flows)
            yield
            if not left:
                return

    def take_records(self) -> list[FlowRecord]:
        """Records produced since the last call, in the order they were produced."""
        records: list[FlowRecord] = self._core.take_records()
        return records

    @property
    def fast_frames(self) -> int:
        """Frames decoded by the C core (the rest went through ``Decoder``)."""
        value = self._core.counters()["fast_frames"]
        assert isinstance(value, int)
        return value


_RELEASED: Final = 0
_NONRTP: Final = 1
_NOBODY: Final[frozenset[FlowHook]] = frozenset()  # shared: most open flows have no narrow hook
RtpState = tuple[int | float, ...]  # voip.rtp.STATE_FIELDS
RtpStates = tuple[tuple[RtpState, ...], tuple[RtpState, ...], tuple[int, int]]


def _interest(wanting: tuple[FlowHook, ...], narrow: frozenset[FlowHook]) -> int:
    """The C table's ``wanted`` bits for these hooks."""
    if not wanting:
        return 0
    bits = _W_END
    if narrow:
        bits |= _W_NONRTP
    if len(narrow) < len(wanting):
        bits |= _W_PKT
    return bits


def _wants(hook: FlowHook, pkt: Packet, flow: Flow) -> bool:
    wants = getattr(hook, "wants_packets", None)
    return True if wants is None else bool(wants(pkt, flow))


def _as_flow(view: FastFlow) -> Flow:
    """Hooks are typed for ``Flow``; the view offers the same read API."""
    return view  # type: ignore[return-value]
