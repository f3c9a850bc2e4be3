"""``FlowStats`` read from the C table's counters (same attributes, read at scrape time)."""

from __future__ import annotations

from trafficguard.fast._core import Core
from trafficguard.flow.classify import APP_LABELS
from trafficguard.flow.records import FLOW_END_REASONS
from trafficguard.flow.state import DIR_FWD, DIR_REV
from trafficguard.flow.stats import END_REASONS


class FastStats:
    """The flow-table counters of ``flow.stats.FlowStats``, read from ``Core`` on access."""

    __slots__ = ("_core", "capacity")

    def __init__(self, core: Core, capacity: int) -> None:
        self._core = core
        self.capacity = capacity

    def _get(self, name: str) -> int:
        value = self._core.counters()[name]
        assert isinstance(value, int)
        return value

    @property
    def active(self) -> int:
        return self._get("active")

    @property
    def started(self) -> int:
        return self._get("started")

    @property
    def evicted(self) -> int:
        return self._get("evicted")

    @property
    def interim_records(self) -> int:
        return self._get("interim")

    @property
    def ended_by_reason(self) -> dict[str, int]:
        ended = self._core.counters()["ended"]
        assert isinstance(ended, tuple)
        counts = dict(zip(FLOW_END_REASONS, ended, strict=True))
        return {reason: counts[reason] for reason in END_REASONS}

    @property
    def ended(self) -> int:
        return sum(self.ended_by_reason.values())

    @property
    def app_packets(self) -> dict[tuple[str, str], int]:
        """Packets per ``(app label, "fwd"|"rev")`` since start, for labels seen so far."""
        out: dict[tuple[str, str], int] = {}
        for label, (pf, pr, _, _) in zip(APP_LABELS, self._core.app_counters(), strict=True):
            if pf or pr:
                out[label, DIR_FWD] = pf
                out[label, DIR_REV] = pr
        return out

    @property
    def app_bytes(self) -> dict[tuple[str, str], int]:
        """Wire bytes per ``(app label, "fwd"|"rev")`` since start."""
        out: dict[tuple[str, str], int] = {}
        for label, (pf, pr, bf, br) in zip(APP_LABELS, self._core.app_counters(), strict=True):
            if pf or pr:
                out[label, DIR_FWD] = bf
                out[label, DIR_REV] = br
        return out
