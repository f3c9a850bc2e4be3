"""How the C table builds ``FlowRecord`` objects: the same fields ``flow/export.py`` makes.

The core computes the flow id (the same blake2b) and the address text (IPv4, and IPv6
except IPv4-mapped addresses, which it hands to ``addr_text``), looks the labels up in the
tuples given here and calls ``FlowRecord(**fields)`` itself: a record costs no Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from trafficguard.decode.packet import ENCAP_NAMES
from trafficguard.flow.classify import APP_LABELS
from trafficguard.flow.keys import addr_text
from trafficguard.flow.records import APP_SOURCES, FLOW_END_REASONS, TCP_STATES, FlowRecord

_ENCAPS: Final = (*ENCAP_NAMES, *([""] * (256 - len(ENCAP_NAMES))))


RecordFactory = tuple[
    type[FlowRecord], tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...],
    tuple[str, ...], tuple[str, ...], Callable[[bytes], str],
]  # fmt: skip

RECORD_FIELDS: Final = tuple(
    name for name in FlowRecord.__struct_fields__ if name != "sensor_loss"
)  # what the core fills, in field order (sensor_loss is the pipeline's, default False)


def record_factory() -> RecordFactory:
    """Arguments of ``Core.set_record_factory``: the core then builds ``FlowRecord`` objects
    itself, so no Python runs per record."""
    return (FlowRecord, RECORD_FIELDS, TCP_STATES, APP_LABELS, APP_SOURCES, _ENCAPS,
            FLOW_END_REASONS, addr_text)  # fmt: skip
