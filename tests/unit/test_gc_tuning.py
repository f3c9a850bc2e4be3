"""The packet loops freeze start-up objects and collect young objects less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from trafficguard.gc_tuning import YOUNG_THRESHOLD, tune_for_packet_loop


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_freezes_and_raises_young_threshold(restore_gc: None) -> None:
    older = gc.get_threshold()[1:]
    tune_for_packet_loop()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)


def test_cycles_are_still_collected(restore_gc: None) -> None:
    tune_for_packet_loop()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2
