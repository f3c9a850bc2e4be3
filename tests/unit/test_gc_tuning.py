"""Start-up runs without cycle collection and freezes what it made; the packet loops
freeze start-up objects and collect young objects less often."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from trafficguard.cli import main
from trafficguard.gc_tuning import YOUNG_THRESHOLD, packet_loop_gc, startup_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_startup_collects_nothing_then_freezes(restore_gc: None) -> None:
    with startup_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_startup_leaves_collection_off_if_it_was(restore_gc: None) -> None:
    gc.disable()
    try:
        with startup_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_command_unfreezes_at_its_end(
    restore_gc: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command without a packet loop (whose end unfreezes) leaves nothing frozen either."""
    monkeypatch.delenv("TRAFFICGUARD_CONFIG", raising=False)
    assert main(["check-config"]) == 0
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_loop_freezes_raises_young_threshold_and_restores(restore_gc: None) -> None:
    before = gc.get_threshold()
    with packet_loop_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_cycles_are_still_collected(restore_gc: None) -> None:
    class Node:
        pass

    with packet_loop_gc():
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        assert gc.collect() >= 2


LEAK_PROBE = """
import datasketches
from trafficguard.gc_tuning import packet_loop_gc

class Stage:  # made before the loop, in a reference cycle, as the pipeline's stages are
    pass

stage = Stage()
stage.self = stage
stage.sketches = []
del stage  # only the cycle keeps it: the collector must free it, at exit at the latest
with packet_loop_gc():
    import gc
    for obj in gc.get_objects():
        if type(obj).__name__ == "Stage":
            obj.sketches.append(datasketches.hll_sketch(12))
"""


def test_no_leak_warnings_at_exit() -> None:
    """Frozen objects are never collected; nanobind (datasketches) then reports leaked
    sketches at exit. The loop unfreezes, so a replay's stderr stays clean."""
    proc = subprocess.run([sys.executable, "-c", LEAK_PROBE], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert "leaked" not in proc.stderr
