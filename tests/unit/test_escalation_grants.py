"""Grants: every rejection reason, approver counting, canonical encoding, target index."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.escalation.audit import AuditLog, read_entries
from trafficguard.escalation.grants import (
    REJECT_REASONS,
    GrantError,
    GrantRejection,
    GrantSignature,
    GrantStore,
    LoadedGrant,
    TargetIndex,
    append_revocation,
    audit_load,
    canonical_bytes,
    check_grant_file,
    grant_from_auto_rule,
    load_grant,
    load_revocations,
    parse_grant,
    sign_grant,
    target_pseudonym,
    to_ns,
    write_signatures,
)
from trafficguard.escalation.policy import Policy, parse_policy
from trafficguard.privacy.pseudonym import Pseudonymizer

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NOW = to_ns(T0 + dt.timedelta(minutes=30))
KEYS = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob", "carol", "dave")}
ROLES = {"alice": ["sec"], "bob": ["legal"], "carol": ["noc"], "dave": ["sec"]}


def _policy() -> Policy:
    return parse_policy({
        "authorizers": [
            {"name": n, "roles": ROLES[n],
             "public_key": base64.b64encode(k.public_key().public_bytes_raw()).decode()}
            for n, k in KEYS.items()],
        "purposes": {
            "fraud": {"scopes": ["sip", "dns"], "max_duration_s": 86400, "max_bytes": 10_000,
                      "roles": ["sec"], "reveal_allowed": True},
            "legal_process": {"scopes": ["sip", "dns", "pcap"], "max_duration_s": 86400 * 30,
                              "max_bytes": 10**9, "roles": ["sec", "legal"]},
            "attack_mitigation": {"scopes": ["sip"], "max_duration_s": 3600,
                                  "max_bytes": 1000, "roles": ["sec"],
                                  "automatic_allowed": True},
        },
        "auto_rules": [{"name": "flood", "detector": "invite_flood", "min_severity": "high",
                        "purpose": "attack_mitigation", "scopes": ["sip"], "duration_s": 600,
                        "byte_budget": 500}],
    })


POLICY = _policy()


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "G-1", "purpose": "fraud",
        "target": {"kind": "prefix", "value": "10.1.0.0/16"},
        "scopes": ["sip"], "not_before": T0, "expires": T0 + dt.timedelta(hours=2),
        "byte_budget": 5000, "case_reference": "CASE-42", "created_by": "ops",
    }
    doc.update(over)
    return doc


def _write(d: Path, doc: dict[str, Any], signers: list[str] | None = None,
           name: str | None = None) -> Path:
    path = d / f"{name or doc['id']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    if signers:
        grant = parse_grant(doc)
        write_signatures(path, [sign_grant(grant, s, KEYS[s]) for s in signers])
    return path


def _check(path: Path, now: int = NOW, revoked: tuple[str, ...] = ()) -> str:
    r = check_grant_file(path, POLICY, now, revoked)
    return "accepted" if isinstance(r, LoadedGrant) else r.reason


def test_accepted(tmp_path: Path) -> None:
    r = check_grant_file(_write(tmp_path, _doc(), ["alice"]), POLICY, NOW)
    assert isinstance(r, LoadedGrant)
    assert r.approvers == ("alice",)


def test_bad_signature(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc(), ["alice"])
    path.write_text(yaml.safe_dump(_doc(case_reference="CASE-43")))  # edited after signing
    assert _check(path) == "bad_signature"


def test_missing_signature(tmp_path: Path) -> None:
    assert _check(_write(tmp_path, _doc())) == "missing_signature"
    path = _write(tmp_path, _doc(id="G-2"))
    path.with_suffix(".sig").write_text("[]\n")
    assert _check(path) == "missing_signature"


def test_unknown_authorizer(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    grant = load_grant(path)
    write_signatures(path, [sign_grant(grant, "mallory", Ed25519PrivateKey.generate())])
    assert _check(path) == "unknown_authorizer"


def test_signature_by_wrong_key_is_bad(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    write_signatures(path, [sign_grant(load_grant(path), "alice", KEYS["dave"])])
    assert _check(path) == "bad_signature"


def test_too_few_approvers_role(tmp_path: Path) -> None:
    # carol signs validly but has no role fraud accepts
    assert _check(_write(tmp_path, _doc(), ["carol"])) == "too_few_approvers"


def test_legal_process_two_distinct_authorizers(tmp_path: Path) -> None:
    doc = _doc(id="L-1", purpose="legal_process")
    assert _check(_write(tmp_path, doc, ["alice", "bob"])) == "accepted"
    r = check_grant_file(tmp_path / "L-1.yaml", POLICY, NOW)
    assert isinstance(r, LoadedGrant) and r.approvers == ("alice", "bob")


def test_legal_process_one_authorizer_twice(tmp_path: Path) -> None:
    doc = _doc(id="L-2", purpose="legal_process")
    path = _write(tmp_path, doc)
    grant = load_grant(path)
    sig = sign_grant(grant, "alice", KEYS["alice"])
    write_signatures(path, [sig, sign_grant(grant, "alice", KEYS["alice"]), sig])
    assert _check(path) == "too_few_approvers"
    assert _check(_write(tmp_path, _doc(id="L-3", purpose="legal_process"), ["bob"])) \
        == "too_few_approvers"


def test_expired_and_not_yet_valid(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc(), ["alice"])
    assert _check(path, now=to_ns(T0 + dt.timedelta(hours=2))) == "expired"
    assert _check(path, now=to_ns(T0) - 1) == "not_yet_valid"
    assert _check(path, now=to_ns(T0)) == "accepted"


def test_scope_not_allowed(tmp_path: Path) -> None:
    assert _check(_write(tmp_path, _doc(scopes=["sip", "pcap"]), ["alice"])) == \
        "scope_not_allowed"
    # a purpose the policy does not list
    assert _check(_write(tmp_path, _doc(id="G-9", purpose="harassment"), ["alice"])) == \
        "scope_not_allowed"
    # allow_reveal where the purpose does not permit it
    doc = _doc(id="L-9", purpose="legal_process", allow_reveal=True)
    assert _check(_write(tmp_path, doc, ["alice", "bob"])) == "scope_not_allowed"


def test_duration_exceeds_policy(tmp_path: Path) -> None:
    doc = _doc(expires=T0 + dt.timedelta(days=2))
    assert _check(_write(tmp_path, doc, ["alice"])) == "duration_exceeds_policy"


def test_budget_exceeds_policy(tmp_path: Path) -> None:
    assert _check(_write(tmp_path, _doc(byte_budget=10_001), ["alice"])) == \
        "budget_exceeds_policy"


def test_revoked(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc(), ["alice"])
    assert _check(path, revoked=("G-1",)) == "revoked"
    append_revocation(tmp_path / "revoked.yaml", "G-1", "case closed", T0)
    store = GrantStore.load_dir(tmp_path, POLICY, NOW)
    assert [r.reason for r in store.rejected] == ["revoked"]
    assert load_revocations(tmp_path / "revoked.yaml")["G-1"].reason == "case closed"
    with pytest.raises(GrantError, match="already revoked"):
        append_revocation(tmp_path / "revoked.yaml", "G-1", "again", T0)


@pytest.mark.parametrize("text", [
    "id: [unclosed\n",
    "- just a list\n",
    yaml.safe_dump({k: v for k, v in _doc().items() if k != "purpose"}),
    yaml.safe_dump(_doc(expires=T0 - dt.timedelta(hours=1))),
    yaml.safe_dump(_doc(not_before="2026-11-23T09:00:00")),  # no timezone
    yaml.safe_dump(_doc(target={"kind": "prefix", "value": "10.1.2.0/16"})),  # host bits
    yaml.safe_dump(_doc(target={"kind": "address", "value": "not-an-ip"})),
    yaml.safe_dump(_doc(scopes=["sip", "sip"])),
    yaml.safe_dump(_doc(extra_key=1)),
])
def test_malformed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    assert _check(path) == "malformed"


def test_malformed_signature_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    path.with_suffix(".sig").write_text("- authorizer: alice\n  signature: '!!notb64'\n")
    assert _check(path) == "malformed"


def test_every_reason_is_tested() -> None:
    tested = {"bad_signature", "missing_signature", "unknown_authorizer", "too_few_approvers",
              "expired", "not_yet_valid", "scope_not_allowed", "duration_exceeds_policy",
              "budget_exceeds_policy", "revoked", "malformed"}
    assert tested == set(REJECT_REASONS)


def test_canonical_encoding_survives_reformatting(tmp_path: Path) -> None:
    plus1 = dt.timezone(dt.timedelta(hours=1))
    doc = _doc(not_before=T0.astimezone(plus1),
               target={"kind": "prefix", "value": "10.1.0.0/16"})
    path = _write(tmp_path, doc, ["alice"])
    # same values, other spelling: UTC times, reordered keys, flow style
    path.write_text(yaml.safe_dump(dict(reversed(list(_doc().items()))),
                                   default_flow_style=True))
    assert _check(path) == "accepted"
    c = canonical_bytes(load_grant(path))
    assert c.startswith(b"trafficguard-grant-v1\n{")
    assert b'"not_before":"2026-11-23T09:00:00Z"' in c


def test_store_duplicate_ids_rejected(tmp_path: Path) -> None:
    _write(tmp_path, _doc(), ["alice"], name="a")
    _write(tmp_path, _doc(), ["alice"], name="b")
    store = GrantStore.load_dir(tmp_path, POLICY, NOW)
    assert not store.accepted
    assert {r.reason for r in store.rejected} == {"malformed"}


def test_store_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(GrantError):
        GrantStore.load_dir(tmp_path / "none", POLICY, NOW)


def _store(tmp_path: Path) -> GrantStore:
    tmp_path.mkdir(exist_ok=True)
    _write(tmp_path, _doc(id="P16"), ["alice"])
    _write(tmp_path, _doc(id="A32", target={"kind": "address", "value": "10.9.9.9"},
                          scopes=["dns"]), ["alice"])
    _write(tmp_path, _doc(id="P6", target={"kind": "prefix", "value": "2001:db8:1::/48"}),
           ["alice"])
    _write(tmp_path, _doc(id="N1", target={"kind": "number", "value": "+1 555 0100"}), ["alice"])
    _write(tmp_path, _doc(id="U1", target={"kind": "sip_uri", "value": "sip:Bob@Example.net"}),
           ["alice"])
    _write(tmp_path, _doc(id="P8", target={"kind": "prefix", "value": "10.0.0.0/8"},
                          expires=T0 + dt.timedelta(hours=1)), ["alice"])
    pz = Pseudonymizer({1: bytes(32)}, ["10.0.0.0/8"])
    store = GrantStore.load_dir(tmp_path, POLICY, NOW, pseudonymizer=pz)
    assert sorted(store.accepted) == ["A32", "N1", "P16", "P6", "P8", "U1"], store.rejected
    return store


def _ids(found: list[LoadedGrant]) -> list[str]:
    return sorted(g.id for g in found)


def test_index_addresses_and_prefixes(tmp_path: Path) -> None:
    idx = _store(tmp_path).index
    assert _ids(idx.match_address("10.1.200.3", NOW)) == ["P16", "P8"]
    assert _ids(idx.match_address("10.1.0.0", NOW)) == ["P16", "P8"]
    assert _ids(idx.match_address("10.2.0.1", NOW)) == ["P8"]
    assert _ids(idx.match_address("11.1.0.1", NOW)) == []
    assert _ids(idx.match_address("10.9.9.9", NOW)) == ["A32", "P8"]
    assert _ids(idx.match_address("10.9.9.8", NOW)) == ["P8"]
    assert _ids(idx.match_address("2001:db8:1:ffff::1", NOW)) == ["P6"]
    assert _ids(idx.match_address("2001:db8:2::1", NOW)) == []
    assert _ids(idx.match_address("10.9.9.9", NOW, scope="dns")) == ["A32"]
    # P8 expires after one hour of packet time
    assert _ids(idx.match_address("10.2.0.1", to_ns(T0 + dt.timedelta(minutes=61)))) == []


def test_index_numbers_uris_pseudonyms(tmp_path: Path) -> None:
    idx = _store(tmp_path).index
    pz = Pseudonymizer({1: bytes(32)}, ["10.0.0.0/8"])
    assert _ids(idx.match_number("+15550100", NOW)) == ["N1"]
    assert _ids(idx.match_number("tel:+1-555-0100", NOW)) == ["N1"]
    assert _ids(idx.match_number("+15550101", NOW)) == []
    assert _ids(idx.match_sip_uri("sip:Bob@example.NET;transport=tcp", NOW)) == ["U1"]
    assert _ids(idx.match_sip_uri("sip:bob@example.net", NOW)) == []
    assert _ids(idx.match_user_pseudonym(pz.user("+15550100"), NOW)) == ["N1"]
    assert _ids(idx.match_number("garbage@@", NOW)) == []


def test_store_expire_and_revoke(tmp_path: Path) -> None:
    store = _store(tmp_path)
    gone = store.expire(to_ns(T0 + dt.timedelta(minutes=61)))
    assert _ids(gone) == ["P8"]
    assert "P8" not in store.accepted
    assert store.revoke("P16") is not None
    assert _ids(store.index.match_address("10.1.2.3", NOW)) == []
    assert store.revoke("nope") is None
    assert len(store.active(NOW)) == 4


def test_auto_rule_grant() -> None:
    pz = Pseudonymizer({1: bytes(32)}, ["10.0.0.0/8"])
    rule = POLICY.auto_rules_for("invite_flood", "high")[0]
    g = grant_from_auto_rule(rule, "198.51.100.7", NOW, "alert-17", pz)
    assert g.target.value == "198.51.100.7"
    assert g.duration_s == 600
    assert g.created_by == "auto:flood"
    with pytest.raises(GrantError, match="subscriber"):
        grant_from_auto_rule(rule, "10.1.1.1", NOW, "alert-18", pz)
    store = GrantStore([], [], pz)
    store.add(LoadedGrant(g, ()))
    assert _ids(store.index.match_address("198.51.100.7", NOW + 1)) == [g.id]


def test_target_pseudonym_never_clear() -> None:
    pz = Pseudonymizer({1: bytes(32)}, ["10.0.0.0/8"])
    g = parse_grant(_doc(target={"kind": "number", "value": "+15550100"}))
    assert target_pseudonym(g.target, pz).startswith("u1.")
    g = parse_grant(_doc(target={"kind": "prefix", "value": "10.1.0.0/16"}))
    assert target_pseudonym(g.target, pz).startswith("a1.")
    assert "10.1." not in target_pseudonym(g.target, pz)
    g = parse_grant(_doc(target={"kind": "sip_uri", "value": "sip:bob@example.net"}))
    assert target_pseudonym(g.target, pz).startswith("t1.")


def test_rejection_type() -> None:
    r = GrantRejection("p", "id", "expired", "x")
    assert r.reason in REJECT_REASONS
    assert GrantSignature("a", b"x").authorizer == "a"


def test_audit_load_pseudonymizes_targets(tmp_path: Path) -> None:
    store = _store(tmp_path / "g")
    (tmp_path / "g" / "bad.yaml").write_text("id: [\n")
    store = GrantStore.load_dir(tmp_path / "g", POLICY, NOW)
    log = AuditLog(tmp_path / "audit.jsonl", Ed25519PrivateKey.generate())
    pz = Pseudonymizer({1: bytes(32)}, ["10.0.0.0/8", "2001:db8::/32"])
    audit_load(store, log, NOW, pz)
    log.close()
    text = (tmp_path / "audit.jsonl").read_text()
    for clear in ("10.1.0.0", "10.9.9.9", "5550100", "Bob", "2001:db8:1"):
        assert clear not in text
    events = [e["event"] for e in read_entries(tmp_path / "audit.jsonl")]
    assert events.count("grant.loaded") == 6
    assert events.count("grant.rejected") == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), min_size=1, max_size=8),
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
)
def test_index_matches_brute_force(nets: list[tuple[int, int]], addrs: list[int]) -> None:
    grants = []
    for i, (value, plen) in enumerate(nets):
        net = ipaddress.ip_network((value >> (32 - plen) << (32 - plen) if plen else 0, plen))
        doc = _doc(id=f"N{i}", target={"kind": "prefix", "value": str(net)})
        grants.append(LoadedGrant(parse_grant(doc), ("alice",)))
    idx = TargetIndex.build(grants)
    for a in addrs:
        addr = ipaddress.ip_address(a)
        want = sorted(g.id for g in grants
                      if addr in ipaddress.ip_network(g.grant.target.value))
        assert _ids(idx.match_address(addr, NOW)) == want
