"""Call fraud detectors from call records: toll fraud, Wangiri, robocall/spam.

Accounts (caller/callee) are pseudonyms from the VoIP stage; number classes come from a
closed set (``voip.numbers.NUMBER_CLASSES``), so evidence can name them.
"""

from __future__ import annotations

from collections import deque

from trafficguard.config import NS_PER_S, RobocallConfig, TollFraudConfig, WangiriConfig
from trafficguard.detect.base import Detector, DetectorEnv, Evidence
from trafficguard.detect.sketch import DistinctCounter, LruMap, SpaceSaving
from trafficguard.voip.records import CallRecord

MAX_INTERVALS = 64  # answered calls kept per account for concurrency


class _Account:
    __slots__ = ("answered", "baseline", "calls", "first_ns", "last_ns", "sources", "window_start")

    def __init__(self, ts_ns: int) -> None:
        self.window_start = ts_ns
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.calls = 0
        self.baseline = 0.0
        self.answered: deque[tuple[int, int]] = deque(maxlen=MAX_INTERVALS)
        self.sources: SpaceSaving[str] = SpaceSaving(2)


def max_concurrency(intervals: deque[tuple[int, int]]) -> int:
    """Most intervals ``[start, end)`` open at one instant."""
    best = 0
    for start, _ in intervals:
        best = max(best, sum(1 for s, e in intervals if s <= start < e))
    return best


class TollFraudDetector(Detector):
    """An account's calls to international/premium numbers above its own baseline, or too
    many of them at once."""

    name = "toll_fraud"

    def __init__(self, env: DetectorEnv, cfg: TollFraudConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.classes = frozenset(cfg.classes)
        self.window_ns = int(cfg.window_s * NS_PER_S)
        self.accounts: LruMap[str, _Account] = LruMap(env.max_keys)

    def on_call(self, rec: CallRecord) -> None:
        if rec.callee_class not in self.classes:
            return
        ts = rec.invite_ns
        acct = self.accounts.setdefault(rec.caller, lambda: _Account(ts))
        cfg = self.cfg
        elapsed = (ts - acct.window_start) // self.window_ns
        if elapsed > 0:  # close the window(s): EWMA baseline of calls per window
            a = cfg.baseline_alpha
            acct.baseline = a * acct.calls + (1 - a) * acct.baseline
            acct.baseline *= (1 - a) ** (elapsed - 1)
            acct.calls = 0
            acct.window_start += elapsed * self.window_ns
            acct.first_ns = ts
        acct.calls += 1
        acct.sources.add(rec.src_addr)
        acct.last_ns = max(acct.last_ns, rec.end_ns)
        if rec.answer_ns is not None:
            acct.answered.append((rec.answer_ns, rec.end_ns))
        limit = max(cfg.min_calls, cfg.baseline_factor * acct.baseline)
        concurrent = max_concurrency(acct.answered)
        if acct.calls < limit and concurrent < cfg.max_concurrent:
            return
        top = acct.sources.top(1)[0][0]
        self.report_span(
            rec.caller,
            acct,
            rule=(
                f"one account made {acct.calls} calls to {'/'.join(sorted(self.classes))} "
                f"numbers in {cfg.window_s:g}s (baseline {acct.baseline:.1f} per window, "
                f"limit {limit:.0f}), up to {concurrent} at once (limit {cfg.max_concurrent})"
            ),
            severity="high" if concurrent >= cfg.max_concurrent else "medium",
            source=top if acct.sources.share(top) >= 0.5 else "",
            target=rec.caller,
            evidence={
                "calls": acct.calls,
                "baseline_per_window": round(acct.baseline, 2),
                "limit_calls": round(limit, 1),
                "concurrent": concurrent,
                "threshold_concurrent": cfg.max_concurrent,
                "callee_class": rec.callee_class,
                "window_s": cfg.window_s,
            },
        )

    def state_keys(self) -> int:
        return len(self.accounts)

    def evicted_keys(self) -> int:
        return self.accounts.evicted


class _Origin:
    __slots__ = (
        "answered",
        "answered_ms",
        "attempts",
        "callees",
        "first_ns",
        "last_ns",
        "ring_ms",
        "sources",
    )

    def __init__(self, ts_ns: int, cap: int) -> None:
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.attempts = 0
        self.answered = 0
        self.answered_ms = 0.0
        self.ring_ms = 0.0
        self.callees = DistinctCounter(exact_cap=cap)
        self.sources: SpaceSaving[str] = SpaceSaving(2)


class _PerCaller(Detector):
    """Per calling account: distinct callees in a window of packet time."""

    def __init__(self, env: DetectorEnv, window_s: float) -> None:
        super().__init__(env)
        self.window_ns = int(window_s * NS_PER_S)
        self.origins: LruMap[str, _Origin] = LruMap(env.max_keys)

    def tally(self, rec: CallRecord, min_callees: int) -> tuple[_Origin, int]:
        """Count one call of ``rec.caller``: its origin state and distinct callees so far."""
        st = self.origin(rec, 2 * min_callees)
        st.attempts += 1
        st.callees.add(rec.callee)
        return st, st.callees.count()

    def report_origin(self, rec: CallRecord, st: _Origin, rule: str, evidence: Evidence) -> None:
        self.report_span(
            rec.caller,
            st,
            rule=rule,
            severity="medium",
            source=self.source_of(st),
            target="",
            evidence=evidence,
        )

    def origin(self, rec: CallRecord, cap: int) -> _Origin:
        ts = rec.invite_ns
        st = self.origins.setdefault(rec.caller, lambda: _Origin(ts, cap))
        if ts - st.first_ns >= self.window_ns:
            self.origins.pop(rec.caller)
            st = self.origins.setdefault(rec.caller, lambda: _Origin(ts, cap))
        st.last_ns = max(st.last_ns, rec.end_ns)
        st.sources.add(rec.src_addr)
        return st

    def source_of(self, st: _Origin) -> str:
        top = st.sources.top(1)[0][0]
        return top if st.sources.share(top) >= 0.5 else ""

    def state_keys(self) -> int:
        return len(self.origins)

    def evicted_keys(self) -> int:
        return self.origins.evicted


class WangiriDetector(_PerCaller):
    """One origin ringing many subscribers once, cancelling after a short ring."""

    name = "wangiri"

    def __init__(self, env: DetectorEnv, cfg: WangiriConfig) -> None:
        super().__init__(env, cfg.window_s)
        self.cfg = cfg
        self.max_ring_ns = int(cfg.max_ring_s * NS_PER_S)

    def on_call(self, rec: CallRecord) -> None:
        if rec.answer_ns is not None or rec.end_reason != "cancelled":
            return
        ring_ns = rec.end_ns - (rec.first_provisional_ns or rec.invite_ns)
        if ring_ns > self.max_ring_ns:
            return
        cfg = self.cfg
        st, n = self.tally(rec, cfg.min_callees)
        st.ring_ms += ring_ns / 1e6
        if n < cfg.min_callees:
            return
        self.report_origin(
            rec,
            st,
            rule=(
                f"one caller rang {n} distinct numbers and cancelled each within "
                f"{cfg.max_ring_s:g}s (threshold: {cfg.min_callees} in {cfg.window_s:g}s)"
            ),
            evidence={
                "callees": n,
                "calls": st.attempts,
                "mean_ring_s": round(st.ring_ms / st.attempts / 1000, 2),
                "caller_class": rec.caller_class,
                "threshold_callees": cfg.min_callees,
                "threshold_ring_s": cfg.max_ring_s,
                "window_s": cfg.window_s,
            },
        )


class RobocallDetector(_PerCaller):
    """One caller, many distinct callees, and a low answer rate or short calls."""

    name = "robocall"

    def __init__(self, env: DetectorEnv, cfg: RobocallConfig) -> None:
        super().__init__(env, cfg.window_s)
        self.cfg = cfg

    def on_call(self, rec: CallRecord) -> None:
        cfg = self.cfg
        st, n = self.tally(rec, cfg.min_callees)
        if rec.answer_ns is not None:
            st.answered += 1
            st.answered_ms += rec.duration_ms
        if n < cfg.min_callees:
            return
        asr = st.answered / st.attempts
        mean_s = st.answered_ms / st.answered / 1000 if st.answered else 0.0
        if asr > cfg.max_asr and mean_s > cfg.max_mean_duration_s:
            return
        self.report_origin(
            rec,
            st,
            rule=(
                f"one caller called {n} distinct numbers, answer rate {asr:.2f}, mean answered "
                f"call {mean_s:.0f}s (thresholds: {cfg.min_callees} callees in "
                f"{cfg.window_s:g}s and answer rate <= {cfg.max_asr:g} or mean <= "
                f"{cfg.max_mean_duration_s:g}s)"
            ),
            evidence={
                "callees": n,
                "calls": st.attempts,
                "answered": st.answered,
                "asr": round(asr, 3),
                "mean_duration_s": round(mean_s, 1),
                "caller_class": rec.caller_class,
                "threshold_callees": cfg.min_callees,
                "window_s": cfg.window_s,
            },
        )
