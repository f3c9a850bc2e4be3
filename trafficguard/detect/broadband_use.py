"""Acceptable-use signals: services a subscriber runs for the outside world.

Each is its own detector (and config switch), judged from flow records and the
subscriber ranges (``home_networks``): an **open resolver** (a subscriber host answering
DNS for external clients — reflection fodder), an **open proxy** (external peers relaying
sizable traffic through proxy ports), **residential SMTP** (direct-to-MX mail from a
residential range, the classic spam-bot sign; business ranges may run mail servers), and
**server hosting** (many external peers answered on one port). They report the
subscriber as ``source`` (pseudonymized by the alert manager); evidence is counts only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from trafficguard.config import (
    NS_PER_S,
    OpenProxyConfig,
    OpenResolverConfig,
    ResidentialSmtpConfig,
    ServerHostingConfig,
)
from trafficguard.decode.packet import PROTO_TCP, PROTO_UDP
from trafficguard.detect.base import Detector, DetectorEnv, Evidence
from trafficguard.detect.broadband_windows import PeerWindow, expire_idle
from trafficguard.detect.sketch import LruMap
from trafficguard.flow.records import FlowRecord

DNS_PORT: Final = 53
SYN_ACK: Final = 0x12
ANSWERED_TCP_STATES: Final = frozenset({"established", "fin_wait", "closed"})


def _answered(rec: FlowRecord) -> bool:
    """The responder took part: a completed handshake (TCP) or any reply packet (UDP)."""
    if rec.proto == PROTO_TCP:
        return rec.tcp_flags_rev & SYN_ACK == SYN_ACK and rec.payload_bytes_rev > 0
    return rec.packets_rev > 0


class _InboundDetector(Detector):
    """Inbound sessions from external peers to one subscriber subject, per window."""

    window_s: float

    def __init__(self, env: DetectorEnv, window_s: float) -> None:
        super().__init__(env)
        self.window_s = window_s
        self.window_ns = int(window_s * NS_PER_S)
        self._subjects: LruMap[tuple[str, int], PeerWindow] = LruMap(env.max_keys)

    def takes_flows(self) -> bool:
        """Every inbound rule needs a subscriber responder."""
        return not self.env.no_subscribers

    def inbound(self, rec: FlowRecord) -> bool:
        """External initiator, subscriber responder."""
        sub = self.env.is_subscriber
        return sub(rec.dst_addr) and not sub(rec.src_addr)

    def count(self, rec: FlowRecord, port: int) -> tuple[PeerWindow, int]:
        start = rec.first_seen_ns
        st = self._subjects.setdefault((rec.dst_addr, port), lambda: PeerWindow(start))
        return st, st.add(rec, rec.src_addr, self.window_ns)

    def tick(self, now_ns: int) -> None:
        expire_idle(self._subjects, now_ns, self.window_ns)

    def state_keys(self) -> int:
        return len(self._subjects)

    def evicted_keys(self) -> int:
        return self._subjects.evicted

    def evidence(self, st: PeerWindow, peers: int, threshold: int, **extra: int | str) -> Evidence:
        ev: Evidence = {
            "external_peers": peers,
            "sessions": st.sessions,
            "bytes": st.bytes,
            "min_peers": threshold,
            "window_s": self.window_s,
        }
        ev.update(extra)
        return ev


class OpenResolverDetector(_InboundDetector):
    """A subscriber host answering DNS queries from external clients."""

    name = "open_resolver"
    flow_protos = frozenset({PROTO_TCP, PROTO_UDP})
    flow_dst_ports = frozenset({DNS_PORT})

    def __init__(self, env: DetectorEnv, cfg: OpenResolverConfig) -> None:
        super().__init__(env, cfg.window_s)
        self.cfg = cfg

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.dst_port != DNS_PORT or rec.proto not in (PROTO_UDP, PROTO_TCP):
            return
        if not (_answered(rec) and self.inbound(rec)):
            return
        st, clients = self.count(rec, DNS_PORT)
        need = self.cfg.min_external_clients
        if clients < need:
            return
        self.report_span(
            rec.dst_addr,
            st,
            rule=(
                f"a subscriber host answered DNS queries from {clients} external clients "
                f"within {self.window_s:g}s (threshold {need}): open resolver"
            ),
            severity="medium",
            source=rec.dst_addr,
            evidence=self.evidence(st, clients, need, port=DNS_PORT),
        )


class OpenProxyDetector(_InboundDetector):
    """A subscriber host relaying sizable sessions for many external peers on proxy ports."""

    name = "open_proxy"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: OpenProxyConfig) -> None:
        super().__init__(env, cfg.window_s)
        self.cfg = cfg
        self.ports = self.flow_dst_ports = frozenset(cfg.ports)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP or rec.dst_port not in self.ports:
            return
        cfg = self.cfg
        if rec.bytes_fwd + rec.bytes_rev < cfg.min_session_bytes or not _answered(rec):
            return
        if not self.inbound(rec):
            return
        st, peers = self.count(rec, rec.dst_port)
        if peers < cfg.min_peers:
            return
        self.report_span(
            f"{rec.dst_addr}|{rec.dst_port}",
            st,
            rule=(
                f"{peers} external peers each relayed at least {cfg.min_session_bytes} bytes "
                f"through proxy port {rec.dst_port} of a subscriber host within "
                f"{self.window_s:g}s (threshold {cfg.min_peers}): open proxy"
            ),
            severity="medium",
            source=rec.dst_addr,
            evidence=self.evidence(st, peers, cfg.min_peers, port=rec.dst_port),
        )


class ServerHostingDetector(_InboundDetector):
    """A subscriber host answering many external peers on one port."""

    name = "server_hosting"
    flow_protos = frozenset({PROTO_TCP, PROTO_UDP})

    def __init__(self, env: DetectorEnv, cfg: ServerHostingConfig) -> None:
        super().__init__(env, cfg.window_s)
        self.cfg = cfg
        self.ignore = self.flow_skip_dst_ports = frozenset(cfg.ignore_ports)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto not in (PROTO_TCP, PROTO_UDP) or rec.dst_port in self.ignore:
            return
        if not (_answered(rec) and self.inbound(rec)):
            return
        st, peers = self.count(rec, rec.dst_port)
        need = self.cfg.min_peers
        if peers < need:
            return
        proto = "tcp" if rec.proto == PROTO_TCP else "udp"
        self.report_span(
            f"{rec.dst_addr}|{rec.dst_port}",
            st,
            rule=(
                f"a subscriber host answered {peers} external peers on {proto} port "
                f"{rec.dst_port} within {self.window_s:g}s (threshold {need}): server hosting"
            ),
            severity="low",
            source=rec.dst_addr,
            evidence=self.evidence(st, peers, need, port=rec.dst_port, transport=proto),
        )


class _Prefixes:
    """Membership of text addresses in a few prefixes, memoised per address (bounded)."""

    __slots__ = ("_cache", "_nets")

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._nets = tuple(ipaddress.ip_network(p, strict=False) for p in prefixes)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, addr: str) -> bool:
        hit = self._cache.get(addr)
        if hit is None:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                return False
            hit = any(ip in net for net in self._nets)
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[addr] = hit
        return hit


class ResidentialSmtpDetector(Detector):
    """Direct-to-MX SMTP from residential subscriber ranges."""

    name = "residential_smtp"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: ResidentialSmtpConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.ports = self.flow_dst_ports = frozenset(cfg.ports)
        self.residential = _Prefixes(cfg.residential_networks)
        self.business = _Prefixes(cfg.business_networks)
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self._hosts: LruMap[str, PeerWindow] = LruMap(env.max_keys)

    def is_residential(self, addr: str) -> bool:
        if addr in self.business:
            return False
        if self.residential:
            return addr in self.residential
        return self.env.is_subscriber(addr)

    def takes_flows(self) -> bool:
        """Without residential prefixes a residential host is a subscriber."""
        return bool(self.residential) or not self.env.no_subscribers

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP or rec.dst_port not in self.ports:
            return
        if rec.packets_fwd == 0 or not _answered(rec):
            return
        src = rec.src_addr
        if not self.is_residential(src) or self.env.is_subscriber(rec.dst_addr):
            return
        start = rec.first_seen_ns
        st = self._hosts.setdefault(src, lambda: PeerWindow(start))
        servers = st.add(rec, rec.dst_addr, self.window_ns)
        cfg = self.cfg
        if st.sessions < cfg.min_sessions or servers < cfg.min_servers:
            return
        self.report_span(
            src,
            st,
            rule=(
                f"a residential host opened {st.sessions} SMTP sessions to {servers} external "
                f"mail servers within {cfg.window_s:g}s (thresholds {cfg.min_sessions} "
                f"sessions, {cfg.min_servers} servers): direct-to-MX mail"
            ),
            severity="medium",
            source=src,
            evidence={
                "sessions": st.sessions,
                "servers": servers,
                "bytes": st.bytes,
                "port": rec.dst_port,
                "min_sessions": cfg.min_sessions,
                "min_servers": cfg.min_servers,
                "window_s": cfg.window_s,
            },
        )

    def tick(self, now_ns: int) -> None:
        expire_idle(self._hosts, now_ns, self.window_ns)

    def state_keys(self) -> int:
        return len(self._hosts)

    def evicted_keys(self) -> int:
        return self._hosts.evicted
