"""Cycle-collector settings for command start-up and for the packet loops of ``replay``
and the live workers.

The pipeline allocates millions of short-lived objects (packets for hooks, records, rows)
that reference counting frees; the cycle collector's default thresholds (700, 10, 10)
still run it every 700 net allocations, and each full collection walks every object made
at start-up (modules, config models, stages, detector tables). Measured on the 1M-packet
benchmark workload, full default pipeline, in one process: 655 collections (4 full) took
0.27–0.36 s; with the start-up objects frozen and a young threshold of 10 000, 41
collections (none full) took 0.15 s. Cyclic garbage is still collected, just in larger
steps.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

YOUNG_THRESHOLD: Final = 10_000  # net allocations between young collections (default 700)


@contextlib.contextmanager
def startup_gc() -> Iterator[None]:
    """Around a command's start-up (imports, configuration, stage construction): no cycle
    collection; afterwards freeze what exists and collect as before.

    A replay's start-up leaves some 55 000 objects that live until exit (modules, classes,
    config models, stages) and makes little cyclic garbage, yet the default thresholds ran
    the collector ~150 times over them, one full collection included: 50–60 ms of a 0.5 s
    start-up. Frozen, they are not walked again, not even once as young objects (another
    ~25 ms, measured). Frozen objects are never collected: the packet loop unfreezes at
    its end, and ``cli.main`` at the command's.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def packet_loop_gc() -> Iterator[None]:
    """Around a packet loop: freeze what exists (it lives until exit anyway) and collect
    young objects less often; afterwards unfreeze and restore the thresholds.

    Unfreezing matters at exit: objects still frozen are never collected, and extension
    modules that check for leaked instances at shutdown (nanobind, under datasketches)
    then print warnings.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
