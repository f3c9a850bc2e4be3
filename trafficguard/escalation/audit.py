"""The audit log: an append-only, hash-chained, signed record of every escalation decision.

One JSON object per line (sorted keys, no spaces, ASCII)::

    {"details":{...},"event":"grant.loaded","prev":"<64 hex>","seq":7,"ts_ns":...,"wall_ns":...}

``prev`` is the SHA-256 of the previous line (without its newline); the first entry has
64 zeros. Every ``checkpoint_every`` entries or ``checkpoint_interval_s`` of packet time a
``checkpoint`` entry is appended whose Ed25519 signature (audit key) covers its seq and
``prev``, i.e. the whole chain before it. A sidecar ``<log>.head`` holds the last seq and
line hash, signed, rewritten atomically after every append: without it, losing the tail
after the last checkpoint could not be told from a log that simply ended there.

``append`` writes, flushes and fsyncs before returning; if it cannot, it rolls the file
back and raises ``AuditWriteError``; the caller must then not open content (fail
closed). Several processes (daemon, CLI) may append: each append takes an exclusive
``flock`` and first catches up with lines others wrote, checking their chain.
Details never carry personal data in clear: targets appear as pseudonyms.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trafficguard.errors import EscalationError

AuditEvent = Literal[
    "grant.loaded",
    "grant.rejected",
    "grant.activated",
    "grant.expired",
    "grant.revoked",
    "grant.exhausted",
    "escalation.opened",
    "escalation.closed",
    "evidence.written",
    "evidence.opened",
    "evidence.purged",
    "pseudonym.revealed",
    "subject.exported",
    "subject.erased",
    "retention.purged",
    "config.reloaded",
    "checkpoint",
]
AUDIT_EVENTS: Final[frozenset[str]] = frozenset(get_args(AuditEvent))
GENESIS: Final = "0" * 64
_CHECKPOINT_DOMAIN: Final = b"trafficguard-audit-checkpoint-v1\n"
_HEAD_DOMAIN: Final = b"trafficguard-audit-head-v1\n"
_KEYS: Final = frozenset({"seq", "event", "ts_ns", "wall_ns", "details", "prev"})
NS_PER_S: Final = 1_000_000_000

ProblemKind = Literal[
    "malformed",
    "incomplete_line",
    "edited",
    "deleted",
    "inserted",
    "reordered",
    "bad_checkpoint",
    "truncated",
    "head_mismatch",
    "head_missing",
    "bad_head",
]
DetailValue = str | int | float | bool | None | list[str] | list[int]


class AuditError(EscalationError):
    """Base of audit log errors."""


class AuditWriteError(AuditError):
    """An entry could not be written and synced; nothing it records may happen."""


class AuditIntegrityError(AuditWriteError):
    """The log fails verification, so it is not appended to (also fail closed)."""


def head_path_for(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".head")


def _encode(entry: Mapping[str, object]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _checkpoint_message(seq: int, prev: str, ts_ns: int, wall_ns: int) -> bytes:
    return _CHECKPOINT_DOMAIN + f"{seq}\n{prev}\n{ts_ns}\n{wall_ns}".encode("ascii")


def _head_message(seq: int, line_hash: str) -> bytes:
    return _HEAD_DOMAIN + f"{seq}\n{line_hash}".encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint naming the audit key (not secret)."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


# ---------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One finding; ``line`` is 1-based, ``seq`` the entry it is about (None if unknown)."""

    kind: ProblemKind
    line: int
    seq: int | None
    message: str


@dataclass(slots=True)
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    last_checkpoint_seq: int = 0
    last_checkpoint_ts_ns: int | None = None
    head_stale: bool = False
    notes: list[str] = field(default_factory=list)
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> AuditProblem | None:
        return self.problems[0] if self.problems else None

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last checkpoint: covered only by the head file."""
        return self.last_seq - self.last_checkpoint_seq


@dataclass(frozen=True, slots=True)
class _Parsed:
    line_no: int
    raw: bytes
    entry: dict[str, object] | None


def _parse_entry(raw: bytes) -> dict[str, object] | None:
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        return None
    if not all(
        isinstance(entry[k], int) and not isinstance(entry[k], bool)
        for k in ("seq", "ts_ns", "wall_ns")
    ):
        return None
    if entry["event"] not in AUDIT_EVENTS or not isinstance(entry["details"], dict):
        return None
    prev = entry["prev"]
    if not isinstance(prev, str) or len(prev) != 64:
        return None
    return entry


def _check_checkpoint(entry: dict[str, object], public_key: Ed25519PublicKey | None) -> str | None:
    """Why a checkpoint entry is bad, or None if its signature verifies."""
    d = entry["details"]
    assert isinstance(d, dict)
    seq, prev = entry["seq"], entry["prev"]
    assert isinstance(seq, int) and isinstance(prev, str)
    if d.get("head") != prev or d.get("covers_seq") != seq - 1:
        return "checkpoint head/covers_seq do not match the entry"
    sig = d.get("signature")
    if not isinstance(sig, str):
        return "checkpoint has no signature"
    if public_key is None:
        return None
    try:
        raw = base64.b64decode(sig, validate=True)
        ts, wall = entry["ts_ns"], entry["wall_ns"]
        assert isinstance(ts, int) and isinstance(wall, int)
        public_key.verify(raw, _checkpoint_message(seq, prev, ts, wall))
    except (InvalidSignature, binascii.Error, ValueError):
        return "checkpoint signature does not verify with the audit key"
    return None


def _split_lines(data: bytes, report: VerifyReport) -> list[_Parsed]:
    pieces = data.split(b"\n")
    tail = pieces.pop()  # b"" when the file ends with a newline
    out = [_Parsed(i + 1, raw, _parse_entry(raw)) for i, raw in enumerate(pieces)]
    if tail:
        report.problems.append(
            AuditProblem(
                "incomplete_line",
                len(pieces) + 1,
                None,
                "last line has no newline: the file was cut inside an entry",
            )
        )
    return out


def verify_audit(
    path: str | Path,
    public_key: Ed25519PublicKey | None,
    head_path: str | Path | None = None,
    *,
    require_head: bool = True,
) -> VerifyReport:
    """Check the chain, checkpoint signatures and head file; name the first bad entry.

    Kinds: ``edited`` (an entry's hash is not what the next entry or the head records;
    ``seq`` names the changed entry), ``deleted`` (``seq`` is the first missing one),
    ``inserted`` (an entry whose seq was already seen), ``reordered`` (an entry ahead of
    one that appears later), ``bad_checkpoint`` (forged or re-chained history),
    ``truncated`` (the head records more entries than the file has), ``incomplete_line``.
    Without the head file, tail truncation after the last checkpoint is undetectable;
    ``require_head`` makes a missing head file a problem. With ``public_key=None`` the
    chain is checked but signatures are not (reported in ``notes``).
    """
    report = VerifyReport()
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as err:
        raise AuditError(f"{p}: cannot read: {err.strerror or err}") from None
    if public_key is None:
        report.notes.append("no public key: checkpoint and head signatures not checked")
    lines = _split_lines(data, report)
    later: dict[int, int] = {}
    for item in lines:
        if item.entry is not None:
            seq = item.entry["seq"]
            assert isinstance(seq, int)
            later[seq] = later.get(seq, 0) + 1
    seen: set[int] = set()
    expected, prev_hash, prev_seq, prev_line = 1, GENESIS, 0, 0
    hashes: dict[int, tuple[str, int]] = {}
    for item in lines:
        line_hash = _hash(item.raw)
        e = item.entry
        if e is None:
            report.problems.append(
                AuditProblem("malformed", item.line_no, None, "not a valid audit entry")
            )
            expected, prev_hash, prev_line = expected + 1, line_hash, item.line_no
            continue
        seq = e["seq"]
        assert isinstance(seq, int)
        later[seq] -= 1
        if seq != expected:
            if seq in seen or seq < expected:
                report.problems.append(
                    AuditProblem(
                        "inserted",
                        item.line_no,
                        seq,
                        f"entry {seq} appears again or out of place (expected {expected})",
                    )
                )
            elif later.get(expected, 0) > 0:
                report.problems.append(
                    AuditProblem(
                        "reordered", item.line_no, seq, f"entry {seq} found before entry {expected}"
                    )
                )
            else:
                report.problems.append(
                    AuditProblem(
                        "deleted",
                        item.line_no,
                        expected,
                        f"entries {expected}..{seq - 1} are missing",
                    )
                )
        elif e["prev"] != prev_hash:
            report.problems.append(
                AuditProblem(
                    "edited",
                    prev_line,
                    prev_seq if prev_line else None,
                    f"entry {prev_seq} does not hash to the prev recorded in entry {seq}"
                    if prev_line
                    else "first entry does not start the chain",
                )
            )
        if e["event"] == "checkpoint":
            why = _check_checkpoint(e, public_key)
            if why is None:
                report.checkpoints += 1
                report.last_checkpoint_seq = seq
                ts = e["ts_ns"]
                assert isinstance(ts, int)
                report.last_checkpoint_ts_ns = ts
            else:
                report.problems.append(AuditProblem("bad_checkpoint", item.line_no, seq, why))
        seen.add(seq)
        hashes[seq] = (line_hash, item.line_no)
        expected, prev_hash, prev_seq, prev_line = seq + 1, line_hash, seq, item.line_no
        report.entries += 1
    report.last_seq, report.last_hash = prev_seq, prev_hash
    _check_head(
        report, Path(head_path) if head_path else head_path_for(p), public_key, hashes, require_head
    )
    return report


def _check_head(
    report: VerifyReport,
    hp: Path,
    public_key: Ed25519PublicKey | None,
    hashes: dict[int, tuple[str, int]],
    require_head: bool,
) -> None:
    last_line = hashes[report.last_seq][1] if report.last_seq in hashes else 0
    try:
        head = json.loads(hp.read_bytes())
    except FileNotFoundError:
        msg = (
            f"no head file {hp.name}: a truncated tail after checkpoint "
            f"{report.last_checkpoint_seq} could not be detected"
        )
        if require_head and report.entries:
            report.problems.append(AuditProblem("head_missing", last_line, None, msg))
        else:
            report.notes.append(msg)
        return
    except (OSError, ValueError):
        report.problems.append(AuditProblem("bad_head", last_line, None, "head file unreadable"))
        return
    seq, line_hash, sig = head.get("seq"), head.get("hash"), head.get("signature")
    if not isinstance(seq, int) or not isinstance(line_hash, str):
        report.problems.append(AuditProblem("bad_head", last_line, None, "head file malformed"))
        return
    if public_key is not None:
        try:
            public_key.verify(
                base64.b64decode(str(sig), validate=True), _head_message(seq, line_hash)
            )
        except (InvalidSignature, binascii.Error, ValueError):
            report.problems.append(
                AuditProblem("bad_head", last_line, None, "head signature does not verify")
            )
            return
    if seq > report.last_seq:
        report.problems.append(
            AuditProblem(
                "truncated",
                last_line + 1,
                report.last_seq + 1,
                f"head records {seq} entries; the log ends at {report.last_seq}",
            )
        )
    elif seq == 0 and line_hash == GENESIS:
        report.head_stale = report.last_seq > 0
    elif seq not in hashes:
        report.problems.append(
            AuditProblem(
                "head_mismatch", last_line, seq, f"head names entry {seq}, which is not in the log"
            )
        )
    elif hashes[seq][0] != line_hash:
        report.problems.append(
            AuditProblem(
                "edited", hashes[seq][1], seq, f"entry {seq} does not hash to the head's record"
            )
        )
    elif seq < report.last_seq:
        report.head_stale = True
        report.notes.append(
            f"head is at entry {seq}; later entries were written after it "
            "(crash between log and head write)"
        )


def read_entries(path: str | Path) -> Iterator[dict[str, object]]:
    """Entries of a log as dicts, skipping lines that do not parse (for ``audit show``)."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                entry = _parse_entry(raw[:-1])
                if entry is not None:
                    yield entry


# ---------------------------------------------------------------- writing


def _check_details(details: Mapping[str, DetailValue]) -> dict[str, DetailValue]:
    out: dict[str, DetailValue] = {}
    for k, v in details.items():
        if not isinstance(k, str):
            raise TypeError("audit detail keys are strings")
        if isinstance(v, bytes | bytearray):
            raise TypeError(f"audit detail {k!r}: bytes are not allowed")
        out[k] = v
    return out


class AuditLog:
    """Appends entries to one audit log file; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        signing_key: Ed25519PrivateKey | None,
        *,
        public_key: Ed25519PublicKey | None = None,
        checkpoint_every: int = 100,
        checkpoint_interval_s: float = 300.0,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self._key = signing_key
        self._public = public_key or (signing_key.public_key() if signing_key else None)
        self._every = checkpoint_every
        self._interval_ns = int(checkpoint_interval_s * NS_PER_S)
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._seq, self._prev, self._end = 0, GENESIS, 0
        self._since_cp = 0
        self._cp_ts: int | None = None  # packet time of the last checkpoint, if any
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as err:
            raise AuditWriteError(f"{self.path}: cannot open: {err.strerror or err}") from None
        try:
            self._resume()
        except BaseException:
            os.close(self._fd)
            raise

    def _resume(self) -> None:
        with self._locked():
            size = os.fstat(self._fd).st_size
            report = verify_audit(self.path, self._public, self.head_path, require_head=size > 0)
            if not report.ok:
                first = report.problems[0]
                raise AuditIntegrityError(
                    f"{self.path}: line {first.line}: {first.kind}: {first.message}; "
                    "refusing to append (run audit verify)"
                )
            self._seq, self._prev, self._end = report.last_seq, report.last_hash, size
            self._since_cp = report.unsigned_tail
            self._cp_ts = report.last_checkpoint_ts_ns
            if report.head_stale:
                self._write_head()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @property
    def seq(self) -> int:
        """Seq of the last entry written (0 for an empty log)."""
        return self._seq

    def _catch_up(self) -> None:
        """Take in entries another process appended since our last write."""
        size = os.fstat(self._fd).st_size
        if size == self._end:
            return
        if size < self._end:
            raise AuditIntegrityError(f"{self.path}: log shrank from {self._end} to {size} bytes")
        data = os.pread(self._fd, size - self._end, self._end)
        if not data.endswith(b"\n"):
            raise AuditIntegrityError(f"{self.path}: another writer left an incomplete line")
        for raw in data[:-1].split(b"\n"):
            e = _parse_entry(raw)
            if e is None or e["seq"] != self._seq + 1 or e["prev"] != self._prev:
                raise AuditIntegrityError(f"{self.path}: entry after {self._seq} breaks the chain")
            self._seq, self._prev = self._seq + 1, _hash(raw)
            if e["event"] == "checkpoint":
                self._since_cp = 0
                ts = e["ts_ns"]
                assert isinstance(ts, int)
                self._cp_ts = ts
            else:
                self._since_cp += 1
        self._end = size

    def _write_line(self, event: str, ts_ns: int, details: dict[str, DetailValue]) -> int:
        seq, wall = self._seq + 1, self._wall()
        if event == "checkpoint":
            if self._key is None:
                raise AuditWriteError("no audit signing key: cannot write a checkpoint")
            sig = self._key.sign(_checkpoint_message(seq, self._prev, ts_ns, wall))
            details = {
                "covers_seq": seq - 1,
                "head": self._prev,
                "key": key_id(self._key.public_key()),
                "signature": base64.b64encode(sig).decode("ascii"),
            }
        line = _encode(
            {
                "seq": seq,
                "event": event,
                "ts_ns": ts_ns,
                "wall_ns": wall,
                "details": details,
                "prev": self._prev,
            }
        )
        try:
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._end)  # keep the chain whole for the next try
            raise AuditWriteError(
                f"{self.path}: cannot write entry {seq}: {err.strerror or err}"
            ) from None
        self._seq, self._prev, self._end = seq, _hash(line), self._end + len(line) + 1
        if event == "checkpoint":
            self._since_cp, self._cp_ts = 0, ts_ns
        else:
            self._since_cp += 1
        self._write_head()
        return seq

    def _write_head(self) -> None:
        head: dict[str, object] = {"seq": self._seq, "hash": self._prev}
        if self._key is not None:
            head["signature"] = base64.b64encode(
                self._key.sign(_head_message(self._seq, self._prev))
            ).decode("ascii")
        tmp = self.head_path.with_name(f".{self.head_path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, _encode(head) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
            dfd = os.open(self.head_path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise AuditWriteError(
                f"{self.head_path}: cannot write head: {err.strerror or err}"
            ) from None

    def append(
        self, event: AuditEvent, ts_ns: int, details: Mapping[str, DetailValue] | None = None
    ) -> int:
        """Write one entry durably and return its seq; AuditWriteError if not written.

        May add a signed checkpoint after it (every N entries or M s of packet time).
        """
        if event not in AUDIT_EVENTS or event == "checkpoint":
            raise ValueError(f"not an audit event: {event!r}")
        clean = _check_details(details or {})
        with self._locked():
            self._catch_up()
            seq = self._write_line(event, ts_ns, clean)
            if self._cp_ts is None:
                self._cp_ts = ts_ns  # no checkpoint yet: count M seconds from here
            if self._key is not None and (
                self._since_cp >= self._every or ts_ns - self._cp_ts >= self._interval_ns
            ):
                self._write_line("checkpoint", ts_ns, {})
        return seq

    def checkpoint(self, ts_ns: int) -> int:
        """Write a signed checkpoint now (e.g. at shutdown) and return its seq."""
        with self._locked():
            self._catch_up()
            return self._write_line("checkpoint", ts_ns, {})

    def close(self, ts_ns: int | None = None) -> None:
        """Checkpoint unsigned entries (if a packet time is given and a key is held), close."""
        if self._fd < 0:
            return
        try:
            if ts_ns is not None and self._key is not None and self._since_cp:
                self.checkpoint(ts_ns)
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
