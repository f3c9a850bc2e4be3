"""The sink protocol: every output (SQLite, JSON lines, IPFIX, ...) takes record batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class RecordSink(Protocol):
    """Receives batches of typed records; sinks dispatch on ``type(record).kind``.

    A sink may also define ``collect() -> Iterable[Metric]`` (the stages' contract: plain
    counters read at scrape time, ``trafficguard_`` names, closed-set label values);
    ``tail.sink_collectors`` registers it on ``/metrics`` for ``replay`` and ``run``.
    """

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        """Queue or write a batch. Must not keep references to payload (records hold none)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable (commit, fsync as configured)."""
        ...

    def close(self) -> None:
        """Flush and release resources. Idempotent."""
        ...
