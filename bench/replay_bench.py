#!/usr/bin/env python3
"""Replay throughput and peak memory of trafficguard against peers, on one file, in one run.

Timing the tools back to back on the same workload makes the ratios meaningful on a noisy
machine, where absolute seconds are not. Tools:

* ``trafficguard``: ``python -m trafficguard replay --fast --no-metrics --store TMP.db FILE``
  with this interpreter: the full default pipeline, whose detectors, privacy edge and
  SQLite commits run in the record process (two processes: compare ``cpu s``, the CPU of
  both);
* ``tg-one-process``: the same with ``store: {record_process: false, sqlite: {writer:
  inline}}``, everything in one process on one core;
* ``trafficguard-voip-off``: the same with ``voip.enabled: false``, so the difference is the
  cost of SIP/RTP analysis (the workload is VoIP-heavy);
* ``tg-metadata``: the compiled fast path in metadata mode: decode, flows, classification
  and a sink (``--no-store --jsonl TMP``; VoIP, DNS analyzer, detectors, gate off);
* ``tg-python``: the full default pipeline with the fast path off (``capture.fast_path:
  off``), the pure-Python reference, to show what the C core buys;
* ``tcpdump`` (``-r FILE -w /dev/null``) and ``nfpcapd`` (``-r FILE -w DIR``), when installed;
* ``softflowd``: ``softflowd -r FILE -n 127.0.0.1:9995 -v 10`` (C flow exporter; the
  IPFIX datagrams go to a closed local port);
* ``dpkt_loop``: a bare Python loop, ``dpkt.pcap.Reader`` + ``dpkt.ethernet.Ethernet`` per
  packet, touching IP and TCP/UDP ports: the floor for "Python that parses every packet".

Each runs under ``/usr/bin/time -f "%e %U %S %M"``: ``cpu s`` is user + system time of the
tool and every child it waited for, peak RSS is that of its largest process (on the
workloads the record process: 91 vs 82 MB for the packet process at 1M packets, 127 vs
121 MB at 4M). Seconds are measured
around the child with ``time.perf_counter`` because ``%e`` has only 10 ms resolution.
The workload comes from ``bench/make_workload.py`` (the shared generator, copied) and is
generated if missing.

Usage: bench/replay_bench.py [--packets N] [--pcap FILE] [--workdir DIR] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
WORKLOAD_SCRIPT: Final = REPO / "bench" / "make_workload.py"  # copy of ../shared/bench/
TIME: Final = "/usr/bin/time"
TOOLS: Final = (
    "trafficguard", "tg-one-process", "trafficguard-voip-off", "tg-metadata", "tg-python",
    "softflowd", "tcpdump", "nfpcapd", "dpkt_loop",
)  # fmt: skip


@dataclass
class Result:
    """One tool's run. ``rate_pps`` is packets/s; ``vs_softflowd`` is rate / softflowd rate."""

    tool: str
    ok: bool
    seconds: float
    rate_pps: float
    peak_rss_mb: float
    vs_softflowd: float | None
    error: str = ""
    runs: int = 1  # rounds behind the row (seconds: their median)
    cpu_seconds: float = 0.0  # user + system of the tool and every child it waited for


def count_packets(path: Path) -> int:
    """Records in a classic pcap, by walking the record headers (no decoding)."""
    with path.open("rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise ValueError(f"{path}: not a pcap file")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            rec = struct.Struct("<IIII")
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            rec = struct.Struct(">IIII")
        else:
            raise ValueError(f"{path}: not a classic pcap (pcapng is not supported here)")
        n = 0
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                return n
            f.seek(rec.unpack(hdr)[2], os.SEEK_CUR)
            n += 1


def ensure_workload(packets: int, workdir: Path) -> Path:
    """``workdir/workload-N.pcap``, generated with the shared script when missing."""
    out = workdir / f"workload-{packets}.pcap"
    if not out.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        print(f"bench: generating {out} ({packets} packets)", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(WORKLOAD_SCRIPT), "--packets", str(packets), "--out", str(tmp)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tmp.rename(out)  # a half-written workload is never reused
    return out


def softflowd_path() -> str:
    """Find softflowd, installing the Debian package when missing and allowed."""
    found = shutil.which("softflowd") or shutil.which("softflowd", path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get") and Path("/etc/debian_version").exists():
        print("bench: installing softflowd", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "softflowd"], check=True, env=env)
        found = shutil.which("softflowd", path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise SystemExit("bench: softflowd not found (Debian: apt-get install softflowd)")
    return found


def dpkt_loop(path: Path) -> int:
    """Parse every packet with dpkt and touch the fields a flow table would key on."""
    import dpkt  # noqa: PLC0415 (only the child process needs it)

    n = acc = 0
    eth_cls, ip_types, l4_types = (
        dpkt.ethernet.Ethernet,
        (dpkt.ip.IP, dpkt.ip6.IP6),
        (
            dpkt.tcp.TCP,
            dpkt.udp.UDP,
        ),
    )
    with path.open("rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            n += 1
            ip = eth_cls(buf).data
            if isinstance(ip, ip_types):
                l4 = ip.data
                if isinstance(l4, l4_types):
                    acc ^= l4.sport ^ l4.dport
    print(f"{n} packets (checksum {acc})")
    return n


def commands(pcap: Path, tmp: Path) -> dict[str, list[str]]:
    """The command line of each tool."""
    return {
        "trafficguard": [
            sys.executable, "-m", "trafficguard", "replay", "--fast", "--no-metrics",
            "--store", str(tmp / "bench.db"), str(pcap),
        ],
        "tg-one-process": [
            sys.executable, "-m", "trafficguard", "--config", str(_config(tmp, "one-process")),
            "replay", "--fast", "--no-metrics", "--store", str(tmp / "bench-one.db"),
            str(pcap),
        ],
        "trafficguard-voip-off": [
            sys.executable, "-m", "trafficguard", "--config", str(_voip_off_config(tmp)),
            "replay", "--fast", "--no-metrics", "--store", str(tmp / "bench-voip-off.db"),
            str(pcap),
        ],
        "tg-metadata": [
            sys.executable, "-m", "trafficguard", "--config", str(_config(tmp, "metadata")),
            "replay", "--fast", "--no-metrics", "--no-store", "--jsonl", str(tmp / "meta.jsonl"),
            str(pcap),
        ],
        "tg-python": [
            sys.executable, "-m", "trafficguard", "--config", str(_config(tmp, "python")),
            "replay", "--fast", "--no-metrics", "--store", str(tmp / "bench-python.db"),
            str(pcap),
        ],
        "softflowd": [softflowd_path(), "-r", str(pcap), "-n", "127.0.0.1:9995", "-v", "10"],
        "tcpdump": [shutil.which("tcpdump") or "tcpdump", "-r", str(pcap), "-w", "/dev/null"],
        "nfpcapd": [shutil.which("nfpcapd") or "nfpcapd", "-r", str(pcap), "-w", str(tmp)],
        "dpkt_loop": [sys.executable, str(Path(__file__).resolve()), "--dpkt-loop", str(pcap)],
    }  # fmt: skip


CONFIGS: Final = {
    # metadata mode: decode, flows, classification, a sink (JSON lines to /dev/null); no
    # VoIP/DNS analyzers, detectors or gate; the fast path if built
    "metadata": "voip: {enabled: false}\nanalyzers: {dns: {enabled: false}}\n"
    "detect: {enabled: false}\nescalation: {enabled: false}\n",
    "python": 'capture:\n  fast_path: "off"\n',  # the pure-Python reference path
    # the full pipeline in the packet process, SQLite commits included: one core, as before
    # the record process and the store-writer process
    "one-process": "store: {record_process: false, sqlite: {writer: inline}}\n",
}


def _config(tmp: Path, name: str) -> Path:
    """A config file for one benchmark row."""
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIGS[name])
    return path


def _voip_off_config(tmp: Path) -> Path:
    """A config file that only turns the VoIP stage off."""
    path = tmp / "voip-off.yaml"
    path.write_text("voip:\n  enabled: false\n")
    return path


def warm(path: Path) -> None:
    """Read the file once so a timed run reads the page cache, not the disk (this machine's
    page cache is small and shared: a 1.5 GB file is often not cached)."""
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 24):
            pass


def fresh_outputs(tmp: Path) -> None:
    """Delete the stores and JSON lines of earlier runs: every run writes into a new store,
    as the first round does. (A store that already holds the capture's records makes each
    ``INSERT OR REPLACE`` delete a row and its index entries first, ~2x the SQLite cost, and
    the JSON lines sink appends: rounds 2 and up of earlier benches measured that.)"""
    for path in [*tmp.glob("*.db"), *tmp.glob("*.db-*"), *tmp.glob("*.jsonl")]:
        path.unlink()


def compile_package() -> None:
    """Write the package's bytecode, as ``pip install`` does: with PYTHONDONTWRITEBYTECODE
    set (this environment sets it) every run would otherwise compile each changed module
    again, 0.1-0.2 s that an installed daemon never pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "trafficguard")], check=True
    )


def run_one(tool: str, cmd: list[str], packets: int, tmp: Path) -> Result:
    """Run one tool under /usr/bin/time; a failure becomes a row with the error tail."""
    tfile, log = tmp / f"{tool}.time", tmp / f"{tool}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%e %U %S %M", "-o", str(tfile), *cmd],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=env, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    rss_kb, cpu = 0, 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):  # time may not have written
        fields = tfile.read_text().split()
        rss_kb = int(fields[-1])
        cpu = float(fields[-3]) + float(fields[-2])
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return Result(tool, False, seconds, 0.0, rss_kb / 1024, None,
                      f"exit {proc.returncode}: " + " | ".join(tail))  # fmt: skip
    return Result(tool, True, seconds, packets / seconds, rss_kb / 1024, None, cpu_seconds=cpu)


def run_bench(pcap: Path, tools: tuple[str, ...] = TOOLS,
              repeat: int = 1) -> tuple[int, list[Result]]:
    """Time every tool on ``pcap``, ``repeat`` rounds of all tools back to back.

    On a shared machine one slow moment can land on any tool; with rounds, a tool's row
    is its median seconds (peak RSS: the largest), and its ratio to softflowd is the
    median of the per-round ratios, each from two runs minutes apart at most.
    """
    packets = count_packets(pcap)
    compile_package()
    rounds: list[dict[str, Result]] = []
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as d:
        tmp = Path(d)
        cmds = commands(pcap, tmp)
        for _ in range(max(repeat, 1)):
            rnd = {}
            for t in tools:
                fresh_outputs(tmp)
                warm(pcap)  # the page cache here is small and shared: re-read before each
                rnd[t] = run_one(t, cmds[t], packets, tmp)
            rounds.append(rnd)
    results = []
    for tool in tools:
        runs = [r[tool] for r in rounds]
        failed = next((x for x in runs if not x.ok), None)
        if failed is not None:
            results.append(failed)
            continue
        seconds = statistics.median(x.seconds for x in runs)
        row = Result(tool, True, seconds, packets / seconds, max(x.peak_rss_mb for x in runs),
                     None, runs=len(runs),
                     cpu_seconds=statistics.median(x.cpu_seconds for x in runs))  # fmt: skip
        ratios = [r[tool].rate_pps / r["softflowd"].rate_pps for r in rounds
                  if "softflowd" in r and r["softflowd"].ok]  # fmt: skip
        if ratios:
            row.vs_softflowd = statistics.median(ratios)
        results.append(row)
    return packets, results


def print_table(pcap: Path, packets: int, results: list[Result]) -> None:
    """Human-readable table on stdout."""
    runs = max((r.runs for r in results), default=1)
    print(f"{packets} packets in {pcap}" + (f", median of {runs} rounds" if runs > 1 else ""))
    print(f"{'tool':<21} {'seconds':>9} {'packets/s':>12} {'cpu s':>7} {'peak RSS MB':>12} "
          f"{'x softflowd':>12}")  # fmt: skip
    for r in results:
        if not r.ok:
            print(f"{r.tool:<21} {'FAILED':>9}  {r.error}")
            continue
        ratio = f"{r.vs_softflowd:.3f}" if r.vs_softflowd is not None else "-"
        print(f"{r.tool:<21} {r.seconds:>9.3f} {r.rate_pps:>12.0f} {r.cpu_seconds:>7.2f} "
              f"{r.peak_rss_mb:>12.1f} {ratio:>12}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exits 1 if any tool failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="workload size")
    ap.add_argument("--pcap", type=Path, help="benchmark this file instead of a workload")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "work")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all tools; rows are medians (default 1)")
    ap.add_argument("--dpkt-loop", type=Path, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.dpkt_loop:
        dpkt_loop(args.dpkt_loop)
        return 0
    tools = tuple(t for t in args.tools.split(",") if t)
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {sorted(unknown)}")
    pcap = (args.pcap or ensure_workload(args.packets, args.workdir)).resolve()
    packets, results = run_bench(pcap, tools, args.repeat)
    if args.json:
        doc = {"pcap": str(pcap), "packets": packets, "results": [asdict(r) for r in results]}
        print(json.dumps(doc, indent=2))
    else:
        print_table(pcap, packets, results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
