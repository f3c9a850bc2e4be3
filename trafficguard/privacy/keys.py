"""Sensor key files: pseudonym keys per epoch and the audit signing key.

Layout of the key directory (0700, every file 0600, written atomically)::

    pseudonym-1.key      32 random bytes; epoch 1
    pseudonym-2.key      after one rotation; the highest epoch is current
    audit-signing.key    Ed25519 private key, PKCS#8 PEM (signs audit checkpoints)
    audit-signing.pub    its public key, SubjectPublicKeyInfo PEM (give it to verifiers)

Old epochs are kept so pseudonyms already stored can still be checked by ``reveal``;
deleting an old epoch's file makes its pseudonyms permanently unlinkable (crypto-erasure).
Nothing here logs or prints key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from trafficguard.errors import PrivacyError
from trafficguard.privacy.keynames import AUDIT_PRIVATE_NAME as AUDIT_PRIVATE_NAME  # noqa: PLC0414
from trafficguard.privacy.keynames import AUDIT_PUBLIC_NAME as AUDIT_PUBLIC_NAME  # noqa: PLC0414

PSEUDONYM_KEY_BYTES: Final = 32
_PSEUDONYM_RE: Final = re.compile(r"^pseudonym-([1-9][0-9]{0,5})\.key$")
# RFC 8410: the DER of an Ed25519 PKCS#8 private key and of its SubjectPublicKeyInfo is a
# fixed prefix followed by the 32 raw key bytes (what init_keys writes, PEM-armoured)
_ED25519_PKCS8_PREFIX: Final = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")


class KeyFileError(PrivacyError):
    """A key file or directory is missing, unreadable, malformed or too open."""


class KeysExistError(KeyFileError):
    """``init_keys`` would overwrite existing keys and was not forced."""


@dataclass(frozen=True, slots=True)
class SensorKeys:
    """Loaded keys. ``repr`` never shows key bytes."""

    pseudonym_keys: dict[int, bytes]
    audit_private: Ed25519PrivateKey | None
    audit_public: Ed25519PublicKey

    @property
    def current_epoch(self) -> int:
        return max(self.pseudonym_keys)

    def __repr__(self) -> str:
        return f"SensorKeys(epochs={sorted(self.pseudonym_keys)})"


def pseudonym_key_name(epoch: int) -> str:
    return f"pseudonym-{epoch}.key"


def write_secret_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` as 0600 atomically (temp file, fsync, rename)."""
    if path.exists() and not overwrite:
        raise KeysExistError(f"{path}: exists; refusing to overwrite")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # fails if a concurrent writer created it first
        finally:
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _epochs(directory: Path) -> list[int]:
    found = []
    for entry in directory.iterdir():
        m = _PSEUDONYM_RE.match(entry.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def init_keys(directory: str | Path, *, force: bool = False) -> SensorKeys:
    """Create epoch-1 pseudonym key and the audit key pair in ``directory``.

    Refuses (``KeysExistError``) if any key file exists, unless ``force``: replacing keys
    makes every stored pseudonym unlinkable and old audit checkpoints unverifiable with
    the new public key, so it must be deliberate.
    """
    d = Path(directory)
    try:
        _ensure_dir(d)
        existing = [
            p.name
            for p in d.iterdir()
            if _PSEUDONYM_RE.match(p.name) or p.name in (AUDIT_PRIVATE_NAME, AUDIT_PUBLIC_NAME)
        ]
        if existing and not force:
            raise KeysExistError(
                f"{d}: keys exist ({', '.join(sorted(existing))}); use force to replace"
            )
        if force:
            for name in existing:
                (d / name).unlink()
        pkey = secrets.token_bytes(PSEUDONYM_KEY_BYTES)
        write_secret_file(d / pseudonym_key_name(1), pkey)
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 (see _raw_ed25519)

        priv = Ed25519PrivateKey.generate()
        write_secret_file(
            d / AUDIT_PRIVATE_NAME,
            priv.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        write_secret_file(
            d / AUDIT_PUBLIC_NAME,
            priv.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    except OSError as err:
        raise KeyFileError(f"{d}: cannot create keys: {err.strerror or err}") from None
    return SensorKeys({1: pkey}, priv, priv.public_key())


def rotate_pseudonym_key(directory: str | Path) -> int:
    """Add a pseudonym key for a new epoch and return its number; old epochs are kept."""
    d = Path(directory)
    try:
        epochs = _epochs(d)
        if not epochs:
            raise KeyFileError(f"{d}: no pseudonym key; run keys init first")
        new = epochs[-1] + 1
        write_secret_file(d / pseudonym_key_name(new), secrets.token_bytes(PSEUDONYM_KEY_BYTES))
    except KeysExistError:
        raise
    except OSError as err:
        raise KeyFileError(f"{d}: cannot rotate: {err.strerror or err}") from None
    return new


def _read_secret(path: Path) -> bytes:
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path}: permissions {oct(st.st_mode & 0o777)}; must be 0600")
        return path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read: {err.strerror or err}") from None


def _raw_ed25519(pem: bytes, label: str, prefix: bytes) -> bytes | None:
    """The 32 key bytes of ``pem`` if it is laid out exactly as ``init_keys`` writes it.

    Every command that builds a pipeline loads the audit key pair; cryptography's
    ``serialization`` package, which would parse it, imports all its formats (SSH, PKCS#12,
    PKCS#7): ~15 ms more than the Ed25519 class alone. The files ``init_keys`` writes are one
    base64 line of a fixed DER prefix and the raw key, which any PEM/DER reader decodes to
    the same key. Anything else gives ``None`` and goes through ``serialization`` as
    before, so which files load and every error message stay the same.
    """
    head = f"-----BEGIN {label}-----\n".encode()
    tail = f"-----END {label}-----\n".encode()
    if not (pem.startswith(head) and pem.endswith(tail)):
        return None
    line = pem[len(head) : len(pem) - len(tail)]
    if line.count(b"\n") != 1 or not line.endswith(b"\n"):
        return None
    try:
        der = base64.b64decode(line[:-1], validate=True)
    except binascii.Error:
        return None
    if len(der) != len(prefix) + 32 or not der.startswith(prefix):
        return None
    return der[len(prefix) :]


def _load_audit_private_key(path: Path) -> Ed25519PrivateKey:
    """The audit signing key: the counterpart of :func:`load_audit_public_key`."""
    pem = _read_secret(path)
    raw = _raw_ed25519(pem, "PRIVATE KEY", _ED25519_PKCS8_PREFIX)
    if raw is not None:
        return Ed25519PrivateKey.from_private_bytes(raw)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 (see _raw_ed25519)

    try:
        key = serialization.load_pem_private_key(pem, None)
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_audit_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file (for ``audit verify`` away from the sensor)."""
    p = Path(path)
    try:
        pem = p.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{p}: cannot read: {err.strerror or err}") from None
    raw = _raw_ed25519(pem, "PUBLIC KEY", _ED25519_SPKI_PREFIX)
    if raw is not None:
        return Ed25519PublicKey.from_public_bytes(raw)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 (see _raw_ed25519)

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise KeyFileError(f"{p}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p}: not an Ed25519 public key")
    return key


def load_keys(directory: str | Path, *, with_private: bool = True) -> SensorKeys:
    """Load every epoch's pseudonym key and the audit key (private optional)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"{d}: key directory does not exist; run keys init")
    keys: dict[int, bytes] = {}
    for epoch in _epochs(d):
        data = _read_secret(d / pseudonym_key_name(epoch))
        if len(data) != PSEUDONYM_KEY_BYTES:
            raise KeyFileError(
                f"{d / pseudonym_key_name(epoch)}: must hold {PSEUDONYM_KEY_BYTES} bytes"
            )
        keys[epoch] = data
    if not keys:
        raise KeyFileError(f"{d}: no pseudonym key; run keys init")
    private = _load_audit_private_key(d / AUDIT_PRIVATE_NAME) if with_private else None
    public = load_audit_public_key(d / AUDIT_PUBLIC_NAME)
    if private is not None and private.public_key().public_bytes_raw() != public.public_bytes_raw():
        raise KeyFileError(f"{d}: {AUDIT_PUBLIC_NAME} does not match {AUDIT_PRIVATE_NAME}")
    return SensorKeys(keys, private, public)
