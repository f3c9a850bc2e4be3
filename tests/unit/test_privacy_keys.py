"""Key files: created 0600 in a 0700 dir, never overwritten silently, rotated per epoch."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from trafficguard.privacy.keys import (
    _ED25519_PKCS8_PREFIX,
    _ED25519_SPKI_PREFIX,
    KeyFileError,
    KeysExistError,
    _raw_ed25519,
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


def test_canonical_audit_keys_read_without_serialization_as_with_it(tmp_path: Path) -> None:
    """The files init_keys writes decode by their fixed layout to the key cryptography reads."""
    for i in range(20):
        d = tmp_path / str(i)
        keys = init_keys(d)
        private_pem = (d / "audit-signing.key").read_bytes()
        public_pem = (d / "audit-signing.pub").read_bytes()
        raw_private = _raw_ed25519(private_pem, "PRIVATE KEY", _ED25519_PKCS8_PREFIX)
        raw_public = _raw_ed25519(public_pem, "PUBLIC KEY", _ED25519_SPKI_PREFIX)
        by_cryptography = serialization.load_pem_private_key(private_pem, None)
        assert isinstance(by_cryptography, Ed25519PrivateKey)
        assert raw_private == by_cryptography.private_bytes_raw()
        assert raw_public == serialization.load_pem_public_key(public_pem).public_bytes_raw()
        loaded = load_keys(d)
        assert loaded.audit_private is not None and keys.audit_private is not None
        assert loaded.audit_private.private_bytes_raw() == keys.audit_private.private_bytes_raw()
        assert loaded.audit_public.public_bytes_raw() == keys.audit_public.public_bytes_raw()


def test_other_key_layouts_still_go_through_cryptography(tmp_path: Path) -> None:
    """CRLF or wrapped PEM loads as before; other key types and garbage fail as before."""
    init_keys(tmp_path)
    private = tmp_path / "audit-signing.key"
    public = tmp_path / "audit-signing.pub"
    expected = load_keys(tmp_path).audit_public.public_bytes_raw()
    for p in (private, public):
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    assert _raw_ed25519(private.read_bytes(), "PRIVATE KEY", _ED25519_PKCS8_PREFIX) is None
    assert load_keys(tmp_path).audit_public.public_bytes_raw() == expected  # fallback path

    private.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_keys(tmp_path)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    private.write_bytes(ec_pem)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_keys(tmp_path)
    public.write_bytes(b"garbage\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_keys(tmp_path, with_private=False)
