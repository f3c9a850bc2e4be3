"""The detector interface: what every detector (network, VoIP, broadband) implements.

A detector reads *metadata records* — flow records, call and registration records — and
keeps bounded per-key state in packet time. When a rule holds it calls
``self.alerts.report(...)`` (or ``self.report_span(...)`` with its per-key state); the
:class:`~trafficguard.detect.alerts.AlertManager` turns repeated reports of one
``(detector, key)`` into one alert that opens, updates at most every ``update_interval_s``
and resolves after ``quiet_period_s`` without reports.

A detector overrides only the inputs it needs; :class:`~trafficguard.detect.stage.DetectStage`
dispatches each record kind only to the detectors that override its method, so an unused
input costs nothing. ``on_flow_start`` is the one packet-time event (a FlowHook on a flow's
first packet); the stage registers a flow hook only when some detector overrides it, since
any hook makes the flow table call Python for every packet.

Rules for implementers:

* state per key lives in a :class:`~trafficguard.detect.sketch.LruMap` (bounded, counted
  eviction) with windows in packet time (the record's own timestamps, never the wall clock);
* the ``key`` given to ``report`` may hold raw addresses — it is only hashed into the
  alert id; ``source``/``target`` are raw addresses (the manager pseudonymizes subscriber
  addresses) or pseudonyms already; ``evidence`` holds counts, rates, ratios, thresholds
  and closed-set tokens only — never payload, names, numbers or addresses;
* ``rule`` is the rule in words an analyst understands, with the thresholds it crossed;
* a detector whose ``on_flow`` acts on a few IP protocols only says so in ``flow_protos``,
  so the stage skips the call for every other flow record (likewise destination ports:
  ``flow_dst_ports``, ``flow_skip_dst_ports``); one whose ``on_flow`` cannot act at all
  under its configuration says so in ``takes_flows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.decode.packet import Packet
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.state import Flow
from trafficguard.voip.records import CallRecord, RegistrationRecord

if TYPE_CHECKING:
    from trafficguard.detect.alerts import AlertManager

NS_PER_S: Final = 1_000_000_000

SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
"""Closed set, in increasing order; an alert keeps the highest severity reported."""

Evidence = dict[str, int | float | str]
"""Metadata behind an alert: counts, rates, distinct counts, thresholds, closed tokens."""


class Subjects(Protocol):
    """What the detectors need of the pseudonymizer (detect may not import privacy)."""

    def address(self, ip: str) -> str:
        """Pseudonym for a subscriber address (inside home_networks), others unchanged."""
        ...

    def is_subscriber(self, ip: str) -> bool: ...


class Span(Protocol):
    """Per-key detector state: the packet-time span of the activity it counted."""

    @property
    def first_ns(self) -> int: ...

    @property
    def last_ns(self) -> int: ...


def never_subscriber(ip: str) -> bool:
    """``is_subscriber`` without home_networks: nobody is a subscriber."""
    return False


@dataclass(slots=True)
class DetectorEnv:
    """What a detector is built with besides its own config section."""

    alerts: AlertManager
    is_subscriber: Callable[[str], bool]  # inside home_networks (False for non-IP text)
    max_keys: int  # default bound of each per-key state map
    home_networks_known: bool = True  # False: no home_networks configured (all unknown)

    @property
    def no_subscribers(self) -> bool:
        """True when ``is_subscriber`` is :func:`never_subscriber` (False for every address):
        detectors that only act on subscribers can then never act."""
        return self.is_subscriber is never_subscriber


class Detector:
    """Base class of every detector; override the inputs you need (see module docstring)."""

    name: ClassVar[str] = "detector"  # closed-set token: alert.detector and metric label

    flow_protos: frozenset[int] | None = None
    """IP protocols whose flow records ``on_flow`` can act on (None: every protocol).

    A promise that ``on_flow`` returns at once, with no effect, for any other protocol:
    the stage then never calls it for those records. Set it only when that is so.
    """

    flow_dst_ports: frozenset[int] | None = None
    """Destination ports of the flow records ``on_flow`` can act on (None: every port)."""

    flow_skip_dst_ports: frozenset[int] = frozenset()
    """Destination ports of flow records ``on_flow`` never acts on (e.g. ignored ports).

    Both are promises like ``flow_protos``: the stage looks up the handlers of a flow
    record by protocol and destination port, so a detector that acts on a few ports (or
    ignores the busiest) is not called for the rest.
    """

    def __init__(self, env: DetectorEnv) -> None:
        self.env = env
        self.alerts = env.alerts

    def takes_flows(self) -> bool:
        """False when ``on_flow`` can have no effect at all with the current configuration
        and inputs (no subscribers known, an empty blocklist): the stage then leaves it out
        of flow dispatch, a call per flow record saved. Asked again after ``reload``."""
        return True

    # -- inputs (no-ops unless overridden; the stage dispatches only to overrides) --------
    def on_flow(self, rec: FlowRecord) -> None:
        """A flow record (final or interim; counters are deltas, see flow/records.py)."""

    def on_call(self, rec: CallRecord) -> None:
        """A finished call attempt from the VoIP stage."""

    def on_registration(self, rec: RegistrationRecord) -> None:
        """A finished registration attempt from the VoIP stage."""

    def on_dns_summary(self, rec: DnsSummaryRecord) -> None:
        """A DNS analyzer summary: one client under one registered domain per interval."""

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        """A flow's first packet (packet time). Keep it to a few integer operations."""

    # -- housekeeping ----------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """Packet-time tick: expire windows, evaluate time-based rules."""

    def reload(self) -> None:
        """Re-read external inputs (e.g. blocklist files); state stays."""

    # -- reporting ------------------------------------------------------------------------
    def report_span(
        self,
        key: str,
        span: Span,
        *,
        rule: str,
        severity: str,
        source: str = "",
        target: str = "",
        evidence: Evidence,
        since_ns: int | None = None,
        quiet_ns: int = 0,
    ) -> None:
        """``alerts.report`` under this detector's name for the activity ``span`` covers."""
        self.alerts.report(
            self.name,
            key,
            first_ns=span.first_ns,
            last_ns=span.last_ns,
            rule=rule,
            severity=severity,
            source=source,
            target=target,
            evidence=evidence,
            since_ns=since_ns,
            quiet_ns=quiet_ns,
        )

    def state_keys(self) -> int:
        """Keys held in per-key state (for metrics and the memory benchmark)."""
        return 0

    def evicted_keys(self) -> int:
        """Keys dropped by the state bound so far (counted, never silent)."""
        return 0


def overrides(detector: Detector, method: str) -> bool:
    """True if ``detector``'s class overrides ``Detector.<method>``."""
    return getattr(type(detector), method) is not getattr(Detector, method)
