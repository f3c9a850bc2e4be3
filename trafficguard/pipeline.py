"""The one-direction pipeline: frames → decoder → flow table → stages → sinks.

Stages (VoIP, metadata analyzers, detectors, the escalation gate; see
``trafficguard.flow.hooks.Stage``) attach flow hooks and see, in order, every record the
flow table and the stages before them emitted. ``Pipeline`` owns no I/O of its own: a
driver (``replay`` here, live capture later) feeds it frame batches and a wall clock; it
decodes, updates flows, runs expiry in packet time, and hands finished records to its
tail (``tail.Tail``: sensor-loss marks, the privacy edge, the sinks — here, or with the
detectors in a record process, ``record_process.RemoteTail``). It keeps plain-int
counters that the metrics collector reads at scrape time (``snapshot``). Stages see clear
addresses; the privacy edge runs after the last stage, so no sink ever does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from trafficguard.capture.frames import Frame
from trafficguard.capture.live import RingBlock
from trafficguard.capture.pcapfile import FileFrameSource, open_capture
from trafficguard.config import NS_PER_S, Config
from trafficguard.decode.decoder import Decoder
from trafficguard.errors import CaptureError
from trafficguard.fast import make_fast_path
from trafficguard.flow.hooks import Stage
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.table import FlowTable
from trafficguard.privacy.keys import SensorKeys
from trafficguard.sensor_loss import LossWindows, loss_horizon_ns
from trafficguard.sinks.base import RecordSink
from trafficguard.sinks.memory import MemorySink
from trafficguard.tail import RecordTransform, Tail, finish_stages, route_through
from trafficguard.wiring import build_context, build_stages

if TYPE_CHECKING:
    from trafficguard.fast.path import FastPath
    from trafficguard.record_process import RemoteTail
    from trafficguard.sinks.metrics import PipelineSnapshot

FLUSH_CHUNK = 4096  # flows ended per step of the final flush (fast path)

class Pipeline:
    """Decoder, flow table and sinks wired in one direction, driven in packet time."""

    def __init__(
        self,
        cfg: Config,
        sinks: Sequence[tuple[str, RecordSink]],
        wall_clock: Callable[[], float] = time.monotonic,
        stages: Sequence[Stage] = (),
        record_transform: RecordTransform | None = None,
        tail: Tail | RemoteTail | None = None,
    ) -> None:
        """``stages`` run here, in order, and may attach flow hooks. The records they and
        the flow table emit go to ``tail`` — by default a ``Tail`` in this process with
        ``sinks`` and ``record_transform`` (the privacy edge,
        ``wiring.SensorContext.record_transform``: pseudonymizes subscriber addresses
        after every stage ran, before any sink sees a record). A ``RemoteTail`` brings
        its own sinks, edge and later stages in the record process."""
        self.cfg = cfg
        self.decoder = Decoder(cfg.decode)
        # The compiled fast path (capture.fast_path) replaces decode_batch + update_batch
        # and stands where the flow table stands; records are the same either way.
        self.fast = make_fast_path(cfg, self.decoder)
        self.flows: FlowTable | FastPath = self.fast or FlowTable(cfg.flow)
        if tail is None:
            tail = Tail(sinks, LossWindows(loss_horizon_ns(cfg)), record_transform)
        elif sinks or record_transform is not None:
            raise ValueError("sinks and record_transform belong to the tail when one is given")
        self.tail = tail
        self.stages = list(stages)
        for stage in self.stages:
            stage.attach(self.flows)
        self._wall_clock = wall_clock
        self._tick_ns = int(cfg.flow.tick_interval_s * NS_PER_S)
        self._flush_interval_s = cfg.store.flush_interval_s
        self._next_tick_ns = 0
        self._next_flush_wall = wall_clock() + self._flush_interval_s
        self.capture_packets = 0
        self.capture_bytes = 0
        self.capture_drops = 0
        self.last_ts_ns = 0
        self.processing_lag_s = 0.0

    @property
    def records_written(self) -> dict[tuple[str, str], int]:
        """Records each sink took, by (sink, kind)."""
        return self.tail.records_written

    @property
    def store_errors(self) -> int:
        return self.tail.store_errors

    @property
    def sensor_loss_windows(self) -> int:
        return self.tail.sensor_loss_windows

    # -- the packet path -------------------------------------------------------------
    def process_batch(self, frames: list[Frame] | RingBlock) -> None:
        """Decode a batch, update flows, run packet-time expiry when due, emit records."""
        if not frames:
            return
        if isinstance(frames, RingBlock):  # lent in place by a capture ring (fast path)
            self._process_block(frames)
            return
        if self.fast is not None:
            self.fast.process_frames(frames)
        else:
            packets = self.decoder.decode_batch(frames)
            if packets:
                self.flows.update_batch(packets)  # type: ignore[union-attr]
        self._batch_done(len(frames), sum([f[3] for f in frames]), frames[-1][0])

    def _batch_done(self, packets: int, wire_bytes: int, last_ts_ns: int) -> None:
        """Count a processed batch, advance packet time, run the expiry tick when due."""
        self.capture_packets += packets
        self.capture_bytes += wire_bytes
        self.last_ts_ns = max(self.last_ts_ns, last_ts_ns)
        if self.last_ts_ns >= self._next_tick_ns:
            self.tick(self.last_ts_ns)

    def _process_block(self, block: RingBlock) -> None:
        """``process_batch`` for a ring block the C core walks in place (no Frames)."""
        assert self.fast is not None, "ring blocks are lent only to the fast path"
        self.fast.process_block(block)
        self._batch_done(block.packets, block.wire_bytes, block.last_ts)

    def process_source(self, source: FileFrameSource, batch_frames: int) -> Iterator[int]:
        """Process a file as fast as possible, yielding the frame count of each batch.

        With the fast path a classic pcap goes to the C core as raw file chunks (no Frame
        tuples); the batches, ticks and records are those of ``process_batch``.
        """
        stream = source.claim_pcap_stream() if self.fast is not None else None
        if self.fast is None or stream is None:
            for frames in source.batches(batch_frames):
                self.process_batch(frames)
                yield len(frames)
            return
        for n, wire_bytes, last in self.fast.pcap_batches(*stream, batch_frames):
            self._batch_done(n, wire_bytes, last)
            yield n

    # -- sensor loss -----------------------------------------------------------------
    def note_sensor_loss(self, from_ns: int, to_ns: int) -> None:
        """The sensor itself dropped packets somewhere in ``[from_ns, to_ns]`` (packet time).

        Every record emitted from now on whose own time range
        (``sensor_loss.LOSS_SPAN_FIELDS``) overlaps the window carries
        ``sensor_loss=True`` (``sensor_loss.LossWindows``, kept by the tail).
        """
        self.tail.note_sensor_loss(from_ns, to_ns, self.last_ts_ns)

    def tick(self, now_ns: int) -> None:
        """Expire idle flows and fragments in packet time, then emit what ended."""
        self._next_tick_ns = now_ns + self._tick_ns
        self.flows.tick(now_ns)
        self.decoder.expire(now_ns)
        for stage in self.stages:
            stage.tick(now_ns)
        self.tail.tick(now_ns)
        self._route(self.flows.take_records())

    def maybe_flush(self) -> None:
        """Commit sinks when the wall-clock flush interval has passed."""
        now = self._wall_clock()
        if now >= self._next_flush_wall:
            self._next_flush_wall = now + self._flush_interval_s
            self.flush()

    def flush(self) -> None:
        self.tail.flush()

    def finish(self) -> None:
        """End of input or shutdown: every open flow becomes a final record; sinks flush.

        The fast path ends the open flows ``FLUSH_CHUNK`` at a time and each chunk of flow
        records goes through every stage's ``on_records`` and to the sinks before the next
        is made (peak memory does not grow with the open flows). Then the stages finish in
        order; what one gives back goes through the later stages' ``on_records`` and to
        the sinks before the next one finishes — in chunks for a stage with
        ``finish_chunks`` (the DNS analyzer's last interval can be tens of thousands of
        summaries: the store writer commits the first while the rest are made). Stages and
        sinks see the same records in the same order as from one ``flush_all``.
        """
        chunks = getattr(self.flows, "flush_chunks", None)
        if chunks is None:
            self.flows.flush_all()
            self._pass_on(self.flows.take_records(), 0)
        else:
            for _ in chunks(FLUSH_CHUNK):
                self._pass_on(self.flows.take_records(), 0)
        finish_stages(self.stages, self.last_ts_ns, FLUSH_CHUNK, self._pass_on)
        self.tail.finish(self.last_ts_ns, FLUSH_CHUNK)  # its stages, then the sinks flush
        self.decoder.expire(self.last_ts_ns + 10**18)

    def _pass_on(self, records: Sequence[msgspec.Struct], first: int) -> None:
        """``records`` through the ``on_records`` of the stages from index ``first`` on
        (not their ticks or ``take_records``), then to the sinks."""
        if not records:
            return
        for stage in self.stages[first:]:
            stage.on_records(records)
        self.tail.pass_on(records)

    def close(self) -> None:
        self.tail.close()

    # -- records through the stages to the tail ----------------------------------------
    def _route(self, records: Sequence[msgspec.Struct]) -> None:
        """Stage i sees the flow records plus what stages before it emitted; then the tail."""
        self.tail.route(route_through(self.stages, list(records)))

    # -- metrics ---------------------------------------------------------------------
    def collectors(self) -> list[Callable[[], Iterable[Any]]]:
        """Each stage's ``collect``, then the tail's (its stages and sinks), for
        ``build_registry(..., extra=...)``."""
        return [stage.collect for stage in self.stages] + self.tail.collectors()

    def snapshot(self) -> PipelineSnapshot:
        """Read every counter for the metrics collector (called from the scrape thread)."""
        # imported here: the metrics module pulls in prometheus_client, which a replay
        # with --no-metrics never needs
        from trafficguard.sinks.metrics import PipelineSnapshot  # noqa: PLC0415

        st = self.flows.stats
        return PipelineSnapshot(
            capture_packets=self.capture_packets,
            capture_bytes=self.capture_bytes,
            capture_drops=self.capture_drops,
            decode_errors=dict(self.decoder.errors),
            decode_skipped=dict(self.decoder.skipped),
            fragments_held=self.decoder.fragments_held,
            app_packets=dict(st.app_packets),
            app_bytes=dict(st.app_bytes),
            flows_started=st.started,
            flows_ended=dict(st.ended_by_reason),
            flows_evicted=st.evicted,
            flow_table_flows=st.active,
            flow_table_capacity=st.capacity,
            records_written=dict(self.records_written),
            store_errors=self.store_errors,
            sensor_loss_windows=self.sensor_loss_windows,
            last_packet_ts_s=self.last_ts_ns / NS_PER_S,
            processing_lag_s=self.processing_lag_s,
        )


@dataclass(slots=True)
class FileResult:
    """How one input file ended."""

    path: str
    frames: int = 0
    error: CaptureError | None = None


@dataclass(slots=True)
class ReplayResult:
    """What a replay did, for the summary line and the exit status."""

    files: list[FileResult] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def failed(self) -> bool:
        return any(f.error is not None for f in self.files)


class ReplayDriver:
    """Feeds capture files through a pipeline, as fast as possible or paced by packet time.

    ``speed`` None = as fast as possible; N = N× real time (1.0 = as captured). A
    corrupt file ends that file with its error recorded; every frame before it has been
    processed, and the remaining files are still replayed.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        speed: float | None = None,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.speed = speed
        self.on_progress = on_progress
        self.stop_requested = False
        self._sleep = sleep
        self._clock = wall_clock
        self._pace_origin: tuple[float, int] | None = None  # (wall, ts_ns) of the first packet

    def run(self, paths: Iterable[str | os.PathLike[str]]) -> ReplayResult:
        result = ReplayResult()
        started = self._clock()
        paths = list(paths)
        batch_frames = self.pipeline.cfg.capture.batch_frames
        chunk = self.pipeline.cfg.capture.read_chunk_bytes
        for index, path in enumerate(paths):
            fr = FileResult(path=str(path))
            result.files.append(fr)
            progress = ReplayProgress(str(path), index, len(paths))
            try:
                with open_capture(path, read_chunk_bytes=chunk) as source:
                    progress.total_bytes = source.total_bytes
                    for n in self._batches(source, batch_frames):
                        fr.frames += n
                        self.pipeline.maybe_flush()
                        if self.on_progress is not None:
                            progress.frames = fr.frames
                            progress.bytes_read = source.bytes_read
                            progress.packets_total = self.pipeline.capture_packets
                            progress.elapsed_s = self._clock() - started
                            self.on_progress(progress)
                        if self.stop_requested:
                            break
            except CaptureError as err:
                fr.error = err
            if self.stop_requested:
                result.interrupted = True
                break
        self.pipeline.finish()
        result.wall_s = self._clock() - started
        return result

    def _batches(self, source: FileFrameSource, batch_frames: int) -> Iterator[int]:
        """Process the file's batches (paced or as fast as possible); yield frame counts."""
        if self.speed is None:
            yield from self.pipeline.process_source(source, batch_frames)
            return
        for frames in source.batches(batch_frames):
            self._pace(frames)
            yield len(frames)

    def _pace(self, frames: list[Frame]) -> None:
        """Process frames no earlier than their packet time scaled by ``speed``."""
        assert self.speed is not None
        speed = self.speed
        pipeline = self.pipeline
        if self._pace_origin is None:
            self._pace_origin = (self._clock(), frames[0][0])
        wall0, ts0 = self._pace_origin
        slice_ns = int(0.01 * speed * NS_PER_S)  # release packets in ~10 ms wall slices
        start = 0
        n = len(frames)
        while start < n:
            head_ts = frames[start][0]
            end = start + 1
            while end < n and frames[end][0] - head_ts <= slice_ns:
                end += 1
            due = wall0 + (head_ts - ts0) / NS_PER_S / speed
            delay = due - self._clock()
            if delay > 0:
                self._sleep(delay)
            pipeline.processing_lag_s = max(0.0, self._clock() - due)
            pipeline.process_batch(frames[start:end])
            start = end
            if self.stop_requested:
                return


@dataclass(slots=True)
class ReplayProgress:
    """Progress of a replay, for the terminal progress line."""

    path: str
    index: int
    count: int
    frames: int = 0
    packets_total: int = 0
    bytes_read: int = 0
    total_bytes: int | None = None
    elapsed_s: float = 0.0

    @property
    def percent(self) -> float | None:
        if not self.total_bytes:
            return None
        return min(100.0, 100.0 * self.bytes_read / self.total_bytes)


def replay_records(
    paths: Sequence[str | os.PathLike[str] | Path],
    config: Config | None = None,
    keys: SensorKeys | None = None,
) -> list[msgspec.Struct]:
    """Replay files as fast as possible into memory with every configured stage; return
    every record (flows, calls, RTP streams, alerts, ...) in emission order. ``keys``
    overrides the key directory of the config (tests pass fixed keys).

    The reference API for golden tests: no store, no metrics, no logging.
    """
    cfg = config if config is not None else Config()
    memory = MemorySink()
    ctx = build_context(cfg, keys)
    pipeline = Pipeline(
        cfg,
        [("memory", memory)],
        stages=build_stages(ctx),
        record_transform=ctx.record_transform,
    )
    result = ReplayDriver(pipeline).run(paths)
    pipeline.close()
    for f in result.files:
        if f.error is not None:
            raise f.error
    return list(memory.records)


def replay_to_records(
    paths: Sequence[str | os.PathLike[str] | Path], config: Config | None = None
) -> list[FlowRecord]:
    """Like :func:`replay_records`, only the flow records."""
    return [r for r in replay_records(paths, config) if isinstance(r, FlowRecord)]
