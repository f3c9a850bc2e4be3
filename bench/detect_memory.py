#!/usr/bin/env python3
"""Memory of the detection state under one million distinct sources.

Feeds the DetectStage (default detectors, default ``detect.max_keys``) flow records from
N distinct external sources (a short TCP connection attempt and a UDP flow each, in
packet-time order) and reports peak RSS and the tracemalloc peak of the stage, plus how
many keys each detector holds and evicted. Bounded state means the numbers stop growing
once ``max_keys`` is reached.

    python bench/detect_memory.py [--sources 1000000] [--max-keys 100000]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Iterator

from trafficguard.config import DetectConfig
from trafficguard.detect.stage import DetectStage
from trafficguard.flow.records import FlowRecord

NS = 1_000_000_000


class Clear:
    def address(self, ip: str) -> str:
        return ip

    def is_subscriber(self, ip: str) -> bool:
        return False


def records(n: int, batch: int = 1000) -> Iterator[tuple[list[FlowRecord], int]]:
    out: list[FlowRecord] = []
    for i in range(n):
        src = f"{1 + (i >> 16) % 223}.{(i >> 8) & 255}.{i & 255}.{7 + i % 3}"
        t = 1_700_000_000 * NS + i * 100_000  # 10k new sources per second of packet time
        tcp = i % 2 == 0
        out.append(
            FlowRecord(
                flow_id=f"{i:016x}",
                seq=0,
                first_seen_ns=t,
                start_ns=t,
                end_ns=t + 1000,
                vlan=0,
                ip_version=4,
                proto=6 if tcp else 17,
                src_addr=src,
                src_port=40000 + i % 20000,
                dst_addr=f"10.1.{(i >> 8) & 255}.{i & 255}",
                dst_port=443 if tcp else 53,
                packets_fwd=1,
                packets_rev=1,
                bytes_fwd=60,
                bytes_rev=60,
                ip_bytes_fwd=40,
                ip_bytes_rev=40,
                payload_bytes_fwd=0,
                payload_bytes_rev=0,
                tcp_flags_fwd=0x02 if tcp else 0,
                tcp_flags_rev=0x12 if tcp else 0,
                tcp_state="syn_received" if tcp else "none",
                app="unknown",
                app_source="none",
                encap="",
                end_reason="idle",
            )
        )
        if len(out) == batch:
            yield out, t
            out = []
    if out:
        yield out, t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=1_000_000)
    ap.add_argument("--max-keys", type=int, default=100_000)
    args = ap.parse_args()
    tracemalloc.start()
    stage = DetectStage(DetectConfig(max_keys=args.max_keys), Clear())
    started = time.perf_counter()
    for batch, t in records(args.sources):
        stage.on_records(batch)
        stage.tick(t)
        stage.take_records()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"sources: {args.sources:,}  max_keys: {args.max_keys:,}")
    print(f"records: {args.sources:,} in {elapsed:.1f} s ({args.sources / elapsed:,.0f}/s)")
    print(f"tracemalloc peak: {peak / 2**20:.1f} MiB   peak RSS: {rss_mib:.1f} MiB")
    for d in stage.detectors:
        print(f"  {d.name:<18} keys {d.state_keys():>8,}  evicted {d.evicted_keys():>10,}")
    print(f"alerts opened: {sum(stage.alerts.opened.values())}")


if __name__ == "__main__":
    main()
