"""Evidence store: per-grant files of encrypted chunks the sensor can write but not read.

Each file is sealed to an analyst's X25519 public key: an ephemeral X25519 key per file,
HKDF-SHA256 over the shared secret gives an AES-256-GCM key that exists only in the
writer's memory. The sensor never holds the analyst's private key.

File layout (``<dir>/<grant id>/<segment:06d>.tgev``, 0600; one segment per writer, so a
restart starts a new segment instead of needing the lost key)::

    b"TGEVID\\x00\\x01"  u32 header length  header JSON (grant, expires_ns, epk, rcpt, ...)
    repeated:  u32 (bit 31 = final chunk, bits 0-30 = ciphertext length)  ciphertext

Chunk ``i`` uses nonce ``0^4 ‖ u64 i`` (unique: one key per file) and AAD binding the
header hash, grant id, ``i`` and the final flag, so chunks cannot be reordered, moved
between files or grants, or cut off unnoticed: a reader that reaches the end of the
file without the authenticated final chunk raises ``EvidenceTruncatedError``. Item
plaintext is ``u8 kind ‖ u64 ts_ns ‖ payload``; the final chunk holds the item count and
payload bytes. Budget: payload bytes, computable from the clear chunk lengths.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trafficguard.errors import EscalationError
from trafficguard.escalation.policy import SCOPES
from trafficguard.privacy.keys import write_secret_file

if TYPE_CHECKING:
    from trafficguard.escalation.audit import AuditLog
    from trafficguard.escalation.grants import Grant

MAGIC: Final = b"TGEVID\x00\x01"
_GRANT_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUFFIX: Final = ".tgev"
KINDS: Final[tuple[str, ...]] = SCOPES  # dns http tls sip smtp pcap
_KIND_CODE: Final = {k: i + 1 for i, k in enumerate(KINDS)}
_U32: Final = struct.Struct(">I")
_ITEM_HEAD: Final = struct.Struct(">BQ")
_FINAL: Final = struct.Struct(">QQ")
_FINAL_BIT: Final = 0x8000_0000
_TAG: Final = 16
ITEM_OVERHEAD: Final = _ITEM_HEAD.size + _TAG
MAX_HEADER: Final = 4096
MAX_CHUNK: Final = 16 << 20


class EvidenceError(EscalationError):
    """Evidence cannot be written or read."""


class EvidenceKeyError(EvidenceError):
    """The private key given is not the one the evidence was sealed to."""


class EvidenceIntegrityError(EvidenceError):
    """A chunk or header fails authentication: tampered, reordered or corrupt."""


class EvidenceTruncatedError(EvidenceIntegrityError):
    """The file ends without its final chunk (cut off, or the writer crashed)."""


def recipient_id(public_key: X25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


def generate_analyst_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new X25519 key pair (private PEM 0600, public PEM); refuses to overwrite."""
    priv = X25519PrivateKey.generate()
    write_secret_file(
        Path(private_path),
        priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_secret_file(
        Path(public_path),
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_x25519_public(path: str | Path) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise EvidenceError(f"{path}: cannot load public key: {err}") from None
    if not isinstance(key, X25519PublicKey):
        raise EvidenceError(f"{path}: not an X25519 public key")
    return key


def load_x25519_private(path: str | Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError):
        raise EvidenceError(
            f"{path}: cannot load private key (missing, encrypted or not PEM)"
        ) from None
    if not isinstance(key, X25519PrivateKey):
        raise EvidenceError(f"{path}: not an X25519 private key")
    return key


def _derive(shared: bytes, epk: bytes, rcpt: bytes, header: bytes) -> AESGCM:
    key = HKDF(
        hashes.SHA256(),
        32,
        salt=epk + rcpt,
        info=b"trafficguard-evidence-v1" + hashlib.sha256(header).digest(),
    ).derive(shared)
    return AESGCM(key)


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + index.to_bytes(8, "big")


def _aad(header_hash: bytes, grant_id: str, index: int, final: bool) -> bytes:
    gid = grant_id.encode("utf-8")
    return (
        b"tgev1"
        + header_hash
        + len(gid).to_bytes(2, "big")
        + gid
        + index.to_bytes(8, "big")
        + (b"\x01" if final else b"\x00")
    )


class WriteResult(NamedTuple):
    """``bytes_counted``: payload bytes charged for this item (0 if refused);
    ``exhausted``: the grant's budget is used up and no more items are accepted."""

    bytes_counted: int
    exhausted: bool


def grant_dir(directory: str | Path, grant_id: str) -> Path:
    """``directory/grant_id``; the id must be a plain grant id (no path tricks)."""
    if not _GRANT_ID_RE.match(grant_id):
        raise EvidenceError(f"{grant_id!r} is not a grant id")
    return Path(directory) / grant_id


class EvidenceWriter:
    """Appends items for one grant to a new segment file; enforces the byte budget.

    ``bytes_used`` carries what earlier segments already spent (``evidence_bytes_used``).
    An item that would overrun the budget is refused whole, the writer is marked
    exhausted and ``grant.exhausted`` is audited once.
    """

    def __init__(
        self,
        directory: str | Path,
        grant: Grant,
        recipient: X25519PublicKey,
        *,
        now_ns: int,
        bytes_used: int = 0,
        audit: AuditLog | None = None,
    ) -> None:
        grant_id, expires_ns = grant.id, grant.expires_ns
        self.grant_id = grant_id
        self.byte_budget = byte_budget = grant.byte_budget
        self.bytes_used = bytes_used
        self.items = 0
        self.segment_bytes = 0
        self.exhausted = bytes_used >= byte_budget
        self._audit = audit
        self._index = 0
        self._closed = False
        d = grant_dir(directory, grant_id)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        eph = X25519PrivateKey.generate()
        epk = eph.public_key().public_bytes_raw()
        rcpt = recipient.public_bytes_raw()
        header = json.dumps(
            {
                "v": 1,
                "grant": grant_id,
                "expires_ns": expires_ns,
                "created_ns": now_ns,
                "cipher": "aes-256-gcm",
                "epk": base64.b64encode(epk).decode("ascii"),
                "rcpt": recipient_id(recipient),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("ascii")
        self._aead = _derive(eph.exchange(recipient), epk, rcpt, header)
        self._header_hash = hashlib.sha256(header).digest()
        segment = 1 + max(
            (int(p.stem) for p in d.glob("*" + SUFFIX) if p.stem.isdigit()), default=0
        )
        self.path = d / f"{segment:06d}{SUFFIX}"
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as err:
            raise EvidenceError(f"{self.path}: cannot create: {err.strerror or err}") from None
        try:
            self._raw_write(MAGIC + _U32.pack(len(header)) + header)
        except OSError as err:
            os.close(self._fd)
            raise EvidenceError(f"{self.path}: cannot write: {err.strerror or err}") from None

    def _raw_write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _chunk(self, plaintext: bytes, final: bool) -> None:
        ct = self._aead.encrypt(
            _nonce(self._index),
            plaintext,
            _aad(self._header_hash, self.grant_id, self._index, final),
        )
        try:
            self._raw_write(_U32.pack(len(ct) | (_FINAL_BIT if final else 0)) + ct)
        except OSError as err:
            raise EvidenceError(f"{self.path}: cannot write: {err.strerror or err}") from None
        self._index += 1

    def write(self, kind: str, ts_ns: int, payload: bytes) -> WriteResult:
        """Seal one item; refused (0, True) once the budget would be exceeded."""
        if self._closed:
            raise EvidenceError(f"{self.path}: writer is closed")
        code = _KIND_CODE.get(kind)
        if code is None:
            raise ValueError(f"evidence kind must be one of {', '.join(KINDS)}")
        if len(payload) > MAX_CHUNK - ITEM_OVERHEAD:
            raise ValueError("evidence item too large")
        if self.exhausted or self.bytes_used + len(payload) > self.byte_budget:
            if not self.exhausted and self._audit is not None:
                self._audit.append(
                    "grant.exhausted",
                    ts_ns,
                    {
                        "grant": self.grant_id,
                        "bytes_used": self.bytes_used,
                        "byte_budget": self.byte_budget,
                    },
                )
            self.exhausted = True
            return WriteResult(0, True)
        self._chunk(_ITEM_HEAD.pack(code, ts_ns) + payload, final=False)
        self.bytes_used += len(payload)
        self.segment_bytes += len(payload)
        self.items += 1
        return WriteResult(len(payload), self.bytes_used >= self.byte_budget)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self, ts_ns: int) -> None:
        """Write the final chunk, sync and audit ``evidence.written`` (items, bytes)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._chunk(_FINAL.pack(self.items, self.segment_bytes), final=True)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        if self._audit is not None:
            self._audit.append(
                "evidence.written",
                ts_ns,
                {
                    "grant": self.grant_id,
                    "file": self.path.name,
                    "items": self.items,
                    "bytes": self.segment_bytes,
                    "bytes_used": self.bytes_used,
                },
            )


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    kind: str
    ts_ns: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Header:
    raw: bytes
    grant: str
    expires_ns: int
    epk: bytes
    rcpt: str
    end: int


def _read_header(data: bytes, path: Path) -> _Header:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise EvidenceIntegrityError(f"{path}: not an evidence file")
    (hlen,) = _U32.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + 4
    if hlen > MAX_HEADER or start + hlen > len(data):
        raise EvidenceIntegrityError(f"{path}: header length out of range")
    raw = data[start : start + hlen]
    try:
        h = json.loads(raw)
        return _Header(
            raw,
            str(h["grant"]),
            int(h["expires_ns"]),
            base64.b64decode(h["epk"], validate=True),
            str(h["rcpt"]),
            start + hlen,
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise EvidenceIntegrityError(f"{path}: header unreadable") from None


def _chunks(data: bytes, offset: int, path: Path) -> Iterator[tuple[bytes, bool, int]]:
    """(ciphertext, final flag, offset after the chunk) for each chunk."""
    while offset < len(data):
        if offset + 4 > len(data):
            raise EvidenceTruncatedError(f"{path}: file ends inside a chunk header")
        (word,) = _U32.unpack_from(data, offset)
        n, final = word & ~_FINAL_BIT, bool(word & _FINAL_BIT)
        if n > MAX_CHUNK or offset + 4 + n > len(data):
            raise EvidenceTruncatedError(f"{path}: file ends inside a chunk")
        yield data[offset + 4 : offset + 4 + n], final, offset + 4 + n
        offset += 4 + n


def open_evidence(path: str | Path, private_key: X25519PrivateKey) -> Iterator[EvidenceItem]:
    """Decrypt and yield a segment's items in order; raises at the first bad chunk, or
    ``EvidenceTruncatedError`` at the end if the final chunk is missing. Items yielded
    before an error are authentic."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise EvidenceError(f"{p}: cannot read: {err.strerror or err}") from None
    h = _read_header(data, p)
    if h.rcpt != recipient_id(private_key.public_key()):
        raise EvidenceKeyError(f"{p}: sealed to key {h.rcpt}, not to the key given")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(h.epk))
    except ValueError:
        raise EvidenceIntegrityError(f"{p}: bad ephemeral key") from None
    aead = _derive(shared, h.epk, private_key.public_key().public_bytes_raw(), h.raw)
    hh = hashlib.sha256(h.raw).digest()
    total = 0
    for index, (ct, final, end) in enumerate(_chunks(data, h.end, p)):
        try:
            pt = aead.decrypt(_nonce(index), ct, _aad(hh, h.grant, index, final))
        except InvalidTag:
            raise EvidenceIntegrityError(f"{p}: chunk {index} fails authentication") from None
        if final:
            items, nbytes = _FINAL.unpack(pt)
            if (items, nbytes) != (index, total):
                raise EvidenceIntegrityError(f"{p}: final chunk counts do not match")
            if end != len(data):
                raise EvidenceIntegrityError(f"{p}: data after the final chunk")
            return
        code, ts_ns = _ITEM_HEAD.unpack_from(pt)
        if not 1 <= code <= len(KINDS):
            raise EvidenceIntegrityError(f"{p}: chunk {index} has an unknown kind")
        payload = pt[_ITEM_HEAD.size :]
        total += len(payload)
        yield EvidenceItem(KINDS[code - 1], ts_ns, payload)
    raise EvidenceTruncatedError(f"{p}: no final chunk; the file was cut off or not closed")


def segments(directory: str | Path, grant_id: str) -> list[Path]:
    d = grant_dir(directory, grant_id)
    return sorted(d.glob("*" + SUFFIX)) if d.is_dir() else []


def open_grant_evidence(
    directory: str | Path, grant_id: str, private_key: X25519PrivateKey
) -> Iterator[EvidenceItem]:
    """Items of every segment of one grant, oldest segment first."""
    for seg in segments(directory, grant_id):
        yield from open_evidence(seg, private_key)


def evidence_bytes_used(directory: str | Path, grant_id: str) -> int:
    """Payload bytes already spent by a grant, from clear chunk lengths (no key needed)."""
    total = 0
    for seg in segments(directory, grant_id):
        data = seg.read_bytes()
        h = _read_header(data, seg)
        with contextlib.suppress(EvidenceTruncatedError):
            for ct, final, _ in _chunks(data, h.end, seg):
                if not final:
                    total += len(ct) - ITEM_OVERHEAD
    return total


def purge_expired(
    directory: str | Path,
    grants: Iterable[Grant],
    retention_s: int,
    now_ns: int,
    audit: AuditLog | None = None,
) -> list[str]:
    """Delete each grant's evidence once ``expires + retention_s`` has passed.

    Expiry comes from ``grants`` when the grant is known, else from the clear segment
    headers (so evidence of a grant file since removed is still purged). Returns the
    purged grant ids and audits ``evidence.purged`` for each (before deleting, so a
    failed audit write leaves the evidence in place).
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    known = {g.id: g.expires_ns for g in grants}
    purged: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and _GRANT_ID_RE.match(p.name)):
        expires = known.get(d.name)
        if expires is None:
            heads = []
            for seg in segments(root, d.name):
                try:
                    heads.append(_read_header(seg.read_bytes(), seg).expires_ns)
                except EvidenceIntegrityError:
                    continue
            if not heads:
                continue
            expires = max(heads)
        if now_ns < expires + retention_s * 1_000_000_000:
            continue
        files = segments(root, d.name)
        if audit is not None:
            audit.append("evidence.purged", now_ns, {"grant": d.name, "files": len(files)})
        shutil.rmtree(d)
        purged.append(d.name)
    return purged
