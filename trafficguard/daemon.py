"""The live daemon (``trafficguard run``): capture workers, one store, one ``/metrics``.

Process layout, and why:

* **Workers** (``live.workers`` processes, forked): each opens its capture sockets in
  one ``PACKET_FANOUT`` group, so the kernel hands it whole flows, and runs its own
  :class:`~trafficguard.pipeline.Pipeline` with the same ``build_stages`` as ``replay``.
  Python gets one core per process this way; a flow never needs a second worker.
* **The parent** owns everything that must be single: the sinks (SQLite is
  single-writer; IPFIX sequence numbers), the metrics server, sd_notify, signals and the
  configuration. Workers send finished *records* (not packets: a few per flow) and a
  counter snapshot every ``live.stats_interval_s`` over one ``multiprocessing`` queue;
  the parent writes the records and commits every ``store.flush_interval_s``.

Signals (parent): SIGHUP reloads (``config.rejected`` keeps the old config when the new
one is invalid); SIGTERM drains — workers flush every open flow as a record, the parent
writes them, commits and closes the store, exit 0, bounded by ``live.drain_timeout_s``;
SIGINT does the same and exits 130. Workers die with the parent (``PR_SET_PDEATHSIG``),
so a SIGKILL leaves no orphan capture processes; SQLite in WAL mode loses at most the
records of the last flush interval and is never corrupt.

Retention (``privacy.purge_interval_s`` > 0): the parent purges the SQLite store per record
type at start and then every interval (``privacy/purger.py``), between two flushes, on a
second connection, as of the wall clock; audited as ``retention.purged`` when escalation
is enabled.

Reload applies ``live.bpf_filter`` (re-attached in the kernel, no socket reopened) and
``logging``, and calls ``reload()`` on every stage that has one (grants, blocklists);
flows stay in the flow tables. Any other changed key is logged as
``config.restart_required`` and keeps its running value.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trafficguard.capture.bpf import DROP_ALL, FilterError
from trafficguard.capture.live import (
    KernelCounters,
    LiveCapture,
    batch_span,
    filter_program,
    linktype_of,
    open_live,
)
from trafficguard.config import NS_PER_S, Config, load_config
from trafficguard.errors import ConfigError, StoreError
from trafficguard.gc_tuning import packet_loop_gc
from trafficguard.pipeline import Pipeline
from trafficguard.privacy.keys import SensorKeys
from trafficguard.privacy.purger import StorePurger
from trafficguard.sinks.base import RecordSink
from trafficguard.sinks.logging import configure_logging, get_logger
from trafficguard.sinks.metrics import MetricsServer, PipelineSnapshot
from trafficguard.sinks.sdnotify import Notifier, WatchdogTimer
from trafficguard.tail import sink_collectors
from trafficguard.wiring import (
    build_context,
    build_purger,
    build_stages,
    open_keys,
    start_metrics,
)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INTERRUPTED: Final = 130
PR_SET_PDEATHSIG: Final = 1
STARTUP_TIMEOUT_S: Final = 60.0
RELOAD_TIMEOUT_S: Final = 10.0
LIVE_RELOADABLE: Final = ("live.bpf_filter", "logging.")

log = get_logger("trafficguard.daemon")


# -- messages between workers and the parent ---------------------------------------------
@dataclass(slots=True)
class WorkerReport:
    """A worker's counters at one moment (sent every ``stats_interval_s`` and at the end)."""

    snapshot: PipelineSnapshot
    kernel: KernelCounters
    stage_metrics: list[Metric] = field(default_factory=list)


class ParentSink:
    """The workers' only sink: finished records go to the parent, which owns the store."""

    def __init__(self, out: Any, worker: int) -> None:
        self._out = out
        self._worker = worker

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        self._out.put(("records", self._worker, list(records)))

    def flush(self) -> None:
        return

    def close(self) -> None:
        return


# -- the worker process ------------------------------------------------------------------
def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when the parent dies (no orphan capture processes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return


class SensorLossWatch:
    """Turns growth of the kernel drop counters into the pipeline's sensor-loss windows.

    ``check`` runs before each batch is processed, with the worker's monotonic kernel
    totals. If ``drops`` or ``freeze_q_cnt`` grew since the last read, the kernel dropped
    packets since then — while the ring was full, i.e. after the newest packet already in
    it and no later than now. The window noted is therefore (packet time) from the last
    packet of the previous batch (this batch's first packet for the first one) to the later
    of this batch's last packet and ``now_ns`` (kernel timestamps are CLOCK_REALTIME, the
    clock of ``time.time_ns``). An approximation on the safe side: the window may be wider
    than the drops, never narrower. It is noted before the batch, so records the batch ends
    are already judged against it.
    """

    __slots__ = ("_lost", "_prev_ts", "pipeline")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._lost = 0  # drops + freeze_q_cnt at the last read
        self._prev_ts = 0  # packet time of the last packet of the previous batch

    def check(self, kernel: KernelCounters, first_ts: int, last_ts: int, now_ns: int) -> bool:
        """Note a window when the kernel counters grew; True if one was noted."""
        lost = kernel.drops + kernel.freeze_q_cnt
        grew = lost > self._lost
        self._lost = lost
        if grew:
            start = self._prev_ts or first_ts or now_ns
            self.pipeline.note_sensor_loss(start, max(last_ts, now_ns))
        self._prev_ts = max(self._prev_ts, last_ts)
        return grew


class Worker:
    """One capture process: sockets → pipeline → records and reports to the parent."""

    def __init__(
        self,
        index: int,
        cfg: Config,
        keys: SensorKeys,
        interfaces: Sequence[str],
        out: Any,
        control: mpc.Connection,
    ) -> None:
        self.index = index
        self.cfg = cfg
        self.keys = keys
        self.interfaces = list(interfaces)
        self.out = out
        self.control = control
        self.stop_requested = False
        self.capture: LiveCapture | None = None
        self.loss: SensorLossWatch  # set in run, once the pipeline exists

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop_requested = True
        if self.capture is not None:
            self.capture.stop_requested = True

    def run(self) -> None:
        parent = os.getppid()
        _die_with_parent()
        if os.getppid() != parent:
            return
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            capture = open_live(self.cfg.live, self.interfaces, fanout=self.cfg.live.workers > 1)
        except Exception as err:  # reported to the parent, which logs and exits 1
            self.out.put(("failed", self.index, f"{type(err).__name__}: {err}"))
            self._close_queue()
            return
        self.capture = capture
        capture.stop_requested = self.stop_requested
        ctx = build_context(self.cfg, self.keys)
        stages = build_stages(ctx)
        # the privacy edge runs in the worker: records cross to the parent already pseudonymized
        pipeline = Pipeline(
            self.cfg,
            [("parent", ParentSink(self.out, self.index))],
            stages=stages,
            record_transform=ctx.record_transform,
        )
        self.loss = SensorLossWatch(pipeline)
        capture.use_fast_path(pipeline.fast)  # ring blocks walked in C, in place
        self.out.put(("ready", self.index, capture.backend))
        try:
            with packet_loop_gc():
                self._loop(capture, pipeline)
            self._drain_sockets(capture, pipeline)
            self.loss.check(capture.counters(), 0, 0, time.time_ns())  # drops at the very end
            pipeline.finish()
            self.out.put(("done", self.index, self._report(capture, pipeline)))
        finally:
            capture.close()
            pipeline.close()
            self._close_queue()

    def _drain_sockets(self, capture: LiveCapture, pipeline: Pipeline) -> None:
        """Accept nothing new, let the kernel retire the partial block, process the rest.

        So every packet the kernel counted is in a record: the totals agree exactly.
        """
        for sock in capture.sockets:
            sock.set_filter(DROP_ALL)
        time.sleep(2 * self.cfg.live.block_timeout_ms / 1000)
        for sock in capture.sockets:
            for batch in sock.ready_batches(self.cfg.capture.batch_frames):
                if batch:
                    self.loss.check(capture.counters(), *batch_span(batch), time.time_ns())
                pipeline.process_batch(batch)

    def _close_queue(self) -> None:
        self.out.close()
        self.out.join_thread()

    def _loop(self, capture: LiveCapture, pipeline: Pipeline) -> None:
        interval = self.cfg.live.stats_interval_s
        tick_ns = int(self.cfg.flow.tick_interval_s * NS_PER_S)
        next_report = time.monotonic() + interval
        last_idle_tick = 0
        loss = self.loss
        for batch in capture.batches(self.cfg.capture.batch_frames):
            if batch:
                first_ts, last_ts = batch_span(batch)
                loss.check(capture.counters(), first_ts, last_ts, time.time_ns())
                pipeline.process_batch(batch)
                pipeline.processing_lag_s = max(0.0, time.time() - last_ts / NS_PER_S)
            else:  # idle link: packet time would stand still, so expire in wall time
                now_ns = time.time_ns()
                if now_ns - max(pipeline.last_ts_ns, last_idle_tick) >= tick_ns:
                    last_idle_tick = now_ns
                    pipeline.tick(now_ns)
            if self.control.poll():
                self._command(capture, pipeline, self.control.recv())
            now = time.monotonic()
            if now >= next_report:
                next_report = now + interval
                self.out.put(("report", self.index, self._report(capture, pipeline)))
            if self.stop_requested:
                break

    def _command(self, capture: LiveCapture, pipeline: Pipeline, msg: tuple[Any, ...]) -> None:
        if msg[0] != "reload":
            return
        cfg: Config = msg[1]
        error = ""
        try:
            if cfg.live.bpf_filter != self.cfg.live.bpf_filter:
                capture.set_filter(cfg.live.bpf_filter)
            for stage in pipeline.stages:
                reload = getattr(stage, "reload", None)
                if callable(reload):
                    reload()
            self.cfg = cfg
        except Exception as err:  # the parent logs it; the worker keeps running
            error = f"{type(err).__name__}: {err}"
        self.out.put(("reloaded", self.index, error))

    def _report(self, capture: LiveCapture, pipeline: Pipeline) -> WorkerReport:
        kernel = capture.counters()
        pipeline.capture_drops = kernel.drops
        metrics: list[Metric] = []
        for collect in pipeline.collectors():
            metrics.extend(collect())
        return WorkerReport(pipeline.snapshot(), kernel, metrics)


def _worker_entry(
    index: int,
    cfg: Config,
    keys: SensorKeys,
    interfaces: Sequence[str],
    out: Any,
    control: mpc.Connection,
) -> None:
    Worker(index, cfg, keys, interfaces, out, control).run()


# -- merging worker counters for /metrics ---------------------------------------------------
def merge_snapshots(snaps: Iterable[PipelineSnapshot]) -> PipelineSnapshot:
    """Sum counters and per-label dicts; newest packet time and largest lag win."""
    total = PipelineSnapshot()
    for s in snaps:
        for name in (
            "capture_packets",
            "capture_bytes",
            "capture_drops",
            "fragments_held",
            "flows_started",
            "flows_evicted",
            "flow_table_flows",
            "flow_table_capacity",
            "store_errors",
            "sensor_loss_windows",
        ):
            setattr(total, name, getattr(total, name) + getattr(s, name))
        for name in (
            "decode_errors",
            "decode_skipped",
            "app_packets",
            "app_bytes",
            "flows_ended",
            "records_written",
        ):
            acc: dict[Any, int] = getattr(total, name)
            for key, value in getattr(s, name).items():
                acc[key] = acc.get(key, 0) + value
        total.last_packet_ts_s = max(total.last_packet_ts_s, s.last_packet_ts_s)
        total.processing_lag_s = max(total.processing_lag_s, s.processing_lag_s)
    return total


def merge_families(per_worker: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per name with samples of equal name and labels summed across workers."""
    families: dict[str, Metric] = {}
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Any]] = {}
    for fams in per_worker:
        for fam in fams:
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                samples[fam.name] = {}
            acc = samples[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                prev = acc.get(key)
                acc[key] = s if prev is None else prev._replace(value=prev.value + s.value)
    for name, fam in families.items():
        fam.samples = list(samples[name].values())
    return list(families.values())


class DaemonCollector(Collector):
    """Capture-side families only the daemon knows: kernel counters, workers, reloads."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        d = self._daemon
        kernel = d.kernel_totals()
        yield CounterMetricFamily(
            "trafficguard_capture_kernel_packets",
            "Packets the kernel passed to the capture sockets (PACKET_STATISTICS, drops included).",
            value=kernel.packets,
        )
        yield CounterMetricFamily(
            "trafficguard_capture_freeze_queue",
            "Times a capture ring was full and frozen (tpacket_stats_v3.tp_freeze_q_cnt).",
            value=kernel.freeze_q_cnt,
        )
        yield GaugeMetricFamily(
            "trafficguard_capture_workers", "Capture worker processes running.", value=d.alive()
        )
        reloads = CounterMetricFamily(
            "trafficguard_daemon_reloads", "SIGHUP reloads by result.", labels=["result"]
        )
        for result in ("applied", "rejected"):
            reloads.add_metric([result], d.reloads.get(result, 0))
        yield reloads


# -- the parent ----------------------------------------------------------------------------
def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted key paths whose values differ between two ``model_dump()`` trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


@dataclass(slots=True)
class _WorkerHandle:
    process: mp.process.BaseProcess
    control: mpc.Connection
    ready: bool = False
    done: bool = False
    last_seen: float = 0.0
    report: WorkerReport | None = None


class Daemon:
    """The parent process of ``trafficguard run``; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        config_path: str | None,
        interfaces: Sequence[str],
        make_sinks: Callable[[Config], list[tuple[str, RecordSink]]],
        metrics_listen: str | None = None,
        metrics_enabled: bool = True,
        log_level_override: str | None = None,
        notifier: Notifier | None = None,
        overrides: Callable[[Config], Config] = lambda c: c,
    ) -> None:
        self.cfg = overrides(cfg)
        self._overrides = overrides  # command-line options win over the file, on reload too
        self.config_path = config_path
        self.interfaces = list(interfaces)
        self._make_sinks = make_sinks
        self._metrics_listen = metrics_listen
        self._metrics_enabled = metrics_enabled
        self._log_level_override = log_level_override
        self.notifier = notifier or Notifier()
        self.workers: list[_WorkerHandle] = []
        self.sinks: list[tuple[str, RecordSink]] = []
        self.records_written: dict[tuple[str, str], int] = {}
        self.store_errors = 0
        self.reloads: dict[str, int] = {}
        self._signals: list[int] = []
        self._pending_reloads: set[int] = set()
        self._reload_errors: list[str] = []
        self._server: MetricsServer | None = None
        self._linktypes: set[int] = set()
        self._keys: SensorKeys | None = None
        self.purger: StorePurger | None = None  # privacy.purge_interval_s, wall clock

    # -- counters for /metrics (scrape thread) ------------------------------------------
    def _reports(self) -> list[WorkerReport]:
        return [w.report for w in list(self.workers) if w.report is not None]

    def snapshot(self) -> PipelineSnapshot:
        total = merge_snapshots(r.snapshot for r in self._reports())
        total.records_written = dict(self.records_written)
        total.store_errors = self.store_errors
        total.capture_drops = self.kernel_totals().drops
        return total

    def stage_metrics(self) -> list[Metric]:
        return merge_families(r.stage_metrics for r in self._reports())

    def kernel_totals(self) -> KernelCounters:
        total = KernelCounters()
        for r in self._reports():
            total.packets += r.kernel.packets
            total.drops += r.kernel.drops
            total.freeze_q_cnt += r.kernel.freeze_q_cnt
        return total

    def alive(self) -> int:
        return sum(1 for w in list(self.workers) if w.process.is_alive())

    # -- lifecycle ------------------------------------------------------------------------
    def validate(self, cfg: Config) -> None:
        """Interfaces exist and the filter compiles for each (LiveCaptureError/FilterError).

        The escalation gate keeps one hash-chained audit log; N worker processes would write
        N interleaved chains into it, so escalation needs ``live.workers: 1`` for now.
        """
        if cfg.escalation.enabled and cfg.live.workers > 1:
            raise ConfigError(
                "configuration",
                [
                    "at $.live.workers: escalation.enabled needs live.workers: 1 "
                    "(the audit log is one hash chain, written by one process)"
                ],
            )
        self._linktypes = {linktype_of(i) for i in self.interfaces}
        for linktype in self._linktypes:
            filter_program(cfg.live.bpf_filter, linktype, cfg.live.snaplen)

    def run(self) -> int:
        """Start workers, serve until SIGTERM/SIGINT, drain; the exit status."""
        self.validate(self.cfg)
        keys = self._keys = open_keys(self.cfg)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        out: Any = mp.get_context("fork").Queue()
        self._start_workers(keys, out)
        try:
            status = self._serve(out)
        finally:
            self._stop_workers()
        return status

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _start_workers(self, keys: SensorKeys, out: Any) -> None:
        ctx = mp.get_context("fork")  # before any thread or store exists in this process
        for index in range(self.cfg.live.workers):
            recv_end, send_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker_entry,
                args=(index, self.cfg, keys, self.interfaces, out, recv_end),
                name=f"trafficguard-worker-{index}",
                daemon=True,
            )
            proc.start()
            recv_end.close()
            self.workers.append(_WorkerHandle(proc, send_end, last_seen=time.monotonic()))

    def _serve(self, out: Any) -> int:
        if not self._await_ready(out):
            return EXIT_FAILURE
        self.sinks = self._make_sinks(self.cfg)
        if self._keys is not None and self.cfg.privacy.purge_interval_s > 0:
            # live packet time is the kernel's wall clock: purge as of time.time_ns()
            self.purger = build_purger(self.cfg, self.sinks, self._keys, clock="wall")
        if self._metrics_enabled:
            extra = [self.stage_metrics, DaemonCollector(self).collect]
            extra += sink_collectors(self.sinks)
            if self.purger is not None:
                extra.append(self.purger.collect)
            self._server = start_metrics(
                self.cfg, self.snapshot, extra, listen=self._metrics_listen
            )
        status = (
            f"capturing on {len(self.interfaces)} interface(s) with {len(self.workers)} worker(s)"
        )
        log.info(
            "capture.started",
            interface=",".join(self.interfaces),
            workers=len(self.workers),
            pid=os.getpid(),
        )
        self.notifier.ready(status)
        watchdog = WatchdogTimer(self.notifier)
        next_flush = time.monotonic() + self.cfg.store.flush_interval_s
        exit_status = EXIT_OK
        while True:
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in self._signals):
                break
            if signal.SIGHUP in self._signals:
                self._signals = [s for s in self._signals if s != signal.SIGHUP]
                self._reload(out)
            self._pump(out, timeout=0.2)
            now = time.monotonic()
            if now >= next_flush:
                next_flush = now + self.cfg.store.flush_interval_s
                self._flush()
            if self.purger is not None and self.purger.due():
                self._flush()  # between flushes: the sink holds no transaction open
                self.purger.maybe_purge(time.time_ns)
            failed = [i for i, w in enumerate(self.workers) if not w.process.is_alive()]
            if failed:
                log.error("worker.failed", worker=failed[0], reason="exited")
                exit_status = EXIT_FAILURE
                break
            stale = 3 * self.cfg.live.stats_interval_s + 1
            watchdog.maybe_ping(healthy=all(now - w.last_seen < stale for w in self.workers))
        return self._drain(out, exit_status)

    def _await_ready(self, out: Any) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline or any(
                s in (signal.SIGTERM, signal.SIGINT) for s in self._signals
            ):
                log.error("capture.failed", reason="workers did not start")
                return False
            try:
                msg = out.get(timeout=0.2)
            except queue_mod.Empty:
                if any(not w.process.is_alive() for w in self.workers):
                    log.error("capture.failed", reason="worker exited during start")
                    return False
                continue
            if msg[0] == "failed":
                log.error("capture.failed", worker=msg[1], error=msg[2])
                return False
            self._handle(msg)
        return True

    def _pump(self, out: Any, timeout: float) -> None:
        """Handle every queued message (the first one waits up to ``timeout``)."""
        try:
            msg = out.get(timeout=timeout)
        except queue_mod.Empty:
            return
        self._handle(msg)
        for _ in range(10000):
            try:
                msg = out.get_nowait()
            except queue_mod.Empty:
                return
            self._handle(msg)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, index = msg[0], msg[1]
        w = self.workers[index]
        w.last_seen = time.monotonic()
        if kind == "records":
            self._write(msg[2])
        elif kind in ("report", "done"):
            w.report = msg[2]
            w.done = w.done or kind == "done"
        elif kind == "ready":
            w.ready = True
            log.info("worker.started", worker=index, kind=msg[2], pid=w.process.pid)
        elif kind == "reloaded":
            self._pending_reloads.discard(index)
            if msg[2]:
                self._reload_errors.append(msg[2])
        elif kind == "failed":
            log.error("worker.failed", worker=index, error=msg[2])

    def _write(self, records: list[msgspec.Struct]) -> None:
        for name, sink in self.sinks:
            try:
                sink.write(records)
            except StoreError as err:
                self.store_errors += 1
                log.error("store.failed", sink=name, error=str(err))
                continue
            for rec in records:
                key = (name, type(rec).kind)  # type: ignore[attr-defined]
                self.records_written[key] = self.records_written.get(key, 0) + 1

    def _flush(self) -> None:
        for name, sink in self.sinks:
            try:
                sink.flush()
            except StoreError as err:
                self.store_errors += 1
                log.error("store.failed", sink=name, error=str(err))

    def _reload(self, out: Any) -> None:
        self.notifier.reloading()
        path = self.config_path or "(built-in defaults)"
        try:
            new = self._overrides(load_config(self.config_path))
            self.validate(new)
        except ConfigError as err:
            self._reject(path, "; ".join(err.problems))
            return
        except FilterError as err:
            self._reject(path, f"at $.live.bpf_filter: {err.reason}")
            return
        except Exception as err:  # e.g. an interface vanished: keep running as we are
            self._reject(path, f"{type(err).__name__}: {err}")
            return
        changed = changed_keys(self.cfg.model_dump(mode="json"), new.model_dump(mode="json"))
        applied = [k for k in changed if k.startswith(LIVE_RELOADABLE)]
        restart = [k for k in changed if k not in applied]
        effective = self.cfg.model_copy(
            update={
                "logging": new.logging,
                "live": self.cfg.live.model_copy(update={"bpf_filter": new.live.bpf_filter}),
            }
        )
        if restart:
            log.warning("config.restart_required", path=path, key_path=restart)
        self._pending_reloads = {i for i, w in enumerate(self.workers) if w.process.is_alive()}
        self._reload_errors = []
        for i in self._pending_reloads:
            self.workers[i].control.send(("reload", effective))
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while self._pending_reloads and time.monotonic() < deadline:
            self._pump(out, timeout=0.2)
        if self._reload_errors or self._pending_reloads:
            self._reject(path, "; ".join(self._reload_errors) or "workers did not confirm")
            return
        self.cfg = effective
        if self._log_level_override is None:
            configure_logging(level=effective.logging.level, fmt=effective.logging.format)
        self.reloads["applied"] = self.reloads.get("applied", 0) + 1
        log.info("daemon.reloaded", path=path, key_path=applied, workers=len(self.workers))
        self.notifier.ready(f"reloaded; capturing with {len(self.workers)} worker(s)")

    def _reject(self, path: str, error: str) -> None:
        self.reloads["rejected"] = self.reloads.get("rejected", 0) + 1
        log.error("config.rejected", path=path, error=error)
        self.notifier.ready("configuration rejected; running with the previous one")

    def _drain(self, out: Any, exit_status: int) -> int:
        """Workers flush their flows; write everything; close the store. The exit status."""
        signum = next((s for s in self._signals if s in (signal.SIGTERM, signal.SIGINT)), None)
        self.notifier.stopping("draining: flushing open flows")
        log.info("daemon.stopping", signal=signal.Signals(signum).name if signum else "none")
        for w in self.workers:
            if w.process.is_alive() and w.process.pid is not None:
                os.kill(w.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.live.drain_timeout_s
        while not all(w.done or not w.process.is_alive() for w in self.workers):
            if time.monotonic() > deadline:
                log.error("daemon.drain_timeout", timeout_s=self.cfg.live.drain_timeout_s)
                exit_status = EXIT_FAILURE
                break
            self._pump(out, timeout=0.1)
        self._pump(out, timeout=0.05)
        if not all(w.done for w in self.workers):
            exit_status = EXIT_FAILURE
        for name, sink in self.sinks:
            try:
                sink.close()
            except StoreError as err:
                log.error("store.failed", sink=name, error=str(err))
                exit_status = EXIT_FAILURE
        if self._server is not None:
            self._server.close()
        totals = self.kernel_totals()
        log.info(
            "daemon.stopped",
            packets=totals.packets,
            drops=totals.drops,
            records=sum(self.records_written.values()),
        )
        if exit_status == EXIT_OK and signum == signal.SIGINT:
            return EXIT_INTERRUPTED
        return exit_status

    def _stop_workers(self) -> None:
        for w in self.workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=2)
            w.control.close()


def interfaces_or_error(cfg: Config, override: Sequence[str] | None) -> list[str]:
    """The interfaces to capture on: ``--interface`` wins over ``live.interfaces``."""
    chosen = list(override) if override else list(cfg.live.interfaces)
    if not chosen:
        raise ConfigError("live.interfaces", ["at $.live.interfaces: no interface to capture on"])
    return chosen
