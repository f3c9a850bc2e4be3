"""SIP abuse detectors from call and registration records (and SIP flow records):
SIP scanning, credential brute force, INVITE flood.

Accounts and callees are pseudonyms already (the VoIP stage made them); signalling
addresses are in clear and the alert manager pseudonymizes subscriber ones.
"""

from __future__ import annotations

from trafficguard.config import NS_PER_S, InviteFloodConfig, SipBruteforceConfig, SipScanConfig
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import DistinctCounter, LruMap, SpaceSaving
from trafficguard.flow.records import FlowRecord
from trafficguard.voip.records import CallRecord, RegistrationRecord

AUTH_CODES = frozenset({401, 407})
SIP_PORTS = frozenset({5060, 5061})


class _Probe:
    __slots__ = ("failed", "first_ns", "last_ns", "probes", "targets")

    def __init__(self, ts_ns: int, cap: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.probes = 0
        self.failed = 0
        self.targets = DistinctCounter(exact_cap=cap)


class _Windowed(Detector):
    """Per-key windows in an LRU map (shared by the SIP and fraud detectors)."""

    window_ns: int

    def _fresh(self, m: LruMap[str, _Probe], key: str, ts: int, cap: int) -> _Probe:
        st = m.setdefault(key, lambda: _Probe(ts, cap))
        if ts - st.first_ns >= self.window_ns:
            st = _Probe(ts, cap)
            m.pop(key)
            m.setdefault(key, lambda: st)
        return st


class SipScanDetector(_Windowed):
    """One source probing many extensions (REGISTER/INVITE) or many SIP hosts, mostly
    failing."""

    name = "sip_scan"

    def __init__(self, env: DetectorEnv, cfg: SipScanConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.extensions: LruMap[str, _Probe] = LruMap(env.max_keys)
        self.hosts: LruMap[str, _Probe] = LruMap(env.max_keys)

    def _extension(self, src: str, target: str, failed: bool, ts: int, end: int, how: str) -> None:
        cfg = self.cfg
        st = self._fresh(self.extensions, src, ts, 2 * cfg.min_extensions)
        st.probes += 1
        st.failed += failed
        st.targets.add(target)
        st.last_ns = max(st.last_ns, end)
        n = st.targets.count()
        if n >= cfg.min_extensions and st.failed >= cfg.min_failure_ratio * st.probes:
            self._report(src, st, n, "extensions", cfg.min_extensions, how)

    def on_registration(self, rec: RegistrationRecord) -> None:
        failed = not 200 <= rec.result_code < 300
        self._extension(rec.src_addr, rec.aor, failed, rec.ts_ns, rec.end_ns, "register")

    def on_call(self, rec: CallRecord) -> None:
        failed = rec.answer_ns is None
        self._extension(rec.src_addr, rec.callee, failed, rec.invite_ns, rec.end_ns, "invite")

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.seq or (rec.app != "sip" and rec.dst_port not in SIP_PORTS):
            return
        cfg = self.cfg
        st = self._fresh(self.hosts, rec.src_addr, rec.start_ns, 2 * cfg.min_hosts)
        if rec.dst_addr in st.targets:
            return
        st.probes += 1
        st.failed += rec.packets_rev == 0
        st.targets.add(rec.dst_addr)
        st.last_ns = max(st.last_ns, rec.end_ns)
        n = st.targets.count()
        if n >= cfg.min_hosts and st.failed >= cfg.min_failure_ratio * st.probes:
            self._report(rec.src_addr, st, n, "hosts", cfg.min_hosts, "flows")

    def _report(self, src: str, st: _Probe, n: int, what: str, threshold: int, how: str) -> None:
        cfg = self.cfg
        self.report_span(
            f"{src}|{what}",
            st,
            rule=(
                f"one source probed {n} SIP {what}, {st.failed} of {st.probes} attempts "
                f"failed (thresholds: {threshold} {what} in {cfg.window_s:g}s, "
                f"{cfg.min_failure_ratio:g} failed)"
            ),
            severity="medium",
            source=src,
            target="",
            evidence={
                what: n,
                "probes": st.probes,
                "failed": st.failed,
                "method": how,
                f"threshold_{what}": threshold,
                "window_s": cfg.window_s,
            },
        )

    def state_keys(self) -> int:
        return len(self.extensions) + len(self.hosts)

    def evicted_keys(self) -> int:
        return self.extensions.evicted + self.hosts.evicted


class _Auth:
    __slots__ = ("failed", "first_ns", "last_ns", "ok", "sources")

    def __init__(self, ts_ns: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.failed = 0
        self.ok = 0
        self.sources: SpaceSaving[str] = SpaceSaving(2)


class SipBruteforceDetector(Detector):
    """Many rejected credentials (REGISTER or INVITE digest auth) per source or account."""

    name = "sip_bruteforce"

    def __init__(self, env: DetectorEnv, cfg: SipBruteforceConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.keys: LruMap[tuple[str, str], _Auth] = LruMap(env.max_keys)

    @staticmethod
    def failures(challenges: int, final_code: int) -> tuple[int, bool]:
        """(credentials rejected, succeeded): every challenge after the first rejects the
        credentials just sent; a final 403 rejects too."""
        failed = max(0, challenges - 1) + (final_code == 403)
        return failed, 200 <= final_code < 300

    def on_registration(self, rec: RegistrationRecord) -> None:
        failed, ok = self.failures(rec.challenges, rec.result_code)
        self._count(rec.src_addr, rec.aor, failed, ok, rec.ts_ns, rec.end_ns, "register")

    def on_call(self, rec: CallRecord) -> None:
        failed, ok = self.failures(rec.auth_challenges, rec.final_code)
        if failed or (ok and rec.auth_challenges):
            self._count(rec.src_addr, rec.caller, failed, ok, rec.invite_ns, rec.end_ns, "invite")

    def _count(
        self, src: str, account: str, failed: int, ok: bool, ts: int, end: int, how: str
    ) -> None:
        if not failed and not ok:
            return
        keys: tuple[tuple[str, str], ...] = (("source", src), ("account", account))
        for key in keys:
            st = self.keys.setdefault(key, lambda: _Auth(ts))
            if ts - st.first_ns >= self.window_ns:
                self.keys.pop(key)
                st = self.keys.setdefault(key, lambda: _Auth(ts))
            st.failed += failed
            st.ok += ok
            st.sources.add(src)
            st.last_ns = max(st.last_ns, end)
            cfg = self.cfg
            total = st.failed + st.ok
            if st.failed < cfg.min_failures or st.failed < cfg.min_failure_ratio * total:
                continue
            top = st.sources.top(1)[0][0]
            per_account = key[0] == "account"
            self.report_span(
                f"{key[0]}|{key[1]}",
                st,
                rule=(
                    f"{st.failed} rejected SIP credentials ({how}) "
                    f"{'for one account' if per_account else 'from one source'}, "
                    f"{st.ok} accepted (thresholds: {cfg.min_failures} in {cfg.window_s:g}s, "
                    f"{cfg.min_failure_ratio:g} rejected)"
                ),
                severity="high" if st.ok else "medium",
                source=top if (not per_account or st.sources.share(top) >= 0.5) else "",
                target=account if per_account or st.sources.share(top) >= 0.5 else "",
                evidence={
                    "rejected": st.failed,
                    "accepted": st.ok,
                    "key": key[0],
                    "method": how,
                    "threshold_rejected": cfg.min_failures,
                    "threshold_ratio": cfg.min_failure_ratio,
                    "window_s": cfg.window_s,
                },
            )

    def state_keys(self) -> int:
        return len(self.keys)

    def evicted_keys(self) -> int:
        return self.keys.evicted


class InviteFloodDetector(_Windowed):
    """INVITE transactions from one source above a rate."""

    name = "invite_flood"

    def __init__(self, env: DetectorEnv, cfg: InviteFloodConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.sources: LruMap[str, _Probe] = LruMap(env.max_keys)

    def on_call(self, rec: CallRecord) -> None:
        st = self._fresh(self.sources, rec.src_addr, rec.invite_ns, 8)
        st.probes += max(rec.attempts, 1)
        st.failed += rec.answer_ns is None
        st.targets.add(rec.dst_addr)
        st.first_ns = min(st.first_ns, rec.invite_ns)
        st.last_ns = max(st.last_ns, rec.invite_ns)
        cfg = self.cfg
        if st.probes < cfg.min_invites:
            return
        span = max((st.last_ns - st.first_ns) / NS_PER_S, 1.0)
        self.report_span(
            rec.src_addr,
            st,
            rule=(
                f"{st.probes} INVITEs from one source in {span:.0f}s "
                f"(threshold: {cfg.min_invites} in {cfg.window_s:g}s)"
            ),
            severity="high" if st.probes >= 10 * cfg.min_invites else "medium",
            source=rec.src_addr,
            target=rec.dst_addr if st.targets.count() == 1 else "",
            evidence={
                "invites": st.probes,
                "unanswered": st.failed,
                "rate_per_s": round(st.probes / span, 1),
                "threshold_invites": cfg.min_invites,
                "window_s": cfg.window_s,
            },
        )

    def state_keys(self) -> int:
        return len(self.sources)

    def evicted_keys(self) -> int:
        return self.sources.evicted
