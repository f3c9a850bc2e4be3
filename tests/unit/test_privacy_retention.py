"""Retention purge and subject export/erase on a temporary SQLite store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.privacy.retention import (
    NS_PER_S,
    RetentionError,
    RetentionPolicy,
    erase_subject,
    export_subject,
    purge,
    subject_identifiers,
)

DAY_NS = 86_400 * NS_PER_S
NOW = 1_800_000_000 * NS_PER_S


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(tmp_path / "store.db")
    c.executescript("""
        CREATE TABLE flows (id INTEGER PRIMARY KEY, start_ns INTEGER, src TEXT, dst TEXT);
        CREATE TABLE calls (id INTEGER PRIMARY KEY, start_ns INTEGER, caller TEXT, callee TEXT);
    """)
    c.executemany("INSERT INTO flows (start_ns, src, dst) VALUES (?,?,?)", [
        (NOW - 40 * DAY_NS, "a1.9.8.7.6", "198.51.100.1"),
        (NOW - 10 * DAY_NS, "a1.9.8.7.6", "198.51.100.2"),
        (NOW - 1 * DAY_NS, "a1.5.5.5.5", "a1.9.8.7.6"),
        (NOW - 1 * DAY_NS, "a1.5.5.5.5", "203.0.113.9"),
    ])
    c.executemany("INSERT INTO calls (start_ns, caller, callee) VALUES (?,?,?)", [
        (NOW - 100 * DAY_NS, "u1.aaa", "u1.bbb"),
        (NOW - 5 * DAY_NS, "u1.ccc", "u1.aaa"),
    ])
    c.commit()
    return c


def test_defaults_and_cutoff() -> None:
    r = RetentionPolicy()
    assert r.flows_s == 30 * 86_400
    assert r.calls_s == 90 * 86_400
    assert r.alerts_s == 180 * 86_400
    assert r.audit_log_kept
    assert r.cutoff_ns("flows", NOW) == NOW - 30 * DAY_NS
    with pytest.raises(RetentionError):
        r.cutoff_ns("evidence", NOW)
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate({"flows_s": 1, "bogus": 2})


def test_purge(conn: sqlite3.Connection) -> None:
    r = RetentionPolicy()
    assert purge(conn, "flows", "start_ns", r.cutoff_ns("flows", NOW)) == 1
    assert purge(conn, "calls", "start_ns", r.cutoff_ns("calls", NOW)) == 1
    assert conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0] == 3
    assert purge(conn, "flows", "start_ns", r.cutoff_ns("flows", NOW)) == 0


def test_names_are_checked_against_schema(conn: sqlite3.Connection) -> None:
    with pytest.raises(RetentionError, match="no table"):
        purge(conn, "flows; DROP TABLE calls", "start_ns", NOW)
    with pytest.raises(RetentionError, match="no column"):
        purge(conn, "flows", 'start_ns" OR 1=1 --', NOW)
    assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 2


def test_export_subject(conn: sqlite3.Connection) -> None:
    tables = [("flows", ["src", "dst"]), ("calls", ["caller", "callee"])]
    out = export_subject(conn, tables, ["a1.9.8.7.6", "u1.aaa"])
    assert len(out["flows"]) == 3
    assert {row["dst"] for row in out["flows"]} == {"198.51.100.1", "198.51.100.2", "a1.9.8.7.6"}
    assert len(out["calls"]) == 2
    assert export_subject(conn, tables, []) == {"flows": [], "calls": []}


def test_erase_subject(conn: sqlite3.Connection) -> None:
    tables = [("flows", ["src", "dst"]), ("calls", ["caller", "callee"])]
    assert erase_subject(conn, tables, ["a1.9.8.7.6", "u1.aaa"]) == {"flows": 3, "calls": 2}
    assert export_subject(conn, tables, ["a1.9.8.7.6", "u1.aaa"]) == {"flows": [], "calls": []}
    assert conn.execute("SELECT src FROM flows").fetchall() == [("a1.5.5.5.5",)]


def test_erase_checks_all_tables_before_deleting(conn: sqlite3.Connection) -> None:
    with pytest.raises(RetentionError):
        erase_subject(conn, [("flows", ["src"]), ("calls", ["nope"])], ["a1.9.8.7.6"])
    assert conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0] == 4


def test_subject_identifiers_cover_every_epoch() -> None:
    pz = Pseudonymizer({1: bytes(32), 2: bytes(range(32))}, ["10.0.0.0/8"])
    ids = subject_identifiers(pz, numbers=["+1 555 0100"], addresses=["10.1.2.3"])
    assert len(ids) == 4
    assert pz.user("+15550100", 1) in ids and pz.user("+15550100", 2) in ids
    assert pz.address("10.1.2.3", 1) in ids and pz.address("10.1.2.3") in ids
    assert not any(i == "10.1.2.3" or "5550100" in i for i in ids)
