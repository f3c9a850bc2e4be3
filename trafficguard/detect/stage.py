"""DetectStage: runs the detectors on the records of each round and emits alerts.

The stage is the ``Stage`` seam (``trafficguard/flow/hooks.py``) for detection: it hands
flow, call and registration records to the detectors that take them (dispatch by record
type, built once), ticks them in packet time, and returns the ``AlertRecord``s of its
:class:`AlertManager`. A flow hook (``on_flow_start`` only) is registered only when some
detector needs first-packet events. Metrics: ``trafficguard_alerts_total{detector,severity}``,
``trafficguard_alerts_active{detector}``, per-detector state size and evictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import NS_PER_S, DetectConfig
from trafficguard.decode.packet import Packet
from trafficguard.detect.alerts import AlertManager, AlertPolicy, AlertRecord, PrefixSet
from trafficguard.detect.base import Detector, DetectorEnv, Subjects, never_subscriber, overrides
from trafficguard.detect.catalog import build_detectors
from trafficguard.flow.hooks import HookHost
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.state import Flow
from trafficguard.voip.records import CallRecord, RegistrationRecord

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

DetectorFactory = Callable[[DetectConfig, DetectorEnv], list[Detector]]
Handler = Callable[[Any], None]
SUBSCRIBER_CACHE_SIZE = 65536
"""Addresses whose home-network membership is remembered (cleared when full)."""


class _FlowStartHook:
    """FlowHook forwarding only first packets (``on_packet`` is an empty method)."""

    __slots__ = ("_targets",)

    def __init__(self, targets: Sequence[Callable[[Packet, Flow], None]]) -> None:
        self._targets = tuple(targets)

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        for target in self._targets:
            target(pkt, flow)

    def wants_packets(self, pkt: Packet, flow: Flow) -> bool:
        """First packets only: on the compiled fast path no flow comes back for this hook."""
        return False

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        pass

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        pass


class DetectStage:
    """Detectors between the analyzers and the privacy edge (see module docstring)."""

    name = "detect"

    def __init__(
        self,
        cfg: DetectConfig,
        subjects: Subjects,
        factory: DetectorFactory = build_detectors,
        *,
        home_networks_known: bool = True,
    ) -> None:
        self.cfg = cfg
        self.subjects = subjects
        policy = AlertPolicy(
            update_interval_ns=int(cfg.alerts.update_interval_s * NS_PER_S),
            quiet_period_ns=int(cfg.alerts.quiet_period_s * NS_PER_S),
            max_active=cfg.alerts.max_active,
        )
        self.alerts = AlertManager(subjects, policy, PrefixSet(cfg.allowlist))
        env = DetectorEnv(
            alerts=self.alerts,
            # without home_networks nobody is a subscriber: no address text to parse
            is_subscriber=self._is_subscriber if home_networks_known else never_subscriber,
            max_keys=cfg.max_keys,
            home_networks_known=home_networks_known,
        )
        self.detectors_env = env
        self.detectors = factory(cfg, env)
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique: {names}")
        self._dispatch: dict[type[Any], tuple[Handler, ...]] = {
            FlowRecord: tuple(d.on_flow for d in self.detectors if overrides(d, "on_flow")),
            CallRecord: tuple(d.on_call for d in self.detectors if overrides(d, "on_call")),
            RegistrationRecord: tuple(
                d.on_registration for d in self.detectors if overrides(d, "on_registration")
            ),
            DnsSummaryRecord: tuple(
                d.on_dns_summary for d in self.detectors if overrides(d, "on_dns_summary")
            ),
        }
        self._flow_by_port, self._flow_by_proto, self._flow_other = _flow_handlers(
            self.detectors
        )
        self._flow_start = [
            d.on_flow_start for d in self.detectors if overrides(d, "on_flow_start")
        ]
        self.records_seen = 0
        self._due_tick_ns: int | None = None  # tick of this round, run after its records
        # Membership per address text: records repeat their endpoints, and parsing the
        # text is most of the cost. Bounded; holds the address text the detectors'
        # own state already keys on, nothing derived from keys.
        self._subscriber: dict[str, bool] = {}

    def _is_subscriber(self, ip: str) -> bool:
        known = self._subscriber.get(ip)
        if known is not None:
            return known
        try:
            result = self.subjects.is_subscriber(ip)
        except ValueError:
            result = False
        cache = self._subscriber
        if len(cache) >= SUBSCRIBER_CACHE_SIZE:
            cache.clear()
        cache[ip] = result
        return result

    # -- Stage protocol ---------------------------------------------------------------------
    def attach(self, host: HookHost) -> None:
        if self._flow_start:
            host.add_hook(_FlowStartHook(self._flow_start))

    def on_records(self, records: Sequence[Struct]) -> None:
        """Each record to the detectors that take it, record by record (order kept).

        Flow records, most of every round, go only to the detectors whose
        ``flow_protos`` hold the record's protocol and whose destination port filters
        let it through: a dict probe or two per record instead of a call per detector
        that would return at once.
        """
        dispatch = self._dispatch
        by_port = self._flow_by_port
        by_proto = self._flow_by_proto
        flow_other = self._flow_other
        flows_wanted = bool(dispatch[FlowRecord])
        seen = 0
        for rec in records:
            if type(rec) is FlowRecord:
                if not flows_wanted:
                    continue
                proto = rec.proto
                handlers = by_port.get(proto << 16 | rec.dst_port)
                if handlers is None:
                    handlers = by_proto.get(proto, flow_other)
            else:
                handlers = dispatch.get(type(rec), ())
                if not handlers:
                    continue
            seen += 1
            for handle in handlers:
                handle(rec)
        self.records_seen += seen

    def tick(self, now_ns: int) -> None:
        """Packet-time tick, deferred until this round's records are in.

        The pipeline ticks the stages *before* it routes the records the flow table
        emitted in the same round, and those carry earlier packet times (a flow ends at
        its last packet but is reported at the tick that closes it). Expiring windows or
        resolving alerts first would judge activity as quiet before its records were
        seen, so the tick runs in :meth:`take_records`, after :meth:`on_records`.
        """
        due = self._due_tick_ns
        self._due_tick_ns = now_ns if due is None else max(due, now_ns)

    def _run_tick(self) -> None:
        now_ns = self._due_tick_ns
        if now_ns is None:
            return
        self._due_tick_ns = None
        for d in self.detectors:
            d.tick(now_ns)
        self.alerts.tick(now_ns)

    def take_records(self) -> list[Struct]:
        self._run_tick()
        out: list[Struct] = list(self.alerts.take())
        return out

    def finish(self, now_ns: int) -> None:
        self._run_tick()
        for d in self.detectors:
            d.tick(now_ns)
        self.alerts.finish()

    def reload(self) -> None:
        """Re-read external inputs (blocklist files) of every detector; a detector may
        start or stop taking flows (``takes_flows``), so the flow tables are rebuilt."""
        for d in self.detectors:
            d.reload()
        self._flow_by_port, self._flow_by_proto, self._flow_other = _flow_handlers(
            self.detectors
        )

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 (scrape only)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        total = CounterMetricFamily(
            "trafficguard_alerts", "Alerts opened, by detector and severity",
            labels=["detector", "severity"],
        )  # fmt: skip
        for (detector, severity), n in sorted(self.alerts.opened.items()):
            total.add_metric([detector, severity], n)
        yield total
        active = GaugeMetricFamily(
            "trafficguard_alerts_active", "Alerts open now", labels=["detector"]
        )
        by_detector = self.alerts.active_by_detector()
        for d in self.detectors:
            active.add_metric([d.name], by_detector.get(d.name, 0))
        yield active
        suppressed = CounterMetricFamily(
            "trafficguard_alerts_suppressed", "Reports dropped by the allowlist",
            labels=["detector"],
        )  # fmt: skip
        for detector, n in sorted(self.alerts.suppressed.items()):
            suppressed.add_metric([detector], n)
        yield suppressed
        keys = GaugeMetricFamily(
            "trafficguard_detect_state_keys", "Keys held in detector state", labels=["detector"]
        )
        evicted = CounterMetricFamily(
            "trafficguard_detect_state_evicted", "Keys evicted from detector state (bound hit)",
            labels=["detector"],
        )  # fmt: skip
        for d in self.detectors:
            keys.add_metric([d.name], d.state_keys())
            evicted.add_metric([d.name], d.evicted_keys())
        yield keys
        yield evicted


def _flow_handlers(
    detectors: Sequence[Detector],
) -> tuple[dict[int, tuple[Handler, ...]], dict[int, tuple[Handler, ...]], tuple[Handler, ...]]:
    """``on_flow`` handlers, in detector order: per ``proto << 16 | dst_port`` for the
    protocols and ports some detector names (``flow_protos``, ``flow_dst_ports``,
    ``flow_skip_dst_ports``), per protocol for the other ports, and for every other
    protocol (the detectors without a protocol filter). Detectors whose ``takes_flows``
    is False are left out."""
    takers = [d for d in detectors if overrides(d, "on_flow") and d.takes_flows()]
    protos = sorted({p for d in takers if d.flow_protos is not None for p in d.flow_protos})
    ports = sorted(
        {p for d in takers for p in d.flow_dst_ports or ()}
        | {p for d in takers for p in d.flow_skip_dst_ports}
    )

    def on(proto: int, port: int | None) -> tuple[Handler, ...]:
        """The handlers for ``proto`` and ``port`` (None: a port no detector names)."""
        return tuple(
            d.on_flow
            for d in takers
            if (d.flow_protos is None or proto in d.flow_protos)
            and (d.flow_dst_ports is None or port in d.flow_dst_ports)
            and port not in d.flow_skip_dst_ports
        )

    by_port = {proto << 16 | port: on(proto, port) for proto in protos for port in ports}
    by_proto = {proto: on(proto, None) for proto in protos}
    other: tuple[Handler, ...] = tuple(d.on_flow for d in takers if d.flow_protos is None)
    return by_port, by_proto, other


def alerts_of(records: Iterable[Struct]) -> list[AlertRecord]:
    """The alert records among ``records`` (tests and tools)."""
    return [r for r in records if isinstance(r, AlertRecord)]
