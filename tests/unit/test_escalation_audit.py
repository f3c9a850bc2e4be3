"""Audit log writing: durable appends, fail-closed errors, resume, several writers."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trafficguard.escalation.audit import (
    GENESIS,
    AuditIntegrityError,
    AuditLog,
    AuditWriteError,
    head_path_for,
    read_entries,
    verify_audit,
)

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
S = 1_000_000_000


def _log(path: Path, **kw: object) -> AuditLog:
    return AuditLog(path, KEY, **kw)  # type: ignore[arg-type]


def test_entries_chain_and_files_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with _log(path) as log:
        assert log.append("grant.loaded", 5 * S, {"grant": "G-1", "target": "u1.abc"}) == 1
        assert log.append("grant.activated", 6 * S, {"grant": "G-1"}) == 2
    entries = list(read_entries(path))
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["prev"] == GENESIS
    assert entries[0]["ts_ns"] == 5 * S and isinstance(entries[0]["wall_ns"], int)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert verify_audit(path, PUB).ok


def test_checkpoints_by_count_and_packet_time(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path, checkpoint_every=3, checkpoint_interval_s=60)
    for i in range(3):
        log.append("grant.loaded", 10 * S + i, {})
    assert [e["event"] for e in read_entries(path)][-1] == "checkpoint"
    log.append("grant.loaded", 11 * S, {})
    log.append("grant.loaded", 100 * S, {})  # > 60 s of packet time since the checkpoint
    assert [e["event"] for e in read_entries(path)][-1] == "checkpoint"
    log.close(200 * S)
    r = verify_audit(path, PUB)
    assert r.ok and r.checkpoints == 2 and r.unsigned_tail == 0


def test_close_checkpoints_unsigned_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    log.append("config.reloaded", S, {})
    log.close(2 * S)
    log.close(3 * S)  # idempotent
    assert verify_audit(path, PUB).last_checkpoint_seq == 2


def test_rejects_unknown_events_and_bytes(tmp_path: Path) -> None:
    log = _log(tmp_path / "a.jsonl")
    with pytest.raises(ValueError):
        log.append("grant.invented", 1, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        log.append("checkpoint", 1, {})
    with pytest.raises(TypeError):
        log.append("grant.loaded", 1, {"payload": b"secret"})  # type: ignore[dict-item]
    log.close()


def test_resume_continues_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    log.append("grant.loaded", S, {})
    log.close()
    log = _log(path)
    assert log.seq == 1
    assert log.append("grant.expired", 2 * S, {}) == 2
    log.close(3 * S)
    assert verify_audit(path, PUB).ok


def test_resume_refuses_tampered_log(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    for i in range(3):
        log.append("grant.loaded", i, {"n": i})
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2])
    with pytest.raises(AuditIntegrityError, match="deleted"):
        _log(path)


def test_resume_after_crash_between_log_and_head(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    log.append("grant.loaded", 1, {})
    head = head_path_for(path).read_bytes()
    log.append("grant.loaded", 2, {})
    log.close()
    head_path_for(path).write_bytes(head)  # head lags one entry
    r = verify_audit(path, PUB)
    assert r.ok and r.head_stale
    log = _log(path)
    log.append("grant.loaded", 3, {})
    log.close()
    r = verify_audit(path, PUB)
    assert r.ok and not r.head_stale


def test_two_writers_share_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    a, b = _log(path), _log(path)
    a.append("grant.loaded", 1, {})
    b.append("grant.revoked", 2, {})
    a.append("grant.expired", 3, {})
    a.close()
    b.close()
    assert [e["seq"] for e in read_entries(path)] == [1, 2, 3]
    assert verify_audit(path, PUB).ok


def test_write_error_enospc_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    log.append("grant.loaded", 1, {})
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if fd == log._fd:
            real_write(fd, bytes(data)[:7])  # a partial line first, like a filling disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditWriteError, match="No space left"):
        log.append("escalation.opened", 2, {"grant": "G-1"})
    monkeypatch.setattr(os, "write", real_write)
    # the partial line was rolled back: the chain continues intact
    assert log.append("escalation.opened", 3, {"grant": "G-1"}) == 2
    log.close(4)
    assert verify_audit(path, PUB).ok


def test_fsync_error_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path / "a.jsonl")

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(AuditWriteError):
        log.append("escalation.opened", 1, {})


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditWriteError, match="cannot open"):
        _log(tmp_path / "file" / "audit.jsonl")


def _mount(args: list[str]) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(args, capture_output=True, check=False).returncode == 0


def test_full_tmpfs(tmp_path: Path) -> None:
    d = tmp_path / "small"
    d.mkdir()
    if not _mount(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)]):
        pytest.fail("mounting a tmpfs failed: the test runs as root on Linux (scripts/test.sh)")
    try:
        log = _log(d / "a.jsonl", checkpoint_every=10**6)
        with pytest.raises(AuditWriteError):
            for i in range(10_000):
                log.append("grant.loaded", i, {"pad": "x" * 200})
        written = log.seq
        log.close()
        r = verify_audit(d / "a.jsonl", PUB)
        assert r.ok and r.last_seq == written
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_read_only_directory(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        os.chmod(d, 0o500)
        with pytest.raises(AuditWriteError):
            _log(d / "a.jsonl")
        os.chmod(d, 0o700)
        return
    if not _mount(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)]):
        pytest.fail("mounting a tmpfs failed: the test runs as root on Linux (scripts/test.sh)")
    try:
        log = _log(d / "a.jsonl")
        log.append("grant.loaded", 1, {})
        log.close(2)
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        with pytest.raises(AuditWriteError, match="Read-only"):
            _log(d / "a.jsonl")  # an existing log cannot be reopened for append
        with pytest.raises(AuditWriteError, match="Read-only"):
            _log(d / "b.jsonl")
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_head_is_signed(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = _log(path)
    log.append("grant.loaded", 1, {})
    log.close()
    head = json.loads(head_path_for(path).read_bytes())
    head["seq"] = 5
    head_path_for(path).write_text(json.dumps(head))
    assert verify_audit(path, PUB).problems[0].kind == "bad_head"
