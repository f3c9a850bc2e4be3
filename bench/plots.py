#!/usr/bin/env python3
"""Render docs/img/*.png from the JSON that bench/linearity.py and replay_bench.py wrote.

python bench/plots.py LINEARITY.json REPLAY.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"


def main(linearity: Path, replay: Path) -> None:
    lin = json.loads(linearity.read_text())
    rep = json.loads(replay.read_text())
    soft = next(r for r in rep["results"] if r["tool"] == "softflowd")
    OUT.mkdir(parents=True, exist_ok=True)

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["packets"] / 1e6 for r in lin["length"]]
    a.plot(xs, [r["pps"] / 1e6 for r in lin["length"]], "o-", label="metadata mode")
    full = lin.get("length_full", [])
    if full:
        a.plot([r["packets"] / 1e6 for r in full], [r["pps"] / 1e6 for r in full], "s-",
               label="full default pipeline")  # fmt: skip
    a.axhline(soft["rate_pps"] / 1e6, color="grey", ls="--", label="softflowd (1M file, whole run)")
    a.set(xlabel="packets in file (millions)", ylabel="million packets/s", ylim=(0, None),
          title="rate vs file length (fast path)")  # fmt: skip
    a.legend()
    fx = [r["flows"] for r in lin["flows"]]
    b.semilogx(fx, [r["pps"] / 1e6 for r in lin["flows"]], "o-")
    b.set(xlabel="concurrent flows (1M packets)", ylabel="million packets/s", ylim=(0, None),
          title="rate vs concurrent flows")  # fmt: skip
    fig.tight_layout()
    fig.savefig(OUT / "fast-rate.png", dpi=100)

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.semilogx(fx, [r["bytes_per_flow"] for r in lin["flows"]], "o-", label="C flow table")
    ax.axhline(300, color="red", ls="--", label="budget: 300 B/flow")
    ax.set(xlabel="concurrent flows", ylabel="bytes per open flow (RSS growth)", ylim=(0, 400),
           title="memory per flow")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "fast-bytes-per-flow.png", dpi=100)

    fig, ax = plt.subplots(figsize=(5, 4))
    for key, label in (("length", "metadata mode"), ("length_full", "full default pipeline")):
        rows = lin.get(key, [])
        if rows:
            ax.plot([r["packets"] / 1e6 for r in rows], [r["peak_rss_mb"] for r in rows], "o-",
                    label=label)  # fmt: skip
    ax.set(xlabel="packets in file (millions)", ylabel="peak RSS (MB)", ylim=(0, None),
           title="peak memory vs file length")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "fast-rss-vs-length.png", dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
