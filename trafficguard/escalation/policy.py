"""Escalation policy: who may authorize content inspection, for what, how much, how long.

Loaded once from ``config/policy.yaml`` into frozen models; authorizer keys are parsed at
load so a bad key stops start-up with the file, key path and reason (``PolicyError``).
A purpose not listed is not allowed. Auto-escalation rules are rejected for
``legal_process`` and for purposes without ``automatic_allowed``: only the operator's
policy and signed grants open content, never something seen on the wire.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trafficguard.config import format_validation_error
from trafficguard.errors import ConfigError

# defined in an import-light module for the CLI parsers; re-exported here
from trafficguard.escalation.names import PURPOSES as PURPOSES  # noqa: PLC0414
from trafficguard.escalation.names import SCOPES as SCOPES  # noqa: PLC0414
from trafficguard.escalation.names import Purpose as Purpose  # noqa: PLC0414
from trafficguard.escalation.names import Scope as Scope  # noqa: PLC0414

Severity = Literal["low", "medium", "high", "critical"]

SEVERITY_RANK: Final = {name: i for i, name in enumerate(get_args(Severity))}
LEGAL_PROCESS_MIN_APPROVERS: Final = 2


class PolicyError(ConfigError):
    """The policy file is missing, unparsable or invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_ed25519_public_key(text: str) -> Ed25519PublicKey:
    """A public key as PEM (SubjectPublicKeyInfo) or base64 of the 32 raw bytes."""
    t = text.strip()
    if t.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(t.encode("ascii"))
        except ValueError:
            raise ValueError("not a valid PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("PEM key is not Ed25519")
        return key
    try:
        raw = base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 or PEM") from None
    if len(raw) != 32:
        raise ValueError("a raw Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


class Authorizer(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    public_key: str = Field(description="Ed25519: PEM, or base64 of the 32 raw bytes")
    roles: tuple[str, ...] = Field(min_length=1)

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        parse_ed25519_public_key(value)
        return value

    @property
    def key(self) -> Ed25519PublicKey:
        return parse_ed25519_public_key(self.public_key)


class PurposePolicy(_Model):
    scopes: tuple[Scope, ...] = Field(min_length=1)
    max_duration_s: int = Field(gt=0)
    max_bytes: int = Field(gt=0, description="largest byte budget a grant may carry")
    required_approvers: int | None = Field(
        None, ge=1, le=10, description="distinct signers; default 1, legal_process 2"
    )
    roles: tuple[str, ...] = Field(min_length=1, description="signers need one of these roles")
    automatic_allowed: bool = False
    reveal_allowed: bool = Field(False, description="grants may re-identify their own target")


class AutoRule(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    detector: str = Field(min_length=1)
    min_severity: Severity
    purpose: Purpose
    scopes: tuple[Scope, ...] = Field(min_length=1)
    duration_s: int = Field(gt=0)
    byte_budget: int = Field(gt=0)


class Policy(_Model):
    """The whole ``policy.yaml``."""

    authorizers: tuple[Authorizer, ...] = ()
    purposes: dict[Purpose, PurposePolicy] = {}
    auto_rules: tuple[AutoRule, ...] = ()

    def approvers_needed(self, purpose: str) -> int:
        pp = self.purposes[purpose]  # type: ignore[index]
        if pp.required_approvers is not None:
            return pp.required_approvers
        return LEGAL_PROCESS_MIN_APPROVERS if purpose == "legal_process" else 1

    def authorizer(self, name: str) -> Authorizer | None:
        for a in self.authorizers:
            if a.name == name:
                return a
        return None

    def auto_rules_for(self, detector: str, severity: str) -> list[AutoRule]:
        """Rules a detector's alert of this severity triggers (``severity`` from Severity)."""
        rank = SEVERITY_RANK.get(severity, -1)
        return [
            r
            for r in self.auto_rules
            if r.detector == detector and rank >= SEVERITY_RANK[r.min_severity]
        ]


def _cross_check(policy: Policy) -> list[str]:
    """Rules spanning sections, each naming the key path it is about."""
    problems: list[str] = []
    names: dict[str, int] = {}
    keys: dict[bytes, str] = {}
    for i, a in enumerate(policy.authorizers):
        if a.name in names:
            problems.append(
                f"at $.authorizers[{i}].name: {a.name!r} already used at "
                f"$.authorizers[{names[a.name]}]"
            )
        names.setdefault(a.name, i)
        raw = a.key.public_bytes_raw()
        if raw in keys:
            # one key under two names would let one person count as two approvers
            problems.append(
                f"at $.authorizers[{i}].public_key: same key as authorizer {keys[raw]!r}"
            )
        keys.setdefault(raw, a.name)
    lp = policy.purposes.get("legal_process")
    if (
        lp is not None
        and lp.required_approvers is not None
        and lp.required_approvers < LEGAL_PROCESS_MIN_APPROVERS
    ):
        problems.append(
            "at $.purposes.legal_process.required_approvers: must be at least "
            f"{LEGAL_PROCESS_MIN_APPROVERS} (four eyes for legal process)"
        )
    for i, rule in enumerate(policy.auto_rules):
        at = f"at $.auto_rules[{i}]"
        if rule.purpose == "legal_process":
            problems.append(f"{at}.purpose: legal_process can never be automatic")
            continue
        pp = policy.purposes.get(rule.purpose)
        if pp is None:
            problems.append(f"{at}.purpose: {rule.purpose} is not listed under purposes")
            continue
        if not pp.automatic_allowed:
            problems.append(f"{at}.purpose: {rule.purpose} is not automatic_allowed")
        extra = sorted(set(rule.scopes) - set(pp.scopes))
        if extra:
            problems.append(f"{at}.scopes: {', '.join(extra)} not allowed for {rule.purpose}")
        if rule.duration_s > pp.max_duration_s:
            problems.append(
                f"{at}.duration_s: exceeds purposes.{rule.purpose}.max_duration_s "
                f"({pp.max_duration_s})"
            )
        if rule.byte_budget > pp.max_bytes:
            problems.append(
                f"{at}.byte_budget: exceeds purposes.{rule.purpose}.max_bytes ({pp.max_bytes})"
            )
    return problems


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    """Validate a parsed mapping; raise PolicyError naming every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(source, ["at $: the top level must be a mapping"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        lines = [line.replace(": Value error, ", ": ", 1) for line in format_validation_error(err)]
        raise PolicyError(source, lines) from None
    problems = _cross_check(policy)
    if problems:
        raise PolicyError(source, problems)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise PolicyError(str(p), [f"cannot read: {err.strerror or err}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PolicyError(
            str(p), [f"invalid YAML: {where}{getattr(err, 'problem', None) or err}"]
        ) from None
    return parse_policy(data, str(p))
