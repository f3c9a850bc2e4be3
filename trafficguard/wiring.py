"""Builds the stages after the flow table from the configuration (wiring layer).

Every command that runs a pipeline (``replay``, ``run``, the golden-test helpers) calls
:func:`build_stages`, so replay and live capture always run the same analyzers in the
same order: VoIP → metadata analyzers → detectors → privacy edge → escalation gate. Each
stage is a ``trafficguard.flow.hooks.Stage``; the order is the data-flow order of
``docs/architecture.md`` (a stage sees the records of the stages before it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trafficguard.config import Config, MetricsConfig
from trafficguard.errors import ConfigError
from trafficguard.privacy.edge import PrivacyEdge
from trafficguard.privacy.keys import SensorKeys, init_keys, load_keys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.logging import get_logger

if TYPE_CHECKING:
    from trafficguard.escalation.audit import AuditLog
    from trafficguard.escalation.gate import GateStage
    from trafficguard.flow.hooks import Stage
    from trafficguard.privacy.purger import PurgeClock, StorePurger
    from trafficguard.sinks.base import RecordSink
    from trafficguard.sinks.metrics import MetricsServer, PipelineSnapshot

# Every record kind is registered in sinks/sqlite.py, whether or not its stage is enabled.
# Stage classes are imported only when enabled: the detectors pull in numpy and
# datasketches, which would otherwise cost start-up time on every command. Likewise the
# escalation modules (cryptography, pydantic policy models), each sink (sqlite3,
# prometheus_client) and the metrics server are imported only when configured.

@dataclass(slots=True)
class SensorContext:
    """What stages share beyond the config: keys and logs are opened once, here."""

    cfg: Config
    keys: SensorKeys
    pseudonymizer: Pseudonymizer  # numbers/SIP users, Call-IDs, subscriber addresses
    # the privacy edge: pass to Pipeline(record_transform=...) so no sink sees a
    # subscriber address in clear (None when home_networks is empty)
    record_transform: PrivacyEdge | None = None


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
    pz = Pseudonymizer(keys.pseudonym_keys, cfg.home_networks)
    return SensorContext(
        cfg=cfg,
        keys=keys,
        pseudonymizer=pz,
        record_transform=PrivacyEdge(pz) if cfg.home_networks else None,
    )


def open_audit_log(cfg: Config, keys: SensorKeys) -> AuditLog:
    """The escalation audit log (``escalation.audit_log``), signed with the audit key."""
    from trafficguard.escalation.audit import AuditLog  # noqa: PLC0415 (only when enabled)

    esc = cfg.escalation
    esc.audit_log.parent.mkdir(parents=True, exist_ok=True)
    return AuditLog(
        esc.audit_log,
        keys.audit_private,
        public_key=keys.audit_public,
        checkpoint_every=esc.checkpoint_every,
        checkpoint_interval_s=esc.checkpoint_interval_s,
    )


def build_gate(ctx: SensorContext) -> GateStage:
    """The escalation gate (``escalation.enabled``): policy validated here, so a bad
    policy or a missing analyst key stops start-up with the key path."""
    from trafficguard.escalation.evidence import (  # noqa: PLC0415 (only when enabled)
        EvidenceError,
        load_x25519_public,
    )
    from trafficguard.escalation.gate import GateStage  # noqa: PLC0415
    from trafficguard.escalation.policy import load_policy  # noqa: PLC0415

    esc = ctx.cfg.escalation
    if esc.analyst_public_key is None:
        raise ConfigError(
            "escalation", ["at $.escalation.analyst_public_key: required when enabled"]
        )
    try:
        recipient = load_x25519_public(esc.analyst_public_key)
    except EvidenceError as err:
        raise ConfigError("escalation", [f"at $.escalation.analyst_public_key: {err}"]) from None
    cfg, keys = ctx.cfg, ctx.keys

    def open_audit() -> AuditLog:
        return open_audit_log(cfg, keys)

    idle = ctx.cfg.flow.idle_timeout_s
    return GateStage(
        policy=load_policy(esc.policy),
        grants_dir=esc.grants_dir,
        evidence_dir=esc.evidence_dir,
        recipient=recipient,
        pseudonymizer=ctx.pseudonymizer,
        audit_opener=open_audit,
        reload_interval_s=esc.reload_interval_s,
        rematch_window_s=max(idle.tcp, idle.udp, idle.other, idle.icmp, idle.dns),
        evidence_retention_s=ctx.cfg.privacy.retention.evidence_after_expiry_s,
    )


def build_stages(ctx: SensorContext, record_process: bool = False) -> list[Stage]:
    """The enabled stages, in data-flow order. With ``record_process`` only those that
    run in the packet process: the detectors then run in ``build_record_stages``'s list,
    in the record process (``record_process.RemoteTail``)."""
    stages: list[Stage] = []
    if ctx.cfg.voip.enabled:
        from trafficguard.voip.stage import VoipStage  # noqa: PLC0415 (see the note on imports)

        stages.append(VoipStage(ctx.cfg.voip, ctx.pseudonymizer))
    # metadata analyzers: after VoIP, before the detectors that read their records
    if ctx.cfg.analyzers.dns.enabled:
        from trafficguard.analyzers.dns import DnsAnalyzerStage  # noqa: PLC0415

        stages.append(DnsAnalyzerStage(ctx.cfg.analyzers.dns, ctx.pseudonymizer))
    # detectors: after VoIP and the metadata analyzers, whose records they read
    if not record_process:
        stages.extend(build_record_stages(ctx.cfg, ctx.pseudonymizer))
    # escalation gate: always last, it reads every record the stages before emitted
    if ctx.cfg.escalation.enabled:
        stages.append(build_gate(ctx))
    return stages


def build_record_stages(cfg: Config, pseudonymizer: Pseudonymizer) -> list[Stage]:
    """The stages that need only records, no flow hooks: the detectors (if enabled)."""
    if not cfg.detect.enabled:
        return []
    from trafficguard.detect.stage import DetectStage  # noqa: PLC0415

    return [
        DetectStage(cfg.detect, pseudonymizer, home_networks_known=bool(cfg.home_networks))
    ]


# -- outputs shared by ``replay`` and ``run`` ------------------------------------------------
@dataclass(frozen=True, slots=True)
class SinkOverrides:
    """Command-line overrides: ``--store``, ``--no-store``, ``--jsonl``, ``--ipfix``."""

    store: Path | None = None
    no_store: bool = False
    jsonl: str | None = None
    ipfix: str | None = None  # collector HOST:PORT

    def writes_store(self, cfg: Config) -> bool:
        """Whether the sinks include the SQLite store: ``--store``, or the configured one
        unless ``--no-store``."""
        return not self.no_store and (self.store is not None or cfg.store.sqlite.enabled)


def build_sinks(
    cfg: Config, overrides: SinkOverrides | None = None
) -> list[tuple[str, RecordSink]]:
    """Every configured record sink, named; the one place a new sink (IPFIX, ...) is added."""
    ov = overrides or SinkOverrides()
    sinks: list[tuple[str, RecordSink]] = []
    if ov.writes_store(cfg):
        sqlite_cfg = cfg.store.sqlite
        if ov.store is not None:
            sqlite_cfg = sqlite_cfg.model_copy(update={"path": ov.store})
        from trafficguard.sinks.sqlite import open_store  # noqa: PLC0415 (only when used)

        sinks.append(("sqlite", open_store(sqlite_cfg)))
    jsonl_path = ov.jsonl or (str(cfg.store.jsonl.path) if cfg.store.jsonl.enabled else None)
    if jsonl_path:
        from trafficguard.sinks.jsonl import JsonlSink  # noqa: PLC0415

        sinks.append(("jsonl", JsonlSink(jsonl_path)))
    ipfix_cfg = cfg.export.ipfix.with_collector(ov.ipfix) if ov.ipfix else cfg.export.ipfix
    if ipfix_cfg.enabled:
        from trafficguard.sinks.ipfix import IpfixExporter  # noqa: PLC0415

        sinks.append(("ipfix", IpfixExporter(ipfix_cfg)))
    return sinks


def build_purger(
    cfg: Config,
    sinks: Iterable[tuple[str, RecordSink]],
    keys: SensorKeys,
    clock: PurgeClock,
) -> StorePurger | None:
    """The retention purge of the SQLite store among ``sinks`` (None without one).

    Purges are audited (``retention.purged``) when ``escalation.enabled``, in the same
    audit log as the gate. ``clock``: ``wall`` for the daemon, ``packet`` for replay.
    """
    from trafficguard.sinks.sqlite import SqliteSink  # noqa: PLC0415 (only when used)

    store = next((s for _, s in sinks if isinstance(s, SqliteSink)), None)
    if store is None:
        return None
    from trafficguard.privacy.purger import StorePurger  # noqa: PLC0415 (only with a store)
    from trafficguard.privacy.retention import RetentionPolicy  # noqa: PLC0415

    opener: Callable[[], AuditLog] | None = None
    if cfg.escalation.enabled:

        def opener() -> AuditLog:
            return open_audit_log(cfg, keys)

    return StorePurger(
        store.path,
        RetentionPolicy.model_validate(cfg.privacy.retention.model_dump()),
        cfg.privacy.purge_interval_s,
        clock=clock,
        audit_opener=opener,
    )


def start_metrics(
    cfg: Config,
    snapshot: Callable[[], PipelineSnapshot],
    extra: Iterable[Callable[[], Iterable[Any]]] = (),
    listen: str | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` on ``listen`` (default ``metrics.listen``)."""
    from trafficguard.sinks.metrics import (  # noqa: PLC0415 (prometheus_client, http.server)
        build_registry,
        start_metrics_server,
    )

    mcfg = MetricsConfig(listen=listen) if listen else cfg.metrics
    host, port = mcfg.host_port
    server = start_metrics_server(host, port, build_registry(snapshot, extra))
    get_logger("trafficguard.metrics").info("metrics.listening", listen=f"{host}:{server.port}")
    return server
