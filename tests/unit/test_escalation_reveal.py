"""Reveal confirms identities a grant names, audits every call, never enumerates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trafficguard.escalation.audit import AuditLog, AuditWriteError, read_entries
from trafficguard.escalation.grants import LoadedGrant, parse_grant, to_ns
from trafficguard.escalation.reveal import RevealError, reveal
from trafficguard.privacy.pseudonym import Pseudonymizer

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
NOW = to_ns(T0) + 1
PZ = Pseudonymizer({1: bytes(32), 2: bytes(range(32))}, ["10.0.0.0/8", "2001:db8::/32"])


def _grant(kind: str, value: str, allow: bool = True) -> LoadedGrant:
    doc: dict[str, Any] = {
        "id": "R-1", "purpose": "fraud", "target": {"kind": kind, "value": value},
        "scopes": ["sip"], "not_before": T0, "expires": T0 + dt.timedelta(hours=1),
        "byte_budget": 1, "case_reference": "C", "created_by": "x", "allow_reveal": allow}
    return LoadedGrant(parse_grant(doc), ("alice",))


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl", Ed25519PrivateKey.generate())


def test_number_match_any_epoch(audit: AuditLog) -> None:
    g = _grant("number", "+1 555 0100")
    for epoch in (1, 2):
        r = reveal(PZ.user("+15550100", epoch), g, PZ, NOW, audit, requested_by="ann")
        assert (r.outcome, r.identity, r.epoch) == ("match", "+15550100", epoch)
    r = reveal(PZ.user("+15550199"), g, PZ, NOW, audit, requested_by="ann")
    assert (r.outcome, r.identity) == ("no_match", None)
    entries = [e for e in read_entries(audit.path) if e["event"] != "checkpoint"]
    assert [e["details"]["outcome"] for e in entries] == ["match", "match", "no_match"]  # type: ignore[index]
    assert all("+1555" not in str(e) for e in entries)  # the clear identity is never logged


def test_address_and_prefix(audit: AuditLog) -> None:
    r = reveal(PZ.address("10.1.2.3"), _grant("address", "10.1.2.3"), PZ, NOW, audit,
               requested_by="ann")
    assert r.outcome == "match"
    g = _grant("prefix", "10.1.0.0/16")
    p = PZ.address("10.1.9.9")
    assert reveal(p, g, PZ, NOW, audit, requested_by="ann").outcome == "in_target_prefix"
    r = reveal(p, g, PZ, NOW, audit, requested_by="ann", candidate="10.1.9.9")
    assert (r.outcome, r.identity) == ("match", "10.1.9.9")
    assert reveal(PZ.address("10.2.0.1"), g, PZ, NOW, audit, requested_by="a").outcome == \
        "no_match"
    with pytest.raises(RevealError, match="outside"):
        reveal(p, g, PZ, NOW, audit, requested_by="ann", candidate="10.2.0.1")


def test_refusals(audit: AuditLog) -> None:
    p = PZ.user("+15550100")
    with pytest.raises(RevealError, match="does not allow"):
        reveal(p, _grant("number", "+15550100", allow=False), PZ, NOW, audit, requested_by="a")
    with pytest.raises(RevealError, match="not active"):
        reveal(p, _grant("number", "+15550100"), PZ, NOW + 10**13, audit, requested_by="a")
    with pytest.raises(RevealError):
        reveal("nonsense", _grant("number", "+15550100"), PZ, NOW, audit, requested_by="a")
    with pytest.raises(RevealError):
        reveal("u9.aaaa", _grant("number", "+15550100"), PZ, NOW, audit, requested_by="a")
    assert [e for e in read_entries(audit.path) if e["event"] != "checkpoint"] == []


def test_no_answer_without_audit(audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object, **k: object) -> int:
        raise AuditWriteError("disk full")

    monkeypatch.setattr(audit, "append", fail)
    with pytest.raises(AuditWriteError):
        reveal(PZ.user("+15550100"), _grant("number", "+15550100"), PZ, NOW, audit,
               requested_by="a")
