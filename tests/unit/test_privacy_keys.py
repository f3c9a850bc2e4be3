"""Key files: created 0600 in a 0700 dir, never overwritten silently, rotated per epoch."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trafficguard.privacy.keys import (
    KeyFileError,
    KeysExistError,
    init_keys,
    load_keys,
    rotate_pseudonym_key,
)
from trafficguard.privacy.pseudonym import Pseudonymizer


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_creates_private_files(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys = init_keys(d)
    assert _mode(d) == 0o700
    names = sorted(p.name for p in d.iterdir())
    assert names == ["audit-signing.key", "audit-signing.pub", "pseudonym-1.key"]
    for p in d.iterdir():
        assert _mode(p) == 0o600, p.name
    assert len((d / "pseudonym-1.key").read_bytes()) == 32
    assert keys.current_epoch == 1
    assert repr(keys) == "SensorKeys(epochs=[1])"  # no key bytes in repr


def test_init_refuses_overwrite_unless_forced(tmp_path: Path) -> None:
    init_keys(tmp_path)
    before = (tmp_path / "pseudonym-1.key").read_bytes()
    with pytest.raises(KeysExistError):
        init_keys(tmp_path)
    assert (tmp_path / "pseudonym-1.key").read_bytes() == before
    init_keys(tmp_path, force=True)
    assert (tmp_path / "pseudonym-1.key").read_bytes() != before


def test_rotate_and_load(tmp_path: Path) -> None:
    init_keys(tmp_path)
    assert rotate_pseudonym_key(tmp_path) == 2
    assert rotate_pseudonym_key(tmp_path) == 3
    assert _mode(tmp_path / "pseudonym-3.key") == 0o600
    keys = load_keys(tmp_path)
    assert sorted(keys.pseudonym_keys) == [1, 2, 3]
    assert keys.audit_private is not None
    pz = Pseudonymizer(keys.pseudonym_keys, [])
    assert pz.user("+15550100").startswith("u3.")


def test_rotate_without_init(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        rotate_pseudonym_key(tmp_path)


def test_load_refuses_open_permissions(tmp_path: Path) -> None:
    init_keys(tmp_path)
    os.chmod(tmp_path / "pseudonym-1.key", 0o644)
    with pytest.raises(KeyFileError, match="0600"):
        load_keys(tmp_path)


def test_load_detects_mismatched_audit_key(tmp_path: Path) -> None:
    init_keys(tmp_path / "a")
    init_keys(tmp_path / "b")
    os.replace(tmp_path / "b" / "audit-signing.pub", tmp_path / "a" / "audit-signing.pub")
    with pytest.raises(KeyFileError, match="does not match"):
        load_keys(tmp_path / "a")


def test_load_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keys init"):
        load_keys(tmp_path / "nope")
