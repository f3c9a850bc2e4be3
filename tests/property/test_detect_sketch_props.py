"""Incremental detector counts agree with recounting from scratch (hypothesis).

The scan detector keeps its per-host pair counts up to date instead of recounting every
pair per report; whatever the pairs and whenever it is first asked, its answer must be
what a ``Counter`` over all pairs says.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.detect.scans import _Walk

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
