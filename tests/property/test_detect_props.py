"""Detector shortcuts agree with the plain computation (hypothesis).

The scan detector keeps its per-host pair counts up to date instead of recounting every
pair per report; whatever the pairs and whenever it is first asked, its answer must be
what a ``Counter`` over all pairs says. ``AlertManager.report_deferred`` makes a report's
rule and evidence only when they are emitted; any mix of deferred and plain reports must
give the records that plain reports give.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.detect.alerts import AlertManager, AlertPolicy, AlertRecord
from trafficguard.detect.base import SEVERITIES, Evidence
from trafficguard.detect.scans import _Walk

S = 1_000_000_000

pair_spec = st.tuples(st.sampled_from([f"192.0.2.{i}" for i in range(6)]), st.integers(1, 9))


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(pair_spec, max_size=60), first_ask=st.integers(0, 60))
def test_walk_hosts_matches_a_recount(pairs: list[tuple[str, int]], first_ask: int) -> None:
    walk = _Walk(0)
    for i, pair in enumerate(pairs):
        if pair in walk.pairs:
            continue  # the detector adds first contacts only
        walk.add_pair(pair)
        if i < first_ask:
            continue  # not asked yet: the counts are made on the first ask
        per_host = Counter(host for host, _ in walk.pairs)
        top_n = max(per_host.values())
        tied = [host for host, n in per_host.items() if n == top_n]
        assert walk.hosts() == (len(per_host), top_n, tied[0] if len(tied) == 1 else None)


class _Clear:
    def address(self, ip: str) -> str:
        return ip

    def is_subscriber(self, ip: str) -> bool:
        return False


report_spec = st.tuples(
    st.integers(0, 90),  # time step in seconds (0: a tick instead of a report)
    st.sampled_from(["a", "b"]),  # key
    st.sampled_from(SEVERITIES),
    st.booleans(),  # deferred (in the second manager)
)


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(report_spec, max_size=40))
def test_deferred_reports_give_the_records_of_plain_ones(
    reports: list[tuple[int, str, str, bool]],
) -> None:
    policy = AlertPolicy(update_interval_ns=60 * S, quiet_period_ns=120 * S, max_active=2)
    plain, mixed = AlertManager(_Clear(), policy), AlertManager(_Clear(), policy)
    out: tuple[list[AlertRecord], list[AlertRecord]] = ([], [])
    now = 0
    for i, (step, key, severity, deferred) in enumerate(reports):
        now += step * S
        if not step:
            plain.tick(now)
            mixed.tick(now)
            continue
        rule = f"rule {i} at {severity}"
        evidence: Evidence = {"n": i, "severity": severity}

        def details(rule: str = rule, evidence: Evidence = evidence) -> tuple[str, Evidence]:
            return rule, dict(evidence)

        kw = {"first_ns": now - S, "last_ns": now, "severity": severity, "source": key}
        plain.report("d", key, rule=rule, evidence=evidence, **kw)  # type: ignore[arg-type]
        if deferred:
            mixed.report_deferred("d", key, details=details, **kw)  # type: ignore[arg-type]
        else:
            mixed.report("d", key, rule=rule, evidence=evidence, **kw)  # type: ignore[arg-type]
        out[0].extend(plain.take())
        out[1].extend(mixed.take())
    plain.finish()
    mixed.finish()
    assert out[0] + plain.take() == out[1] + mixed.take()
