"""In-memory sink: the fake that implements the real RecordSink protocol.

Used by tests and by the in-memory replay API (records come back as the typed Structs
the pipeline produced, in order).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from trafficguard.errors import StoreError


class MemorySink:
    """RecordSink that appends every record to ``records``."""

    def __init__(self) -> None:
        self.records: list[msgspec.Struct] = []
        self.flushes = 0  # how many times flush() was called
        self.closed = False
        self.records_written: dict[str, int] = {}  # kind -> records kept

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        """Keep the batch (records are immutable Structs, so no copy is needed)."""
        if self.closed:
            raise StoreError("memory: sink is closed")
        self.records.extend(records)
        written = self.records_written
        for rec in records:
            kind: str = type(rec).kind  # type: ignore[attr-defined]
            written[kind] = written.get(kind, 0) + 1

    def flush(self) -> None:
        """Nothing to make durable; counted so tests can check flush behaviour."""
        self.flushes += 1

    def close(self) -> None:
        """Idempotent; later writes raise StoreError like a real sink's would."""
        if not self.closed:
            self.flush()
            self.closed = True

    def of_kind(self, kind: str) -> list[msgspec.Struct]:
        """The records of one kind, in arrival order."""
        return [r for r in self.records if getattr(type(r), "kind", None) == kind]
