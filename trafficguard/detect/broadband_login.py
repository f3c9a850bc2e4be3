"""Login brute force and credential stuffing, judged from flow records alone.

The heuristic is Zeek's SSH guessing one (``policy/protocols/ssh/detect-bruteforcing``)
carried to every login service: a failed login is a *short session* in which both sides
spoke, the server said little (but more than the client: a session whose client sent
several times the server's bytes carried data — a mail submission, an upload — and is not
an attempt), and the connection closed — so it needs no payload. Many
of them from one source to one server and service within a window is **guessing**; one
source trying the same service on many servers is **stuffing** (credentials replayed
across providers). A long or large session from the same source to the same server after
several attempts is the **success signal**, reported in the evidence and raising the
severity: the attacker probably got in.
"""

from __future__ import annotations

from typing import Final

from trafficguard.config import NS_PER_S, LoginBruteforceConfig
from trafficguard.decode.packet import PROTO_TCP
from trafficguard.detect.base import Detector, DetectorEnv, Evidence
from trafficguard.detect.broadband_windows import expire_idle
from trafficguard.detect.sketch import DistinctCounter, LruMap
from trafficguard.flow.records import FlowRecord

LOGIN_SERVICES: Final[dict[int, str]] = {
    21: "ftp",
    22: "ssh",
    23: "telnet",
    110: "pop3",
    143: "imap",
    465: "smtp_auth",
    587: "smtp_auth",
    993: "imaps",
    995: "pop3s",
    3389: "rdp",
    5060: "sip_tcp",
}
"""Closed-set service tokens (evidence values); other configured ports are ``tcp_<n>``."""


class _Attempts:
    """Short sessions of one source to one server and service in the current window."""

    __slots__ = (
        "client_bytes",
        "duration_ns",
        "fin",
        "first_ns",
        "last_ns",
        "rst",
        "server_bytes",
        "sessions",
        "success_ns",
        "window_start_ns",
    )

    def __init__(self, start_ns: int) -> None:
        self.window_start_ns = self.first_ns = self.last_ns = start_ns
        self.sessions = self.fin = self.rst = 0
        self.client_bytes = self.server_bytes = self.duration_ns = 0
        self.success_ns = 0  # duration of the success-signal session, 0 = none seen


class _Stuffing:
    """Servers of one service tried by one source in the current window."""

    __slots__ = ("first_ns", "last_ns", "servers", "sessions", "window_start_ns")

    def __init__(self, start_ns: int) -> None:
        self.window_start_ns = self.first_ns = self.last_ns = start_ns
        self.sessions = 0
        self.servers = DistinctCounter(exact_cap=64)


class LoginBruteforceDetector(Detector):
    """Guessing (one server) and stuffing (many servers) on login services."""

    name = "login_bruteforce"
    flow_protos = frozenset({PROTO_TCP})

    def __init__(self, env: DetectorEnv, cfg: LoginBruteforceConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.services = {p: LOGIN_SERVICES.get(p, f"tcp_{p}") for p in cfg.ports}
        self.flow_dst_ports = frozenset(self.services)
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.max_session_ns = int(cfg.max_session_s * NS_PER_S)
        self.success_ns = int(cfg.success_min_s * NS_PER_S)
        self._pairs: LruMap[tuple[str, str, int], _Attempts] = LruMap(env.max_keys)
        self._stuffing: LruMap[tuple[str, int], _Stuffing] = LruMap(env.max_keys)

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.proto != PROTO_TCP:
            return
        service = self.services.get(rec.dst_port)
        if service is None:
            return
        cfg = self.cfg
        duration = rec.end_ns - rec.first_seen_ns
        key = (rec.src_addr, rec.dst_addr, rec.dst_port)
        if (
            rec.end_reason == "active"
            or rec.seq > 0
            or duration >= self.success_ns
            or (rec.payload_bytes_fwd + rec.payload_bytes_rev >= cfg.success_min_bytes)
        ):
            self._success(key, rec, service, duration)
            return
        if not (
            rec.payload_bytes_fwd
            and rec.payload_bytes_rev
            and duration <= self.max_session_ns
            and rec.payload_bytes_rev <= cfg.max_server_bytes
        ):
            return
        if (
            rec.payload_bytes_fwd >= cfg.data_min_client_bytes
            and rec.payload_bytes_fwd >= cfg.data_min_ratio * rec.payload_bytes_rev
        ):
            # the client carried data (a message submission, an upload): in a failed
            # login the server talks more — banner, prompts, capabilities, the error
            return
        st = self._window_of(key, rec.first_seen_ns)
        st.sessions += 1
        st.first_ns = min(st.first_ns, rec.first_seen_ns)
        st.last_ns = max(st.last_ns, rec.end_ns)
        st.duration_ns += duration
        st.client_bytes += rec.payload_bytes_fwd
        st.server_bytes += rec.payload_bytes_rev
        if rec.tcp_state == "reset":
            st.rst += 1
        else:
            st.fin += 1
        if st.sessions >= cfg.min_sessions:
            self._report_guessing(key, st, service, rec.first_seen_ns)
        self._stuffing_attempt(rec, service)

    def _window_of(self, key: tuple[str, str, int], start_ns: int) -> _Attempts:
        st = self._pairs.setdefault(key, lambda: _Attempts(start_ns))
        if start_ns - st.window_start_ns >= self.window_ns:
            self._pairs.pop(key)
            st = self._pairs.setdefault(key, lambda: _Attempts(start_ns))
        return st

    def _success(
        self, key: tuple[str, str, int], rec: FlowRecord, service: str, duration: int
    ) -> None:
        st = self._pairs.get(key)
        if st is None or st.sessions < self.cfg.success_min_attempts:
            return
        if rec.first_seen_ns - st.last_ns > self.window_ns:
            return
        st.success_ns = max(st.success_ns, duration)
        st.last_ns = max(st.last_ns, rec.end_ns)
        if st.sessions >= self.cfg.min_sessions:
            self._report_guessing(key, st, service, rec.first_seen_ns)

    def _report_guessing(
        self, key: tuple[str, str, int], st: _Attempts, service: str, since_ns: int
    ) -> None:
        cfg = self.cfg
        n = st.sessions
        success = st.success_ns > 0
        evidence: Evidence = {
            "pattern": "guessing",
            "service": service,
            "sessions": n,
            "min_sessions": cfg.min_sessions,
            "window_s": cfg.window_s,
            "mean_duration_s": round(st.duration_ns / n / NS_PER_S, 3),
            "mean_client_bytes": round(st.client_bytes / n, 1),
            "mean_server_bytes": round(st.server_bytes / n, 1),
            "teardown_fin": st.fin,
            "teardown_rst": st.rst,
            "possible_success": int(success),
        }
        rule = (
            f"{n} short {service} sessions (at most {cfg.max_session_s:g}s and "
            f"{cfg.max_server_bytes} server bytes) from one source to one server within "
            f"{cfg.window_s:g}s (threshold {cfg.min_sessions})"
        )
        if success:
            evidence["success_session_s"] = round(st.success_ns / NS_PER_S, 1)
            rule += "; then a long session from the same source: possible successful login"
        self.report_span(
            f"guess|{key[0]}|{key[1]}|{key[2]}",
            st,
            rule=rule,
            severity="high" if success else "medium",
            source=key[0],
            target=key[1],
            evidence=evidence,
            since_ns=since_ns,  # the session behind this report: a long one continues
        )

    def _stuffing_attempt(self, rec: FlowRecord, service: str) -> None:
        key = (rec.src_addr, rec.dst_port)
        start = rec.first_seen_ns
        st = self._stuffing.setdefault(key, lambda: _Stuffing(start))
        if start - st.window_start_ns >= self.window_ns:
            st.window_start_ns = st.first_ns = start
            st.sessions = 0
            st.servers.clear()
        st.sessions += 1
        st.first_ns = min(st.first_ns, start)
        st.last_ns = max(st.last_ns, rec.end_ns)
        st.servers.add(rec.dst_addr)
        servers = st.servers.count()
        cfg = self.cfg
        if servers < cfg.min_servers:
            return
        self.report_span(
            f"stuff|{key[0]}|{key[1]}",
            st,
            rule=(
                f"short {service} sessions from one source to {servers} servers within "
                f"{cfg.window_s:g}s (threshold {cfg.min_servers}): credential stuffing"
            ),
            severity="medium",
            source=rec.src_addr,
            target="",
            evidence={
                "pattern": "stuffing",
                "service": service,
                "servers": servers,
                "sessions": st.sessions,
                "min_servers": cfg.min_servers,
                "window_s": cfg.window_s,
            },
        )

    def tick(self, now_ns: int) -> None:
        """Forget pairs idle for a whole window (oldest first, stops at a live one)."""
        expire_idle(self._pairs, now_ns, self.window_ns)
        expire_idle(self._stuffing, now_ns, self.window_ns)

    def state_keys(self) -> int:
        return len(self._pairs) + len(self._stuffing)

    def evicted_keys(self) -> int:
        return self._pairs.evicted + self._stuffing.evicted
