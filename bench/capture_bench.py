"""Capture file throughput and memory: trafficguard's reader vs dpkt on the same file.

    python bench/capture_bench.py [--pcap /tmp/w1m.pcap] [--packets 1000000] [--skip-gzip]

Prints frames/s for iterating ``FileFrameSource.batches()`` (counting frames, and also
touching every frame tuple) against a ``dpkt.pcap.Reader`` / ``dpkt.pcapng.Reader`` loop,
for pcap, pcapng (converted from the pcap) and gzip; then peak RSS of a child process
reading the whole file, sampled at 10 % / 50 % / 100 % of the file, to show memory stays
flat. Wall and CPU seconds are both printed: the dev VM is shared, CPU time is steadier.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dpkt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trafficguard.capture.pcapfile import open_capture
from trafficguard.errors import CaptureError

MAKE_WORKLOAD = str(Path(__file__).resolve().parent / "make_workload.py")


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """Run once; return (frames, wall seconds, cpu seconds)."""
    w, c = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - w, time.process_time() - c


def ours_count(path: str) -> int:
    n = 0
    for batch in open_capture(path).batches():
        n += len(batch)
    return n


def ours_touch(path: str) -> int:
    n = 0
    for batch in open_capture(path).batches():
        for _ts, _lt, _data, _wire in batch:
            n += 1
    return n


def dpkt_loop(path: str) -> int:
    n = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        for _ts, _buf in reader:
            n += 1
    return n


def is_complete(path: str) -> bool:
    """True if the file reads to the end without a capture error (and is not growing)."""
    if not os.path.exists(path):
        return False
    size = os.path.getsize(path)
    try:
        ours_count(path)
    except CaptureError:
        return False
    return os.path.getsize(path) == size


def ensure_workload(path: str, packets: int) -> None:
    if is_complete(path):
        print(f"reusing {path}")
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    print(f"generating {path} ({packets} packets) ...", flush=True)
    subprocess.run([sys.executable, MAKE_WORKLOAD, "--packets", str(packets), "--out", tmp],
                   check=True)
    os.replace(tmp, path)


def to_pcapng(src: str, dst: str) -> None:
    """Rewrite a µs pcap as pcapng: SHB, one IDB, one EPB per packet."""
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return
    with open(dst + ".tmp", "wb", buffering=1 << 22) as out:
        out.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        out.write(struct.pack("<IIHHII", 1, 20, 1, 0, 0, 20))
        for batch in open_capture(src).batches():
            for ts_ns, _lt, data, wire in batch:
                ts = ts_ns // 1000
                pad = -len(data) % 4
                blen = 32 + len(data) + pad
                out.write(struct.pack("<IIIIIII", 6, blen, 0, ts >> 32, ts & 0xFFFFFFFF,
                                      len(data), wire))
                out.write(data + b"\0" * pad + struct.pack("<I", blen))
    os.replace(dst + ".tmp", dst)


def to_gzip(src: str, dst: str) -> None:
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return
    with open(src, "rb") as f, gzip.open(dst + ".tmp", "wb", compresslevel=1) as g:
        while chunk := f.read(1 << 22):
            g.write(chunk)
    os.replace(dst + ".tmp", dst)


def compare(label: str, path: str) -> None:
    n1, w1, c1 = timed(lambda: ours_count(path))
    n2, w2, c2 = timed(lambda: ours_touch(path))
    n3, w3, c3 = timed(lambda: dpkt_loop(path))
    assert n1 == n2 == n3, (n1, n2, n3)
    print(f"{label}: {n1} frames, {os.path.getsize(path) / 1e6:.0f} MB")
    for name, w, c in (("trafficguard batches()", w1, c1),
                       ("trafficguard batches() + per-frame loop", w2, c2),
                       ("dpkt Reader loop", w3, c3)):
        print(f"  {name:42s} {n1 / w / 1e6:6.2f} M frames/s wall ({w:5.2f} s), "
              f"{n1 / c / 1e6:6.2f} M/s cpu")
    print(f"  ratio trafficguard/dpkt: {w3 / w1:.2f}x wall, {c3 / c1:.2f}x cpu "
          f"(with per-frame loop: {w3 / w2:.2f}x wall)")


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def rss_child(path: str) -> None:
    """Read the whole file, print RSS at 10/50/100 % of progress and the peak."""
    src = open_capture(path)
    total = src.total_bytes or 1
    marks = {10: 0, 50: 0, 100: 0}
    start = rss_kib()
    for _batch in src.batches():
        pct = src.bytes_read * 100 // total
        for m, seen in marks.items():
            if pct >= m and not seen:
                marks[m] = rss_kib()
    marks[100] = rss_kib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"start {start / 1024:.1f} MiB, at 10% {marks[10] / 1024:.1f} MiB, at 50% "
          f"{marks[50] / 1024:.1f} MiB, at 100% {marks[100] / 1024:.1f} MiB, "
          f"peak {peak / 1024:.1f} MiB ({src.frames_read} frames, "
          f"{src.total_bytes / 1e6:.0f} MB file)")


def measure_rss(label: str, path: str) -> None:
    out = subprocess.run([sys.executable, __file__, "--rss-child", path], check=True,
                         capture_output=True, text=True).stdout.strip()
    print(f"  RSS {label}: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default="/tmp/w1m.pcap")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--skip-gzip", action="store_true")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    ensure_workload(args.pcap, args.packets)
    ng = args.pcap + ".capture-bench.pcapng"
    to_pcapng(args.pcap, ng)
    compare("pcap", args.pcap)
    compare("pcapng", ng)
    measure_rss("pcap", args.pcap)
    measure_rss("pcapng", ng)
    if not args.skip_gzip:
        gz = args.pcap + ".capture-bench.gz"
        to_gzip(args.pcap, gz)
        compare("pcap.gz", gz)
        measure_rss("pcap.gz", gz)


if __name__ == "__main__":
    main()
