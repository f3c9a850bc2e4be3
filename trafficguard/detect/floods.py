"""Volumetric detectors: TCP SYN flood, UDP flood, ICMP flood, reflection/amplification.

All four count, per victim address and per window of packet time, what flow records say
arrived at it. Flow records are deltas (interim records of long flows included), so
summing them per window is exact; a flood of single-packet flows (random source ports or
spoofed sources) and one long flow count the same way. The alert's time window is the
first start and last end of the flows counted.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from trafficguard.config import NS_PER_S, AmplificationConfig, FloodConfig, SynFloodConfig
from trafficguard.decode.packet import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_SYN,
)
from trafficguard.detect.base import Detector, DetectorEnv, Evidence
from trafficguard.detect.sketch import DistinctCounter, LruMap, SpaceSaving
from trafficguard.flow.records import FlowRecord

AMPLIFIER_PORTS: Final[dict[int, str]] = {
    19: "chargen",
    53: "dns",
    123: "ntp",
    161: "snmp",
    389: "cldap",
    1900: "ssdp",
    11211: "memcached",
}
"""UDP service ports abused as reflectors, and the closed-set service token."""


class VictimWindow:
    """What reached one victim within the current window."""

    __slots__ = (
        "bytes",
        "first_ns",
        "last_ns",
        "packets",
        "ports",
        "request_bytes",
        "response_bytes",
        "response_packets",
        "services",
        "sources",
        "top_sources",
        "window_start_ns",
    )

    def __init__(self, start_ns: int) -> None:
        self.window_start_ns = start_ns
        self.first_ns = start_ns
        self.last_ns = start_ns
        self.packets = 0
        self.bytes = 0
        self.response_packets = 0
        self.response_bytes = 0
        self.request_bytes = 0
        self.sources = DistinctCounter(exact_cap=32)
        self.top_sources: SpaceSaving[str] = SpaceSaving(4)
        self.ports: set[int] = set()
        self.services: SpaceSaving[str] = SpaceSaving(4)

    def add(self, rec: FlowRecord, source: str, packets: int) -> None:
        start, end = rec.start_ns, rec.end_ns
        if start < self.first_ns:  # noqa: PLR1730 (per record: a compare is cheaper than min())
            self.first_ns = start
        if end > self.last_ns:  # noqa: PLR1730 (per record: a compare is cheaper than max())
            self.last_ns = end
        self.packets += packets
        self.sources.add(source)
        self.top_sources.add(source, packets)

    def rate_pps(self, count: int) -> float:
        span_s = max((self.last_ns - self.first_ns) / NS_PER_S, 1.0)
        return count / span_s

    def dominant_source(self) -> tuple[str, float]:
        top = self.top_sources.heaviest()
        if top is None:
            return "", 0.0
        share = self.top_sources.share(top[0])
        return (top[0] if share >= 0.5 else ""), share


class _VictimDetector(Detector):
    """Per-victim windows in an LRU map; subclasses decide what counts and when to fire."""

    window_ns: int

    def __init__(self, env: DetectorEnv, window_s: float, promote_at: int, field: str) -> None:
        super().__init__(env)
        self.window_ns = int(window_s * NS_PER_S)
        self.victims: LruMap[str, VictimWindow] = LruMap(env.max_keys)
        # two stages: a victim is first a 3-int list [window start, amount, first ns];
        # only past ``promote_at`` (1/20 of the alert threshold) does it get a full window
        self.light: LruMap[str, list[int]] = LruMap(env.max_keys)
        self.promote_at = max(promote_at, 1)
        self.field = field  # the VictimWindow counter the light stage's amount carries into

    def window(self, victim: str, ts_ns: int, amount: int, first_ns: int) -> VictimWindow | None:
        """The victim's full window, or None while its amount is below ``promote_at``."""
        st = self.victims.get(victim)
        if st is not None:
            if ts_ns - st.window_start_ns < self.window_ns:
                return st
            self.victims.pop(victim)
        light = self.light.setdefault(victim, lambda: [ts_ns, 0, first_ns])
        if ts_ns - light[0] >= self.window_ns:
            light[0], light[1], light[2] = ts_ns, 0, first_ns
        light[1] += amount
        light[2] = min(light[2], first_ns)
        if light[1] < self.promote_at:
            return None
        self.light.pop(victim)
        st = VictimWindow(light[0])
        st.first_ns = light[2]
        setattr(st, self.field, light[1] - amount)  # this record is added by the caller
        self.victims.setdefault(victim, lambda: st)
        return st

    def tick(self, now_ns: int) -> None:
        """Drop windows that ended (oldest first; stops at the first live one)."""
        window = self.window_ns
        stale = []
        for victim, st in self.victims.oldest():
            if now_ns - st.last_ns < window:
                break
            stale.append(victim)
        for victim in stale:
            self.victims.pop(victim)
        stale = []
        for victim, light in self.light.oldest():
            if now_ns - light[0] < window:
                break
            stale.append(victim)
        for victim in stale:
            self.light.pop(victim)

    def state_keys(self) -> int:
        return len(self.victims) + len(self.light)

    def evicted_keys(self) -> int:
        return self.victims.evicted + self.light.evicted


class SynFloodDetector(_VictimDetector):
    """Many half-open TCP handshakes (SYN, never an ACK from the initiator) to one victim
    on few ports, at a high rate."""

    name = "syn_flood"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: SynFloodConfig) -> None:
        super().__init__(env, cfg.window_s, cfg.min_half_open // 20, "packets")
        self.cfg = cfg
        self._thresholds = (  # the rule's constant tail, made once
            f"(thresholds: {cfg.min_half_open} in {cfg.window_s:g}s, "
            f"{cfg.min_rate_pps:g}/s, at most {cfg.max_ports} ports)"
        )

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP:
            return
        fl = rec.tcp_flags_fwd
        if not fl & TCP_SYN or fl & TCP_ACK or rec.payload_bytes_fwd:
            return
        st = self.window(rec.dst_addr, rec.end_ns, 1, rec.start_ns)
        if st is None:
            return
        st.add(rec, rec.src_addr, 1)
        if len(st.ports) <= self.cfg.max_ports:
            st.ports.add(rec.dst_port)
        cfg = self.cfg
        if st.packets < cfg.min_half_open or len(st.ports) > cfg.max_ports:
            return
        rate = st.rate_pps(st.packets)
        if rate < cfg.min_rate_pps:
            return
        source, share = st.dominant_source()
        evidence: Evidence = {
            "half_open": st.packets,
            "rate_per_s": round(rate, 1),
            "sources": st.sources.count(),
            "top_source_share": round(share, 3),
            "ports": len(st.ports),
            "threshold_half_open": cfg.min_half_open,
            "threshold_rate_per_s": cfg.min_rate_pps,
            "window_s": cfg.window_s,
        }
        self.report_span(
            rec.dst_addr,
            st,
            rule=(
                f"{st.packets} half-open TCP handshakes to one host on {len(st.ports)} port(s) "
                f"at {rate:.0f}/s {self._thresholds}"
            ),
            severity="high" if rate >= 10 * cfg.min_rate_pps else "medium",
            source=source,
            target=rec.dst_addr,
            evidence=evidence,
        )


class PacketFloodDetector(_VictimDetector):
    """UDP or ICMP packets to one victim above a rate, with few answers (UDP)."""

    def __init__(self, env: DetectorEnv, cfg: FloodConfig, name: str, protos: tuple[int, ...]):
        super().__init__(env, cfg.window_s, cfg.min_packets // 20, "packets")
        self.cfg = cfg
        self.name = name  # type: ignore[misc]  # one class, two closed-set names
        self.protos = self.flow_protos = frozenset(protos)
        self.label = "UDP" if PROTO_UDP in protos else "ICMP"
        self._thresholds = (  # the rule's constant tail, made once
            f"(thresholds: {cfg.min_packets} packets in {cfg.window_s:g}s, "
            f"{cfg.min_rate_pps:g} packets/s, answers at most {cfg.max_response_ratio:g})"
        )

    def on_flow(self, rec: FlowRecord) -> None:
        proto = rec.proto
        if proto not in self.protos:
            return
        if proto == PROTO_UDP and rec.src_port in AMPLIFIER_PORTS:
            return  # reflected responses: the amplification detector's business
        packets = rec.packets_fwd
        st = self.window(rec.dst_addr, rec.end_ns, packets, rec.start_ns)
        if st is None:
            return
        st.add(rec, rec.src_addr, packets)
        st.response_packets += rec.packets_rev
        st.bytes += rec.bytes_fwd
        cfg = self.cfg
        if st.packets < cfg.min_packets:
            return
        if st.response_packets > cfg.max_response_ratio * st.packets:
            return
        rate = st.rate_pps(st.packets)
        if rate < cfg.min_rate_pps:
            return
        self._report(rec.dst_addr, st, rate)

    def _report(self, victim: str, st: VictimWindow, rate: float) -> None:
        """Report a window past every threshold. A flooded victim is past them on every
        record, so the rule and evidence are made by :meth:`_details` from the values of
        this report only when the open alert emits (``report_deferred``)."""
        source, share = st.dominant_source()
        ratio = st.response_packets / st.packets
        self.alerts.report_deferred(
            self.name,
            victim,
            details=partial(
                self._details, st.packets, st.bytes, rate, ratio, st.sources.count(), share
            ),
            first_ns=st.first_ns,
            last_ns=st.last_ns,
            severity="high" if rate >= 10 * self.cfg.min_rate_pps else "medium",
            source=source,
            target=victim,
        )

    def _details(
        self, packets: int, nbytes: int, rate: float, ratio: float, sources: int, share: float
    ) -> tuple[str, Evidence]:
        cfg = self.cfg
        rule = (
            f"{packets} {self.label} packets to one host at {rate:.0f} packets/s, "
            f"answer ratio {ratio:.2f} {self._thresholds}"
        )
        evidence: Evidence = {
            "packets": packets,
            "bytes": nbytes,
            "rate_pps": round(rate, 1),
            "response_ratio": round(ratio, 3),
            "sources": sources,
            "top_source_share": round(share, 3),
            "threshold_packets": cfg.min_packets,
            "threshold_rate_pps": cfg.min_rate_pps,
            "window_s": cfg.window_s,
        }
        return rule, evidence


class AmplificationDetector(_VictimDetector):
    """Responses from many reflectors' amplifier ports (DNS, NTP, SSDP, memcached, CLDAP,
    chargen, SNMP) to one victim, much larger than any request it sent."""

    name = "amplification"
    flow_protos = frozenset({PROTO_UDP})

    def __init__(self, env: DetectorEnv, cfg: AmplificationConfig) -> None:
        super().__init__(env, cfg.window_s, cfg.min_response_bytes // 20, "response_bytes")
        self.cfg = cfg

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_UDP:
            return
        service = AMPLIFIER_PORTS.get(rec.src_port)
        if service is not None and rec.dst_port not in AMPLIFIER_PORTS:
            # the reflector started the flow: the victim's (spoofed) request was not seen
            reflector, victim = rec.src_addr, rec.dst_addr
            response, request = rec.bytes_fwd, rec.bytes_rev
            packets = rec.packets_fwd
        else:
            service = AMPLIFIER_PORTS.get(rec.dst_port)
            if service is None or rec.src_port in AMPLIFIER_PORTS:
                return
            reflector, victim = rec.dst_addr, rec.src_addr
            response, request = rec.bytes_rev, rec.bytes_fwd
            packets = rec.packets_rev
        if not response:
            return
        st = self.window(victim, rec.end_ns, response, rec.start_ns)
        if st is None:
            return
        st.add(rec, reflector, packets)
        st.response_bytes += response
        st.request_bytes += request
        st.services.add(service, response)
        cfg = self.cfg
        reflectors = st.sources.count()
        if reflectors < cfg.min_reflectors or st.response_bytes < cfg.min_response_bytes:
            return
        if st.request_bytes and st.response_bytes < cfg.min_ratio * st.request_bytes:
            return
        top = st.services.heaviest()
        assert top is not None  # this record's service was just added
        top_service = top[0]
        ratio: float | str = (
            round(st.response_bytes / st.request_bytes, 1) if st.request_bytes else "unseen"
        )
        rate_bps = st.rate_pps(st.response_bytes * 8)
        source, share = st.dominant_source()
        self.report_span(
            victim,
            st,
            rule=(
                f"{top_service} responses from {reflectors} reflectors to one host, "
                f"{st.response_bytes} bytes, response/request ratio {ratio} (thresholds: "
                f"{cfg.min_reflectors} reflectors, {cfg.min_response_bytes} bytes in "
                f"{cfg.window_s:g}s, ratio {cfg.min_ratio:g})"
            ),
            severity="high"
            if rate_bps >= 100e6 or reflectors >= 10 * cfg.min_reflectors
            else "medium",
            source=source,
            target=victim,
            evidence={
                "service": top_service,
                "reflectors": reflectors,
                "response_bytes": st.response_bytes,
                "request_bytes": st.request_bytes,
                "ratio": ratio,
                "packets": st.packets,
                "rate_bps": round(rate_bps),
                "top_reflector_share": round(share, 3),
                "threshold_reflectors": cfg.min_reflectors,
                "threshold_bytes": cfg.min_response_bytes,
                "threshold_ratio": cfg.min_ratio,
                "window_s": cfg.window_s,
            },
        )


def icmp_protos() -> tuple[int, ...]:
    return (PROTO_ICMP, PROTO_ICMPV6)
