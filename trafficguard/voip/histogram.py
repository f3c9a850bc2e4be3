"""Fixed-bucket histograms of plain ints, exported as Prometheus histogram families.

Updated once per call or stream (never per packet) from the packet thread; the metrics
thread reads a copy of the counts at scrape time. No lock: a scrape that races an update
may see a sample counted in ``count`` but not yet in ``sum`` — harmless for a monitor.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import HistogramMetricFamily


class Histogram:
    """Counts per upper bound (``le``), plus the sum and count of observed values."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one value in the first bucket whose bound is >= value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        """The cumulative Prometheus form of the current counts."""
        from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415 (scrape only)

        counts = list(self.counts)
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            buckets.append((_le(bound), running))
        running += counts[-1]
        buckets.append(("+Inf", running))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


def _le(bound: float) -> str:
    return repr(bound)
