"""The record end of the pipeline: stages that only read records, then the sinks.

``Pipeline`` runs the packet-facing part (decoder, flow table, the stages that attach flow
hooks) and hands every round of records to a tail: the stages placed in it (the
detectors, when they run in the record process), sensor-loss marks, the privacy edge
(``record_transform``: pseudonymizes subscriber addresses after every stage ran, before
any sink sees a record) and the sinks. ``Tail`` does this in the calling process;
``record_process.RemoteTail`` hands the same calls, in the same order, to a ``Tail`` in a
second process (see there why). Both keep the counters the metrics read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from trafficguard.errors import StoreError
from trafficguard.flow.hooks import Stage
from trafficguard.sensor_loss import LossWindows
from trafficguard.sinks.base import RecordSink

RecordTransform = Callable[[Sequence[msgspec.Struct]], Sequence[msgspec.Struct]]


def route_through(stages: Sequence[Stage], records: list[msgspec.Struct]) -> list[msgspec.Struct]:
    """One round: stage i sees ``records`` plus what the stages before it emitted (each
    one's ``take_records`` is appended to ``records``, in place); returns ``records``."""
    for stage in stages:
        if records:
            stage.on_records(records)
        new = stage.take_records()
        if new:
            records.extend(new)
    return records


def finish_stages(
    stages: Sequence[Stage],
    now_ns: int,
    chunk: int,
    pass_on: Callable[[Sequence[msgspec.Struct], int], None],
) -> None:
    """End of input: each stage finishes in order and what it gives back goes to
    ``pass_on(records, i + 1)`` (the later stages' ``on_records``, then onwards) before
    the next one finishes — ``chunk`` records at a time for a stage with
    ``finish_chunks``."""
    for i, stage in enumerate(stages):
        finish_chunks = getattr(stage, "finish_chunks", None)
        if finish_chunks is None:
            stage.finish(now_ns)
            pass_on(stage.take_records(), i + 1)
        else:
            for records in finish_chunks(now_ns, chunk):
                pass_on(records, i + 1)


class Tail:
    """Tail stages, then sensor-loss marks, the privacy edge and the sinks, in this process."""

    def __init__(
        self,
        sinks: Sequence[tuple[str, RecordSink]],
        loss: LossWindows,
        record_transform: RecordTransform | None = None,
        stages: Sequence[Stage] = (),
    ) -> None:
        self.sinks = list(sinks)
        self.stages = list(stages)
        self.loss = loss
        self.record_transform = record_transform
        self.records_written: dict[tuple[str, str], int] = {}
        self.store_errors = 0

    @property
    def sensor_loss_windows(self) -> int:
        return self.loss.noted

    def note_sensor_loss(self, from_ns: int, to_ns: int, newest_ns: int) -> None:
        self.loss.note(from_ns, to_ns, newest_ns)

    def tick(self, now_ns: int) -> None:
        """Forget loss windows out of reach, then tick the tail stages (after the head's)."""
        if self.loss.ends:
            self.loss.forget(now_ns)
        for stage in self.stages:
            stage.tick(now_ns)

    def route(self, records: list[msgspec.Struct]) -> None:
        """A tick's records through the tail stages (``route_through``), then the sinks."""
        self.emit(route_through(self.stages, records))

    def pass_on(self, records: Sequence[msgspec.Struct], first: int = 0) -> None:
        """``records`` through the ``on_records`` of the tail stages from index ``first`` on
        (not their ticks or ``take_records``), then to the sinks."""
        if not records:
            return
        for stage in self.stages[first:]:
            stage.on_records(records)
        self.emit(records)

    def finish(self, now_ns: int, chunk: int) -> None:
        """End of input: the tail stages finish in order, each one's last records passing
        through the later ones (``chunk`` at a time for a stage with ``finish_chunks``);
        then the sinks flush."""
        finish_stages(self.stages, now_ns, chunk, self.pass_on)
        self.flush()

    def emit(self, records: Sequence[msgspec.Struct]) -> None:
        if not records:
            return
        if self.loss.ends:  # before the privacy edge and the sinks; nothing until a loss
            records = self.loss.mark(records)
        if self.record_transform is not None:
            records = self.record_transform(records)
        written = self.records_written
        for name, sink in self.sinks:
            self._guard(sink.write, records)
            for rec in records:
                key = (name, type(rec).kind)  # type: ignore[attr-defined]
                written[key] = written.get(key, 0) + 1

    def flush(self) -> None:
        for _, sink in self.sinks:
            self._guard(sink.flush)

    def close(self) -> None:
        for _, sink in self.sinks:
            self._guard(sink.close)

    def collectors(self) -> list[Callable[[], Iterable[Any]]]:
        """The ``collect`` of each tail stage and of each sink that has one (IPFIX)."""
        return [stage.collect for stage in self.stages] + sink_collectors(self.sinks)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except StoreError:
            self.store_errors += 1
            raise


def sink_collectors(sinks: Iterable[tuple[str, RecordSink]]) -> list[Callable[[], Iterable[Any]]]:
    """The ``collect`` of every sink that has one (IPFIX), for ``start_metrics(extra=...)``."""
    out: list[Callable[[], Iterable[Any]]] = []
    for _, sink in sinks:
        collect = getattr(sink, "collect", None)
        if callable(collect):
            out.append(collect)
    return out
