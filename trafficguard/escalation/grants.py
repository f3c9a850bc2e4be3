"""Signed grants: the only documents that open content inspection.

A grant is a YAML file; its detached signatures live next to it in ``<stem>.sig``, a YAML
list of ``{authorizer: NAME, signature: BASE64}``. Each signature is Ed25519 over
``canonical_bytes(grant)``::

    b"trafficguard-grant-v1\\n" + JSON(validated grant, sorted keys, no spaces, UTF-8)

The JSON is made from the *validated* model (times normalised to UTC ``...Z``, targets to
canonical form), so reformatting the YAML does not break a signature but changing any
value does. ``GrantStore.load_dir`` checks each grant against the policy, the revocation
list and packet time; each rejection carries one reason from ``REJECT_REASONS``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trafficguard.config import format_validation_error
from trafficguard.errors import EscalationError
from trafficguard.escalation.audit import AuditLog
from trafficguard.escalation.names import REVOCATION_FILE as REVOCATION_FILE  # noqa: PLC0414
from trafficguard.escalation.policy import AutoRule, Policy, Purpose, Scope
from trafficguard.privacy.pseudonym import (
    IPAddress,
    Pseudonymizer,
    normalize_sip_uri,
    normalize_user,
)

NS_PER_S: Final = 1_000_000_000
CANONICAL_PREFIX: Final = b"trafficguard-grant-v1\n"

RejectReason = Literal[
    "bad_signature",
    "missing_signature",
    "unknown_authorizer",
    "too_few_approvers",
    "expired",
    "not_yet_valid",
    "scope_not_allowed",
    "duration_exceeds_policy",
    "budget_exceeds_policy",
    "revoked",
    "malformed",
]
REJECT_REASONS: Final[tuple[str, ...]] = get_args(RejectReason)
TargetKind = Literal["address", "prefix", "number", "sip_uri"]


class GrantError(EscalationError):
    """A grant, signature or revocation file cannot be read or written."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("needs a timezone, e.g. 2026-11-23T09:00:00Z")
    return value.astimezone(dt.UTC)


def to_ns(value: dt.datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (exact, no float)."""
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def from_ns(ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)


class Target(_Model):
    """Whom a grant is about; ``value`` is normalised at load."""

    kind: TargetKind
    value: str = Field(min_length=1, max_length=512)

    @field_validator("value")
    @classmethod
    def _normalise(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "address":
            return str(ipaddress.ip_address(v.strip()))
        if kind == "prefix":
            try:
                return str(ipaddress.ip_network(v.strip(), strict=True))
            except ValueError as err:
                raise ValueError(f"target prefix: {err}") from None
        if kind == "number":
            return normalize_user(v)
        if kind == "sip_uri":
            return normalize_sip_uri(v)
        return v  # kind itself failed validation and is reported


class Grant(_Model):
    """One grant document (what authorizers sign)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    purpose: Purpose
    target: Target
    scopes: tuple[Scope, ...] = Field(min_length=1)
    not_before: dt.datetime
    expires: dt.datetime
    byte_budget: int = Field(gt=0)
    case_reference: str = Field(min_length=1, max_length=200)
    created_by: str = Field(min_length=1, max_length=100)
    allow_reveal: bool = False

    @field_validator("not_before", "expires")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("scopes listed twice")
        return value

    @model_validator(mode="after")
    def _window(self) -> Grant:
        if self.expires <= self.not_before:
            raise ValueError("expires must be after not_before")
        return self

    @property
    def not_before_ns(self) -> int:
        return to_ns(self.not_before)

    @property
    def expires_ns(self) -> int:
        return to_ns(self.expires)

    @property
    def duration_s(self) -> float:
        return (self.expires - self.not_before).total_seconds()


def canonical_bytes(grant: Grant) -> bytes:
    """The exact bytes every signature covers (see module docstring)."""
    body = json.dumps(
        grant.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return CANONICAL_PREFIX + body.encode("utf-8")


@dataclass(frozen=True, slots=True)
class GrantSignature:
    authorizer: str
    signature: bytes


def sign_grant(grant: Grant, authorizer: str, private_key: Ed25519PrivateKey) -> GrantSignature:
    return GrantSignature(authorizer, private_key.sign(canonical_bytes(grant)))


def signature_path(grant_path: Path) -> Path:
    return grant_path.with_suffix(".sig")


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise GrantError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise GrantError(
            f"{path}: invalid YAML: {where}{getattr(err, 'problem', None) or err}"
        ) from None


def parse_grant(data: object, source: str = "<grant>") -> Grant:
    """Validate a parsed grant mapping; GrantError lists every problem with its key path."""
    if not isinstance(data, dict):
        raise GrantError(f"{source}: at $: a grant is a mapping")
    try:
        return Grant.model_validate(data)
    except ValidationError as err:
        lines = [line.replace(": Value error, ", ": ", 1) for line in format_validation_error(err)]
        raise GrantError(f"{source}: " + "; ".join(lines)) from None


def load_grant(path: str | Path) -> Grant:
    p = Path(path)
    return parse_grant(_read_yaml(p), str(p))


def load_signatures(grant_path: str | Path) -> list[GrantSignature]:
    """Signatures of a grant; an absent ``.sig`` file gives an empty list."""
    sig = signature_path(Path(grant_path))
    if not sig.exists():
        return []
    data = _read_yaml(sig)
    if data is None:
        return []
    if not isinstance(data, list):
        raise GrantError(f"{sig}: at $: must be a list of {{authorizer, signature}}")
    out = []
    for i, item in enumerate(data):
        if (
            not isinstance(item, dict)
            or set(item) != {"authorizer", "signature"}
            or not isinstance(item["authorizer"], str)
            or not isinstance(item["signature"], str)
        ):
            raise GrantError(f"{sig}: at $[{i}]: must be {{authorizer: NAME, signature: BASE64}}")
        try:
            raw = base64.b64decode(item["signature"], validate=True)
        except (binascii.Error, ValueError):
            raise GrantError(f"{sig}: at $[{i}].signature: not base64") from None
        out.append(GrantSignature(item["authorizer"], raw))
    return out


def write_signatures(grant_path: str | Path, signatures: Iterable[GrantSignature]) -> Path:
    sig = signature_path(Path(grant_path))
    doc = [
        {"authorizer": s.authorizer, "signature": base64.b64encode(s.signature).decode("ascii")}
        for s in signatures
    ]
    _atomic_write(sig, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    return sig


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- revocations


@dataclass(frozen=True, slots=True)
class Revocation:
    id: str
    reason: str
    revoked_at: dt.datetime


def load_revocations(path: str | Path) -> dict[str, Revocation]:
    """The revocation list; a missing file is empty, an unreadable one is an error.

    Revocation only narrows what is inspected, so the list is not signed.
    """
    p = Path(path)
    if not p.exists():
        return {}
    data = _read_yaml(p)
    if data is None:
        return {}
    if not isinstance(data, list):
        raise GrantError(f"{p}: at $: must be a list of {{id, reason, revoked_at}}")
    out: dict[str, Revocation] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise GrantError(f"{p}: at $[{i}]: needs id, reason, revoked_at")
        when = item.get("revoked_at")
        if isinstance(when, str):
            try:
                when = dt.datetime.fromisoformat(when)
            except ValueError:
                raise GrantError(f"{p}: at $[{i}].revoked_at: not an ISO time") from None
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            raise GrantError(f"{p}: at $[{i}].revoked_at: needs an ISO time with timezone")
        out[item["id"]] = Revocation(item["id"], str(item.get("reason", "")), when)
    return out


def append_revocation(
    path: str | Path, grant_id: str, reason: str, revoked_at: dt.datetime
) -> None:
    """Add one revocation (rewritten atomically; earlier entries kept)."""
    p = Path(path)
    existing = load_revocations(p)
    if grant_id in existing:
        raise GrantError(f"{p}: grant {grant_id} is already revoked")
    doc = [
        {"id": r.id, "reason": r.reason, "revoked_at": r.revoked_at.isoformat()}
        for r in existing.values()
    ]
    doc.append({"id": grant_id, "reason": reason, "revoked_at": _utc(revoked_at).isoformat()})
    _atomic_write(p, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class LoadedGrant:
    """A grant that passed every check, with the authorizers whose signatures counted."""

    grant: Grant
    approvers: tuple[str, ...]
    path: str = ""

    @property
    def id(self) -> str:
        return self.grant.id

    def active(self, now_ns: int) -> bool:
        return self.grant.not_before_ns <= now_ns < self.grant.expires_ns


@dataclass(frozen=True, slots=True)
class GrantRejection:
    path: str
    grant_id: str | None
    reason: RejectReason
    detail: str


def evaluate_grant(
    grant: Grant,
    signatures: Collection[GrantSignature],
    policy: Policy,
    now_ns: int,
    revoked: Collection[str] = (),
) -> tuple[RejectReason, str] | tuple[None, tuple[str, ...]]:
    """``(reason, detail)`` if rejected, else ``(None, approvers)``.

    Order: revocation, signatures (every one must be by a known authorizer and verify),
    approvers, policy limits, then time, so a grant that is both forged and expired is
    reported as forged.
    """
    if grant.id in revoked:
        return "revoked", "listed in the revocation list"
    if not signatures:
        return "missing_signature", "no signature file or it is empty"
    message = canonical_bytes(grant)
    valid: dict[str, tuple[str, ...]] = {}
    for s in signatures:
        auth = policy.authorizer(s.authorizer)
        if auth is None:
            return "unknown_authorizer", f"{s.authorizer!r} is not an authorizer in the policy"
        try:
            auth.key.verify(s.signature, message)
        except InvalidSignature:
            return "bad_signature", f"signature by {s.authorizer!r} does not verify"
        valid[auth.name] = auth.roles
    pp = policy.purposes.get(grant.purpose)
    if pp is None:
        return "scope_not_allowed", f"purpose {grant.purpose} is not allowed by the policy"
    counted = tuple(sorted(name for name, roles in valid.items() if set(roles) & set(pp.roles)))
    needed = policy.approvers_needed(grant.purpose)
    if len(counted) < needed:
        return "too_few_approvers", (
            f"{len(counted)} distinct authorizer(s) with a role allowed "
            f"for {grant.purpose}; {needed} required"
        )
    extra = sorted(set(grant.scopes) - set(pp.scopes))
    if extra:
        return "scope_not_allowed", f"scopes {', '.join(extra)} not allowed for {grant.purpose}"
    if grant.duration_s > pp.max_duration_s:
        return "duration_exceeds_policy", (
            f"{grant.duration_s:.0f} s > max_duration_s {pp.max_duration_s} for {grant.purpose}"
        )
    if grant.byte_budget > pp.max_bytes:
        return "budget_exceeds_policy", f"{grant.byte_budget} > max_bytes {pp.max_bytes}"
    if grant.allow_reveal and not pp.reveal_allowed:
        return "scope_not_allowed", f"allow_reveal is not allowed for {grant.purpose}"
    if now_ns < grant.not_before_ns:
        return "not_yet_valid", f"valid from {grant.not_before.isoformat()}"
    if now_ns >= grant.expires_ns:
        return "expired", f"expired at {grant.expires.isoformat()}"
    return None, counted


def check_grant_file(
    path: str | Path, policy: Policy, now_ns: int, revoked: Collection[str] = ()
) -> LoadedGrant | GrantRejection:
    """Load, verify and evaluate one grant file."""
    p = Path(path)
    try:
        grant = load_grant(p)
    except GrantError as err:
        return GrantRejection(str(p), None, "malformed", str(err))
    try:
        sigs = load_signatures(p)
    except GrantError as err:
        return GrantRejection(str(p), grant.id, "malformed", str(err))
    reason, info = evaluate_grant(grant, sigs, policy, now_ns, revoked)
    if reason is not None:
        return GrantRejection(str(p), grant.id, reason, str(info))
    return LoadedGrant(grant, info, str(p))  # type: ignore[arg-type]


# ---------------------------------------------------------------- target index


def grant_from_auto_rule(
    rule: AutoRule,
    source_ip: str,
    now_ns: int,
    alert_ref: str,
    pseudonymizer: Pseudonymizer | None = None,
) -> Grant:
    """An unsigned, policy-made grant for an auto-escalation rule.

    The target is the alert's *external* source; a subscriber address is refused, since
    an automatic rule must never open a subscriber's content.
    """
    addr = ipaddress.ip_address(source_ip)
    if pseudonymizer is not None and pseudonymizer.is_subscriber(addr):
        raise GrantError(f"auto rule {rule.name}: source is a subscriber address; not escalated")
    start = from_ns(now_ns)
    return Grant(
        id=f"auto-{rule.name}-{now_ns}"[:64],
        purpose=rule.purpose,
        target=Target(kind="address", value=str(addr)),
        scopes=rule.scopes,
        not_before=start,
        expires=start + dt.timedelta(seconds=rule.duration_s),
        byte_budget=rule.byte_budget,
        case_reference=alert_ref[:200] or "auto",
        created_by=f"auto:{rule.name}",
    )


def target_pseudonym(target: Target, pseudonymizer: Pseudonymizer) -> str:
    """How a target may appear in the audit log: pseudonymized, never in clear
    (external addresses stay in clear, as everywhere else)."""
    if target.kind == "address":
        return pseudonymizer.address(target.value)
    if target.kind == "prefix":
        return pseudonymizer.address_prefix(target.value)
    if target.kind == "number":
        return pseudonymizer.user(target.value)
    return pseudonymizer.token(target.value)


def _drop(
    table: dict[str, list[LoadedGrant]] | dict[int, list[LoadedGrant]], grant_id: str
) -> None:
    for key, grants in list(table.items()):
        kept = [g for g in grants if g.id != grant_id]
        if kept:
            table[key] = kept  # type: ignore[index]
        else:
            del table[key]  # type: ignore[arg-type]


@dataclass(slots=True)
class TargetIndex:
    """Grants by target. Address lookup is one dict probe per distinct prefix length in
    use (≤ 33 for IPv4, ≤ 129 for IPv6), independent of the number of grants; numbers,
    URIs and user pseudonyms are single dict probes. Matches are filtered by packet time
    and, if given, scope."""

    _nets: dict[int, dict[int, dict[int, list[LoadedGrant]]]] = field(default_factory=dict)
    _lens: dict[int, list[int]] = field(default_factory=dict)
    _numbers: dict[str, list[LoadedGrant]] = field(default_factory=dict)
    _uris: dict[str, list[LoadedGrant]] = field(default_factory=dict)
    _pseudonyms: dict[str, list[LoadedGrant]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, grants: Iterable[LoadedGrant], pseudonymizer: Pseudonymizer | None = None
    ) -> TargetIndex:
        idx = cls()
        for g in grants:
            idx.add(g, pseudonymizer)
        return idx

    def add(self, g: LoadedGrant, pseudonymizer: Pseudonymizer | None = None) -> None:
        t = g.grant.target
        if t.kind in ("address", "prefix"):
            net = ipaddress.ip_network(t.value)
            bits = net.max_prefixlen
            by_len = self._nets.setdefault(net.version, {})
            bucket = by_len.setdefault(net.prefixlen, {})
            bucket.setdefault(int(net.network_address) >> (bits - net.prefixlen), []).append(g)
            self._lens[net.version] = sorted(by_len)
        elif t.kind == "number":
            self._numbers.setdefault(t.value, []).append(g)
            if pseudonymizer is not None:
                self._pseudonyms.setdefault(pseudonymizer.user(t.value), []).append(g)
        else:
            self._uris.setdefault(t.value, []).append(g)

    def remove(self, grant_id: str) -> None:
        tables: list[dict[str, list[LoadedGrant]] | dict[int, list[LoadedGrant]]] = [
            self._numbers,
            self._uris,
            self._pseudonyms,
        ]
        tables.extend(b for v in self._nets.values() for b in v.values())
        for table in tables:
            _drop(table, grant_id)

    @staticmethod
    def _live(found: Iterable[LoadedGrant], now_ns: int, scope: str | None) -> list[LoadedGrant]:
        return [g for g in found if g.active(now_ns) and (scope is None or scope in g.grant.scopes)]

    def match_address(
        self, ip: str | IPAddress, now_ns: int, scope: str | None = None
    ) -> list[LoadedGrant]:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        by_len = self._nets.get(addr.version)
        if not by_len:
            return []
        value = int(addr)
        bits = 32 if addr.version == 4 else 128
        found: list[LoadedGrant] = []
        for plen in self._lens[addr.version]:
            hit = by_len[plen].get(value >> (bits - plen))
            if hit:
                found.extend(hit)
        return self._live(found, now_ns, scope)

    def match_number(self, value: str, now_ns: int, scope: str | None = None) -> list[LoadedGrant]:
        try:
            key = normalize_user(value)
        except ValueError:
            return []
        return self._live(self._numbers.get(key, ()), now_ns, scope)

    def match_sip_uri(self, uri: str, now_ns: int, scope: str | None = None) -> list[LoadedGrant]:
        try:
            key = normalize_sip_uri(uri)
        except ValueError:
            return []
        return self._live(self._uris.get(key, ()), now_ns, scope)

    def match_user_pseudonym(
        self, pseudonym: str, now_ns: int, scope: str | None = None
    ) -> list[LoadedGrant]:
        return self._live(self._pseudonyms.get(pseudonym, ()), now_ns, scope)


class GrantStore:
    """Accepted grants, rejections and the target index of one grants directory."""

    def __init__(
        self,
        accepted: Iterable[LoadedGrant],
        rejected: Iterable[GrantRejection] = (),
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.accepted: dict[str, LoadedGrant] = {g.id: g for g in accepted}
        self.rejected: list[GrantRejection] = list(rejected)
        self._pseudonymizer = pseudonymizer
        self.index = TargetIndex.build(self.accepted.values(), pseudonymizer)

    @classmethod
    def load_dir(
        cls,
        directory: str | Path,
        policy: Policy,
        now_ns: int,
        revoked: Collection[str] | Mapping[str, Revocation] | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> GrantStore:
        """Check every ``*.yaml``/``*.yml`` grant in ``directory`` (not ``revoked.yaml``).

        ``revoked`` defaults to ``<directory>/revoked.yaml``. Two files with one grant id
        both get rejected as malformed: which one is meant cannot be told.
        """
        d = Path(directory)
        if not d.is_dir():
            raise GrantError(f"{d}: grants directory does not exist")
        revoked_ids = set(load_revocations(d / REVOCATION_FILE) if revoked is None else revoked)
        results = [
            check_grant_file(p, policy, now_ns, revoked_ids)
            for p in sorted(d.iterdir())
            if p.suffix in (".yaml", ".yml") and p.name != REVOCATION_FILE and p.is_file()
        ]
        ids: dict[str, int] = {}
        for r in results:
            gid = r.id if isinstance(r, LoadedGrant) else r.grant_id
            if gid is not None:
                ids[gid] = ids.get(gid, 0) + 1
        accepted: list[LoadedGrant] = []
        rejected: list[GrantRejection] = []
        for r in results:
            if isinstance(r, LoadedGrant) and ids[r.id] > 1:
                rejected.append(
                    GrantRejection(r.path, r.id, "malformed", "grant id used by more than one file")
                )
            elif isinstance(r, LoadedGrant):
                accepted.append(r)
            else:
                rejected.append(r)
        return cls(accepted, rejected, pseudonymizer)

    def add(self, g: LoadedGrant) -> None:
        """Add an accepted grant (e.g. from an auto-escalation rule)."""
        self.accepted[g.id] = g
        self.index.add(g, self._pseudonymizer)

    def revoke(self, grant_id: str) -> LoadedGrant | None:
        g = self.accepted.pop(grant_id, None)
        if g is not None:
            self.index.remove(grant_id)
        return g

    def expire(self, now_ns: int) -> list[LoadedGrant]:
        """Remove and return grants whose expiry has passed (audit ``grant.expired``)."""
        gone = [g for g in self.accepted.values() if now_ns >= g.grant.expires_ns]
        for g in gone:
            self.revoke(g.id)
        return gone

    def active(self, now_ns: int) -> list[LoadedGrant]:
        return [g for g in self.accepted.values() if g.active(now_ns)]


def audit_load(
    store: GrantStore, audit: AuditLog, now_ns: int, pseudonymizer: Pseudonymizer
) -> None:
    """Write ``grant.loaded`` / ``grant.rejected`` for a (re)load, targets pseudonymized.

    Raises AuditWriteError like any append: the caller must then not activate grants.
    """
    for g in sorted(store.accepted.values(), key=lambda x: x.id):
        gr = g.grant
        audit.append(
            "grant.loaded",
            now_ns,
            {
                "grant": gr.id,
                "purpose": gr.purpose,
                "target_kind": gr.target.kind,
                "target": target_pseudonym(gr.target, pseudonymizer),
                "scopes": [str(s) for s in gr.scopes],
                "not_before_ns": gr.not_before_ns,
                "expires_ns": gr.expires_ns,
                "byte_budget": gr.byte_budget,
                "case_reference": gr.case_reference,
                "approvers": list(g.approvers),
            },
        )
    for r in store.rejected:
        audit.append(
            "grant.rejected",
            now_ns,
            {"grant": r.grant_id, "file": Path(r.path).name, "reason": r.reason},
        )
