"""Audit log tampering: every edit, deletion, insertion, reordering, truncation and
forged checkpoint is detected and the first bad entry is named."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trafficguard.escalation.audit import AuditLog, head_path_for, verify_audit

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
N = 25  # entries incl. checkpoints every 5 entries


def _make(tmp: Path, n_events: int = 20) -> tuple[Path, list[bytes]]:
    path = tmp / "audit.jsonl"
    for p in (path, head_path_for(path)):
        p.unlink(missing_ok=True)
    clock = iter(range(10**6))
    log = AuditLog(path, KEY, checkpoint_every=4, checkpoint_interval_s=10**6,
                   wall_clock=lambda: 1_700_000_000_000_000_000 + next(clock))
    for i in range(n_events):
        log.append("grant.loaded", 1000 + i, {"grant": f"G-{i}", "target": f"u1.x{i}"})
    log.close()
    return path, path.read_bytes().splitlines(keepends=True)


def _entry(line: bytes) -> dict[str, object]:
    return json.loads(line)


def test_clean_log_verifies(tmp_path: Path) -> None:
    path, lines = _make(tmp_path)
    r = verify_audit(path, PUB)
    assert r.ok, r.problems
    assert r.entries == len(lines) == N
    assert r.checkpoints == 5
    assert r.last_checkpoint_seq == N
    assert r.unsigned_tail == 0


cases = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@cases
@given(st.integers(0, N - 1))
def test_edit_detected(tmp_path: Path, i: int) -> None:
    path, lines = _make(tmp_path)
    e = _entry(lines[i])
    e["ts_ns"] = int(e["ts_ns"]) + 1  # type: ignore[call-overload]
    lines[i] = json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    r = verify_audit(path, PUB)
    assert not r.ok
    first = r.problems[0]
    # an edited entry either breaks the next entry's prev link (named: the edited seq) or,
    # for a checkpoint, its own signature
    assert first.seq == i + 1
    assert first.line == i + 1
    assert first.kind in ("edited", "bad_checkpoint")


@cases
@given(st.integers(0, N - 1))
def test_delete_detected(tmp_path: Path, i: int) -> None:
    path, lines = _make(tmp_path)
    del lines[i]
    path.write_bytes(b"".join(lines))
    r = verify_audit(path, PUB)
    assert not r.ok
    first = r.problems[0]
    if i == N - 1:  # the last entry: only the head file knows
        assert (first.kind, first.seq) == ("truncated", N)
    else:
        assert (first.kind, first.seq, first.line) == ("deleted", i + 1, i + 1)


@cases
@given(st.integers(0, N - 1), st.integers(0, N))
def test_insert_detected(tmp_path: Path, src: int, at: int) -> None:
    path, lines = _make(tmp_path)
    lines.insert(at, lines[src])  # replay an existing entry somewhere
    path.write_bytes(b"".join(lines))
    r = verify_audit(path, PUB)
    assert not r.ok
    assert r.problems[0].line <= at + 2


def test_insert_forged_entry(tmp_path: Path) -> None:
    path, lines = _make(tmp_path)
    e = _entry(lines[6])
    e["event"], e["details"] = "grant.revoked", {"grant": "G-x"}
    lines.insert(7, json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    path.write_bytes(b"".join(lines))
    first = verify_audit(path, PUB).problems[0]
    assert (first.kind, first.line, first.seq) == ("inserted", 8, 7)


@cases
@given(st.integers(0, N - 2))
def test_reorder_detected(tmp_path: Path, i: int) -> None:
    path, lines = _make(tmp_path)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"".join(lines))
    r = verify_audit(path, PUB)
    first = r.problems[0]
    assert (first.kind, first.line, first.seq) == ("reordered", i + 1, i + 2)


@cases
@given(st.integers(1, N - 1))
def test_truncate_detected(tmp_path: Path, keep: int) -> None:
    path, lines = _make(tmp_path)
    path.write_bytes(b"".join(lines[:keep]))
    r = verify_audit(path, PUB)
    first = r.problems[0]
    assert (first.kind, first.seq, first.line) == ("truncated", keep + 1, keep + 1)


def test_truncate_without_head_only_to_last_checkpoint(tmp_path: Path) -> None:
    path, lines = _make(tmp_path)
    head_path_for(path).unlink()
    path.write_bytes(b"".join(lines[:12]))  # cut after checkpoint 10 + 2 entries
    r = verify_audit(path, PUB, require_head=False)
    assert r.ok
    assert r.last_checkpoint_seq == 10 and r.unsigned_tail == 2
    assert any("could not be detected" in n for n in r.notes)
    assert verify_audit(path, PUB).problems[0].kind == "head_missing"


def test_cut_inside_line(tmp_path: Path) -> None:
    path, lines = _make(tmp_path)
    path.write_bytes(b"".join(lines)[:-10])
    first = verify_audit(path, PUB).problems[0]
    assert (first.kind, first.line) == ("incomplete_line", N)


def test_forged_checkpoint(tmp_path: Path) -> None:
    path, lines = _make(tmp_path)
    cp = _entry(lines[9])
    assert cp["event"] == "checkpoint"
    forger = Ed25519PrivateKey.generate()
    d = dict(cp["details"])  # type: ignore[call-overload]
    d["signature"] = base64.b64encode(forger.sign(b"anything")).decode()
    cp["details"] = d
    lines[9] = json.dumps(cp, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    kinds = [(p.kind, p.seq) for p in verify_audit(path, PUB).problems]
    assert ("bad_checkpoint", 10) in kinds


def test_rechained_history_caught_by_checkpoints(tmp_path: Path) -> None:
    """An attacker without the key edits entry 3 and recomputes every later hash."""
    path, lines = _make(tmp_path)
    entries = [_entry(line) for line in lines]
    entries[2]["details"] = {"grant": "G-forged"}
    prev = entries[0]["prev"]
    out = []
    for e in entries:
        e["prev"] = prev
        if e["event"] == "checkpoint":
            d = dict(e["details"])  # type: ignore[call-overload]
            d["head"] = prev
            e["details"] = d
        raw = json.dumps(e, sort_keys=True, separators=(",", ":")).encode()
        prev = hashlib.sha256(raw).hexdigest()
        out.append(raw + b"\n")
    path.write_bytes(b"".join(out))
    first = verify_audit(path, PUB).problems[0]
    assert (first.kind, first.seq) == ("bad_checkpoint", 5)


def test_wrong_public_key(tmp_path: Path) -> None:
    path, _ = _make(tmp_path)
    r = verify_audit(path, Ed25519PrivateKey.generate().public_key())
    assert r.problems[0].kind == "bad_checkpoint"
