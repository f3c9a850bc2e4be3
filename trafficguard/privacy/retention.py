"""Retention periods and subject rights over the SQLite store.

The functions take an open ``sqlite3`` connection and table/column names from the
caller's schema metadata; names are checked against the database schema before they are
quoted into SQL, so they can never carry SQL. Values are always bound parameters.
Callers write the audit entry (``retention.purged``, ``subject.exported``,
``subject.erased``) with counts only, never the subject's values.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from trafficguard.config import RetentionConfig
from trafficguard.errors import PrivacyError
from trafficguard.privacy.pseudonym import Pseudonymizer

DAY_S: Final = 86_400
RECORD_TYPES: Final = ("flows", "calls", "rtp", "alerts", "logs")
NS_PER_S: Final = 1_000_000_000

SqlValue = str | int | float | bytes | None


class RetentionError(PrivacyError):
    """A purge/export/erase named a table or column the store does not have."""


class RetentionPolicy(RetentionConfig):
    """``privacy.retention`` with the cutoff arithmetic. Reasons: docs/privacy.md."""

    def cutoff_ns(self, record_type: str, now_ns: int) -> int:
        """Records with a time column older than this are due for purge."""
        seconds = {
            "flows": self.flows_s,
            "calls": self.calls_s,
            "rtp": self.rtp_s,
            "alerts": self.alerts_s,
            "logs": self.logs_s,
        }.get(record_type)
        if seconds is None:
            raise RetentionError(f"no retention period for record type {record_type!r}")
        return now_ns - seconds * NS_PER_S


def subject_identifiers(
    pseudonymizer: Pseudonymizer, *, numbers: Sequence[str] = (), addresses: Sequence[str] = ()
) -> list[str]:
    """Every form one subscriber's data may be stored under: user pseudonyms of each
    number and address pseudonyms, under every epoch whose key is still held (records
    made under a deleted epoch's key are unlinkable, which is the point of deleting it)."""
    out: list[str] = []
    for epoch in pseudonymizer.epochs:
        out.extend(pseudonymizer.user(n, epoch) for n in numbers)
        out.extend(pseudonymizer.address(a, epoch) for a in addresses)
    return sorted(set(out))


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
    ).fetchone()
    if row is None:
        raise RetentionError(f"no table {table!r} in the store")
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check(conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> None:
    have = _columns(conn, table)
    missing = [c for c in columns if c not in have]
    if missing:
        raise RetentionError(f"table {table!r} has no column(s) {', '.join(map(repr, missing))}")


def purge(conn: sqlite3.Connection, table: str, time_column: str, older_than_ns: int) -> int:
    """Delete rows whose ``time_column`` is before ``older_than_ns``; returns rows deleted."""
    _check(conn, table, [time_column])
    with conn:
        cur = conn.execute(
            f"DELETE FROM {_quote(table)} WHERE {_quote(time_column)} < ?", (older_than_ns,)
        )
    return cur.rowcount


def purge_tables(
    conn: sqlite3.Connection,
    cutoffs: Sequence[tuple[str, str, int]],
    before_commit: Callable[[dict[str, int]], object] | None = None,
) -> dict[str, int]:
    """Delete, per ``(table, time_column, older_than_ns)``, the rows older than the cutoff,
    all in one transaction; rows deleted per table.

    ``before_commit(counts)`` runs inside the transaction (the audit entry): if it raises,
    the transaction is rolled back and nothing is deleted (fail closed). The connection must
    be in autocommit mode (``isolation_level=None``); a busy store waits for its timeout.
    """
    for table, column, _ in cutoffs:
        _check(conn, table, [column])
    counts: dict[str, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, older_than_ns in cutoffs:
            cur = conn.execute(
                f"DELETE FROM {_quote(table)} WHERE {_quote(column)} < ?", (older_than_ns,)
            )
            counts[table] = counts.get(table, 0) + max(cur.rowcount, 0)
        if before_commit is not None and any(counts.values()):
            before_commit(counts)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return counts


def _where(columns: Sequence[str], n_values: int) -> str:
    marks = ",".join("?" * n_values)
    return " OR ".join(f"{_quote(c)} IN ({marks})" for c in columns)


def export_subject(
    conn: sqlite3.Connection, tables: Sequence[tuple[str, Sequence[str]]], values: Sequence[str]
) -> dict[str, list[dict[str, SqlValue]]]:
    """Every row of each table where any listed column equals any of ``values``.

    ``values`` are the forms the store holds for one subscriber (pseudonyms of the number,
    the pseudonymized address, ...); the caller computes them with the Pseudonymizer.
    """
    out: dict[str, list[dict[str, SqlValue]]] = {}
    if not values:
        return {table: [] for table, _ in tables}
    for table, columns in tables:
        _check(conn, table, columns)
        cur = conn.execute(
            f"SELECT * FROM {_quote(table)} WHERE {_where(columns, len(values))}",
            [v for _ in columns for v in values],
        )
        names = [d[0] for d in cur.description]
        out[table] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out


def erase_subject(
    conn: sqlite3.Connection, tables: Sequence[tuple[str, Sequence[str]]], values: Sequence[str]
) -> dict[str, int]:
    """Delete the rows ``export_subject`` would return, in one transaction; counts per table."""
    counts: dict[str, int] = {}
    for table, columns in tables:
        _check(conn, table, columns)
    if not values:
        return {table: 0 for table, _ in tables}
    with conn:
        for table, columns in tables:
            cur = conn.execute(
                f"DELETE FROM {_quote(table)} WHERE {_where(columns, len(values))}",
                [v for _ in columns for v in values],
            )
            counts[table] = counts.get(table, 0) + cur.rowcount
    return counts
