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
from trafficguard.privacy.keys import SensorKeys, init_keys, load_keys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.logging import get_logger


@dataclass(slots=True)
class SensorContext:
    """What stages share beyond the config: keys and logs are opened once, here."""

    cfg: Config
    keys: SensorKeys
    pseudonymizer: Pseudonymizer  # numbers/SIP users, Call-IDs, subscriber addresses


def open_keys(cfg: Config) -> SensorKeys:
    """Load the sensor keys; create them on first start when ``privacy.create_keys``."""
    keys_dir = cfg.privacy.keys_dir
    if cfg.privacy.create_keys and not any(keys_dir.glob("pseudonym-*.key")):
        keys = init_keys(keys_dir)
        get_logger("trafficguard.keys").info("keys.created", epoch=keys.current_epoch)
        return keys
    return load_keys(keys_dir)


def build_context(cfg: Config, keys: SensorKeys | None = None) -> SensorContext:
    """Open what the stages share (keys, audit log) for one pipeline."""
    keys = keys if keys is not None else open_keys(cfg)
    return SensorContext(
        cfg=cfg, keys=keys, pseudonymizer=Pseudonymizer(keys.pseudonym_keys, cfg.home_networks)
    )


def build_stages(ctx: SensorContext) -> list[Stage]:
    """The enabled stages, in data-flow order."""
    stages: list[Stage] = []
    return stages
