#!/usr/bin/env python3
"""Is the fast path's cost linear? Rate vs file length and vs concurrent flows; memory per flow.

* length: ``bench/make_workload.py`` files of 0.5M, 1M, 2M, 4M packets (same mix, longer),
  replayed by the CLI in metadata mode and with the full default pipeline (no store); the
  rate is the one the CLI prints (replay time, no interpreter start-up) and the peak RSS
  comes from ``/usr/bin/time``;
* flows: synthetic files of 1M UDP packets spread round-robin over 10k, 100k and 1M
  concurrent flows (all open until the end), replayed in-process; the rate, and the RSS
  growth before the final flush divided by the flows = bytes per open flow in the C table.

All rows of one run are measured back to back; compare ratios, not seconds.

    python bench/linearity.py [--json out.json] [--skip-length]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from replay_bench import compile_package, warm  # as replay_bench: bytecode, page cache

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORK = REPO / "bench" / "work"
METADATA = (  # the replay_bench "tg-metadata" row: no analyzers, detectors or gate
    "voip: {enabled: false}\nanalyzers: {dns: {enabled: false}}\n"
    "detect: {enabled: false}\nescalation: {enabled: false}\n"
)
FULL = "{}\n"  # the default pipeline: VoIP, DNS analyzer, detectors (no store: no disk I/O)
LENGTHS = (500_000, 1_000_000, 2_000_000, 4_000_000)
FLOWS = (10_000, 100_000, 1_000_000)


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def workload(packets: int) -> Path:
    path = WORK / f"workload-{packets}.pcap"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        gen = [sys.executable, str(REPO / "bench" / "make_workload.py"), "--packets",
               str(packets), "--out", str(tmp)]  # fmt: skip
        subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
        tmp.rename(path)
    return path


def synth(path: Path, packets: int, flows: int) -> None:
    """Ethernet/IPv4/UDP frames with an 18-byte payload, packet k on flow k % flows."""
    eth = bytes(12) + b"\x08\x00"
    rec = struct.Struct("<IIII")
    with path.open("wb", buffering=1 << 22) as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t0 = 1_700_000_000
        for k in range(packets):
            i = k % flows
            src = struct.pack("!I", 0x0A000000 + i)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0x4000, 64, 17, 0, src,
                             b"\xc0\x00\x02\x01")  # fmt: skip
            frame = eth + ip + struct.pack("!HHHH", 30000 + (i & 0x3FFF), 40000, 26, 0) + bytes(18)
            us = k  # 1 µs apart: every flow stays open (UDP idle timeout 60 s)
            f.write(rec.pack(t0 + us // 1_000_000, us % 1_000_000, len(frame), len(frame)))
            f.write(frame)


def cli_rate(pcap: Path, tmp: Path, config: str = METADATA) -> dict[str, float]:
    cfg = tmp / "config.yaml"
    cfg.write_text(config)
    tfile = tmp / "time"
    warm(pcap)
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(tfile), sys.executable, "-m", "trafficguard",
         "--config", str(cfg), "replay", "--fast", "--no-store", "--no-metrics", str(pcap)],
        capture_output=True, text=True, check=True, cwd=tmp,
    )  # fmt: skip
    # the summary's rate has full precision; its seconds are rounded to 10 ms
    m = re.search(r"([\d,]+) packets, .* \(([\d,]+) pkt/s\)", proc.stderr + proc.stdout)
    assert m is not None, proc.stderr
    packets = int(m.group(1).replace(",", ""))
    seconds = packets / int(m.group(2).replace(",", ""))
    return {"packets": packets, "seconds": seconds, "pps": packets / seconds,
            "peak_rss_mb": int(tfile.read_text().split()[-1]) / 1024}  # fmt: skip


def in_process(pcap: Path, flows: int) -> dict[str, float]:
    """Replay in this process; RSS growth before the final flush = the open flows' cost."""
    from trafficguard.capture.pcapfile import open_capture  # noqa: PLC0415
    from trafficguard.config import Config  # noqa: PLC0415
    from trafficguard.pipeline import Pipeline  # noqa: PLC0415

    cfg = Config.model_validate({"voip": {"enabled": False}, "detect": {"enabled": False},
                                 "analyzers": {"dns": {"enabled": False}},
                                 "escalation": {"enabled": False},
                                 "flow": {"max_flows": 2_000_000}})  # fmt: skip
    pipeline = Pipeline(cfg, [])
    base = _rss_kib()
    t0 = time.perf_counter()
    with open_capture(pcap) as source:
        for _ in pipeline.process_source(source, cfg.capture.batch_frames):
            pass
    seconds = time.perf_counter() - t0
    grown = _rss_kib() - base
    active = pipeline.flows.stats.active
    pipeline.finish()
    return {"flows": flows, "active": active, "seconds": seconds,
            "pps": pipeline.capture_packets / seconds,
            "bytes_per_flow": grown * 1024 / max(active, 1)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-length", action="store_true")
    ap.add_argument("--max-packets", type=int, default=LENGTHS[-1], help="longest file")
    args = ap.parse_args()
    doc: dict[str, Any] = {"length": [], "length_full": [], "flows": []}
    compile_package()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in FLOWS:
            path = tmp / f"flows-{n}.pcap"
            synth(path, 1_000_000, n)
            cmd = [sys.executable, __file__, "--one-flows", str(path), str(n)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out)
            doc["flows"].append(row)
            path.unlink()
            print(f"flows {n:>9}: {row['pps']:>10.0f} pkt/s  {row['bytes_per_flow']:6.0f} B/flow")
        if not args.skip_length:
            for n in (n for n in LENGTHS if n <= args.max_packets):
                for key, config in (("length", METADATA), ("length_full", FULL)):
                    row = cli_rate(workload(n), tmp, config)
                    doc[key].append(row)
                    print(f"{key:>11} {row['packets']:>9}: {row['pps']:>10.0f} pkt/s  "
                          f"{row['peak_rss_mb']:6.1f} MB peak")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one-flows":  # child: a fresh process per row
        print(json.dumps(in_process(Path(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
