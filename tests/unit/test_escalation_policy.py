"""Policy loading: valid example, clear errors with key paths, auto-rule restrictions."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trafficguard.errors import ConfigError
from trafficguard.escalation.policy import PolicyError, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]


def _b64key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return base64.b64encode(raw).decode()


def _policy(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "authorizers": [{"name": "alice", "public_key": _b64key(), "roles": ["sec"]}],
        "purposes": {
            "attack_mitigation": {"scopes": ["sip", "dns"], "max_duration_s": 3600,
                                  "max_bytes": 1000, "roles": ["sec"],
                                  "automatic_allowed": True},
            "fraud": {"scopes": ["sip"], "max_duration_s": 3600, "max_bytes": 1000,
                      "roles": ["sec"]},
            "legal_process": {"scopes": ["sip"], "max_duration_s": 3600, "max_bytes": 1000,
                              "roles": ["sec"]},
        },
        "auto_rules": [],
    }
    data.update(over)
    return data


def _rule(**over: Any) -> dict[str, Any]:
    rule = {"name": "flood", "detector": "invite_flood", "min_severity": "high",
            "purpose": "attack_mitigation", "scopes": ["sip"], "duration_s": 600,
            "byte_budget": 100}
    rule.update(over)
    return rule


def test_shipped_example_is_valid() -> None:
    policy = load_policy(REPO / "config" / "policy.yaml")
    assert policy.approvers_needed("legal_process") == 2
    assert policy.auto_rules


def test_defaults_and_lookup() -> None:
    p = parse_policy(_policy(auto_rules=[_rule()]))
    assert p.approvers_needed("fraud") == 1
    assert p.approvers_needed("legal_process") == 2
    assert [r.name for r in p.auto_rules_for("invite_flood", "critical")] == ["flood"]
    assert p.auto_rules_for("invite_flood", "medium") == []
    assert p.auto_rules_for("other", "critical") == []


def test_pem_public_key_accepted() -> None:
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    p = parse_policy(_policy(authorizers=[{"name": "a", "public_key": pem, "roles": ["sec"]}]))
    assert p.authorizer("a") is not None


@pytest.mark.parametrize(("rule", "message"), [
    (_rule(purpose="legal_process"), "at $.auto_rules[0].purpose: legal_process can never"),
    (_rule(purpose="fraud"), "at $.auto_rules[0].purpose: fraud is not automatic_allowed"),
    (_rule(purpose="harassment"), "harassment is not listed under purposes"),
    (_rule(scopes=["pcap"]), "at $.auto_rules[0].scopes: pcap not allowed"),
    (_rule(duration_s=99999), "at $.auto_rules[0].duration_s: exceeds"),
    (_rule(byte_budget=10**9), "at $.auto_rules[0].byte_budget: exceeds"),
])
def test_auto_rules_rejected(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(_policy(auto_rules=[rule]), "policy.yaml")
    assert any(message in p for p in exc.value.problems), exc.value.problems
    assert isinstance(exc.value, ConfigError)


def test_errors_name_key_paths() -> None:
    data = _policy()
    data["authorizers"][0]["public_key"] = "not-a-key"
    data["purposes"]["fraud"]["scopes"] = ["ftp"]
    data["purposes"]["fraud"]["extra"] = 1
    with pytest.raises(PolicyError) as exc:
        parse_policy(data, "p.yaml")
    text = str(exc.value)
    assert text.startswith("p.yaml: ")
    assert "at $.authorizers[0].public_key: not base64 or PEM" in text
    assert "at $.purposes.fraud.scopes[0]" in text
    assert "at $.purposes.fraud.extra: unknown key" in text


def test_unknown_purpose_rejected() -> None:
    data = _policy()
    data["purposes"]["espionage"] = data["purposes"]["fraud"]
    with pytest.raises(PolicyError, match=r"\$\.purposes\.espionage"):
        parse_policy(data)


def test_shared_key_and_duplicate_names_rejected() -> None:
    key = _b64key()
    auth = [{"name": "a", "public_key": key, "roles": ["sec"]},
            {"name": "b", "public_key": key, "roles": ["sec"]},
            {"name": "a", "public_key": _b64key(), "roles": ["sec"]}]
    with pytest.raises(PolicyError) as exc:
        parse_policy(_policy(authorizers=auth))
    assert any("authorizers[1].public_key: same key" in p for p in exc.value.problems)
    assert any("authorizers[2].name" in p for p in exc.value.problems)


def test_legal_process_needs_two() -> None:
    data = _policy()
    data["purposes"]["legal_process"]["required_approvers"] = 1
    with pytest.raises(PolicyError, match="required_approvers: must be at least 2"):
        parse_policy(data)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("purposes: [\n")
    with pytest.raises(PolicyError, match="invalid YAML"):
        load_policy(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(PolicyError, match="top level"):
        load_policy(lst)
