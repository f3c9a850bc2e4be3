"""Alerts: the record every detector produces, and the manager that deduplicates them.

One alert stands for one ongoing activity of one ``(detector, key)``: the first report
*opens* it (``seq`` 0), later reports fold into it and emit an *updated* record at most
every ``update_interval_s`` of packet time, and ``quiet_period_s`` without a report
*resolves* it (``close_reason`` "quiet"; "flush" when the pipeline ends with it open).
The ``alert_id`` is derived from detector, key and first-seen time, so replays give the
same ids. Records are stored with primary key ``(alert_id, seq)``, so no two records of
different content may ever share it.

Quietness is judged in packet time of the *activity*, not by the order of ticks and
records: records of one pipeline round can carry packet times well before the round's
tick (a flow record is emitted when the flow ends or times out). A resolved alert is
remembered (bounded, ``max_active``): a later report whose activity lies within
``quiet_period_s`` of the alert's last activity *continues* it — same ``alert_id``, the
next ``seq``, status "updated" — because it is the same continuing activity; a report
after a real quiet period opens a *new occurrence* whose id also hashes an occurrence
counter, so a detector window that keeps its first-seen time never repeats an id.

Privacy: ``source``/``target`` are pseudonymized for subscriber addresses (inside
``home_networks``) and left in clear for external peers, so analysts can block attackers;
the key (which may hold addresses) is only hashed. ``evidence`` holds metadata only.
The escalation gate reads ``detector``, ``severity``, ``source`` and ``target``.
"""

# No `from __future__ import annotations`: the store reads these Structs' annotations at
# start-up (msgspec.structs.fields), and each string one costs a typing.ForwardRef compile.
import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec
import structlog

from trafficguard.detect.base import NS_PER_S, SEVERITIES, Evidence, Subjects

ALERT_STATUSES: Final = ("open", "updated", "resolved")
CLOSE_REASONS: Final = ("", "quiet", "flush")
_RANK: Final = {s: i for i, s in enumerate(SEVERITIES)}

Details = Callable[[], tuple[str, Evidence]]
"""A report's rule and evidence, made only when needed (see ``report_deferred``)."""


def _log() -> Any:
    """A fresh logger per event (alerts are rare): follows logging reconfiguration."""
    return structlog.get_logger("trafficguard.detect")


class AlertRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One state change of one alert (open, update, resolve)."""

    kind: ClassVar[str] = "alert"

    alert_id: str  # 16 hex chars: hash of detector, key and first_seen_ns
    seq: int  # 0 = open, +1 per later record of the same alert
    detector: str  # closed-set detector name, e.g. "syn_flood"
    rule: str  # the rule in words, with the thresholds it crossed
    severity: str  # one of SEVERITIES (the highest reported so far)
    status: str  # one of ALERT_STATUSES
    first_seen_ns: int  # packet time of the first activity behind the alert
    last_seen_ns: int  # packet time of the latest activity behind the alert
    source: str  # who did it: external address in clear, subscriber pseudonymized, "" = many
    target: str  # victim: subscriber pseudonymized (address or account), "" = many/none
    evidence: dict[str, int | float | str]  # counts, rates, distinct counts, thresholds
    close_reason: str = ""  # one of CLOSE_REASONS ("" until resolved)


def alert_id_of(detector: str, key: str, first_seen_ns: int, occurrence: int = 0) -> str:
    """Deterministic alert id (the key is hashed, never stored).

    ``occurrence`` counts earlier alerts of the same ``(detector, key)`` that were
    resolved before this one opened (0 for the first: the id of older releases).
    """
    data = f"{detector}\x00{key}\x00{first_seen_ns}".encode()
    if occurrence:
        data += f"\x00#{occurrence}".encode()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When to re-emit and when to resolve (packet time)."""

    update_interval_ns: int = 60 * NS_PER_S
    quiet_period_ns: int = 120 * NS_PER_S
    max_active: int = 100_000  # beyond it the least recently reported alert resolves early


class _Active:
    """An open alert: its current state and when it was last emitted."""

    __slots__ = (
        "alert_id",
        "details",
        "details_rule",
        "detector",
        "dirty",
        "evidence",
        "first_ns",
        "last_emit_ns",
        "last_ns",
        "occurrence",
        "quiet_ns",
        "rule",
        "seq",
        "severity",
        "source",
        "target",
    )

    def __init__(self, alert_id: str, detector: str, first_ns: int, occurrence: int = 0) -> None:
        self.alert_id = alert_id
        self.detector = detector
        self.occurrence = occurrence
        self.quiet_ns = 0  # 0 = the policy's quiet_period_ns
        self.first_ns = first_ns
        self.last_ns = first_ns
        self.last_emit_ns = first_ns
        self.seq = 0
        self.dirty = False
        self.severity = "info"
        self.rule = ""
        self.source = ""
        self.target = ""
        self.evidence: Evidence = {}
        # the latest report's rule and evidence while not made yet (report_deferred);
        # details_rule: whether its rule is the alert's rule (severity rank, see _fold)
        self.details: Details | None = None
        self.details_rule = False

    def settle(self) -> None:
        """Make the pending rule and evidence (before the alert is emitted or before a
        report of lower severity keeps the rule but replaces the evidence)."""
        details = self.details
        if details is not None:
            self.details = None
            rule, evidence = details()
            if self.details_rule:
                self.rule = rule
            self.evidence = evidence


class PrefixSet:
    """Addresses and prefixes (IPv4/IPv6) for allowlists; membership of a text address."""

    __slots__ = ("_nets",)

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        self._nets = tuple(ipaddress.ip_network(p, strict=False) for p in prefixes)

    def __contains__(self, addr: object) -> bool:
        if not self._nets or not isinstance(addr, str) or not addr:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def __len__(self) -> int:
        return len(self._nets)


def _looks_like_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class AlertManager:
    """Deduplicates reports into alerts; emits AlertRecords; counts them for metrics."""

    def __init__(
        self,
        subjects: Subjects,
        policy: AlertPolicy | None = None,
        allowlist: PrefixSet | None = None,
    ) -> None:
        self.subjects = subjects
        self.policy = policy or AlertPolicy()
        self.allowlist = allowlist or PrefixSet()
        self._active: dict[tuple[str, str], _Active] = {}
        # resolved alerts, oldest first (bounded by max_active): continued by a late
        # report of the same activity, or counted into the id of the next occurrence
        self._closed: dict[tuple[str, str], _Active] = {}
        self._out: list[AlertRecord] = []
        self.opened: dict[tuple[str, str], int] = {}  # (detector, severity) -> alerts opened
        self.suppressed: dict[str, int] = {}  # detector -> reports dropped by the allowlist
        self.resolved = 0

    # -- reports from detectors -------------------------------------------------------------
    def report(
        self,
        detector: str,
        key: str,
        *,
        first_ns: int,
        last_ns: int,
        rule: str,
        severity: str,
        source: str = "",
        target: str = "",
        evidence: Evidence,
        since_ns: int | None = None,
        quiet_ns: int = 0,
    ) -> None:
        """Open an alert for ``(detector, key)`` or fold this report into the open one.

        ``source``/``target``: raw addresses (pseudonymized here when they are
        subscribers), pseudonyms, or "" for many/none. ``since_ns``: when the activity
        this report adds began (e.g. the first packet of the flow behind it; default
        ``last_ns``) — a report whose activity began within ``quiet_period_s`` of a
        resolved alert's last activity continues that alert. ``quiet_ns``: a longer quiet
        period for this alert, for a detector that reports a continuing activity less
        often than ``quiet_period_s`` (e.g. a beacon every few minutes).
        """
        if severity not in _RANK:
            raise ValueError(f"unknown severity {severity!r}")
        ident = (detector, key)
        alert = self._active.get(ident)
        if alert is None:
            if source in self.allowlist:
                self.suppressed[detector] = self.suppressed.get(detector, 0) + 1
                return
            if len(self._active) >= self.policy.max_active:
                self._resolve(next(iter(self._active)), "flush")
            old = self._closed.pop(ident, None)
            began = max(first_ns, last_ns) if since_ns is None else since_ns
            if old is not None and began - old.last_ns < self._quiet(old, quiet_ns):
                # the same activity, reported after its alert was resolved (the records
                # arrived after the tick): continue that alert, never reuse its seqs
                self._active[ident] = old
                old.quiet_ns = quiet_ns
                self._fold(old, first_ns, last_ns, rule, severity, evidence)
                self._update(old)
                return
            occurrence = 0 if old is None else old.occurrence + 1
            alert = _Active(
                alert_id_of(detector, key, first_ns, occurrence), detector, first_ns, occurrence
            )
            alert.source = self._subject(source)
            alert.target = self._subject(target)
            alert.quiet_ns = quiet_ns
            alert.severity = severity
            alert.rule = rule
            alert.evidence = evidence
            alert.last_ns = max(first_ns, last_ns)
            alert.last_emit_ns = alert.last_ns
            self._active[ident] = alert
            tally = (detector, severity)
            self.opened[tally] = self.opened.get(tally, 0) + 1
            self._emit(alert, "open")
            _log().info(
                "alert.opened", detector=detector, severity=severity, alert_id=alert.alert_id
            )
            return
        self._refold(ident, alert, first_ns, last_ns, rule, severity, evidence, None, quiet_ns)

    def report_deferred(
        self,
        detector: str,
        key: str,
        *,
        details: Details,
        first_ns: int,
        last_ns: int,
        severity: str,
        source: str = "",
        target: str = "",
        since_ns: int | None = None,
        quiet_ns: int = 0,
    ) -> None:
        """:meth:`report` whose rule and evidence ``details()`` makes only when needed.

        A detector past its thresholds reports on every record, but an open alert only
        emits at most every ``update_interval_s`` and at its end: the text and dict of
        the reports in between are never read. ``details`` is called at once when the
        report opens an alert, otherwise when the alert's next record is emitted (or a
        later report needs its rule), so it must hold the values it formats, not read
        the detector's state that moves on. The records are those of :meth:`report`.
        """
        ident = (detector, key)
        alert = self._active.get(ident)
        if alert is None:
            rule, evidence = details()
            self.report(
                detector, key, first_ns=first_ns, last_ns=last_ns, rule=rule,
                severity=severity, source=source, target=target, evidence=evidence,
                since_ns=since_ns, quiet_ns=quiet_ns,
            )  # fmt: skip
            return
        if severity not in _RANK:
            raise ValueError(f"unknown severity {severity!r}")
        self._refold(ident, alert, first_ns, last_ns, "", severity, {}, details, quiet_ns)

    def _refold(
        self,
        ident: tuple[str, str],
        alert: _Active,
        first_ns: int,
        last_ns: int,
        rule: str,
        severity: str,
        evidence: Evidence,
        details: Details | None,
        quiet_ns: int,
    ) -> None:
        """A report into the open ``alert``; an update record if one is due."""
        # keep insertion order = least recently reported first (for max_active)
        del self._active[ident]
        self._active[ident] = alert
        alert.quiet_ns = quiet_ns
        self._fold(alert, first_ns, last_ns, rule, severity, evidence, details)
        if alert.last_ns - alert.last_emit_ns >= self.policy.update_interval_ns:
            self._update(alert)

    @staticmethod
    def _fold(
        alert: _Active,
        first_ns: int,
        last_ns: int,
        rule: str,
        severity: str,
        evidence: Evidence,
        details: Details | None = None,
    ) -> None:
        """Fold a report in: its severity if higher, its rule unless its severity is lower,
        its evidence always (``details``: rule and evidence not made yet)."""
        alert.last_ns = max(alert.last_ns, last_ns)
        alert.first_ns = min(alert.first_ns, first_ns)
        takes_rule = True
        if _RANK[severity] > _RANK[alert.severity]:
            alert.severity = severity
        elif _RANK[severity] < _RANK[alert.severity]:
            takes_rule = False
            alert.settle()  # the rule stays that of an earlier report: make it now
        if details is None:
            alert.details = None  # replaced: evidence always, the rule if taken
            if takes_rule:
                alert.rule = rule
            alert.evidence = evidence
        else:
            alert.details = details
            alert.details_rule = takes_rule
        alert.dirty = True

    def _quiet(self, alert: _Active, hint_ns: int = 0) -> int:
        return max(self.policy.quiet_period_ns, alert.quiet_ns, hint_ns)

    def _subject(self, value: str) -> str:
        if value and _looks_like_ip(value):
            return self.subjects.address(value)
        return value

    # -- time --------------------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """Emit due updates; resolve alerts quiet for ``quiet_period_s``."""
        every = self.policy.update_interval_ns
        for ident, alert in list(self._active.items()):
            if now_ns - alert.last_ns >= self._quiet(alert):
                self._resolve(ident, "quiet")
            elif alert.dirty and now_ns - alert.last_emit_ns >= every:
                self._update(alert)

    def finish(self) -> None:
        """End of input: every open alert resolves with close_reason "flush"."""
        for ident in list(self._active):
            self._resolve(ident, "flush")

    # -- records -----------------------------------------------------------------------------
    def _update(self, alert: _Active) -> None:
        alert.seq += 1
        alert.dirty = False
        alert.last_emit_ns = alert.last_ns
        self._emit(alert, "updated")
        _log().info(
            "alert.updated",
            detector=alert.detector,
            severity=alert.severity,
            alert_id=alert.alert_id,
        )

    def _resolve(self, ident: tuple[str, str], reason: str) -> None:
        alert = self._active.pop(ident)
        alert.seq += 1
        alert.dirty = False
        self.resolved += 1
        self._closed[ident] = alert
        while len(self._closed) > self.policy.max_active:
            del self._closed[next(iter(self._closed))]
        self._emit(alert, "resolved", reason)
        _log().info(
            "alert.resolved",
            detector=alert.detector,
            severity=alert.severity,
            alert_id=alert.alert_id,
            reason=reason,
        )

    def _emit(self, alert: _Active, status: str, close_reason: str = "") -> None:
        alert.settle()
        self._out.append(
            AlertRecord(
                alert_id=alert.alert_id,
                seq=alert.seq,
                detector=alert.detector,
                rule=alert.rule,
                severity=alert.severity,
                status=status,
                first_seen_ns=alert.first_ns,
                last_seen_ns=alert.last_ns,
                source=alert.source,
                target=alert.target,
                evidence=dict(alert.evidence),
                close_reason=close_reason,
            )
        )

    def take(self) -> list[AlertRecord]:
        out, self._out = self._out, []
        return out

    def active_by_detector(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for detector, _ in self._active:
            counts[detector] = counts.get(detector, 0) + 1
        return counts

    @property
    def active(self) -> int:
        return len(self._active)
