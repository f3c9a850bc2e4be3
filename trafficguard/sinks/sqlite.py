"""SQLite record store: the embedded default sink, one table per record kind.

Tables are derived from the record Structs (``msgspec.structs.fields``), so a new record
kind (calls, RTP streams, alerts) plugs in with :func:`register_kind`; every kind is
registered here. Writes are buffered and land in one transaction per flush with
``INSERT OR REPLACE`` on the kind's primary key, so replaying the same capture twice into
one store leaves identical content. Every ``sqlite3`` failure becomes a ``StoreError`` that
names the file and the reason; what was committed before stays committed.

Schema version ``SCHEMA_VERSION`` lives in ``PRAGMA user_version`` and in the ``meta``
table; a store written by a newer or unknown schema is refused rather than guessed at.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, overload

import msgspec

from trafficguard import __version__
from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import SqliteConfig
from trafficguard.detect.alerts import AlertRecord
from trafficguard.errors import StoreError
from trafficguard.flow.records import FlowRecord
from trafficguard.sinks.child_pipe import (
    error_reason,
    read_frame,
    start_child,
    stop_child,
    write_frame,
)
from trafficguard.sinks.store_writer import commit_rows, rollback
from trafficguard.voip.kpi import VoipIntervalRecord
from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord

SCHEMA_VERSION: Final = 1
DEFAULT_BUSY_TIMEOUT_S: Final = 5.0

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_SCALAR_SQL: Final[dict[type, str]] = {
    bool: "INTEGER",
    int: "INTEGER",
    float: "REAL",
    str: "TEXT",
    bytes: "BLOB",
}
_RESERVED_TABLES: Final = frozenset({"meta"})
FILTER_OPS: Final = frozenset({"=", "!=", "<", "<=", ">", ">=", "is null", "is not null"})


@dataclass(frozen=True, slots=True)
class Column:
    """One table column derived from one Struct field."""

    name: str
    sql_type: str  # INTEGER, REAL, TEXT, BLOB
    nullable: bool
    codec: Literal["plain", "bool", "json"]  # how the Python value maps to the SQL value
    py_type: Any  # the field's annotation, used to decode "json" columns


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How one record kind is stored: its table, key, indices and time range columns."""

    kind: str
    struct_type: type[msgspec.Struct]
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    index_columns: tuple[str, ...]
    time_range: tuple[str, str] | None  # (start column, end column) used by query filters

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create_sql(self) -> list[str]:
        """DDL for the table and its indices (idempotent)."""
        cols = []
        for c in self.columns:
            null = "" if c.nullable else " NOT NULL"
            cols.append(f'"{c.name}" {c.sql_type}{null}')
        pk = ", ".join(f'"{k}"' for k in self.primary_key)
        table = f'"{self.kind}" ({", ".join(cols)}, PRIMARY KEY ({pk}))'
        stmts = [f"CREATE TABLE IF NOT EXISTS {table}"]
        for col in self.index_columns:
            stmts.append(
                f'CREATE INDEX IF NOT EXISTS "{self.kind}_{col}" ON "{self.kind}" ("{col}")'
            )
        return stmts

    def insert_sql(self) -> str:
        names = ", ".join(f'"{n}"' for n in self.column_names)
        marks = ", ".join("?" for _ in self.columns)
        return f'INSERT OR REPLACE INTO "{self.kind}" ({names}) VALUES ({marks})'

    def row_encoder(self) -> Callable[[msgspec.Struct], tuple[Any, ...]]:
        """Record -> row tuple; plain ``astuple`` unless a field needs JSON encoding."""
        json_idx = [i for i, c in enumerate(self.columns) if c.codec == "json"]
        astuple = msgspec.structs.astuple
        if not json_idx:
            return astuple
        encode = msgspec.json.encode

        def encode_row(rec: msgspec.Struct) -> tuple[Any, ...]:
            row = list(astuple(rec))
            for i in json_idx:
                if row[i] is not None:
                    row[i] = encode(row[i]).decode()
            return tuple(row)

        return encode_row

    def row_decoder(self) -> Callable[[Sequence[Any]], msgspec.Struct]:
        """Row -> typed record (bools back from 0/1, JSON columns decoded)."""
        names = self.column_names
        fixes: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(self.columns):
            if c.codec == "bool":
                fixes.append((i, bool))
            elif c.codec == "json":
                fixes.append((i, _json_decoder(c.py_type)))
        struct_type = self.struct_type

        def decode_row(row: Sequence[Any]) -> msgspec.Struct:
            values = list(row)
            for i, fix in fixes:
                if values[i] is not None:
                    values[i] = fix(values[i])
            return struct_type(**dict(zip(names, values, strict=True)))

        return decode_row


def _json_decoder(py_type: Any) -> Callable[[Any], Any]:
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(py_type)
    return decoder.decode


def _column_for(name: str, annotation: Any) -> Column:
    """Map a field annotation to a column: scalars natively, anything else as JSON text."""
    nullable = False
    base = annotation
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(base))
        base = args[0] if len(args) == 1 else annotation
    while hasattr(base, "__supertype__"):  # typing.NewType, e.g. Pseudonym
        base = base.__supertype__
    if typing.get_origin(base) is Literal:
        arg_types = {type(a) for a in typing.get_args(base)}
        base = arg_types.pop() if len(arg_types) == 1 else annotation
    if isinstance(base, type) and base in _SCALAR_SQL:
        codec: Literal["plain", "bool", "json"] = "bool" if base is bool else "plain"
        return Column(name, _SCALAR_SQL[base], nullable, codec, annotation)
    return Column(name, "TEXT", nullable, "json", annotation)


_REGISTRY: dict[str, KindSpec] = {}


def register_kind(
    struct_type: type[msgspec.Struct],
    primary_key: tuple[str, ...],
    time_columns: tuple[str, ...] = (),
    index_columns: tuple[str, ...] = (),
    time_range: tuple[str, str] | None = None,
) -> KindSpec:
    """Make a record kind storable: its table is named ``struct_type.kind``.

    ``time_columns`` and ``index_columns`` get an index each; ``time_range`` is the
    (start, end) pair query filters use (default: first and last time column).
    Registering the same kind again with the same spec is a no-op.
    """
    kind = getattr(struct_type, "kind", None)
    if not isinstance(kind, str) or not _IDENT.match(kind) or kind in _RESERVED_TABLES:
        raise ValueError(f"{struct_type.__name__}.kind must be a lowercase identifier")
    columns = tuple(_column_for(f.name, f.type) for f in msgspec.structs.fields(struct_type))
    names = {c.name for c in columns}
    for col in columns:
        if not _IDENT.match(col.name):
            raise ValueError(f"{struct_type.__name__}: field {col.name!r} is not a column name")
    for col_name in (*primary_key, *time_columns, *index_columns, *(time_range or ())):
        if col_name not in names:
            raise ValueError(f"{struct_type.__name__} has no field {col_name!r}")
    if not primary_key:
        raise ValueError("a primary key is required for INSERT OR REPLACE replays")
    if time_range is None and time_columns:
        time_range = (time_columns[0], time_columns[-1])
    indexed = tuple(dict.fromkeys((*time_columns, *index_columns)))
    spec = KindSpec(kind, struct_type, columns, tuple(primary_key), indexed, time_range)
    known = _REGISTRY.get(kind)
    if known is not None and known != spec:
        raise ValueError(f"record kind {kind!r} is already registered differently")
    _REGISTRY[kind] = spec
    return spec


def registered_kinds() -> dict[str, KindSpec]:
    """A copy of the kind registry (kind name -> spec)."""
    return dict(_REGISTRY)


register_kind(
    FlowRecord,
    primary_key=("flow_id", "seq"),
    time_columns=("first_seen_ns", "start_ns", "end_ns"),
    index_columns=("app",),
    time_range=("start_ns", "end_ns"),
)
# VoIP records (issue 4): call/registration/RTP quality records and KPI intervals.
register_kind(
    CallRecord,
    primary_key=("call_id_hash", "invite_ns"),
    time_columns=("invite_ns", "end_ns"),
    index_columns=("final_code",),
)
register_kind(
    RegistrationRecord,
    primary_key=("call_id_hash", "ts_ns"),
    time_columns=("ts_ns", "end_ns"),
)
register_kind(
    RtpStreamRecord,
    primary_key=("src_addr", "src_port", "dst_addr", "dst_port", "ssrc", "first_ns"),
    time_columns=("first_ns", "last_ns"),
    index_columns=("call_id_hash",),
)
register_kind(
    VoipIntervalRecord,
    primary_key=("interval_start_ns",),
    time_columns=("interval_start_ns", "interval_end_ns"),
)
# Detector alerts (issue 5) and DNS features (issue 9): registered here with the others so
# every store has every table, whichever stages wrote it.
register_kind(
    AlertRecord,
    primary_key=("alert_id", "seq"),
    time_columns=("first_seen_ns", "last_seen_ns"),
    index_columns=("detector", "severity"),
)
register_kind(
    DnsSummaryRecord,
    primary_key=("summary_id",),
    time_columns=("interval_start_ns", "interval_end_ns"),
    index_columns=("client_addr",),
)


def _store_error(path: Path | str, err: BaseException | str) -> StoreError:
    reason = err if isinstance(err, str) else error_reason(err)
    return StoreError(f"{path}: {reason}")


def _scalar(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> Any:
    return conn.execute(sql, args).fetchone()[0]


def _check_schema(conn: sqlite3.Connection, path: Path | str) -> bool:
    """True if the store is already initialised at SCHEMA_VERSION, False if it is empty."""
    found = _scalar(conn, "PRAGMA user_version")
    if found == SCHEMA_VERSION:
        return True
    if found == 0:
        if _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table'") == 0:
            return False
        raise _store_error(
            path,
            f"unknown schema version 0 (not a trafficguard store); "
            f"this build reads schema version {SCHEMA_VERSION}",
        )
    newer = "newer" if found > SCHEMA_VERSION else "older, unsupported"
    raise _store_error(
        path,
        f"store schema version {found} is {newer}; this build reads schema version "
        f"{SCHEMA_VERSION}",
    )


class SqliteSink:
    """RecordSink writing every registered record kind to one SQLite file (WAL mode).

    Single writer: call it from one thread at a time. ``write`` buffers rows and commits
    by itself once ``cfg.batch_records`` are buffered; ``flush`` commits the rest. A
    failed flush rolls back that batch only and keeps it buffered for a later retry.
    """

    def __init__(self, cfg: SqliteConfig, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(cfg.path)
        self._batch_records = cfg.batch_records
        self._specs: dict[str, KindSpec] = {}
        self._encoders: dict[str, Callable[[msgspec.Struct], tuple[Any, ...]]] = {}
        self._inserts: dict[str, str] = {}
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_count = 0
        self._closed = False
        self.records_written: dict[str, int] = {}  # kind -> rows committed (for metrics)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _store_error(self.path, err) from None
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise _store_error(self.path, err) from None
        try:
            self._open_retrying(cfg.synchronous, busy_timeout_s)
        except sqlite3.Error as err:
            self._conn.close()
            raise _store_error(self.path, err) from None
        except StoreError:
            self._conn.close()
            raise

    def _open_retrying(self, synchronous: str, busy_timeout_s: float) -> None:
        """Open, retrying on SQLITE_BUSY: switching a fresh file to WAL can report BUSY
        at once (no busy handler) while another process initialises the same store."""
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.01
        while True:
            try:
                self._open(synchronous)
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _open(self, synchronous: str) -> None:
        conn = self._conn
        initialised = _check_schema(conn, self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not initialised:
                # re-check under the write lock: another process may have initialised it
                initialised = _check_schema(conn, self.path)
            if not initialised:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("created_by", __version__)],
                )
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for spec in _REGISTRY.values():
                self._install(spec)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _install(self, spec: KindSpec) -> None:
        """Create (or check) the kind's table inside the caller's transaction."""
        existing = [r[1] for r in self._conn.execute(f'PRAGMA table_info("{spec.kind}")')]
        if existing and tuple(existing) != spec.column_names:
            raise _store_error(
                self.path,
                f"table {spec.kind!r} has columns that do not match the {spec.kind} record "
                f"(schema version {SCHEMA_VERSION})",
            )
        for stmt in spec.create_sql():
            self._conn.execute(stmt)
        self._specs[spec.kind] = spec
        self._encoders[spec.kind] = spec.row_encoder()
        self._inserts[spec.kind] = spec.insert_sql()

    def _late_install(self, kind: str) -> None:
        """A kind registered after this sink opened: create its table now."""
        spec = _REGISTRY.get(kind)
        if spec is None:
            raise _store_error(self.path, f"no table registered for record kind {kind!r}")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._install(spec)
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            rollback(self._conn)
            raise _store_error(self.path, err) from None
        except StoreError:
            rollback(self._conn)
            raise

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        """Buffer a batch; commits by itself once ``batch_records`` rows are buffered."""
        if self._closed:
            raise _store_error(self.path, "sink is closed")
        encoders = self._encoders
        pending = self._pending
        buffered = 0
        try:
            for rec in records:
                kind: str = type(rec).kind  # type: ignore[attr-defined]
                encode = encoders.get(kind)
                if encode is None:
                    self._late_install(kind)
                    encode = encoders[kind]
                rows = pending.get(kind)
                if rows is None:
                    rows = pending[kind] = []
                rows.append(encode(rec))
                buffered += 1
        finally:
            self._pending_count += buffered
        if self._pending_count >= self._batch_records:
            self._commit_batch()

    def _commit_batch(self) -> None:
        """A full batch is buffered: commit it (the writer-process sink hands it over)."""
        self.flush()

    @property
    def pending(self) -> int:
        """Rows buffered and not yet committed."""
        return self._pending_count

    def flush(self) -> None:
        """Commit everything buffered in one transaction."""
        if not self._pending_count or self._closed:
            return
        try:
            commit_rows(self._conn, self._inserts, self._pending)
        except sqlite3.Error as err:
            raise _store_error(self.path, err) from None
        written = self.records_written
        for kind, rows in self._pending.items():
            written[kind] = written.get(kind, 0) + len(rows)
        self._pending = {}
        self._pending_count = 0

    def close(self) -> None:
        """Flush and close; idempotent. The connection closes even if the flush fails."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as err:
                raise _store_error(self.path, err) from None

    def __enter__(self) -> SqliteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteWriterSink(SqliteSink):
    """``SqliteSink`` whose commits run in a store-writer process (see ``store_writer``).

    This process still opens the store (schema check and tables, so a bad file fails here
    and at once) and keeps that connection for the tables of kinds met later. Rows are
    encoded here; each full batch goes down a pipe to the child, which commits it while
    packets go on (the pipe's 1 MB is the only queue: a slower child makes ``write`` wait).
    ``flush`` returns once the child has committed everything handed over, so it promises
    what the in-process sink's does. A commit that fails in the child keeps its rows there
    for the next try and is raised here by the next ``flush`` or ``close``.
    """

    def __init__(self, cfg: SqliteConfig, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        super().__init__(cfg, busy_timeout_s)
        self._child_args = [
            sys.executable, "-m", "trafficguard.sinks.store_writer", str(self.path),
            "--synchronous", cfg.synchronous, "--busy-timeout", str(busy_timeout_s),
        ]  # fmt: skip
        self._unconfirmed = 0  # rows handed over and not yet reported committed
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._start_child()
        except StoreError:
            self._closed = True
            self._conn.close()
            raise

    def _start_child(self) -> None:
        try:
            self._proc = start_child(self._child_args)
        except OSError as err:
            reason = f"cannot start the store writer: {error_reason(err)}"
            raise _store_error(self.path, reason) from None
        self._sent_inserts: set[str] = set()

    @property
    def pending(self) -> int:
        """Rows not known to be committed: buffered here, or handed over since the last
        ``flush`` and not yet confirmed (exact right after a ``flush``)."""
        return self._pending_count + self._unconfirmed

    def _commit_batch(self) -> None:
        self._hand_over()

    def _ensure_child(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._child_died()

    def _child_died(self) -> NoReturn:
        """Start a new child, then raise: rows handed to the dead one may be lost."""
        code = None if self._proc is None else self._proc.wait()
        lost, self._unconfirmed = self._unconfirmed, 0
        self._start_child()
        reason = f"store writer exited with status {code}; a new one took over"
        if lost:
            reason += f" ({lost} rows handed to it may not be committed)"
        raise _store_error(self.path, reason)

    def _send(self, message: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            write_frame(self._proc.stdin, message)
        except OSError as err:
            raise _store_error(self.path, f"store writer: {error_reason(err)}") from None

    def _hand_over(self) -> None:
        """Send the buffered rows to the child (it commits them at once), not waiting."""
        if not self._pending_count:
            return
        self._ensure_child()
        for kind in self._pending:
            if kind not in self._sent_inserts:
                self._send(["insert", kind, self._inserts[kind]])
                self._sent_inserts.add(kind)
        step = self._batch_records  # a frame per batch: the child holds one batch at a time
        for kind, rows in self._pending.items():
            for lo in range(0, len(rows), step):
                self._send(["batch", {kind: rows[lo : lo + step]}])
        self._unconfirmed += self._pending_count
        self._pending = {}
        self._pending_count = 0

    def _sync(self, op: str) -> None:
        """Send ``op`` (sync or close) and wait for the child's status; raise its error."""
        self._ensure_child()
        self._send([op])
        assert self._proc is not None and self._proc.stdout is not None
        status = read_frame(self._proc.stdout)
        if status is None:  # it died while committing
            self._child_died()
        error, pending, written = status
        self._unconfirmed = pending
        self.records_written = dict(written)
        if error is not None:
            raise _store_error(self.path, error)

    def flush(self) -> None:
        """Hand over what is buffered and wait until the child has committed it all."""
        if self._closed:
            return
        self._hand_over()
        if self._unconfirmed:
            self._sync("sync")

    def close(self) -> None:
        """Commit everything, stop the child, close; idempotent. The child is stopped and
        the connection closed even if the last commit fails."""
        if self._closed:
            return
        try:
            self._hand_over()
            self._sync("close")
        finally:
            self._closed = True
            self._stop_child()
            try:
                self._conn.close()
            except sqlite3.Error as err:
                raise _store_error(self.path, err) from None

    def _stop_child(self) -> None:
        if self._proc is not None:
            stop_child(self._proc)


def open_store(cfg: SqliteConfig) -> SqliteSink:
    """The SQLite sink ``cfg.writer`` asks for."""
    return SqliteWriterSink(cfg) if cfg.writer == "process" else SqliteSink(cfg)


def _open_ro(path: Path | str) -> sqlite3.Connection:
    """Read-only connection; never creates the file, checks the schema version."""
    p = Path(path)
    if not p.is_file():
        raise _store_error(p, "no such store file")
    uri = p.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        raise _store_error(p, err) from None
    try:
        if not _check_schema(conn, p):
            raise _store_error(p, "empty store (no schema)")
    except sqlite3.Error as err:
        conn.close()
        raise _store_error(p, err) from None
    except StoreError:
        conn.close()
        raise
    return conn


def _spec_of(path: Path | str, kind: str) -> KindSpec:
    spec = _REGISTRY.get(kind)
    if spec is None:
        raise _store_error(path, f"unknown record kind {kind!r}")
    return spec


@overload
def query_records(
    path: Path | str,
    kind: Literal["flow"] = "flow",
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    app: str | None = None,
    limit: int | None = 100,
    order: str | None = None,
    descending: bool = False,
    filters: Sequence[tuple[str, str, Any]] = (),
) -> list[FlowRecord]: ...


@overload
def query_records(
    path: Path | str,
    kind: str,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    app: str | None = None,
    limit: int | None = 100,
    order: str | None = None,
    descending: bool = False,
    filters: Sequence[tuple[str, str, Any]] = (),
) -> list[msgspec.Struct]: ...


def query_records(
    path: Path | str,
    kind: str = "flow",
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    app: str | None = None,
    limit: int | None = 100,
    order: str | None = None,
    descending: bool = False,
    filters: Sequence[tuple[str, str, Any]] = (),
) -> list[FlowRecord] | list[msgspec.Struct]:
    """Typed records of one kind whose time range overlaps [since_ns, until_ns).

    A record matches when its end >= ``since_ns`` and its start < ``until_ns``. Results
    are ordered by ``order`` (a column name; default: the kind's start-time column), then
    by primary key; ``limit=None`` = all.
    ``filters`` are ``(column, op, value)`` conditions ANDed together, ``op`` one of
    ``FILTER_OPS`` (``value`` is ignored for the null tests).
    """
    spec = _spec_of(path, kind)
    names = spec.column_names
    if order is None:  # the kind's own start time, else its key
        order = spec.time_range[0] if spec.time_range is not None else spec.primary_key[0]
    if order not in names:
        raise _store_error(path, f"cannot order {kind} records by {order!r}")
    where: list[str] = []
    args: list[Any] = []
    if since_ns is not None or until_ns is not None:
        if spec.time_range is None:
            raise _store_error(path, f"{kind} records have no time range")
        start_col, end_col = spec.time_range
        if since_ns is not None:
            where.append(f'"{end_col}" >= ?')
            args.append(since_ns)
        if until_ns is not None:
            where.append(f'"{start_col}" < ?')
            args.append(until_ns)
    if app is not None:
        if "app" not in names:
            raise _store_error(path, f"{kind} records have no app column")
        where.append('"app" = ?')
        args.append(app)
    for column, op, value in filters:
        if column not in names or op not in FILTER_OPS:
            raise _store_error(path, f"cannot filter {kind} records by {column!r} {op!r}")
        if op in ("is null", "is not null"):
            where.append(f'"{column}" {op.upper()}')
        else:
            where.append(f'"{column}" {op} ?')
            args.append(value)
    direction = "DESC" if descending else "ASC"
    keys = ", ".join(f'"{k}" {direction}' for k in (order, *spec.primary_key) if k)
    cols = ", ".join(f'"{n}"' for n in names)
    sql = f'SELECT {cols} FROM "{kind}"'
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {keys}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(max(limit, 0))
    decode = spec.row_decoder()
    conn = _open_ro(path)
    try:
        rows = conn.execute(sql, args).fetchall()
    except sqlite3.Error as err:
        raise _store_error(path, err) from None
    finally:
        conn.close()
    return [decode(r) for r in rows]


def count_records(path: Path | str, kind: str = "flow") -> int:
    """Number of stored records of one kind (0 if its table was never created)."""
    _spec_of(path, kind)
    conn = _open_ro(path)
    try:
        exists = _scalar(
            conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (kind,)
        )
        return int(_scalar(conn, f'SELECT count(*) FROM "{kind}"')) if exists else 0
    except sqlite3.Error as err:
        raise _store_error(path, err) from None
    finally:
        conn.close()
