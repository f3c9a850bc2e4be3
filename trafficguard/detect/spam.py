"""SMTP spam bot: a subscriber host opening SMTP sessions to many distinct mail servers.

An end user's machine submits mail to one or two servers (its provider, port 587/465);
a host that itself talks SMTP on port 25 to many different servers in a short time is
delivering mail directly, which is what spam bots do.
"""

from __future__ import annotations

from trafficguard.config import NS_PER_S, SmtpSpamConfig
from trafficguard.decode.packet import PROTO_TCP
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import DistinctCounter, LruMap
from trafficguard.flow.records import FlowRecord


class _Sender:
    __slots__ = ("first_ns", "last_ns", "servers", "sessions")

    def __init__(self, ts_ns: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.sessions = 0
        self.servers = DistinctCounter(exact_cap=64)


class SmtpSpamDetector(Detector):
    """Sessions to SMTP port(s) from one (subscriber) source to many distinct servers."""

    name = "smtp_spam"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: SmtpSpamConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.ports = self.flow_dst_ports = frozenset(cfg.ports)
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.any_source = not env.home_networks_known or not cfg.subscribers_only
        self.senders: LruMap[str, _Sender] = LruMap(env.max_keys)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP or rec.seq or rec.dst_port not in self.ports:
            return
        src = rec.src_addr
        if not self.any_source and not self.env.is_subscriber(src):
            return
        ts = rec.start_ns
        st = self.senders.setdefault(src, lambda: _Sender(ts))
        if ts - st.first_ns >= self.window_ns:
            st = _Sender(ts)
            self.senders.pop(src)
            self.senders.setdefault(src, lambda: st)
        st.sessions += 1
        st.servers.add(rec.dst_addr)
        st.last_ns = max(st.last_ns, rec.end_ns)
        cfg = self.cfg
        servers = st.servers.count()
        if servers < cfg.min_servers:
            return
        self.report_span(
            src,
            st,
            rule=(
                f"one host opened {st.sessions} SMTP sessions to {servers} distinct mail "
                f"servers (threshold: {cfg.min_servers} servers in {cfg.window_s:g}s)"
            ),
            severity="medium",
            source=src,
            target="",
            evidence={
                "sessions": st.sessions,
                "servers": servers,
                "threshold_servers": cfg.min_servers,
                "window_s": cfg.window_s,
            },
        )

    def tick(self, now_ns: int) -> None:
        stale = []
        for src, st in self.senders.oldest():
            if now_ns - st.last_ns < self.window_ns:
                break
            stale.append(src)
        for src in stale:
            self.senders.pop(src)

    def state_keys(self) -> int:
        return len(self.senders)

    def evicted_keys(self) -> int:
        return self.senders.evicted
