"""The escalation gate: the only stage that hands payload to content analyzers.

``GateStage`` is the last stage. It loads signed grants from the grants directory at
the first packet (grant validity is judged in packet time) and again every
``reload_interval_s`` of packet time or on ``reload()`` (SIGHUP); it opens
auto-escalations from alert records according to the policy's ``auto_rules``.

Per flow, not per packet: a new flow is matched once in ``on_flow_start`` against the
open escalations (``TargetIndex``: one dict probe per prefix length in use, numbers and
URIs one probe each). When the set of open escalations changes, flows already open are
matched again at their next packet, for one idle-timeout window. An unmatched flow
costs one dict lookup per packet, and nothing at all while no escalation is open.

A matched flow's packets go to the content analyzers of the escalation's scopes
(``analyzers/content_*.py``: dns, http, tls, sip, smtp) and to targeted capture
(``pcap``); their output goes only into the grant's sealed evidence store. Number and
SIP-URI targets match SIP flows message by message: the Request-URI/From/To users are
read transiently and compared with the index; nothing is kept unless one matches.

Fail closed: an escalation opens only after its ``grant.activated`` /
``escalation.opened`` audit entry is written and synced; if the audit log cannot be
opened or written, nothing is opened. Budget (evidence bytes) and expiry are in packet
time; reaching either closes the escalation with an audit entry
(``grant.exhausted`` / ``grant.expired`` / ``escalation.closed``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from msgspec import Struct

from trafficguard.analyzers import content_dns, content_http, content_sip, content_smtp, content_tls
from trafficguard.decode.packet import Packet
from trafficguard.escalation import pcapng
from trafficguard.escalation.audit import AuditLog, AuditWriteError
from trafficguard.escalation.evidence import (
    EvidenceError,
    EvidenceWriter,
    evidence_bytes_used,
    purge_expired,
)
from trafficguard.escalation.grants import (
    REVOCATION_FILE,
    GrantError,
    GrantStore,
    LoadedGrant,
    TargetIndex,
    grant_from_auto_rule,
    load_revocations,
    target_pseudonym,
)
from trafficguard.escalation.policy import Policy
from trafficguard.flow.hooks import HookHost
from trafficguard.flow.state import Flow
from trafficguard.privacy.pseudonym import Pseudonymizer

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

NS_PER_S: Final = 1_000_000_000
SIP_PORTS: Final = frozenset({5060, 5061, 5080})
TEXT_SCOPES: Final = ("dns", "http", "tls", "sip", "smtp")
CLOSE_REASONS: Final = ("expired", "exhausted", "revoked", "withdrawn", "evidence_error")
NEVER: Final = 1 << 62


@dataclass(slots=True, eq=False)
class Escalation:
    """One open escalation: a signed grant or an auto-escalation rule's grant."""

    loaded: LoadedGrant
    auto_rule: str | None = None  # rule name for auto-escalations
    source: str = ""  # the alert source an auto-escalation targets
    writer: EvidenceWriter | None = None
    open: bool = True
    items: int = 0
    pcap_started: bool = False  # this segment's pcapng header was written

    @property
    def id(self) -> str:
        return self.loaded.id


@dataclass(slots=True)
class _Watch:
    """Why a flow is watched: escalations matching its endpoints; SIP user matching."""

    escalations: list[Escalation] = field(default_factory=list)
    sip_users: bool = False


class GateStage:
    """See the module docstring. ``audit_opener`` opens the audit log (lazily, so an
    unwritable audit directory keeps content closed instead of stopping the sensor)."""

    name = "escalation_gate"

    def __init__(
        self,
        *,
        policy: Policy,
        grants_dir: Path,
        evidence_dir: Path,
        recipient: X25519PublicKey,
        pseudonymizer: Pseudonymizer,
        audit_opener: Callable[[], AuditLog],
        reload_interval_s: float = 60.0,
        rematch_window_s: float = 300.0,
        evidence_retention_s: int | None = None,
    ) -> None:
        self.policy = policy
        self.grants_dir = Path(grants_dir)
        self.evidence_dir = Path(evidence_dir)
        self._recipient = recipient
        self._pz = pseudonymizer
        self._audit_opener = audit_opener
        self._audit: AuditLog | None = None
        self._reload_ns = int(reload_interval_s * NS_PER_S)
        self._rematch_ns = int(rematch_window_s * NS_PER_S)
        self._evidence_retention_s = evidence_retention_s
        self._open: dict[str, Escalation] = {}
        self._auto_keys: dict[tuple[str, str], str] = {}  # (rule, source) -> grant id
        self._index = TargetIndex()
        self._by_id: dict[str, Escalation] = {}
        self._has_users = False
        self._watch: dict[Flow, _Watch] = {}
        self._checked: set[Flow] = set()
        self._rematch_until_ns = -1
        self._loaded = False
        self._reload_requested = False
        self._now_ns = 0
        self._next_reload_ns = NEVER
        self._next_expiry_ns = NEVER
        self._rejections: dict[tuple[str, str], str] = {}  # (file, reason) already audited
        self._loaded_ids: set[str] = set()
        # plain-int counters for metrics and tests
        self.flows_matched = 0
        self.items_written = 0
        self.bytes_written = 0
        self.audit_failures = 0
        self.escalations_opened = 0
        self.escalations_opened_by: dict[tuple[str, str], int] = {}  # (purpose, grant|auto)
        self.escalations_closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self.grants_rejected = 0

    # -- Stage -----------------------------------------------------------------------
    def attach(self, host: HookHost) -> None:
        host.add_hook(self)

    def on_records(self, records: Sequence[Struct]) -> None:
        rules = self.policy.auto_rules
        if not rules:
            return
        for rec in records:
            if getattr(type(rec), "kind", None) == "alert":
                self._on_alert(rec)

    def tick(self, now_ns: int) -> None:
        self._now_ns = max(self._now_ns, now_ns)
        if not self._loaded:
            return
        if self._reload_requested or now_ns >= self._next_reload_ns:
            self._load(now_ns, explicit=self._reload_requested)
        if now_ns >= self._next_expiry_ns:
            self._expire(now_ns)

    def take_records(self) -> list[Struct]:
        return []  # the gate's output goes only to the evidence store and the audit log

    def finish(self, now_ns: int) -> None:
        """End of input: close every open evidence segment (escalations stay valid)."""
        for esc in self._open.values():
            self._close_writer(esc, now_ns)
        if self._audit is not None:
            try:
                self._audit.close(now_ns)
            except AuditWriteError:
                self.audit_failures += 1
            self._audit = None

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 (scrape only)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        g = GaugeMetricFamily(
            "trafficguard_escalations_open", "Escalations (grants and auto rules) open now"
        )
        g.add_metric([], len(self._open))
        yield g
        o = CounterMetricFamily(
            "trafficguard_escalations_opened",
            "Escalations opened (audited first), by purpose and origin (grant or auto rule)",
            labels=["purpose", "origin"],
        )
        for (purpose, origin), n in sorted(self.escalations_opened_by.items()):
            o.add_metric([purpose, origin], n)
        yield o
        c = CounterMetricFamily(
            "trafficguard_escalation_flows_matched", "Flows matched to an open escalation"
        )
        c.add_metric([], self.flows_matched)
        yield c
        e = CounterMetricFamily(
            "trafficguard_evidence_bytes", "Payload bytes written to sealed evidence"
        )
        e.add_metric([], self.bytes_written)
        yield e
        a = CounterMetricFamily(
            "trafficguard_audit_write_failures",
            "Audit entries that could not be written (content stayed closed)",
        )
        a.add_metric([], self.audit_failures)
        yield a

    def reload(self) -> None:
        """Re-read grants and revocations at the next tick (SIGHUP); audited."""
        self._reload_requested = True

    @property
    def open_escalations(self) -> list[str]:
        return sorted(self._open)

    # -- flow hooks ------------------------------------------------------------------
    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        if not self._loaded:
            self._load(pkt.ts_ns, explicit=False)
        if not self._open:
            return
        if self._rematch_until_ns >= pkt.ts_ns:
            self._checked.add(flow)
        self._match(pkt, flow)

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        w = self._watch.get(flow)
        if w is None:
            if self._rematch_until_ns < pkt.ts_ns or flow in self._checked:
                return
            self._checked.add(flow)
            w = self._match(pkt, flow)
            if w is None:
                return
        if pkt.payload_len or "pcap" in self._scopes_of(w):
            self._inspect(pkt, w)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        self._watch.pop(flow, None)
        self._checked.discard(flow)

    # -- matching --------------------------------------------------------------------
    def _match(self, pkt: Packet, flow: Flow) -> _Watch | None:
        now = pkt.ts_ns
        found: list[Escalation] = []
        by_id = self._by_id
        for raw in (pkt.src, pkt.dst):
            for g in self._index.match_address(ipaddress.ip_address(raw), now):
                esc = by_id.get(g.id)
                if esc is not None and esc.open and esc not in found:
                    found.append(esc)
        sip = self._has_users and (
            pkt.sport in SIP_PORTS
            or pkt.dport in SIP_PORTS
            or content_sip.is_sip(pkt.data[pkt.payload_off : pkt.payload_off + 16])
        )
        if not found and not sip:
            return None
        w = _Watch(found, sip)
        self._watch[flow] = w
        if found:
            self.flows_matched += 1
        return w

    @staticmethod
    def _scopes_of(w: _Watch) -> set[str]:
        return {s for e in w.escalations if e.open for s in e.loaded.grant.scopes}

    def _user_escalations(self, payload: bytes, now: int) -> list[Escalation]:
        out: list[Escalation] = []
        idx = self._index
        for uri in content_sip.uris(payload):
            hits = idx.match_sip_uri(uri, now) + idx.match_number(uri, now)
            for g in hits:
                esc = self._by_id.get(g.id)
                if esc is not None and esc.open and esc not in out:
                    out.append(esc)
        return out

    def _inspect(self, pkt: Packet, w: _Watch) -> None:
        now = pkt.ts_ns
        off = pkt.payload_off
        payload = pkt.data[off : off + pkt.payload_len]
        # per escalation: the scopes that apply to this packet
        plan: list[tuple[Escalation, tuple[str, ...]]] = (
            [(e, e.loaded.grant.scopes) for e in w.escalations if e.open and e.loaded.active(now)]
            if w.escalations
            else []
        )
        if w.sip_users and payload:
            for e in self._user_escalations(payload, now):
                if all(e is not p[0] for p in plan):
                    plan.append(
                        (e, tuple(s for s in e.loaded.grant.scopes if s in ("sip", "pcap")))
                    )
        if not plan:
            return
        texts: dict[str, bytes | None] = {}
        for esc, scopes in plan:
            for scope in scopes:
                if scope == "pcap":
                    ip = pcapng.ip_bytes(pkt.data, off, pkt.payload_len, pkt.ip_len)
                    if ip is not None:
                        self._write(esc, "pcap", now, pcapng.packet(now, ip))
                    continue
                if scope not in texts:
                    texts[scope] = _extract(scope, payload, pkt) if payload else None
                content = texts[scope]
                if content is not None:
                    self._write(esc, scope, now, _item(pkt, content))
                if not esc.open:
                    break

    def _write(self, esc: Escalation, kind: str, now: int, data: bytes) -> None:
        if not esc.open:
            return
        if esc.writer is None:
            try:
                used = evidence_bytes_used(self.evidence_dir, esc.id)
                esc.writer = EvidenceWriter(
                    self.evidence_dir,
                    esc.loaded.grant,
                    self._recipient,
                    now_ns=now,
                    bytes_used=used,
                    audit=self._audit,
                )
            except (EvidenceError, OSError):
                self._close(esc, now, "evidence_error")
                return
            esc.pcap_started = False
        if kind == "pcap" and not esc.pcap_started:
            data = pcapng.header() + data
            esc.pcap_started = True
        try:
            result = esc.writer.write(kind, now, data)
        except AuditWriteError:
            self.audit_failures += 1
            self._close(esc, now, "exhausted", audited=True)
            return
        except (EvidenceError, ValueError):
            self._close(esc, now, "evidence_error")
            return
        if result.bytes_counted:
            esc.items += 1
            self.items_written += 1
            self.bytes_written += result.bytes_counted
        if result.exhausted:
            # the writer audited grant.exhausted itself if it refused an item
            self._close(esc, now, "exhausted", audited=result.bytes_counted == 0)

    # -- opening and closing ---------------------------------------------------------
    def _audit_log(self) -> AuditLog:
        if self._audit is None:
            try:
                self._audit = self._audit_opener()
            except (AuditWriteError, OSError) as err:
                raise AuditWriteError(str(err)) from None
        return self._audit

    def _append(self, event: str, now: int, details: dict[str, object]) -> bool:
        """Write one audit entry; False (and counted) if it could not be written."""
        try:
            self._audit_log().append(event, now, details)  # type: ignore[arg-type]
        except AuditWriteError:
            self.audit_failures += 1
            return False
        return True

    def _activate(self, esc: Escalation, now: int) -> None:
        """Open content for one escalation: only after its audit entry is synced."""
        g = esc.loaded.grant
        details: dict[str, object] = {
            "grant": g.id,
            "purpose": g.purpose,
            "target_kind": g.target.kind,
            "target": target_pseudonym(g.target, self._pz),
            "scopes": [str(s) for s in g.scopes],
            "expires_ns": g.expires_ns,
            "byte_budget": g.byte_budget,
        }
        if esc.auto_rule is not None:
            details["rule"] = esc.auto_rule
            event = "escalation.opened"
        else:
            details["approvers"] = list(esc.loaded.approvers)
            event = "grant.activated"
        if not self._append(event, now, details):
            return  # fail closed: nothing is inspected for it
        self._open[esc.id] = esc
        self._by_id[esc.id] = esc
        self._index.add(esc.loaded, self._pz)
        self._changed(now)
        self.escalations_opened += 1
        key = (g.purpose, "auto" if esc.auto_rule is not None else "grant")
        self.escalations_opened_by[key] = self.escalations_opened_by.get(key, 0) + 1

    def _changed(self, now: int) -> None:
        self._has_users = any(
            e.loaded.grant.target.kind in ("number", "sip_uri") for e in self._open.values()
        )
        self._next_expiry_ns = min(
            (e.loaded.grant.expires_ns for e in self._open.values()), default=NEVER
        )
        self._checked.clear()
        self._rematch_until_ns = now + self._rematch_ns

    def _close_writer(self, esc: Escalation, now: int) -> None:
        if esc.writer is not None:
            try:
                esc.writer.close(now)
            except AuditWriteError:
                self.audit_failures += 1
            except EvidenceError:
                pass
            esc.writer = None

    def _close(self, esc: Escalation, now: int, reason: str, *, audited: bool = False) -> None:
        if not esc.open:
            return
        esc.open = False
        self._open.pop(esc.id, None)
        self._by_id.pop(esc.id, None)
        self._index.remove(esc.id)
        if esc.auto_rule is not None:
            self._auto_keys.pop((esc.auto_rule, esc.source), None)
        self._close_writer(esc, now)
        if not audited:
            g = esc.loaded.grant
            if esc.auto_rule is not None:
                self._append(
                    "escalation.closed",
                    now,
                    {"grant": g.id, "rule": esc.auto_rule, "reason": reason, "items": esc.items},
                )
            elif reason in ("expired", "revoked", "exhausted"):
                self._append(f"grant.{reason}", now, {"grant": g.id, "items": esc.items})
            else:
                self._append(
                    "escalation.closed", now, {"grant": g.id, "reason": reason, "items": esc.items}
                )
        self.escalations_closed[reason] = self.escalations_closed.get(reason, 0) + 1
        self._changed(now)
        # flows watched only for this escalation stop costing anything
        for flow, w in list(self._watch.items()):
            if esc in w.escalations:
                w.escalations.remove(esc)
                if not w.escalations and not (w.sip_users and self._has_users):
                    del self._watch[flow]

    def _expire(self, now: int) -> None:
        for esc in [e for e in self._open.values() if now >= e.loaded.grant.expires_ns]:
            self._close(esc, now, "expired")

    def _purge_evidence(self, now: int) -> None:
        """Evidence past its grant's expiry + retention is deleted (audited first)."""
        if self._evidence_retention_s is None or not self.evidence_dir.is_dir():
            return
        try:
            purge_expired(
                self.evidence_dir,
                [e.loaded.grant for e in self._open.values()],
                self._evidence_retention_s,
                now,
                self._audit_log(),
            )
        except (AuditWriteError, EvidenceError, OSError):
            self.audit_failures += 1

    # -- grants ----------------------------------------------------------------------
    def _load(self, now: int, *, explicit: bool) -> None:
        """Read the grants dir; audit new rejections, load and activate new grants,
        close grants that were revoked or removed."""
        self._loaded = True
        self._reload_requested = False
        self._next_reload_ns = now + self._reload_ns
        self._now_ns = max(self._now_ns, now)
        if explicit:
            self._append("config.reloaded", now, {"what": "grants"})
        self._purge_evidence(now)
        d = self.grants_dir
        if not d.is_dir():
            store = GrantStore([], [], self._pz)
            revoked: set[str] = set()
        else:
            try:
                revoked = set(load_revocations(d / REVOCATION_FILE))
                store = GrantStore.load_dir(d, self.policy, now, revoked, self._pz)
            except GrantError as err:
                # an unreadable revocation list: keep nothing open that it might revoke
                self._append(
                    "grant.rejected",
                    now,
                    {"grant": None, "file": REVOCATION_FILE, "reason": "malformed",
                     "detail": str(err)[:200]},
                )  # fmt: skip
                for esc in [e for e in self._open.values() if e.auto_rule is None]:
                    self._close(esc, now, "revoked")
                return
        for r in store.rejected:
            key = (Path(r.path).name, r.reason)
            if key in self._rejections:
                continue
            if self._append(
                "grant.rejected",
                now,
                {"grant": r.grant_id, "file": key[0], "reason": r.reason,
                 "detail": r.detail[:200]},
            ):  # fmt: skip
                self._rejections[key] = r.reason
                self.grants_rejected += 1
        for esc in [e for e in self._open.values() if e.auto_rule is None]:
            if esc.id not in store.accepted:
                self._close(esc, now, "revoked" if esc.id in revoked else "withdrawn")
        for gid in sorted(store.accepted):
            if gid in self._open:
                continue
            lg = store.accepted[gid]
            if gid not in self._loaded_ids:
                g = lg.grant
                if not self._append(
                    "grant.loaded",
                    now,
                    {"grant": gid, "purpose": g.purpose, "target_kind": g.target.kind,
                     "target": target_pseudonym(g.target, self._pz),
                     "scopes": [str(s) for s in g.scopes], "not_before_ns": g.not_before_ns,
                     "expires_ns": g.expires_ns, "byte_budget": g.byte_budget,
                     "case_reference": g.case_reference, "approvers": list(lg.approvers)},
                ):  # fmt: skip
                    continue
                self._loaded_ids.add(gid)
            self._activate(Escalation(lg), now)

    # -- auto-escalation -------------------------------------------------------------
    def _on_alert(self, rec: Struct) -> None:
        detector = getattr(rec, "detector", None)
        severity = getattr(rec, "severity", None)
        source = getattr(rec, "source", None)
        if not isinstance(detector, str) or not isinstance(severity, str):
            return
        if not isinstance(source, str) or not source:
            return
        # the packet time of the activity behind the alert (AlertRecord.last_seen_ns)
        ts = getattr(rec, "last_seen_ns", None)
        now = ts if isinstance(ts, int) and ts > 0 else self._now_ns
        for rule in self.policy.auto_rules_for(detector, severity):
            if rule.purpose == "legal_process":
                continue  # policy load refuses this already; never automatic
            key = (rule.name, source)
            if key in self._auto_keys:
                continue
            try:
                grant = grant_from_auto_rule(rule, source, now, f"alert:{detector}", self._pz)
            except (GrantError, ValueError):
                continue  # a subscriber or non-address source is never auto-escalated
            esc = Escalation(LoadedGrant(grant, (f"auto:{rule.name}",)), rule.name, source)
            self._activate(esc, now)
            if esc.id in self._open:
                self._auto_keys[key] = esc.id


def _extract(scope: str, payload: bytes, pkt: Packet) -> bytes | None:
    if scope == "dns":
        return content_dns.extract(payload, pkt.sport, pkt.dport, pkt.proto)
    if scope == "http":
        return content_http.extract(payload)
    if scope == "tls":
        return content_tls.extract(payload)
    if scope == "sip":
        return content_sip.extract(payload)
    if scope == "smtp":
        return content_smtp.extract(payload)
    return None


def _endpoint(raw: bytes, port: int) -> str:
    addr = ipaddress.ip_address(raw)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _item(pkt: Packet, content: bytes) -> bytes:
    """One evidence item: the flow's endpoints (in clear: this is sealed evidence) and the
    extracted content."""
    head = json.dumps(
        {
            "src": _endpoint(pkt.src, pkt.sport),
            "dst": _endpoint(pkt.dst, pkt.dport),
            "proto": pkt.proto,
        },
        separators=(",", ":"),
    ).encode("ascii")
    return head + b"\n" + content
