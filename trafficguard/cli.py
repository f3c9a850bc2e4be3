"""Command-line interface: ``trafficguard COMMAND ...``.

Each command is a small function; argument parsing, exit codes and terminal output
live here, the work lives in the stages. Exit status: 0 success, 1 runtime failure
(corrupt capture, store error), 2 usage or configuration error, 130 interrupted.

Every invocation builds the whole parser, so this module imports only what that needs:
each command imports its own machinery (configuration, pipeline, sinks, escalation)
when it runs, and ``--help`` or a short replay does not pay for the others.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

# pydantic looks up plugins through every installed distribution's entry points the first
# time a model validates (~30 ms of every command's start); we use none. An operator's own
# setting of the variable wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
# numpy, loaded under datasketches (HyperLogLog only, no linear algebra), starts an OpenBLAS
# thread per CPU that spins 30–100 ms of CPU time beside the packet loop. Same override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from trafficguard import __version__
from trafficguard.errors import ConfigError, StoreError, TrafficguardError
from trafficguard.escalation import cli_args as escalation_args
from trafficguard.gc_tuning import packet_loop_gc, startup_gc

if TYPE_CHECKING:
    import msgspec
    from structlog.typing import FilteringBoundLogger

    from trafficguard.config import Config
    from trafficguard.detect.alerts import AlertRecord
    from trafficguard.flow.records import FlowRecord
    from trafficguard.pipeline import Pipeline, ReplayDriver, ReplayProgress, ReplayResult
    from trafficguard.privacy.purger import StorePurger
    from trafficguard.sinks.base import RecordSink
    from trafficguard.sinks.metrics import MetricsServer
    from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord
    from trafficguard.wiring import SinkOverrides

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

CONFIG_ENV = "TRAFFICGUARD_CONFIG"

MAIN_DESCRIPTION = """\
trafficguard watches mirrored VoIP and broadband traffic and, by default, records
only metadata: flow volumes, endpoints, application types, call records and media
quality. Payload bytes are read transiently to classify traffic and are never
stored, logged or exported. Content inspection is opened only by signed,
policy-authorized grants (see docs/architecture.md).
"""

MAIN_EPILOG = f"""\
commands:
  replay         read pcap/pcapng files through the pipeline into the store
  run            capture live from network interfaces (the daemon)
  query          read stored records (flows, calls, registrations, rtp, alerts)
  check-config   validate a configuration file and print every problem
  keys           create or rotate pseudonym and audit keys (keys init)
  grant          create, sign, verify, list and revoke content-inspection grants
  reveal         confirm who is behind a pseudonym, under an active grant (audited)
  evidence       open a grant's sealed evidence (audited); make analyst keys
  audit          verify or show the hash-chained audit log
  retention      purge records past their retention period (retention run)
  subject        export or erase every stored record of one subscriber (audited)

configuration:
  --config PATH, or ${CONFIG_ENV}, names a YAML file (see config/trafficguard.yaml
  for every key, its default and its meaning). Without one, documented defaults
  apply: store var/trafficguard.db, metrics on 127.0.0.1:9108.

exit status:
  0 success (also after SIGTERM, which drains: open flows are flushed as records),
  1 runtime failure (corrupt capture, store error), 2 usage or configuration error,
  130 interrupted by Ctrl-C (records are flushed too).

Run 'trafficguard COMMAND --help' for a command's options.
"""

REPLAY_DESCRIPTION = """\
Replay capture files (pcap or pcapng, optionally gzip-compressed; format detected
from the content) through decode, flow table and classification, and write flow
records to the SQLite store and/or JSON lines. Files are read in order as one
stream, in packet time: replaying the same files again gives identical records.
A corrupt or truncated file ends with an error naming the file and byte offset;
every record made before it is kept, the remaining files are still replayed, and
the exit status is 1.
"""

REPLAY_EPILOG = """\
examples:
  trafficguard replay pcaps/*.pcap
  trafficguard replay --speed 1 --metrics 127.0.0.1:9108 --keep-serving big.pcap.gz
  trafficguard replay --no-store --jsonl - --no-metrics call.pcap | jq .app

While it runs on a terminal, a progress line shows packets, percent of the file,
and packets/s; a summary follows at the end. SIGINT/SIGTERM stop reading, flush
every open flow as a record and close the store cleanly (after the replay, they
end --keep-serving).

A replay does not purge the store by itself: by the wall clock an old capture
would be deleted as soon as it was written. With --purge the store is purged at
the end as of the newest packet replayed, as a sensor running until that packet
would have done (records of the same replay older than their retention period
before that packet are purged too). Live sensors purge every
privacy.purge_interval_s by the wall clock; see 'trafficguard retention run'.

Two processes: with store.record_process (the default) the detectors, the
privacy edge and the sinks run in a record process ('python -m
trafficguard.record_process') that this one feeds finished records, so a replay
uses a second core. It ignores Ctrl-C (the replay stops and closes it) and, if
the replay is killed, commits every record it was handed. Not used with
escalation.enabled or --purge, nor for JSON lines or IPFIX alone; set
store.record_process: false to keep everything in one process.
"""

RUN_DESCRIPTION = """\
Capture live traffic from one or more interfaces (a SPAN/TAP port) and run it
through the same pipeline as 'replay': decode, flow table, the configured stages,
and the sinks (SQLite store, JSON lines, IPFIX), with Prometheus /metrics. This is
the daemon that systemd runs (systemd/trafficguard.service).

Capture uses AF_PACKET with a TPACKET_V3 memory-mapped ring (one batch per ring
block), or a plain packet socket where the kernel has no TPACKET_V3
(live.backend). The BPF filter (live.bpf_filter, pcap-filter(7) syntax) is
compiled with 'tcpdump -dd' and runs in the kernel. With --workers N (live.workers)
N capture processes share the traffic through PACKET_FANOUT (hash of the flow,
fragments defragmented first), each with its own flow table; the parent process
owns the store and /metrics and merges the workers' counters. Kernel drops are
exported as trafficguard_capture_drops_total.

Needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode); see
docs/deployment.md.
"""

RUN_EPILOG = """\
signals:
  SIGHUP    reload the configuration file: live.bpf_filter and logging apply at
            once, stages with reloadable state (grants, blocklists) re-read it, open
            flows are kept. An invalid file is rejected (log event config.rejected)
            and the running configuration stays. Other changed keys are logged as
            config.restart_required.
  SIGTERM   drain: stop capturing, flush every open flow as a record, commit and
            close the store, exit 0 (within live.drain_timeout_s).
  SIGINT    as SIGTERM, exit status 130.
  SIGKILL   loses at most the records of the last store.flush_interval_s; the
            SQLite store (WAL) stays consistent and the next start continues it.

systemd:
  With $NOTIFY_SOCKET set, sends READY=1 once every worker captures, WATCHDOG=1 at
  half of $WATCHDOG_USEC while every worker reports, STATUS=, RELOADING=1 around
  reloads and STOPPING=1 on shutdown (Type=notify).

exit status:
  0 drained after SIGTERM, 1 capture or store failure (a worker died, drain timed
  out), 2 usage or configuration error (no interface, bad filter), 130 SIGINT.

examples:
  trafficguard run --interface ens1f0
  trafficguard run -i ens1f0 -i ens1f1 --workers 2 --filter 'udp or tcp port 5060'
  trafficguard --config /etc/trafficguard/trafficguard.yaml run
"""

QUERY_EPILOG = """\
time arguments take ISO 8601 ('2026-11-23T09:00:00Z'), epoch seconds
('1763888400'), or an age relative to now ('90s', '15m', '2h', '7d').

examples:
  trafficguard query flows --app sip --limit 20
  trafficguard query flows --since 2h --json | jq .bytes_fwd
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trafficguard",
        description=MAIN_DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trafficguard {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${CONFIG_ENV} or built-in defaults)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rp = sub.add_parser(
        "replay",
        help="replay capture files into the store",
        description=REPLAY_DESCRIPTION,
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("files", nargs="+", metavar="FILE", help="pcap/pcapng file(s), .gz accepted")
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true", help="as fast as possible (the default)")
    pace.add_argument(
        "--speed",
        type=float,
        metavar="N",
        help="pace by packet time at N× real time (1 = as captured)",
    )
    store = rp.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)")
    store.add_argument("--no-store", action="store_true", help="do not write the SQLite store")
    rp.add_argument(
        "--jsonl", metavar="PATH", help="also write records as JSON lines ('-' = stdout)"
    )
    rp.add_argument(
        "--ipfix",
        metavar="HOST:PORT",
        help="also export flow records as IPFIX over UDP to this collector (export.ipfix)",
    )
    metrics = rp.add_mutually_exclusive_group()
    metrics.add_argument(
        "--metrics", metavar="ADDR", help="serve /metrics on HOST:PORT (default: metrics.listen)"
    )
    metrics.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    rp.add_argument(
        "--keep-serving", action="store_true", help="after the replay keep /metrics up until Ctrl-C"
    )
    rp.add_argument(
        "--purge",
        action="store_true",
        help="at the end, purge the store of records past retention (privacy.retention) "
        "as of the newest packet replayed (packet time, not the wall clock); audited",
    )
    rp.add_argument("--quiet", "-q", action="store_true", help="no progress line and no summary")
    rp.set_defaults(func=cmd_replay)

    rn = sub.add_parser(
        "run",
        help="capture live from interfaces (the daemon)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rn.add_argument(
        "--interface",
        "-i",
        action="append",
        metavar="IFACE",
        help="capture on IFACE (repeatable; default: live.interfaces)",
    )
    rn.add_argument(
        "--workers", type=int, metavar="N", help="capture processes (default: live.workers)"
    )
    rn.add_argument("--filter", metavar="EXPR", help="BPF filter (default: live.bpf_filter)")
    rn_store = rn.add_mutually_exclusive_group()
    rn_store.add_argument(
        "--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)"
    )
    rn_store.add_argument("--no-store", action="store_true", help="do not write the SQLite store")
    rn.add_argument("--jsonl", metavar="PATH", help="also write records as JSON lines")
    rn.add_argument(
        "--ipfix", metavar="HOST:PORT", help="also export flow records as IPFIX to this collector"
    )
    rn_metrics = rn.add_mutually_exclusive_group()
    rn_metrics.add_argument(
        "--metrics", metavar="ADDR", help="serve /metrics on HOST:PORT (default: metrics.listen)"
    )
    rn_metrics.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    rn.set_defaults(func=cmd_run)

    qp = sub.add_parser(
        "query",
        help="read stored records",
        description="Read records from the SQLite store, newest first.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    qsub = qp.add_subparsers(dest="what", metavar="WHAT", required=True)
    qf = qsub.add_parser(
        "flows",
        help="flow records",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_window_options(qf, "records that start at or after TIME", "records that start before TIME")
    qf.add_argument("--app", metavar="APP", help="only this application label (e.g. sip, dns, tls)")
    _add_output_options(qf, "records")
    qf.set_defaults(func=cmd_query_flows)
    _add_voip_queries(qsub)
    _add_alert_query(qsub)

    cp = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate the configuration (--config or $TRAFFICGUARD_CONFIG) and print every "
        "problem with its key path; exit 0 when valid, 2 otherwise.",
    )
    cp.add_argument("path", nargs="?", metavar="PATH", help="file to check (overrides --config)")
    cp.add_argument("--show", action="store_true", help="print the effective configuration as YAML")
    cp.set_defaults(func=cmd_check_config)
    escalation_args.register(sub)  # grant, keys, audit, evidence, reveal, retention, subject
    return parser


# -- helpers ----------------------------------------------------------------------------
def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get(CONFIG_ENV) or None


def _load(args: argparse.Namespace) -> Config:
    """Load the configuration once per command."""
    from trafficguard.config import load_config

    return load_config(_config_path(args))


def _err(msg: str) -> None:
    print(f"trafficguard: {msg}", file=sys.stderr)


_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_AGE_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_ns(text: str, now: float | None = None) -> int:
    """ISO 8601, epoch seconds, or an age like '15m' → epoch nanoseconds."""
    text = text.strip()
    m = _AGE.match(text)
    if m:
        ref = time.time() if now is None else now
        return int((ref - float(m.group(1)) * _AGE_S[m.group(2)]) * 1e9)
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use ISO 8601, epoch seconds or 15m/2h/7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1e9)


class ProgressLine:
    """A one-line progress display on a terminal (stderr), updated at most 4×/s."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = 0.0
        self._width = 0

    def __call__(self, p: ReplayProgress) -> None:
        now = time.monotonic()
        if now - self._last < 0.25:
            return
        self._last = now
        rate = p.packets_total / p.elapsed_s if p.elapsed_s > 0 else 0.0
        pct = f"{p.percent:5.1f}%" if p.percent is not None else "   ?  "
        name = os.path.basename(p.path)
        line = (
            f"[{p.index + 1}/{p.count}] {name}  {p.packets_total:,} packets  {pct}"
            f"  {rate:,.0f} pkt/s"
        )
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def done(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _print_summary(pipeline: Pipeline, result: ReplayResult, stream: TextIO) -> None:
    st = pipeline.flows.stats
    rate = pipeline.capture_packets / result.wall_s if result.wall_s > 0 else 0.0
    lines = [
        f"replayed {len(result.files)} file(s): {pipeline.capture_packets:,} packets, "
        f"{pipeline.capture_bytes:,} bytes in {result.wall_s:.2f} s ({rate:,.0f} pkt/s)",
        f"flows: {st.started:,} started, {sum(st.ended_by_reason.values()):,} ended, "
        f"{st.evicted:,} evicted; records written: "
        + (
            ", ".join(f"{s}/{k} {n:,}" for (s, k), n in sorted(pipeline.records_written.items()))
            or "none"
        ),
    ]
    errors = {k: v for k, v in pipeline.decoder.errors.items() if v}
    if errors:
        lines.append("decode errors: " + ", ".join(f"{k} {v:,}" for k, v in sorted(errors.items())))
    skipped = {k: v for k, v in pipeline.decoder.skipped.items() if v}
    if skipped:
        lines.append(
            "non-IP frames skipped: " + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items()))
        )
    apps: dict[str, int] = {}
    for (app, _direction), n in st.app_packets.items():
        apps[app] = apps.get(app, 0) + n
    if apps:
        top = sorted(apps.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        lines.append("packets by application: " + ", ".join(f"{a} {n:,}" for a, n in top))
    for f in result.files:
        if f.error is not None:
            lines.append(f"error: {f.error} (the {f.frames:,} frames before it were processed)")
    if result.interrupted:
        lines.append("interrupted: open flows were flushed as records")
    for line in lines:
        print(line, file=stream)


def _sink_overrides(args: argparse.Namespace) -> SinkOverrides:
    """``--store``/``--no-store``/``--jsonl``/``--ipfix`` of ``replay`` and ``run``."""
    from trafficguard.wiring import SinkOverrides

    return SinkOverrides(
        store=Path(args.store) if args.store else None,
        no_store=args.no_store,
        jsonl=args.jsonl,
        ipfix=getattr(args, "ipfix", None),
    )


# -- commands ---------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    with startup_gc():
        from trafficguard import record_process
        from trafficguard.pipeline import Pipeline, ReplayDriver
        from trafficguard.sinks.logging import get_logger
        from trafficguard.wiring import (
            build_context,
            build_purger,
            build_sinks,
            build_stages,
            start_metrics,
        )

        cfg: Config = args.cfg
        log = get_logger("trafficguard.replay")
        overrides = _sink_overrides(args)
        if record_process.usable(cfg, purge=args.purge, sqlite=overrides.writes_store(cfg)):
            # detectors, privacy edge and sinks in a second process (record_process.py)
            ctx = build_context(cfg)
            tail = record_process.RemoteTail(cfg, ctx.keys, overrides, args.log_level)
            sinks: list[tuple[str, RecordSink]] = []
            stages = build_stages(ctx, record_process=True)
            pipeline = Pipeline(cfg, sinks, stages=stages, tail=tail)
        else:
            sinks = build_sinks(cfg, overrides)
            ctx = build_context(cfg)
            pipeline = Pipeline(
                cfg, sinks, stages=build_stages(ctx), record_transform=ctx.record_transform
            )
    # packet time: purging an old capture by the wall clock would delete what was just written
    purger = build_purger(cfg, sinks, ctx.keys, clock="packet") if args.purge else None
    server = None
    if not args.no_metrics and (args.metrics or cfg.metrics.enabled):
        extra = pipeline.collectors()
        if purger is not None:
            extra.append(purger.collect)
        server = start_metrics(cfg, pipeline.snapshot, extra, listen=args.metrics)

    interactive = sys.stderr.isatty() and not args.quiet
    progress = ProgressLine(sys.stderr) if interactive else None
    driver = ReplayDriver(pipeline, speed=args.speed, on_progress=progress)

    # One handler for the whole command: during the replay a signal stops the driver; after
    # it (summary, --keep-serving) the same signal ends the command. No window without it.
    stopped_by: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signum)
        driver.stop_requested = True
        # no Event.set() here: a handler that takes a lock the interrupted main thread
        # holds (inside Event.wait) deadlocks; the loops below poll ``stopped_by``

    old_int = signal.signal(signal.SIGINT, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    try:
        return _replay(args, log, pipeline, driver, progress, purger, server, stopped_by)
    finally:
        if server is not None:
            server.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _replay(
    args: argparse.Namespace,
    log: FilteringBoundLogger,
    pipeline: Pipeline,
    driver: ReplayDriver,
    progress: ProgressLine | None,
    purger: StorePurger | None,
    server: MetricsServer | None,
    stopped_by: list[int],
) -> int:
    """``cmd_replay`` once its signal handler is installed (it restores it and the server)."""
    log.info("replay.started", count=len(args.files))
    try:
        with packet_loop_gc():
            result = driver.run(args.files)
    except StoreError as err:
        _err(str(err))
        return EXIT_FAILURE
    finally:
        if progress is not None:
            progress.done()
        pipeline.close()
    purged: dict[str, int] = {}
    if purger is not None and pipeline.last_ts_ns:
        purged = purger.purge(pipeline.last_ts_ns)
    for f in result.files:
        if f.error is not None:
            log.error("capture.failed", file=f.path, offset=f.error.offset, reason=f.error.reason)
    log.info(
        "replay.finished",
        packets=pipeline.capture_packets,
        flows=pipeline.flows.stats.started,
        seconds=round(result.wall_s, 3),
    )
    if not args.quiet:
        _print_summary(pipeline, result, sys.stderr)
        if purger is not None:
            print(
                f"retention: {sum(purged.values()):,} record(s) purged as of the newest packet",
                file=sys.stderr,
            )

    if server is not None and args.keep_serving and not result.interrupted:
        print(
            f"serving http://{_display_host(server)}:{server.port}/metrics — press Ctrl-C to stop",
            file=sys.stderr,
        )
        while not stopped_by:  # filled by a signal, also one that came before this line
            time.sleep(0.2)  # a signal interrupts the sleep and runs the handler
    if result.interrupted and signal.SIGTERM not in stopped_by:
        return EXIT_INTERRUPTED  # Ctrl-C; SIGTERM is an orderly drain and exits 0
    return EXIT_FAILURE if result.failed else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from trafficguard.capture.bpf import FilterError
    from trafficguard.capture.live import LiveCaptureError
    from trafficguard.daemon import Daemon, interfaces_or_error
    from trafficguard.wiring import build_sinks

    cfg: Config = args.cfg
    live: dict[str, object] = {}
    if args.workers is not None:
        if args.workers < 1:
            _err("--workers must be at least 1")
            return EXIT_USAGE
        live["workers"] = args.workers
    if args.filter is not None:
        live["bpf_filter"] = args.filter

    def with_options(c: Config) -> Config:
        return c.model_copy(update={"live": c.live.model_copy(update=live)}) if live else c

    overrides = _sink_overrides(args)
    daemon = Daemon(
        cfg,
        _config_path(args),
        interfaces_or_error(cfg, args.interface),
        make_sinks=lambda c: build_sinks(c, overrides),
        metrics_listen=args.metrics,
        metrics_enabled=not args.no_metrics and bool(args.metrics or cfg.metrics.enabled),
        log_level_override=args.log_level,
        overrides=with_options,
    )
    try:
        return daemon.run()
    except (FilterError, LiveCaptureError) as err:
        _err(str(err))
        return EXIT_USAGE


def _display_host(server: object) -> str:
    host = str(getattr(server, "host", "127.0.0.1"))
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


# -- queries: one runner, each kind a table (columns and how a record fills them) ----------------
def _add_window_options(p: argparse.ArgumentParser, since_help: str, until_help: str) -> None:
    p.add_argument("--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)")
    p.add_argument("--since", metavar="TIME", help=since_help)
    p.add_argument("--until", metavar="TIME", help=until_help)


def _add_output_options(p: argparse.ArgumentParser, noun: str) -> None:
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help=f"at most N {noun} (default 50)"
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")


class _Table(NamedTuple):
    """How ``query WHAT`` shows its records as a table."""

    kind: str  # the store's record kind
    row: str  # format of one line
    heads: tuple[str, ...]
    cells: Callable[[Any], tuple[object, ...]]  # one record → the row's values
    noun: str  # "(no {noun} match)"


# (path, since_ns, until_ns) → the records to show
_Fetch = Callable[[Path, int | None, int | None], Sequence[Any]]


def _run_query(
    args: argparse.Namespace, table: _Table, fetch: _Fetch | None = None, **params: Any
) -> int:
    """Open the store, read --since/--until/--limit, fetch, print as a table or JSON lines.

    Without ``fetch`` the newest ``--limit`` records of ``table.kind`` are read, with
    ``params`` passed on to ``query_records`` (``app``, ``order``, ``filters``).
    """
    cfg: Config = args.cfg
    path = Path(args.store) if args.store else cfg.store.sqlite.path
    if not path.exists():
        _err(f"{path}: no such store (run 'trafficguard replay' first, or pass --store)")
        return EXIT_FAILURE
    try:
        since = parse_time_ns(args.since) if args.since else None
        until = parse_time_ns(args.until) if args.until else None
    except ValueError as err:
        _err(str(err))
        return EXIT_USAGE
    if args.limit < 1:
        _err("--limit must be at least 1")
        return EXIT_USAGE
    if fetch is None:
        from trafficguard.sinks.sqlite import query_records

        records: Sequence[Any] = query_records(
            path,
            kind=table.kind,
            since_ns=since,
            until_ns=until,
            limit=args.limit,
            descending=True,
            **params,
        )
    else:
        records = fetch(path, since, until)
    if args.json:
        _print_json(records)
        return EXIT_OK
    out = sys.stdout
    print(table.row.format(*table.heads), file=out)
    for r in records:
        print(table.row.format(*table.cells(r)), file=out)
    if not records:
        print(f"(no {table.noun} match)", file=out)
    return EXIT_OK


def _print_json(records: Sequence[msgspec.Struct]) -> None:
    import msgspec

    enc = msgspec.json.Encoder()
    for rec in records:
        sys.stdout.write(enc.encode(rec).decode() + "\n")


def _utc(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def cmd_query_flows(args: argparse.Namespace) -> int:
    return _run_query(args, FLOW_TABLE, app=args.app)


_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}


def _flow_cells(r: FlowRecord) -> tuple[object, ...]:
    pkts = r.packets_fwd + r.packets_rev
    nbytes = r.bytes_fwd + r.bytes_rev
    return (
        _utc(r.start_ns),
        _PROTO_NAMES.get(r.proto, str(r.proto)),
        _endpoint(r.src_addr, r.src_port),
        _endpoint(r.dst_addr, r.dst_port),
        r.app,
        f"{pkts:,}",
        f"{nbytes:,}",
        r.end_reason,
    )


ROW = "{:<23} {:<5} {:<28} {:<28} {:<9} {:>8} {:>11} {}"
FLOW_TABLE = _Table(
    "flow",
    ROW,
    ("start (UTC)", "proto", "source", "destination", "app", "pkts", "bytes", "end"),
    _flow_cells,
    "flows",
)


# -- VoIP queries (issue 4) ---------------------------------------------------------------
VOIP_QUERY_EPILOG = """\
Parties appear only as pseudonyms (keyed hashes) with the class of their number
(domestic, international, premium, emergency, short_code, non_numeric, unknown);
the Call-ID only as its keyed hash, which joins a call to its RTP streams.
time arguments take ISO 8601 ('2026-11-23T09:00:00Z'), epoch seconds
('1763888400'), or an age relative to now ('90s', '15m', '2h', '7d').

examples:
  trafficguard query calls --since 1h --final-code 486
  trafficguard query calls --answered --json | jq .duration_ms
  trafficguard query registrations --limit 20
  trafficguard query rtp --mos-below 3.5
"""


def _add_voip_queries(qsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``query calls|registrations|rtp``: same options as ``query flows``, plus filters."""
    specs = (
        ("calls", "call records (one per INVITE dialog)", cmd_query_calls),
        ("registrations", "registration records (REGISTER attempts)", cmd_query_registrations),
        ("rtp", "RTP stream quality records (one per SSRC and direction)", cmd_query_rtp),
    )
    for name, help_text, func in specs:
        p = qsub.add_parser(
            name,
            help=help_text,
            description=f"Read {help_text} from the SQLite store, newest first.",
            epilog=VOIP_QUERY_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_window_options(
            p, "records that end at or after TIME", "records that start before TIME"
        )
        _add_output_options(p, "records")
        if name == "calls":
            p.add_argument(
                "--final-code", type=int, metavar="N", help="only calls whose final response is N"
            )
            p.add_argument("--answered", action="store_true", help="only answered calls")
        elif name == "rtp":
            p.add_argument(
                "--mos-below", type=float, metavar="N", help="only streams with a MOS below N"
            )
        p.set_defaults(func=func)


def cmd_query_calls(args: argparse.Namespace) -> int:
    filters: list[tuple[str, str, object]] = []
    if args.final_code is not None:
        filters.append(("final_code", "=", args.final_code))
    if args.answered:
        filters.append(("answer_ns", "is not null", None))
    return _run_query(args, CALL_TABLE, order="invite_ns", filters=filters)


def cmd_query_registrations(args: argparse.Namespace) -> int:
    return _run_query(args, REG_TABLE, order="ts_ns", filters=[])


def cmd_query_rtp(args: argparse.Namespace) -> int:
    filters: list[tuple[str, str, object]] = []
    if args.mos_below is not None:
        filters.append(("mos", "<", args.mos_below))
    return _run_query(args, RTP_TABLE, order="first_ns", filters=filters)


def _call_cells(r: CallRecord) -> tuple[object, ...]:
    return (
        _utc(r.invite_ns),
        r.caller,
        r.caller_class,
        r.callee,
        r.callee_class,
        r.final_code,
        r.end_reason,
        _ms(r.pdd_ms),
        _ms(r.duration_ms),
        ",".join(r.codecs) or "-",
    )


def _registration_cells(r: RegistrationRecord) -> tuple[object, ...]:
    return (_utc(r.ts_ns), r.aor, r.aor_class, r.result_code, r.expires_s, r.requests, r.end_reason)


def _rtp_cells(r: RtpStreamRecord) -> tuple[object, ...]:
    mos = r.mos
    return (
        _utc(r.first_ns),
        _endpoint(r.src_addr, r.src_port),
        _endpoint(r.dst_addr, r.dst_port),
        f"{r.ssrc:#010x}",
        r.codec,
        f"{r.packets:,}",
        f"{r.lost:,}",
        f"{r.jitter_max_ms:.1f}",
        "-" if mos is None else f"{mos:.2f}",
        r.call_id_hash or "-",
    )


CALL_ROW = "{:<23} {:<26} {:<13} {:<26} {:<13} {:>5} {:<15} {:>7} {:>9} {}"
REG_ROW = "{:<23} {:<26} {:<13} {:>5} {:>7} {:>4} {}"
RTP_ROW = "{:<23} {:<28} {:<28} {:>10} {:<7} {:>7} {:>6} {:>8} {:>4} {}"
CALL_TABLE = _Table(
    "call",
    CALL_ROW,
    ("invite (UTC)", "caller", "class", "callee", "class", "code", "end", "pdd ms", "dur ms",
     "codecs"),
    _call_cells,
    "calls",
)  # fmt: skip
REG_TABLE = _Table(
    "registration",
    REG_ROW,
    ("start (UTC)", "aor", "class", "code", "expires", "reqs", "end"),
    _registration_cells,
    "registrations",
)
RTP_TABLE = _Table(
    "rtp_stream",
    RTP_ROW,
    ("start (UTC)", "source", "destination", "ssrc", "codec", "pkts", "lost", "jit max", "mos",
     "call"),
    _rtp_cells,
    "rtp streams",
)  # fmt: skip


def cmd_check_config(args: argparse.Namespace) -> int:
    from trafficguard.config import load_config

    path = args.path or _config_path(args)
    cfg = load_config(path)
    if args.show:
        import yaml

        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"{path or '(built-in defaults)'}: configuration is valid")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with startup_gc():
            from trafficguard.sinks.logging import configure_logging  # structlog: not for --help

            if args.command == "check-config":
                configure_logging(level=args.log_level or "warning")
            else:
                args.cfg = _load(args)
                configure_logging(
                    level=args.log_level or args.cfg.logging.level, fmt=args.cfg.logging.format
                )
        return int(args.func(args))
    except ConfigError as err:
        _err("invalid configuration " + err.path)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except TrafficguardError as err:
        _err(str(err))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    finally:
        gc.unfreeze()  # what startup_gc froze: collectable (and finalized) at exit again


# -- query alerts (detection engine) ---------------------------------------------------------
ALERTS_EPILOG = """\
An alert has one record per state change: open (seq 0), updated (at most every
detect.alerts.update_interval_s of packet time while the activity lasts) and resolved.
This lists the latest record of each alert, newest activity first. Sources outside
home_networks are shown in clear; subscribers as pseudonyms. --since/--until select
alerts whose activity overlaps the range.

examples:
  trafficguard query alerts --since 2h
  trafficguard query alerts --detector port_scan --severity medium --json | jq .evidence
"""


def _add_alert_query(qsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    qa = qsub.add_parser(
        "alerts",
        help="alerts from the detectors",
        description="Read alerts (latest state of each) from the SQLite store.",
        epilog=ALERTS_EPILOG + "\n" + QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_window_options(qa, "alerts active at or after TIME", "alerts that started before TIME")
    qa.add_argument("--detector", metavar="NAME", help="only this detector (e.g. syn_flood)")
    qa.add_argument(
        "--severity",
        choices=("info", "low", "medium", "high", "critical"),
        help="only alerts of this severity or higher",
    )
    _add_output_options(qa, "alerts")
    qa.set_defaults(func=cmd_query_alerts)


def cmd_query_alerts(args: argparse.Namespace) -> int:
    def fetch(path: Path, since: int | None, until: int | None) -> list[AlertRecord]:
        return _latest_alerts(path, since, until, args.detector, args.severity, args.limit)

    return _run_query(args, ALERT_TABLE, fetch)


def _latest_alerts(
    path: Path,
    since: int | None,
    until: int | None,
    detector: str | None,
    severity: str | None,
    limit: int,
) -> list[AlertRecord]:
    """The latest state of each matching alert, newest activity first, at most ``limit``."""
    from trafficguard.detect.alerts import AlertRecord
    from trafficguard.detect.base import SEVERITIES
    from trafficguard.sinks.sqlite import count_records, query_records

    rows = (
        query_records(
            path,
            kind="alert",
            since_ns=since,
            until_ns=until,
            limit=None,
            order="last_seen_ns",
            descending=True,
        )
        if count_records(path, "alert")
        else []
    )
    floor = SEVERITIES.index(severity) if severity else 0
    latest: dict[str, AlertRecord] = {}
    for rec in rows:
        if not isinstance(rec, AlertRecord):
            continue
        if detector and rec.detector != detector:
            continue
        if SEVERITIES.index(rec.severity) < floor:
            continue
        known = latest.get(rec.alert_id)
        if known is None or rec.seq > known.seq:  # the latest state of each alert
            latest[rec.alert_id] = rec
    return sorted(latest.values(), key=lambda r: (-r.last_seen_ns, r.alert_id))[:limit]


def _alert_cells(r: AlertRecord) -> tuple[object, ...]:
    source, target = r.source or "-", r.target or "-"
    return (_utc(r.last_seen_ns), r.detector, r.severity, r.status, source, target, r.rule)


ALERT_TABLE = _Table(
    "alert",
    "{:<23} {:<14} {:<8} {:<8} {:<24} {:<24} {}",
    ("last seen (UTC)", "detector", "severity", "status", "source", "target", "rule"),
    _alert_cells,
    "alerts",
)


if __name__ == "__main__":
    raise SystemExit(main())

