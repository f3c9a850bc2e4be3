#!/usr/bin/env python3
"""Differential fuzzer for the C fast path: mutated captures through both paths.

Each case takes real frames (pcaps/, tests/data/*/), mutates them (bit flips, byte sets,
truncation, splices, random garbage, corrupted record headers), writes a pcap and
replays it with ``capture.fast_path`` on and off under a small, fast-expiring table. A
crash, an exception or any difference in records, decode counters or capture errors is a
finding; the failing pcap is saved. Deterministic for a given seed.

    python bench/fuzz_fast.py --cases 20000 --seed 7      # the long run
    python bench/fuzz_fast.py --seconds 600               # or for a wall-clock budget

``tests/property/test_fast_props.py`` runs a short, fixed-seed slice of it in the suite.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trafficguard.capture.pcapfile import open_capture  # noqa: E402
from trafficguard.config import Config  # noqa: E402
from trafficguard.errors import CaptureError  # noqa: E402
from trafficguard.pipeline import Pipeline, ReplayDriver  # noqa: E402
from trafficguard.sinks.memory import MemorySink  # noqa: E402

STRESS: dict[str, Any] = {
    "capture": {"batch_frames": 16},
    "flow": {"max_flows": 16, "expiry_scan_per_tick": 4, "tick_interval_s": 0.01,
             "active_timeout_s": 0.5, "classify_packets": 3,
             "idle_timeout_s": {"tcp": 0.4, "tcp_embryonic": 0.2, "tcp_closing": 0.1,
                                "udp": 0.3, "icmp": 0.2, "other": 0.2, "dns": 0.15}},
    "decode": {"fragments": {"max_datagrams": 4, "timeout_s": 0.2}},
}  # fmt: skip
Frame = tuple[int, int, bytes, int]


def corpus() -> list[Frame]:
    """Every frame of the bundled captures (Ethernet and other link types)."""
    frames: list[Frame] = []
    for pattern in ("pcaps/*.pcap", "tests/data/*/*.pcap*"):
        for path in sorted(REPO.glob(pattern)):
            try:
                with open_capture(path) as src:
                    for batch in src.batches(4096):
                        frames.extend(batch)
            except CaptureError:  # a corrupt sample: the frames before the error are kept
                continue
    return frames


def mutate(rnd: random.Random, data: bytes) -> bytes:
    """One to four random edits of a frame."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        if op == 0 and b:  # flip a bit, mostly in the headers
            i = (
                min(rnd.randrange(len(b)), rnd.randrange(80))
                if rnd.random() < 0.8
                else rnd.randrange(len(b))
            )
            b[i % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:  # set a byte to an interesting value
            b[rnd.randrange(min(len(b), 80))] = rnd.choice(
                (0, 1, 0x40, 0x45, 0x60, 0x7F, 0x80, 0xFF, 6, 17, 58, 132)
            )
        elif op == 2:  # truncate
            del b[rnd.randrange(len(b) + 1) :]
        elif op == 3:  # append garbage
            b += rnd.randbytes(rnd.randrange(1, 64))
        elif op == 4 and len(b) > 2:  # zero a run
            i = rnd.randrange(len(b))
            b[i : i + rnd.randrange(1, 8)] = bytes(min(8, len(b) - i))[: len(b[i : i + 8])]
        else:  # random garbage frame
            b = bytearray(rnd.randbytes(rnd.randrange(0, 120)))
    return bytes(b)


def make_case(rnd: random.Random, frames: list[Frame]) -> bytes:
    """A pcap (random byte order/resolution/link type) of mutated and intact frames."""
    order = rnd.choice("<>")
    nano = rnd.random() < 0.3
    linktype = 1 if rnd.random() < 0.9 else rnd.choice((0, 101, 113, 228, 229, 276, 147))
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0,
                                65535, linktype))  # fmt: skip
    ts = 1_700_000_000 * 10**9 + rnd.randrange(10**9)
    start = rnd.randrange(len(frames))
    for i in range(rnd.randint(1, 120)):
        _, _, data, _ = frames[(start + i * rnd.choice((1, 1, 7))) % len(frames)]
        if rnd.random() < 0.5:
            data = mutate(rnd, data)
        ts += rnd.choice((0, 1000, 10**6, 10**8, 3 * 10**8)) if rnd.random() < 0.95 else -(10**6)
        sec, frac = divmod(max(ts, 0), 10**9)
        wire = len(data) + rnd.choice((0, 0, 0, 4, -1, 100))
        out += struct.pack(
            order + "IIII", sec, frac if nano else frac // 1000, len(data), max(wire, 0)
        )
        out += data
    if rnd.random() < 0.1:  # a corrupt or cut-off tail
        out += rnd.randbytes(rnd.randrange(1, 40))
    return bytes(out)


def replay(path: Path, mode: str) -> dict[str, Any]:
    cfg = Config.model_validate({**STRESS, "capture": {**STRESS["capture"], "fast_path": mode}})
    memory = MemorySink()
    pipeline = Pipeline(cfg, [("m", memory)])
    result = ReplayDriver(pipeline).run([path])
    return {
        "records": list(memory.records),
        "errors": [str(f.error) for f in result.files],
        "decode": (dict(pipeline.decoder.errors), dict(pipeline.decoder.skipped)),
        "capture": (pipeline.capture_packets, pipeline.capture_bytes),
    }


def check(blob: bytes, workdir: Path) -> str | None:
    """None when both paths agree on this pcap, else what differed."""
    path = workdir / "case.pcap"
    path.write_bytes(blob)
    fast, slow = replay(path, "on"), replay(path, "off")
    for key in slow:
        if fast[key] != slow[key]:
            return key
    return None


def run(cases: int, seed: int, seconds: float | None = None, save: Path | None = None) -> int:
    """Run ``cases`` cases (or until ``seconds``); return the number of findings."""
    rnd = random.Random(seed)
    frames = corpus()
    findings = 0
    deadline = time.monotonic() + seconds if seconds else None
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        n = 0
        while n < cases or deadline is not None:
            if deadline is not None and time.monotonic() > deadline:
                break
            blob = make_case(rnd, frames)
            what = check(blob, work)
            if what is not None:
                findings += 1
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"finding-{seed}-{n}.pcap").write_bytes(blob)
                print(f"case {n}: {what} differs", file=sys.stderr)
            n += 1
    print(f"{n} cases, {findings} findings")
    return findings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", type=Path, default=REPO / "bench" / "work" / "fuzz")
    args = ap.parse_args()
    return 1 if run(args.cases, args.seed, args.seconds, args.save) else 0


if __name__ == "__main__":
    sys.exit(main())
