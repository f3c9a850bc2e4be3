"""The flow table: packets in, bidirectional flow records out, in packet time.

Flows live in seven *lanes*, one ``OrderedDict`` per idle-timeout class (TCP established,
TCP embryonic, TCP closing, UDP, ICMP, other, DNS = UDP with port 53 on either side, whose
short timeout keeps one-query flows from piling up, as Zeek's ``dns_session_timeout``).
Each lane is both the lookup table and an LRU list (``move_to_end`` per packet, as
nfstream's meter does), and all flows of a lane share one idle timeout, so expiry scans a
lane from its old end and stops at the first live flow: ``tick`` never walks the whole
table. A flow changes lane only when its TCP state changes class (a rare, slow-path
event); a TCP packet probes at most three lanes, a UDP packet's ports name its one lane.
The least recently used flow of the whole table is the oldest of the seven lane heads,
which is what eviction at capacity ends.

A packet whose gap to its flow's previous packet already exceeds the lane's idle timeout
ends that flow and starts a new one, and a packet past the active timeout cuts an
interim record first, so records do not depend on how often ``tick`` runs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from trafficguard.config import NS_PER_S, FlowConfig
from trafficguard.decode.packet import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Packet,
)
from trafficguard.flow.classify import APP_LABELS, Classifier
from trafficguard.flow.export import to_record
from trafficguard.flow.hooks import FlowHook
from trafficguard.flow.keys import KEY4, KEY6
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.state import (
    CLASSIFIED_BY_SIGNATURE,
    DIR_FWD,
    DIR_REV,
    ST_CLOSED,
    ST_ESTABLISHED,
    ST_FIN_WAIT,
    ST_MIDSTREAM,
    ST_NONE,
    ST_RESET,
    ST_SYN_RECEIVED,
    ST_SYN_SENT,
    AppCounter,
    Flow,
)
from trafficguard.flow.stats import FlowStats

__all__ = ["FlowHook", "FlowStats", "FlowTable"]

Lane = OrderedDict[bytes, Flow]

LANE_TCP: Final = 0  # established, half-closed, joined midstream
LANE_TCP_EMBRYONIC: Final = 1  # handshake not completed
LANE_TCP_CLOSING: Final = 2  # FIN from both sides, or RST
LANE_UDP: Final = 3
LANE_ICMP: Final = 4
LANE_OTHER: Final = 5
LANE_DNS: Final = 6  # UDP with port 53 on either side
LANE_NAMES: Final = ("tcp", "tcp_embryonic", "tcp_closing", "udp", "icmp", "other", "dns")
DNS_PORT: Final = 53

# lane of each TCP state (index = state code)
_STATE_LANE: Final = (
    LANE_OTHER,  # ST_NONE: never used for TCP
    LANE_TCP_EMBRYONIC,
    LANE_TCP_EMBRYONIC,
    LANE_TCP,
    LANE_TCP,
    LANE_TCP_CLOSING,
    LANE_TCP_CLOSING,
    LANE_TCP,
)
_SYN_ACK: Final = TCP_SYN | TCP_ACK
_SYN_FIN_RST: Final = TCP_SYN | TCP_FIN | TCP_RST
_FIN_BOTH: Final = TCP_FIN | TCP_FIN << 8  # Flow.flags: FIN seen in both directions
_CLASSIFY_LEFT: Final = 0x3F  # Flow.classify: packets still to inspect, pending above


class FlowTable:
    """Bidirectional flows with idle/active timeouts, LRU eviction and app labels."""

    def __init__(self, cfg: FlowConfig, classifier: Classifier | None = None) -> None:
        idle = cfg.idle_timeout_s
        self._idle_ns: tuple[int, ...] = tuple(
            int(s * NS_PER_S)
            for s in (idle.tcp, idle.tcp_embryonic, idle.tcp_closing, idle.udp, idle.icmp,
                      idle.other, idle.dns)
        )  # fmt: skip
        self._active_ns = int(cfg.active_timeout_s * NS_PER_S)
        self._capacity = cfg.max_flows
        self._scan_per_tick = cfg.expiry_scan_per_tick
        self._classify_packets = cfg.classify_packets
        self._classifier = classifier if classifier is not None else Classifier()
        self._lanes: tuple[Lane, ...] = tuple(OrderedDict() for _ in LANE_NAMES)
        self._apps = {label: AppCounter(label) for label in APP_LABELS}
        self._records: list[FlowRecord] = []
        self._hooks: tuple[FlowHook, ...] = ()
        self._next_lane = 0
        self._started_at_tick = 0  # stats.started at the last tick (the expiry budget)
        self.stats = FlowStats(cfg.max_flows, self._apps.values())

    def add_hook(self, hook: FlowHook) -> None:
        """Register an analyzer; with none registered the packet path skips hooks."""
        self._hooks = (*self._hooks, hook)

    # -- the packet path -------------------------------------------------------------
    def update_batch(self, packets: list[Packet]) -> None:
        """Account a batch of decoded packets to their flows (the hot path)."""
        tcp, emb, closing, udp, icmp, other, dns = self._lanes
        tcp_get = tcp.get
        emb_get = emb.get
        closing_get = closing.get
        udp_get = udp.get
        dns_get = dns.get
        t_tcp, t_emb, t_closing, t_udp, t_icmp, t_other, t_dns = self._idle_ns
        active_ns = self._active_ns
        pack4 = KEY4.pack
        pack6 = KEY6.pack
        start = self._start
        hooks = self._hooks
        tcp_proto = PROTO_TCP  # module constants bound to locals: LOAD_FAST in the loop
        udp_proto = PROTO_UDP
        slow_flags = _SYN_FIN_RST
        established = ST_ESTABLISHED
        for p in packets:
            src = p.src
            dst = p.dst
            sport = p.sport
            dport = p.dport
            proto = p.proto
            pack = pack4 if p.ip_version == 4 else pack6
            if src < dst or (src == dst and sport <= dport):
                key = pack(src, dst, sport, dport, proto, p.vlan)
                a_side = True
            else:
                key = pack(dst, src, dport, sport, proto, p.vlan)
                a_side = False
            if proto == tcp_proto:
                lane = tcp
                idle = t_tcp
                f = tcp_get(key)
                if f is None:
                    lane = emb
                    idle = t_emb
                    f = emb_get(key)
                    if f is None:
                        lane = closing
                        idle = t_closing
                        f = closing_get(key)
            elif proto == udp_proto:
                if DNS_PORT in (sport, dport):
                    lane = dns
                    idle = t_dns
                    f = dns_get(key)
                else:
                    lane = udp
                    idle = t_udp
                    f = udp_get(key)
            elif proto in (PROTO_ICMP, PROTO_ICMPV6):
                lane = icmp
                idle = t_icmp
                f = icmp.get(key)
            else:
                lane = other
                idle = t_other
                f = other.get(key)
            if f is None:
                start(p, key, a_side)
                continue

            ts = p.ts_ns
            gap = ts - f.last_ns
            if gap >= idle:  # expired between two ticks: the old flow has ended
                self._end(f, lane, self._idle_reason(f))
                start(p, key, a_side)
                continue
            if proto == tcp_proto:
                fl = p.tcp_flags
                slow_tcp = fl & slow_flags or f.tcp_state < established
                if slow_tcp and self._port_reused(f, lane, fl, ts):
                    start(p, key, a_side)
                    continue
            if ts - f.start_ns >= active_ns:
                self._interim(f, ts)
            elif gap > 0:
                f.last_ns = ts
            fwd = a_side is f.a_is_src
            n = p.frames
            w = p.wire_len
            pl = p.payload_len
            app = f.app
            if fwd:
                f.packets_fwd += n
                f.bytes_fwd += w
                f.l2_bytes_fwd += w - p.ip_len
                if pl:
                    f.payload_fwd += pl
                app.packets_fwd += n
                app.bytes_fwd += w
            else:
                f.packets_rev += n
                f.bytes_rev += w
                f.l2_bytes_rev += w - p.ip_len
                if pl:
                    f.payload_rev += pl
                app.packets_rev += n
                app.bytes_rev += w
            if proto == tcp_proto:
                f.flags |= fl if fwd else fl << 8
                if slow_tcp:
                    lane = self._tcp_transition(f, lane, fl, fwd)
            lane.move_to_end(key)
            if pl and f.classify > 0:
                self._classify(f, p, fwd)
            if hooks:
                direction = DIR_FWD if fwd else DIR_REV
                for h in hooks:
                    h.on_packet(p, f, direction)

    def _start(self, p: Packet, key: bytes, a_side: bool) -> None:
        """Create the flow for a packet no open flow matched, and account the packet."""
        stats = self.stats
        if stats.active >= self._capacity:
            self._evict_lru()
        proto = p.proto
        state = ST_NONE
        a_is_src = a_side
        fl = 0
        if proto == PROTO_TCP:
            fl = p.tcp_flags
            if fl & _SYN_ACK == TCP_SYN:
                state = ST_SYN_SENT
            elif fl & _SYN_ACK == _SYN_ACK:  # we missed the SYN: the receiver initiated
                state = ST_SYN_RECEIVED
                a_is_src = not a_side
            else:
                state = ST_MIDSTREAM
            lane_no = _STATE_LANE[state]
        elif proto == PROTO_UDP:
            lane_no = LANE_DNS if DNS_PORT in (p.sport, p.dport) else LANE_UDP
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            lane_no = LANE_ICMP
        else:
            lane_no = LANE_OTHER
        fwd = a_is_src is a_side
        if fwd:
            label = self._classifier.by_port(proto, p.sport, p.dport)
        else:
            label = self._classifier.by_port(proto, p.dport, p.sport)
        app = self._apps[label]
        f = Flow(key, a_is_src, p, fwd, app, self._classify_packets, state)
        lane = self._lanes[lane_no]
        lane[key] = f
        stats.active += 1
        stats.started += 1
        if fwd:
            app.packets_fwd += p.frames
            app.bytes_fwd += p.wire_len
        else:
            app.packets_rev += p.frames
            app.bytes_rev += p.wire_len
        if fl & (TCP_FIN | TCP_RST):
            self._tcp_transition(f, lane, fl, fwd)
        if p.payload_len:
            self._classify(f, p, fwd)
        hooks = self._hooks
        if hooks:
            direction = DIR_FWD if fwd else DIR_REV
            for h in hooks:
                h.on_flow_start(p, f)
            for h in hooks:
                h.on_packet(p, f, direction)

    # -- TCP -------------------------------------------------------------------------
    def _port_reused(self, f: Flow, lane: Lane, fl: int, ts: int) -> bool:
        """A new SYN on a closed or reset connection ends it (the caller starts anew).

        Not within the nanosecond the flow began: the new flow would get the same
        ``flow_id`` (key + first packet time) and overwrite the old one's records.
        """
        state = f.tcp_state
        if fl & _SYN_ACK == TCP_SYN and state in (ST_CLOSED, ST_RESET) and f.first_ns != ts:
            self._end(f, lane, "tcp_fin" if state == ST_CLOSED else "tcp_rst")
            return True
        return False

    def _tcp_transition(self, f: Flow, lane: Lane, fl: int, fwd: bool) -> Lane:
        """Advance the TCP state after a packet with flags ``fl``; returns the flow's lane."""
        state = f.tcp_state
        new = state
        if state in (ST_CLOSED, ST_RESET):
            return lane
        if fl & TCP_RST:
            new = ST_RESET
        elif fl & TCP_FIN:
            new = ST_CLOSED if f.flags & _FIN_BOTH == _FIN_BOTH else ST_FIN_WAIT
        elif fl & TCP_SYN:
            if fl & TCP_ACK and state == ST_SYN_SENT and not fwd:
                new = ST_SYN_RECEIVED
        elif fl & TCP_ACK and (state == ST_SYN_RECEIVED or (state == ST_SYN_SENT and fwd)):
            new = ST_ESTABLISHED
        if new == state:
            return lane
        f.tcp_state = new
        target = self._lanes[_STATE_LANE[new]]
        if target is not lane:
            del lane[f.key]
            target[f.key] = f
        return target

    # -- classification --------------------------------------------------------------
    def _classify(self, f: Flow, p: Packet, fwd: bool) -> None:
        """Run signatures on one payload packet; stop once decided or out of budget."""
        left = f.classify & _CLASSIFY_LEFT
        label, pending = self._classifier.inspect(p, fwd, f.classify >> 6)
        if label is not None:
            f.app = self._apps[label]
            f.classify = CLASSIFIED_BY_SIGNATURE
        else:
            left -= 1
            f.classify = pending << 6 | left if left else 0

    # -- expiry ----------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """End flows idle past their lane's timeout, examining a bounded number of flows.

        The bound is expiry_scan_per_tick plus the flows started since the last tick: a
        fixed bound alone falls behind once more flows start per tick than it allows
        (1 500 one-query DNS flows a second against 1 000 per 1 s tick), and the open
        flows then grow with the capture's length. Lanes are LRU-ordered, so a lane's
        scan stops at its first live flow; the lane scanned first rotates so that one
        busy lane cannot starve the others.
        """
        started = self.stats.started
        budget = self._scan_per_tick + started - self._started_at_tick
        self._started_at_tick = started
        lanes = self._lanes
        idle_ns = self._idle_ns
        first = self._next_lane
        self._next_lane = (first + 1) % len(lanes)
        for i in range(len(lanes)):
            lane_no = (first + i) % len(lanes)
            lane = lanes[lane_no]
            timeout = idle_ns[lane_no]
            while budget > 0 and lane:
                f = next(iter(lane.values()))
                budget -= 1
                if now_ns - f.last_ns < timeout:
                    break
                self._end(f, lane, self._idle_reason(f))
            if budget <= 0:
                break

    @staticmethod
    def _idle_reason(f: Flow) -> str:
        state = f.tcp_state
        if state == ST_CLOSED:
            return "tcp_fin"
        if state == ST_RESET:
            return "tcp_rst"
        return "idle"

    def _evict_lru(self) -> None:
        """End the least recently used flow: the oldest of the lane heads."""
        victim: Flow | None = None
        victim_lane: Lane | None = None
        for lane in self._lanes:
            if lane:
                f = next(iter(lane.values()))
                if victim is None or f.last_ns < victim.last_ns:
                    victim = f
                    victim_lane = lane
        if victim is not None and victim_lane is not None:
            self.stats.evicted += 1
            self._end(victim, victim_lane, "evicted")

    def flush_all(self) -> None:
        """End every open flow with reason "flush", oldest first (end of input, shutdown)."""
        open_flows: list[tuple[int, bytes, int]] = []
        for lane_no, lane in enumerate(self._lanes):
            open_flows.extend((f.first_ns, key, lane_no) for key, f in lane.items())
        open_flows.sort()
        for _, key, lane_no in open_flows:
            lane = self._lanes[lane_no]
            self._end(lane[key], lane, "flush")

    # -- records ---------------------------------------------------------------------
    def take_records(self) -> list[FlowRecord]:
        """Records produced since the last call, in the order they were produced."""
        out = self._records
        self._records = []
        return out

    def _end(self, f: Flow, lane: Lane, reason: str) -> None:
        del lane[f.key]
        stats = self.stats
        stats.active -= 1
        stats.ended_by_reason[reason] += 1
        self._records.append(to_record(f, reason))
        for h in self._hooks:
            h.on_flow_end(f, reason)

    def _interim(self, f: Flow, ts_ns: int) -> None:
        """Active timeout: emit the interval so far, then restart the counters at ``ts_ns``."""
        self._records.append(to_record(f, "active"))
        self.stats.interim_records += 1
        f.seq += 1
        f.start_ns = ts_ns
        f.last_ns = ts_ns
        f.packets_fwd = f.packets_rev = 0
        f.bytes_fwd = f.bytes_rev = 0
        f.l2_bytes_fwd = f.l2_bytes_rev = 0
        f.payload_fwd = f.payload_rev = 0
