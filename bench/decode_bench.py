#!/usr/bin/env python3
"""Decoder throughput: Decoder.decode_batch vs a dpkt object-per-layer loop.

Frames are preloaded into memory so only decoding is timed. Usage::

    python bench/decode_bench.py [--pcap /tmp/w1m.pcap] [--limit N] [--batch 512]

Make the workload with
``python3 bench/make_workload.py --packets 1000000 --out /tmp/w1m.pcap``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import dpkt

from trafficguard.capture.frames import Frame
from trafficguard.config import DecodeConfig
from trafficguard.decode.decoder import Decoder


def load_frames(path: Path, limit: int) -> list[Frame]:
    """Read a classic pcap into ``(ts_ns, linktype, data, wire_len)`` tuples."""
    frames: list[Frame] = []
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for ts, buf in reader:
            frames.append((int(ts * 1_000_000_000), linktype, bytes(buf), len(buf)))
            if len(frames) >= limit:
                break
    return frames


def bench_decoder(frames: list[Frame], batch: int) -> tuple[float, int, Decoder]:
    decoder = Decoder(DecodeConfig())
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    packets = 0
    start = time.perf_counter()
    for b in batches:
        packets += len(decoder.decode_batch(b))
    return time.perf_counter() - start, packets, decoder


def bench_dpkt(frames: list[Frame]) -> tuple[float, int]:
    """Reference: what the same work costs with one dpkt object per layer."""
    packets = 0
    start = time.perf_counter()
    for _ts, _lt, data, _wl in frames:
        try:
            eth = dpkt.ethernet.Ethernet(data)
        except dpkt.UnpackError:
            continue
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            l4 = ip.data
            if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP):
                _ = (ip.src, ip.dst, l4.sport, l4.dport, len(l4.data))
            packets += 1
    return time.perf_counter() - start, packets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", type=Path, default=Path("/tmp/w1m.pcap"))
    ap.add_argument("--limit", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-dpkt", action="store_true")
    args = ap.parse_args()
    if not args.pcap.exists():
        print(f"missing {args.pcap}: see the module docstring", file=sys.stderr)
        return 2
    frames = load_frames(args.pcap, args.limit)
    gc.collect()
    gc.freeze()
    print(f"frames loaded: {len(frames):,}")
    best = float("inf")
    for _ in range(args.repeat):
        secs, packets, decoder = bench_decoder(frames, args.batch)
        best = min(best, secs)
    errors = {k: v for k, v in decoder.errors.items() if v}
    skipped = {k: v for k, v in decoder.skipped.items() if v}
    print(
        f"trafficguard Decoder: {len(frames) / best:,.0f} frames/s "
        f"({best * 1e9 / len(frames):.0f} ns/frame), packets {packets:,}, "
        f"errors {errors}, skipped {skipped}"
    )
    if not args.skip_dpkt:
        secs, packets = bench_dpkt(frames)
        print(
            f"dpkt object-per-layer: {len(frames) / secs:,.0f} frames/s "
            f"({secs * 1e9 / len(frames):.0f} ns/frame), packets {packets:,}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
