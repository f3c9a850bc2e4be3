"""Scan detectors: port scan (threshold random walk) and host sweep.

Port scan follows Jung, Paxson, Berger, Balakrishnan, "Fast Portscan Detection Using
Sequential Hypothesis Testing" (IEEE S&P 2004): every *first contact* of a source — here a
new (host, port) pair, from the first record of a TCP flow — is a Bernoulli trial that
succeeded (the port answered the handshake with SYN-ACK) or failed (RST or silence). The
log-likelihood ratio walks up by ln((1-θ1)/(1-θ0)) on a failure and down by ln(θ1/θ0) on a
success; crossing ln(β/α) declares a scanner, crossing ln((1-β)/(1-α)) declares the source
benign and restarts the walk. Probes with no SYN and no ACK (NULL, FIN, Xmas) never occur
in real connections and count as failures and as stealth probes.

Host sweep counts, per (source, protocol, port), distinct hosts contacted and how many
never answered (TCP: no SYN-ACK; ICMP: no reply).
"""

from __future__ import annotations

import math
from collections import Counter

from trafficguard.config import NS_PER_S, HostSweepConfig, PortScanConfig
from trafficguard.decode.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, TCP_ACK, TCP_SYN
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import DistinctCounter, LruMap
from trafficguard.flow.records import FlowRecord

SYN_ACK = TCP_SYN | TCP_ACK
PAIRS_CAP = 4096  # first contacts remembered per source (beyond: every pair counts as new)


def tcp_probe_outcome(rec: FlowRecord) -> tuple[bool, bool] | None:
    """``(answered, stealth)`` of a TCP first contact, or None if it is not one."""
    fwd = rec.tcp_flags_fwd
    if fwd & TCP_SYN:
        if fwd & TCP_ACK and rec.payload_bytes_fwd:
            return True, False  # a completed connection that carried data
        return rec.tcp_flags_rev & SYN_ACK == SYN_ACK, False
    if fwd & TCP_ACK:
        return None  # mid-stream: capture started inside a connection
    return False, True  # NULL / FIN / Xmas probe


class _Walk:
    """One source's random walk and what it probed."""

    __slots__ = (
        "_hosts",
        "_ports",
        "_top_host",
        "_top_n",
        "_top_ties",
        "answered",
        "first_ns",
        "last_ns",
        "llr",
        "pairs",
        "probes",
        "stealth_ports",
    )

    def __init__(self, ts_ns: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.llr = 0.0
        self.probes = 0
        self.answered = 0
        self.pairs: set[tuple[str, int]] = set()  # first contacts (capped at PAIRS_CAP)
        self.stealth_ports: set[int] | None = None  # allocated on the first stealth probe
        self._ports: set[int] | None = None  # the ports of ``pairs``, once first asked
        self._hosts: dict[str, int] | None = None  # pairs per host, once first asked
        # of ``_hosts``: the highest count, a host with it, and how many hosts have it
        self._top_n = self._top_ties = 0
        self._top_host = ""

    def add_pair(self, pair: tuple[str, int]) -> None:
        self.pairs.add(pair)
        if self._ports is not None:
            self._ports.add(pair[1])
        hosts = self._hosts
        if hosts is not None:
            host = pair[0]
            n = hosts[host] = hosts.get(host, 0) + 1
            if n > self._top_n:
                self._top_n, self._top_host, self._top_ties = n, host, 1
            elif n == self._top_n:
                self._top_ties += 1

    def hosts(self) -> tuple[int, int, str | None]:
        """Distinct hosts among the pairs, the highest pair count of one host, and that
        host if no other has as many (None on a tie). Made on the first ask, then kept up
        to date by :meth:`add_pair`: a scanner reports on every probe, and counting all
        its pairs again per report cost more than the rest of the detector."""
        hosts = self._hosts
        if hosts is None:
            hosts = self._hosts = dict(Counter(host for host, _ in self.pairs))
            n = max(hosts.values(), default=0)
            tied = [host for host, count in hosts.items() if count == n]
            self._top_n, self._top_host, self._top_ties = n, tied[0] if tied else "", len(tied)
        return len(hosts), self._top_n, self._top_host if self._top_ties == 1 else None

    def ports(self) -> int:
        """Distinct ports among the pairs: made on the first ask (a source whose walk
        crossed the threshold asks on every probe), then kept up to date."""
        if self._ports is None:
            self._ports = {port for _, port in self.pairs}
        return len(self._ports)


class PortScanDetector(Detector):
    """TRW over first contacts to (host, port) pairs; NULL/FIN/Xmas probes alone suffice."""

    name = "port_scan"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: PortScanConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.step_fail = math.log((1 - cfg.theta1) / (1 - cfg.theta0))
        self.step_ok = math.log(cfg.theta1 / cfg.theta0)
        self.upper = math.log(cfg.detection_rate / cfg.false_positive_rate)
        self.lower = math.log((1 - cfg.detection_rate) / (1 - cfg.false_positive_rate))
        self.sources: LruMap[str, _Walk] = LruMap(env.max_keys)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP or rec.seq:
            return
        outcome = tcp_probe_outcome(rec)
        if outcome is None:
            return
        answered, stealth = outcome
        src = rec.src_addr
        ts = rec.start_ns
        walk = self.sources.setdefault(src, lambda: _Walk(ts))
        if ts - walk.last_ns >= self.window_ns:
            walk = _Walk(ts)
            self.sources.pop(src)
            self.sources.setdefault(src, lambda: walk)
        pair = (rec.dst_addr, rec.dst_port)
        if pair in walk.pairs:
            return
        if len(walk.pairs) < PAIRS_CAP:
            walk.add_pair(pair)
        walk.first_ns = min(walk.first_ns, ts)
        walk.last_ns = max(walk.last_ns, rec.end_ns)
        walk.probes += 1
        if stealth:
            if walk.stealth_ports is None:
                walk.stealth_ports = set()
            walk.stealth_ports.add(rec.dst_port)
        if answered:
            walk.answered += 1
            walk.llr += self.step_ok
        else:
            walk.llr += self.step_fail
        cfg = self.cfg
        scanner = walk.llr >= self.upper and walk.ports() >= cfg.min_ports
        stealthy = walk.stealth_ports is not None and (
            len(walk.stealth_ports) >= cfg.min_stealth_ports
        )
        if scanner or stealthy:
            self._report(src, walk)
        elif walk.llr <= self.lower:
            walk.llr = 0.0  # benign so far: restart the walk (the pairs stay remembered)

    def _report(self, src: str, walk: _Walk) -> None:
        cfg = self.cfg
        hosts, top_n, top = walk.hosts()
        target = ""
        if top_n * 2 >= len(walk.pairs):
            if top is None:  # two hosts with half the pairs each: the first in set order
                top = Counter(host for host, _ in walk.pairs).most_common(1)[0][0]
            target = top
        ports = walk.ports()
        stealth = len(walk.stealth_ports or ())
        why = (
            f"log likelihood ratio {walk.llr:.1f} >= ln({math.exp(self.upper):.0f})"
            if walk.llr >= self.upper
            else f"{stealth} ports probed with NULL/FIN/Xmas packets"
        )
        self.report_span(
            src,
            walk,
            rule=(
                f"one source probed {ports} ports on {hosts} host(s), "
                f"{walk.probes - walk.answered} of {walk.probes} unanswered: {why} "
                f"(threshold random walk, theta0={cfg.theta0:g}, theta1={cfg.theta1:g})"
            ),
            severity="medium" if ports >= 100 else "low",
            source=src,
            target=target,
            evidence={
                "probes": walk.probes,
                "answered": walk.answered,
                "ports": ports,
                "hosts": hosts,
                "stealth_ports": stealth,
                "log_likelihood_ratio": round(walk.llr, 2),
                "threshold_log_ratio": round(self.upper, 2),
                "threshold_ports": cfg.min_ports,
                "threshold_stealth_ports": cfg.min_stealth_ports,
            },
        )

    def tick(self, now_ns: int) -> None:
        stale = []
        for src, walk in self.sources.oldest():
            if now_ns - walk.last_ns < self.window_ns:
                break
            stale.append(src)
        for src in stale:
            self.sources.pop(src)

    def state_keys(self) -> int:
        return len(self.sources)

    def evicted_keys(self) -> int:
        return self.sources.evicted


class _Sweep:
    __slots__ = ("first_ns", "hosts", "last_ns", "probes", "unanswered")

    def __init__(self, ts_ns: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.probes = 0
        self.unanswered = 0
        self.hosts = DistinctCounter(exact_cap=256)


class HostSweepDetector(Detector):
    """One source contacting many distinct hosts on one port (or by ICMP), mostly
    unanswered."""

    name = "host_sweep"
    flow_protos = frozenset({PROTO_TCP, PROTO_ICMP, PROTO_ICMPV6})

    def __init__(self, env: DetectorEnv, cfg: HostSweepConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.keys: LruMap[tuple[str, int, int], _Sweep] = LruMap(env.max_keys)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.seq:
            return
        proto = rec.proto
        if proto == PROTO_TCP:
            outcome = tcp_probe_outcome(rec)
            if outcome is None:
                return
            answered = outcome[0]
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            if not rec.packets_fwd:
                return
            answered = rec.packets_rev > 0
        else:
            return
        ts = rec.start_ns
        key = (rec.src_addr, proto, rec.dst_port)
        if answered and key not in self.keys:
            return  # state starts with an unanswered probe: normal clients cost nothing
        sw = self.keys.setdefault(key, lambda: _Sweep(ts))
        if ts - sw.last_ns >= self.window_ns:
            sw = _Sweep(ts)
            self.keys.pop(key)
            self.keys.setdefault(key, lambda: sw)
        if rec.dst_addr in sw.hosts:
            return  # only first contacts count
        sw.hosts.add(rec.dst_addr)
        sw.probes += 1
        sw.unanswered += not answered
        sw.first_ns = min(sw.first_ns, ts)
        sw.last_ns = max(sw.last_ns, rec.end_ns)
        cfg = self.cfg
        hosts = sw.hosts.count()
        if hosts < cfg.min_hosts or sw.unanswered < cfg.min_failure_ratio * sw.probes:
            return
        what = "ICMP" if proto != PROTO_TCP else f"TCP port {rec.dst_port}"
        self.report_span(
            f"{rec.src_addr}|{proto}|{rec.dst_port}",
            sw,
            rule=(
                f"one source contacted {hosts} hosts on {what}, {sw.unanswered} of "
                f"{sw.probes} unanswered (thresholds: {cfg.min_hosts} hosts in "
                f"{cfg.window_s:g}s, {cfg.min_failure_ratio:g} unanswered)"
            ),
            severity="medium" if hosts >= 10 * cfg.min_hosts else "low",
            source=rec.src_addr,
            target="",
            evidence={
                "hosts": hosts,
                "probes": sw.probes,
                "unanswered": sw.unanswered,
                "proto": "tcp" if proto == PROTO_TCP else "icmp",
                "port": rec.dst_port if proto == PROTO_TCP else 0,
                "threshold_hosts": cfg.min_hosts,
                "threshold_failure_ratio": cfg.min_failure_ratio,
                "window_s": cfg.window_s,
            },
        )

    def tick(self, now_ns: int) -> None:
        stale = []
        for key, sw in self.keys.oldest():
            if now_ns - sw.last_ns < self.window_ns:
                break
            stale.append(key)
        for key in stale:
            self.keys.pop(key)

    def state_keys(self) -> int:
        return len(self.keys)

    def evicted_keys(self) -> int:
        return self.keys.evicted
