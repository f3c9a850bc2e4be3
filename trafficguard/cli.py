"""Command-line interface: ``trafficguard COMMAND ...``.

Each command is a small function; argument parsing, exit codes and terminal output
live here, the work lives in the stages. Exit status: 0 success, 1 runtime failure
(corrupt capture, store error), 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

import msgspec

from trafficguard import __version__
from trafficguard.config import Config, load_config
from trafficguard.errors import ConfigError, StoreError, TrafficguardError
from trafficguard.pipeline import Pipeline, ReplayDriver, ReplayProgress, ReplayResult
from trafficguard.sinks.base import RecordSink
from trafficguard.sinks.logging import configure_logging, get_logger
from trafficguard.wiring import build_context, build_stages

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
  query          read stored records (flows)
  check-config   validate a configuration file and print every problem

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
every open flow as a record and close the store cleanly.
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
    metrics = rp.add_mutually_exclusive_group()
    metrics.add_argument(
        "--metrics", metavar="ADDR", help="serve /metrics on HOST:PORT (default: metrics.listen)"
    )
    metrics.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    rp.add_argument(
        "--keep-serving", action="store_true", help="after the replay keep /metrics up until Ctrl-C"
    )
    rp.add_argument("--quiet", "-q", action="store_true", help="no progress line and no summary")
    rp.set_defaults(func=cmd_replay)

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
    qf.add_argument("--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)")
    qf.add_argument("--since", metavar="TIME", help="records that start at or after TIME")
    qf.add_argument("--until", metavar="TIME", help="records that start before TIME")
    qf.add_argument("--app", metavar="APP", help="only this application label (e.g. sip, dns, tls)")
    qf.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N records (default 50)"
    )
    qf.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    qf.set_defaults(func=cmd_query_flows)

    cp = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate the configuration (--config or $TRAFFICGUARD_CONFIG) and print every "
        "problem with its key path; exit 0 when valid, 2 otherwise.",
    )
    cp.add_argument("path", nargs="?", metavar="PATH", help="file to check (overrides --config)")
    cp.add_argument("--show", action="store_true", help="print the effective configuration as YAML")
    cp.set_defaults(func=cmd_check_config)
    return parser


# -- helpers ----------------------------------------------------------------------------
def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get(CONFIG_ENV) or None


def _load(args: argparse.Namespace) -> Config:
    """Load the configuration once per command."""
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


# -- commands ---------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    cfg: Config = args.cfg
    log = get_logger("trafficguard.replay")
    sinks: list[tuple[str, RecordSink]] = []
    if not args.no_store:
        from trafficguard.sinks.sqlite import SqliteSink

        sqlite_cfg = cfg.store.sqlite
        if args.store:
            sqlite_cfg = sqlite_cfg.model_copy(update={"path": Path(args.store)})
        if args.store or sqlite_cfg.enabled:
            sinks.append(("sqlite", SqliteSink(sqlite_cfg)))
    jsonl_path = args.jsonl or (str(cfg.store.jsonl.path) if cfg.store.jsonl.enabled else None)
    if jsonl_path:
        from trafficguard.sinks.jsonl import JsonlSink

        sinks.append(("jsonl", JsonlSink(jsonl_path)))

    pipeline = Pipeline(cfg, sinks, stages=build_stages(build_context(cfg)))
    server = None
    if not args.no_metrics and (args.metrics or cfg.metrics.enabled):
        from trafficguard.config import MetricsConfig
        from trafficguard.sinks.metrics import build_registry, start_metrics_server

        mcfg = MetricsConfig(listen=args.metrics) if args.metrics else cfg.metrics
        host, port = mcfg.host_port
        server = start_metrics_server(
            host, port, build_registry(pipeline.snapshot, pipeline.stage_collectors())
        )
        log.info("metrics.listening", listen=f"{host}:{server.port}")

    interactive = sys.stderr.isatty() and not args.quiet
    progress = ProgressLine(sys.stderr) if interactive else None
    driver = ReplayDriver(pipeline, speed=args.speed, on_progress=progress)

    stopped_by: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signum)
        driver.stop_requested = True

    old_int = signal.signal(signal.SIGINT, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    log.info("replay.started", count=len(args.files))
    try:
        result = driver.run(args.files)
    except StoreError as err:
        _err(str(err))
        return EXIT_FAILURE
    finally:
        if progress is not None:
            progress.done()
        pipeline.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
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

    if server is not None and args.keep_serving and not result.interrupted:
        print(
            f"serving http://{_display_host(server)}:{server.port}/metrics — press Ctrl-C to stop",
            file=sys.stderr,
        )
        done = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: done.set())
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        while not done.wait(0.5):
            pass
    if server is not None:
        server.close()
    if result.interrupted and signal.SIGTERM not in stopped_by:
        return EXIT_INTERRUPTED  # Ctrl-C; SIGTERM is an orderly drain and exits 0
    return EXIT_FAILURE if result.failed else EXIT_OK


def _display_host(server: object) -> str:
    host = str(getattr(server, "host", "127.0.0.1"))
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def cmd_query_flows(args: argparse.Namespace) -> int:
    from trafficguard.sinks.sqlite import query_records

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
    records = query_records(
        path,
        kind="flow",
        since_ns=since,
        until_ns=until,
        app=args.app,
        limit=args.limit,
        descending=True,
    )
    out = sys.stdout
    if args.json:
        enc = msgspec.json.Encoder()
        for rec in records:
            out.write(enc.encode(rec).decode() + "\n")
        return EXIT_OK
    columns = ("start (UTC)", "proto", "source", "destination", "app", "pkts", "bytes", "end")
    print(ROW.format(*columns), file=out)
    for r in records:
        start = dt.datetime.fromtimestamp(r.start_ns / 1e9, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        )[:23]
        proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}.get(
            r.proto, str(r.proto)
        )
        src = _endpoint(r.src_addr, r.src_port)
        dst = _endpoint(r.dst_addr, r.dst_port)
        pkts = r.packets_fwd + r.packets_rev
        nbytes = r.bytes_fwd + r.bytes_rev
        print(
            ROW.format(start, proto, src, dst, r.app, f"{pkts:,}", f"{nbytes:,}", r.end_reason),
            file=out,
        )
    if not records:
        print("(no flows match)", file=out)
    return EXIT_OK


ROW = "{:<23} {:<5} {:<28} {:<28} {:<9} {:>8} {:>11} {}"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def cmd_check_config(args: argparse.Namespace) -> int:
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
        if args.command == "check-config":
            configure_logging(level=args.log_level or "warning")
            return int(args.func(args))
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


if __name__ == "__main__":
    raise SystemExit(main())
