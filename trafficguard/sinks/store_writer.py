"""Committing buffered rows to the SQLite store, here or in a store-writer process.

``commit_rows`` is the one place buffered rows become a transaction; the in-process sink
calls it, and so does the writer process (``python -m trafficguard.sinks.store_writer``)
on the rows the packet process hands it. Why a process: committing costs ~8 µs per row
(B-tree, indices, WAL), a fifth of a full-pipeline replay, and ``sqlite3`` holds the GIL
while it binds each row, so a writer thread overlapped nothing (measured) while another
process runs on another core. This module imports only the standard library and msgspec,
so the child starts in tens of milliseconds.

Frames are ``<u32 little-endian length><msgpack>``. Parent to child (stdin):

* ``["insert", kind, sql]``: the INSERT statement of a kind, once, before its first rows
* ``["batch", {kind: [row, ...]}]``: rows to commit now, in one transaction
* ``["sync"]``: commit what a failed commit left, then reply
* ``["close"]``: commit, reply, close the store and exit

Child to parent (stdout), to ``sync`` and ``close`` only: ``[error, pending, {kind: n}]``,
where ``error`` is the reason the last commit failed (None after a good one), ``pending``
the rows kept for a retry and ``n`` the rows of each kind committed so far. A batch that
fails stays buffered and is retried with the next one, as in the in-process sink. End of
input without ``close`` (the parent was killed) commits what arrived and exits: nothing
that was handed over is lost. The child ignores SIGINT and SIGTERM, which a terminal or a
service manager sends to the whole group, and lives until its parent closes the pipe.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from trafficguard.sinks.child_pipe import child_stdio, error_reason, read_frame, write_frame

Rows = list[Sequence[Any]]


def commit_rows(
    conn: sqlite3.Connection,
    inserts: Mapping[str, str],
    rows: Mapping[str, Sequence[Sequence[Any]]],
) -> None:
    """Insert every kind's rows in one transaction; on failure roll back and re-raise."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for kind, kind_rows in rows.items():
            if kind_rows:
                conn.executemany(inserts[kind], kind_rows)
        conn.execute("COMMIT")
    except sqlite3.Error:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction after a failure, keeping quiet about its own errors:
    the original error is the one worth reporting."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class RowCommitter:
    """The child's side: batches in, transactions out, failed rows kept for a retry."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.inserts: dict[str, str] = {}
        self.pending: dict[str, Rows] = {}
        self.written: dict[str, int] = {}
        self.error: str | None = None

    def add(self, batch: dict[str, Rows]) -> None:
        for kind, rows in batch.items():
            self.pending.setdefault(kind, []).extend(rows)
        self.commit()

    def commit(self) -> None:
        if not any(self.pending.values()):
            self.error = None
            return
        try:
            commit_rows(self.conn, self.inserts, self.pending)
        except sqlite3.Error as err:
            self.error = error_reason(err)
            return
        for kind, rows in self.pending.items():
            self.written[kind] = self.written.get(kind, 0) + len(rows)
        self.pending = {}
        self.error = None

    def status(self) -> list[Any]:
        return [self.error, sum(map(len, self.pending.values())), self.written]


def serve(src: IO[bytes], out: IO[bytes], committer: RowCommitter) -> None:
    """Apply messages until ``close`` or end of input."""
    while (msg := read_frame(src)) is not None:
        op = msg[0]
        if op == "batch":
            committer.add(msg[1])
        elif op == "insert":
            committer.inserts[msg[1]] = msg[2]
        elif op == "sync":
            committer.commit()
            write_frame(out, committer.status())
        elif op == "close":
            committer.commit()
            write_frame(out, committer.status())
            return
    committer.commit()  # the parent is gone: keep what it handed over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficguard.sinks.store_writer",
        description="trafficguard's SQLite store-writer process (started by the sink; reads "
        "framed row batches on stdin, replies on stdout).",
    )
    parser.add_argument("db", help="the store file (opened and checked by the parent)")
    parser.add_argument("--synchronous", choices=("off", "normal", "full"), default="normal")
    parser.add_argument("--busy-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    out = child_stdio()
    conn = sqlite3.connect(args.db, timeout=args.busy_timeout, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={args.synchronous.upper()}")
    try:
        serve(sys.stdin.buffer, out, RowCommitter(conn))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
