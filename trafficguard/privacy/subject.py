"""Subject rights over the SQLite store: every record about one subscriber, every kind.

Tables and columns are read from the store's own schema, so record kinds added later
(alerts, DNS metadata, ...) are covered without a list to keep in step:

* a row is *about* the subscriber when one of its identity columns (``SUBJECT_COLUMNS``:
  addresses such as ``src_addr``/``dst_addr``/``source``/``target`` and user pseudonyms
  such as ``caller``/``callee``/``aor``) equals one of the subscriber's stored forms
  (``retention.subject_identifiers``: user and address pseudonyms under every key epoch
  still held), or a ``media`` list holds one of its addresses;
* *derived* rows share a ``call_id_hash`` with such a row (the RTP streams of the
  subscriber's calls) and belong to the subject too.

Values are bound parameters; table and column names come from ``sqlite_master`` and are
quoted. The caller audits ``subject.exported`` / ``subject.erased`` with counts only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from trafficguard.privacy.edge import ADDRESS_FIELDS, ENDPOINT_LIST_FIELDS
from trafficguard.privacy.retention import SqlValue

USER_FIELDS: Final = frozenset(
    {"caller", "callee", "aor", "user", "subscriber", "from_user", "to_user", "party"}
)
SUBJECT_COLUMNS: Final = ADDRESS_FIELDS | USER_FIELDS
JOIN_COLUMN: Final = "call_id_hash"
_SKIP_TABLES: Final = frozenset({"meta"})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    exact: tuple[str, ...]
    lists: tuple[str, ...]
    join: bool


def store_tables(conn: sqlite3.Connection) -> list[_Table]:
    """Record tables of the store with the columns that can identify a subscriber."""
    out = []
    names = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    ]
    for table in names:
        if table in _SKIP_TABLES or table.startswith("sqlite_"):
            continue
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(table)})")]
        exact = tuple(c for c in cols if c in SUBJECT_COLUMNS)
        lists = tuple(c for c in cols if c in ENDPOINT_LIST_FIELDS)
        if exact or lists:
            out.append(_Table(table, exact, lists, JOIN_COLUMN in cols))
    return out


def _where(t: _Table, values: Sequence[str], joins: Sequence[str]) -> tuple[str, list[str]]:
    parts: list[str] = []
    args: list[str] = []
    if values:
        marks = ",".join("?" * len(values))
        for c in t.exact:
            parts.append(f"{_quote(c)} IN ({marks})")
            args.extend(values)
        for c in t.lists:
            for v in values:
                # JSON list of "addr:port" / "[v6]:port": match the address part exactly
                parts.append(f"instr({_quote(c)}, ?) > 0")
                args.append(f'"{v}:')
                parts.append(f"instr({_quote(c)}, ?) > 0")
                args.append(f'"[{v}]:')
    if joins and t.join:
        parts.append(f"{_quote(JOIN_COLUMN)} IN ({','.join('?' * len(joins))})")
        args.extend(joins)
    return " OR ".join(parts), args


def _join_values(
    conn: sqlite3.Connection, tables: list[_Table], values: Sequence[str]
) -> list[str]:
    found: set[str] = set()
    for t in tables:
        if not t.join:
            continue
        where, args = _where(t, values, ())
        if not where:
            continue
        sql = f"SELECT DISTINCT {_quote(JOIN_COLUMN)} FROM {_quote(t.name)} WHERE {where}"
        found.update(r[0] for r in conn.execute(sql, args) if r[0])
    return sorted(found)


def export_subject_rows(
    conn: sqlite3.Connection, values: Sequence[str]
) -> dict[str, list[dict[str, SqlValue]]]:
    """Every row about the subject (see module docstring), per table."""
    tables = store_tables(conn)
    if not values:
        return {t.name: [] for t in tables}
    joins = _join_values(conn, tables, values)
    out: dict[str, list[dict[str, SqlValue]]] = {}
    for t in tables:
        where, args = _where(t, values, joins)
        cur = conn.execute(f"SELECT * FROM {_quote(t.name)} WHERE {where}", args)
        names = [d[0] for d in cur.description]
        out[t.name] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out


def erase_subject_rows(conn: sqlite3.Connection, values: Sequence[str]) -> dict[str, int]:
    """Delete what ``export_subject_rows`` returns, in one transaction; counts per table."""
    tables = store_tables(conn)
    if not values:
        return {t.name: 0 for t in tables}
    joins = _join_values(conn, tables, values)
    counts: dict[str, int] = {}
    with conn:
        for t in tables:
            where, args = _where(t, values, joins)
            cur = conn.execute(f"DELETE FROM {_quote(t.name)} WHERE {where}", args)
            counts[t.name] = cur.rowcount
    return counts


# the first one a table has is its record's age: when the record ended or was last seen
TIME_COLUMNS: Final = (
    "end_ns", "last_ns", "last_seen_ns", "interval_end_ns", "ts_ns", "start_ns"
)  # fmt: skip
KIND_RECORD_TYPE: Final = {
    "flow": "flows",
    "call": "calls",
    "registration": "calls",
    "rtp_stream": "rtp",
    "alert": "alerts",
}


def retention_plan(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """``(table, time column, record type)`` for every record table with a time column.

    Kinds not named in ``KIND_RECORD_TYPE`` (metadata analyzers' records) follow the
    flow retention: they describe traffic, like flows.
    """
    plan = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        if table in _SKIP_TABLES or table.startswith("sqlite_"):
            continue
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(table)})")}
        col = next((c for c in TIME_COLUMNS if c in cols), None)
        if col is not None:
            plan.append((table, col, KIND_RECORD_TYPE.get(table, "flows")))
    return plan
