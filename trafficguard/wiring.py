"""Builds the stages after the flow table from the configuration (wiring layer).

Every command that runs a pipeline (``replay``, ``run``, the golden-test helpers) calls
:func:`build_stages`, so replay and live capture always run the same analyzers in the
same order: VoIP → metadata analyzers → detectors → privacy edge → escalation gate. Each
stage is a ``trafficguard.flow.hooks.Stage``; the order is the data-flow order of
``docs/architecture.md`` (a stage sees the records of the stages before it).
"""

from __future__ import annotations

from dataclasses import dataclass

from trafficguard.config import Config
from trafficguard.flow.hooks import Stage


@dataclass(slots=True)
class SensorContext:
    """What stages share beyond the config: keys and logs are opened once, here."""

    cfg: Config


def build_context(cfg: Config) -> SensorContext:
    """Open what the stages share (keys, audit log) for one pipeline."""
    return SensorContext(cfg=cfg)


def build_stages(ctx: SensorContext) -> list[Stage]:
    """The enabled stages, in data-flow order."""
    stages: list[Stage] = []
    return stages
