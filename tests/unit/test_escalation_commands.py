"""CLI commands end to end on temp dirs: keys, grant create/sign/verify/list/revoke,
audit verify/show, evidence keygen/open."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trafficguard.escalation import commands
from trafficguard.escalation.audit import read_entries
from trafficguard.escalation.evidence import EvidenceWriter, load_x25519_public
from trafficguard.escalation.grants import load_grant


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trafficguard")
    commands.register(p.add_subparsers(dest="command"))
    return p


def run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keys = {}
    auths = []
    for name, role in (("alice", "sec"), ("bob", "legal")):
        k = Ed25519PrivateKey.generate()
        path = tmp_path / f"{name}.pem"
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        keys[name] = str(path)
        auths.append({"name": name, "roles": [role], "public_key": base64.b64encode(
            k.public_key().public_bytes_raw()).decode()})
    policy = {"authorizers": auths, "purposes": {
        "fraud": {"scopes": ["sip", "dns"], "max_duration_s": 86400, "max_bytes": 10**6,
                  "roles": ["sec"]},
        "legal_process": {"scopes": ["sip"], "max_duration_s": 86400, "max_bytes": 10**6,
                          "roles": ["sec", "legal"]}}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {"policy": str(tmp_path / "policy.yaml"), "grants": str(tmp_path / "grants"),
            "keys": str(tmp_path / "keys"), "audit": str(tmp_path / "audit.jsonl"),
            "evidence": str(tmp_path / "evidence"), "alice": keys["alice"], "bob": keys["bob"],
            "tmp": str(tmp_path)}


def _create(env: dict[str, str], gid: str, purpose: str = "fraud") -> str:
    assert run("grant", "create", "--id", gid, "--purpose", purpose, "--number", "+1 555 0100",
               "--scope", "sip", "--duration", "2h", "--byte-budget", "1000",
               "--case-reference", "CASE-1", "--grants-dir", env["grants"]) == 0
    return str(Path(env["grants"]) / f"{gid}.yaml")


def test_grant_lifecycle(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("keys", "init", "--keys-dir", env["keys"]) == 0
    assert run("keys", "init", "--keys-dir", env["keys"]) == 1  # refuses to overwrite
    path = _create(env, "G-1")
    assert load_grant(path).target.value == "+15550100"
    assert run("grant", "create", "--id", "G-1", "--purpose", "fraud",
                                    "--number", "1", "--scope", "sip", "--byte-budget", "1",
                                    "--case-reference", "c", "--grants-dir",
                                    env["grants"]) == 1  # exists
    assert run("grant", "verify", path, "--policy", env["policy"],
               "--grants-dir", env["grants"]) == 1
    assert "missing_signature" in capsys.readouterr().out
    # wrong key for the named authorizer
    assert run("grant", "sign", path, "--authorizer", "alice", "--key", env["bob"],
               "--policy", env["policy"]) == 1
    assert run("grant", "sign", path, "--authorizer", "alice", "--key", env["alice"],
               "--policy", env["policy"]) == 0
    capsys.readouterr()
    assert run("grant", "verify", path, "--policy", env["policy"],
               "--grants-dir", env["grants"]) == 0
    assert capsys.readouterr().out.startswith("accept G-1")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).isoformat()
    assert run("grant", "verify", path, "--policy", env["policy"], "--grants-dir",
               env["grants"], "--at", later) == 1
    assert "expired" in capsys.readouterr().out

    legal = _create(env, "L-1", "legal_process")
    run("grant", "sign", legal, "--authorizer", "alice", "--key", env["alice"],
        "--policy", env["policy"])
    run("grant", "sign", legal, "--authorizer", "alice", "--key", env["alice"],
        "--policy", env["policy"])  # replaces, still one approver
    capsys.readouterr()
    assert run("grant", "list", "--policy", env["policy"], "--grants-dir", env["grants"]) == 0
    out = capsys.readouterr().out
    assert "accept G-1" in out and "reject L-1: too_few_approvers" in out
    run("grant", "sign", legal, "--authorizer", "bob", "--key", env["bob"],
        "--policy", env["policy"])
    assert run("grant", "verify", legal, "--policy", env["policy"],
               "--grants-dir", env["grants"]) == 0

    assert run("grant", "revoke", "G-1", "--reason", "closed", "--grants-dir", env["grants"],
               "--keys-dir", env["keys"], "--audit-log", env["audit"]) == 0
    capsys.readouterr()
    assert run("grant", "verify", path, "--policy", env["policy"],
               "--grants-dir", env["grants"]) == 1
    assert "revoked" in capsys.readouterr().out
    events = [e["event"] for e in read_entries(env["audit"])]
    assert "grant.revoked" in events

    assert run("audit", "verify", "--keys-dir", env["keys"], "--audit-log", env["audit"]) == 0
    assert run("audit", "show", "--audit-log", env["audit"], "--event", "grant.revoked") == 0
    assert "grant=G-1" in capsys.readouterr().out
    # tamper: edit the revocation reason
    text = Path(env["audit"]).read_text().replace('"closed"', '"opened"')
    Path(env["audit"]).write_text(text)
    assert run("audit", "verify", "--keys-dir", env["keys"], "--audit-log", env["audit"]) == 1
    assert "edited" in capsys.readouterr().out


def test_create_usage_errors(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["grant", "create", "--id", "X", "--purpose", "fraud", "--scope", "sip",
            "--byte-budget", "10", "--case-reference", "c", "--grants-dir", env["grants"]]
    assert run(*base) == 2  # no target
    assert run(*base, "--address", "10.0.0.1", "--number", "1") == 2
    assert run(*base, "--address", "10.0.0.1", "--not-before", "2026-01-01T00:00") == 2
    assert run(*base, "--address", "300.0.0.1") == 2
    err = capsys.readouterr().err
    assert "target" in err and "timezone" in err


def test_evidence_open_audited(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    run("keys", "init", "--keys-dir", env["keys"])
    priv, pub = f"{env['tmp']}/analyst.key", f"{env['tmp']}/analyst.pub"
    assert run("evidence", "keygen", "--private", priv, "--public", pub) == 0
    path = _create(env, "G-7")
    grant = load_grant(path)
    w = EvidenceWriter(env["evidence"], grant, load_x25519_public(pub), now_ns=grant.not_before_ns)
    w.write("sip", grant.not_before_ns, b"INVITE")
    w.close(grant.not_before_ns)
    capsys.readouterr()
    out = io.StringIO()
    args = _parser().parse_args(["evidence", "open", "--grant", "G-7", "--key", priv,
                                 "--evidence-dir", env["evidence"], "--keys-dir", env["keys"],
                                 "--audit-log", env["audit"]])
    assert commands.cmd_evidence_open(args, out) == 0
    item = json.loads(out.getvalue())
    assert base64.b64decode(item["payload_b64"]) == b"INVITE"
    opened = [e for e in read_entries(env["audit"]) if e["event"] == "evidence.opened"]
    assert opened and opened[0]["details"]["grant"] == "G-7"  # type: ignore[index]
    # fail closed: no audit log possible -> nothing decrypted
    args.audit_log = f"{env['tmp']}/nodir/x/audit.jsonl"
    out = io.StringIO()
    assert commands.cmd_evidence_open(args, out) == 1
    assert out.getvalue() == ""
    assert "evidence not opened" in capsys.readouterr().err
    assert run("evidence", "open", "--grant", "nope", "--key", priv,
               "--evidence-dir", env["evidence"]) == 1


def test_keys_rotate(env: dict[str, str]) -> None:
    assert run("keys", "rotate", "--keys-dir", env["keys"]) == 1
    run("keys", "init", "--keys-dir", env["keys"])
    assert run("keys", "rotate", "--keys-dir", env["keys"]) == 0
    assert (Path(env["keys"]) / "pseudonym-2.key").exists()
