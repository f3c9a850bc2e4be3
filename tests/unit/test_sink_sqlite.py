"""SqliteSink: schema from Structs, batching, idempotent replays, errors as StoreError."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import ClassVar, NewType

import msgspec
import pytest

from trafficguard.config import SqliteConfig
from trafficguard.errors import StoreError
from trafficguard.flow.records import FlowRecord
from trafficguard.sinks.sqlite import (
    SCHEMA_VERSION,
    SqliteSink,
    count_records,
    open_store,
    query_records,
    register_kind,
)


def flow(i: int, seq: int = 0, app: str = "http", **kw: object) -> FlowRecord:
    fields: dict[str, object] = dict(
        flow_id=f"{i:016x}",
        seq=seq,
        first_seen_ns=1_000 * i,
        start_ns=1_000 * i + seq,
        end_ns=1_000 * i + seq + 500,
        vlan=0,
        ip_version=4,
        proto=6,
        src_addr="10.0.0.1",
        src_port=40000 + i,
        dst_addr="192.0.2.7",
        dst_port=80,
        packets_fwd=3,
        packets_rev=2,
        bytes_fwd=300,
        bytes_rev=200,
        ip_bytes_fwd=258,
        ip_bytes_rev=172,
        payload_bytes_fwd=100,
        payload_bytes_rev=50,
        tcp_flags_fwd=0x1B,
        tcp_flags_rev=0x12,
        tcp_state="established",
        app=app,
        app_source="port",
        encap="",
        end_reason="idle",
    )
    fields.update(kw)
    return FlowRecord(**fields)  # type: ignore[arg-type]


def sink(
    path: Path, batch: int = 2000, synchronous: str = "normal", writer: str = "inline"
) -> SqliteSink:
    cfg = SqliteConfig(path=path, batch_records=batch, synchronous=synchronous, writer=writer)  # type: ignore[arg-type]
    return open_store(cfg)


@pytest.fixture(params=["inline", "process"])
def writer(request: pytest.FixtureRequest) -> str:
    """Both store writers: commits in this process, and in a store-writer process."""
    return str(request.param)


def dump(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM flow ORDER BY flow_id, seq").fetchall()


def test_roundtrip_gives_back_typed_records(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "t.db"
    recs = [flow(i) for i in range(5)] + [flow(9, seq=1, sensor_loss=True, end_reason="active")]
    with sink(db, writer=writer) as s:
        s.write(recs)
        s.flush()
        assert s.records_written == {"flow": 6}
    got = query_records(db, limit=None)
    assert got == recs
    assert got[-1].sensor_loss is True
    assert isinstance(got[0], FlowRecord)
    assert count_records(db, "flow") == 6


def test_write_buffers_until_batch_then_commits_by_itself(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = sink(db, batch=10)
    s.write([flow(i) for i in range(9)])
    assert s.pending == 9
    assert count_records(db) == 0
    s.write([flow(9)])
    assert s.pending == 0
    assert count_records(db) == 10
    s.close()


def test_replaying_twice_leaves_identical_content(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "t.db"
    recs = [flow(i, seq=q) for i in range(50) for q in range(2)]
    with sink(db, batch=7, writer=writer) as s:
        s.write(recs)
    first = dump(db)
    with sink(db, batch=13, writer=writer) as s:
        s.write(list(reversed(recs)))
    assert dump(db) == first
    assert len(first) == 100


def test_schema_version_meta_wal_and_indices(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with sink(db, synchronous="full") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["created_by"]
    indices = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    for col in ("first_seen_ns", "start_ns", "end_ns", "app"):
        assert f"flow_{col}" in indices
    cols = [r[1] for r in conn.execute("PRAGMA table_info(flow)")]
    assert cols == [f.name for f in msgspec.structs.fields(FlowRecord)]
    pk = [r[1] for r in sorted(conn.execute("PRAGMA table_info(flow)"), key=lambda r: r[5]) if r[5]]
    assert pk == ["flow_id", "seq"]
    conn.close()


def test_newer_schema_version_is_refused_naming_file_and_versions(
    tmp_path: Path, writer: str
) -> None:
    db = tmp_path / "t.db"
    sink(db, writer=writer).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError) as err:
        sink(db, writer=writer)
    msg = str(err.value)
    assert str(db) in msg and "99" in msg and str(SCHEMA_VERSION) in msg
    with pytest.raises(StoreError, match="99"):
        query_records(db)


def test_foreign_database_is_refused(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="unknown schema version 0"):
        sink(db, writer=writer)


def test_not_a_database_becomes_store_error(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError) as err:
        sink(db, writer=writer)
    assert str(db) in str(err.value)
    assert "not a database" in str(err.value)
    with pytest.raises(StoreError, match="not a database"):
        count_records(db)


def test_disk_full_raises_and_keeps_earlier_commits(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = sink(db, batch=1_000_000)
    s.write([flow(i) for i in range(100)])
    s.flush()
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count={pages + 1}")
    s.write([flow(i) for i in range(100, 5000)])
    with pytest.raises(StoreError) as err:
        s.flush()
    assert str(db) in str(err.value) and "full" in str(err.value)
    assert count_records(db) == 100
    assert query_records(db, limit=1) == [flow(0)]
    assert s.pending == 4900  # the failed batch is kept for a retry
    s._conn.execute("PRAGMA max_page_count=1000000")
    s.close()
    assert count_records(db) == 5000


def test_locked_store_becomes_store_error(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = SqliteSink(SqliteConfig(path=db, batch_records=10), busy_timeout_s=0.05)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    s.write([flow(1)])
    with pytest.raises(StoreError, match="locked"):
        s.flush()
    other.execute("ROLLBACK")
    other.close()
    s.flush()
    assert count_records(db) == 1
    s.close()


def test_creates_missing_parent_directories(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "a" / "b" / "c" / "t.db"
    with sink(db, writer=writer) as s:
        s.write([flow(1)])
    assert count_records(db) == 1


def test_parent_that_is_a_file_becomes_store_error(tmp_path: Path, writer: str) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match=str(tmp_path / "f")):
        sink(tmp_path / "f" / "t.db", writer=writer)


def test_query_filters_order_and_limit(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    recs = [flow(i, app="dns" if i % 2 else "http") for i in range(10)]
    with sink(db) as s:
        s.write(recs)
    # flow i spans [1000 i, 1000 i + 500]
    got = query_records(db, since_ns=3_200, until_ns=6_000)
    assert [r.flow_id for r in got] == [f"{i:016x}" for i in (3, 4, 5)]
    got = query_records(db, app="dns", limit=2)
    assert [r.src_port for r in got] == [40001, 40003]
    got = query_records(db, order="src_port", descending=True, limit=3)
    assert [r.src_port for r in got] == [40009, 40008, 40007]
    assert query_records(db, app="nope") == []
    with pytest.raises(StoreError, match="order"):
        query_records(db, order="1; DROP TABLE flow")
    with pytest.raises(StoreError, match="unknown record kind"):
        query_records(db, kind="nope")


def test_query_opens_read_only_and_never_creates(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no such store"):
        query_records(missing)
    assert not missing.exists()
    db = tmp_path / "t.db"
    with sink(db) as s:
        s.write([flow(1)])
    before = dump(db)
    query_records(db)
    count_records(db)
    assert dump(db) == before


Pseudonym = NewType("Pseudonym", str)


class _TestCall(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    kind: ClassVar[str] = "test_call"
    call_id: str
    leg: int
    caller: Pseudonym
    start_ns: int
    end_ns: int | None
    answered: bool
    mos: float
    codecs: tuple[str, ...]


def test_later_kind_plugs_in_after_the_sink_opened(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "t.db"
    s = sink(db, writer=writer)
    register_kind(_TestCall, primary_key=("call_id", "leg"), time_columns=("start_ns", "end_ns"))
    calls = [
        _TestCall(
            call_id="c1", leg=0, caller=Pseudonym("p-1"), start_ns=5, end_ns=None,
            answered=True, mos=4.1, codecs=("PCMU", "opus"),
        ),
        _TestCall(
            call_id="c2", leg=0, caller=Pseudonym("p-2"), start_ns=9, end_ns=20,
            answered=False, mos=0.0, codecs=(),
        ),
    ]  # fmt: skip
    s.write([flow(1), *calls])
    s.close()
    assert s.records_written == {"flow": 1, "test_call": 2}
    assert query_records(db, kind="test_call", order="start_ns") == calls
    assert count_records(db, "test_call") == 2
    assert count_records(db, "flow") == 1
    with sqlite3.connect(db) as conn:
        types = {r[1]: (r[2], r[3]) for r in conn.execute("PRAGMA table_info(test_call)")}
    assert types["end_ns"] == ("INTEGER", 0)  # nullable
    assert types["answered"] == ("INTEGER", 1)
    assert types["mos"] == ("REAL", 1)
    assert types["codecs"] == ("TEXT", 1)  # JSON text
    assert types["caller"] == ("TEXT", 1)
    # registering the same spec again is a no-op, a different one is refused
    register_kind(_TestCall, primary_key=("call_id", "leg"), time_columns=("start_ns", "end_ns"))
    with pytest.raises(ValueError, match="already registered"):
        register_kind(_TestCall, primary_key=("call_id",))


def test_register_kind_rejects_unknown_columns() -> None:
    with pytest.raises(ValueError, match="no field 'nope'"):
        register_kind(_TestCall, primary_key=("nope",))


def test_unregistered_kind_is_a_store_error(tmp_path: Path, writer: str) -> None:
    class Stray(msgspec.Struct, frozen=True):
        kind: ClassVar[str] = "stray_never_registered"
        x: int

    db = tmp_path / "t.db"
    with sink(db, writer=writer) as s:
        with pytest.raises(StoreError, match="no table registered"):
            s.write([flow(1), Stray(x=1)])
        assert s.pending == 1  # the records before the stray one are kept
    assert count_records(db) == 1


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "t.db"
    s = sink(db, writer=writer)
    s.write([flow(1)])
    s.close()
    s.close()
    assert count_records(db) == 1
    with pytest.raises(StoreError, match="closed"):
        s.write([flow(2)])


def test_two_sinks_opening_a_fresh_store_concurrently(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "t.db"
    errors: list[BaseException] = []

    def open_and_write(i: int) -> None:
        try:
            with sink(db, writer=writer) as s:
                s.write([flow(i)])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count_records(db) == 4
