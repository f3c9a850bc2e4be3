"""The store-writer process: commits off the packet process, errors back, nothing lost.

Its shared behaviour with the in-process sink (round trips, replays, schema errors, late
kinds) is tested in ``test_sink_sqlite`` with both writers; here: what only a second
process can do wrong — a full disk in the child, a killed child, a killed parent, signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_sink_sqlite import flow
from trafficguard.config import SqliteConfig
from trafficguard.errors import StoreError
from trafficguard.sinks.sqlite import SqliteWriterSink, count_records, query_records


def writer_sink(path: Path, batch: int = 2000) -> SqliteWriterSink:
    return SqliteWriterSink(SqliteConfig(path=path, batch_records=batch, writer="process"))


def child_of(s: SqliteWriterSink) -> subprocess.Popen[bytes]:
    assert s._proc is not None
    return s._proc


def test_full_batches_are_committed_by_the_child_while_writes_go_on(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = writer_sink(db, batch=10)
    s.write([flow(i) for i in range(9)])
    assert s.pending == 9
    assert count_records(db) == 0  # below a batch: still here
    s.write([flow(9), flow(10)])
    assert s.pending == 11  # handed over, not yet confirmed
    s.flush()
    assert s.pending == 0
    assert count_records(db) == 11
    assert s.records_written == {"flow": 11}
    assert query_records(db, limit=None) == [flow(i) for i in range(11)]
    s.close()
    assert child_of(s).returncode == 0


@contextlib.contextmanager
def small_tmpfs(parent: Path) -> Iterator[Path]:
    """A 256 KB tmpfs at ``parent/small`` (a disk that fills up), unmounted afterwards."""
    small = parent / "small"
    small.mkdir()
    args = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)]
    if os.geteuid() != 0 or subprocess.run(args, capture_output=True, check=False).returncode != 0:
        pytest.fail("mounting a tmpfs failed: the test runs as root on Linux (scripts/test.sh)")
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def grow_tmpfs(small: Path) -> None:
    """Room again on a ``small_tmpfs``: 64 MB."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)


def test_full_disk_in_the_child_is_raised_and_the_batch_retried(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path) as small:
        db = small / "t.db"
        s = writer_sink(db, batch=500)
        s.write([flow(i) for i in range(100)])
        s.flush()
        with pytest.raises(StoreError) as err:
            s.write([flow(i) for i in range(100, 5000)])  # batches fail in the child
            s.flush()
        assert str(db) in str(err.value) and "full" in str(err.value)
        assert count_records(db) >= 100
        assert query_records(db, limit=1) == [flow(0)]
        assert s.pending > 0  # kept in the child for a retry
        grow_tmpfs(small)
        s.close()
        assert count_records(db) == 5000
        assert query_records(db, limit=None) == [flow(i) for i in range(5000)]


def test_a_killed_child_is_reported_and_replaced(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = writer_sink(db)
    s.write([flow(1)])
    s.flush()
    first = child_of(s)
    first.kill()
    first.wait()
    s.write([flow(2)])
    with pytest.raises(StoreError, match="store writer"):
        s.flush()  # the dead child could not take the rows
    s.flush()  # a new child takes the rows this process still holds
    assert child_of(s) is not first
    s.close()
    assert query_records(db, limit=None) == [flow(1), flow(2)]


def test_the_child_ignores_the_signals_sent_to_the_whole_group(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = writer_sink(db, batch=1)
    s.write([flow(0)])
    s.flush()  # a reply: the child is past start-up and has set its signal handling
    child = child_of(s)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        child.send_signal(sig)
    s.write([flow(1), flow(2)])
    s.flush()
    assert child.poll() is None
    s.close()
    assert count_records(db) == 3


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow or absent in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_parent_and_await_child(script: str, child: str) -> None:
    """Run ``script`` (it prints its child's pid, then SIGKILLs itself) and wait until the
    orphaned child has committed and exited by itself, as it must."""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child_pid = int(proc.stdout.split()[0])
    for _ in range(600):
        if not _running(child_pid):
            break
        time.sleep(0.05)
    assert not _running(child_pid), f"{child} outlived its input"


def test_rows_handed_over_survive_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the packet process: the child sees end of input and commits."""
    db = tmp_path / "t.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.unit.test_sink_sqlite import flow
        from trafficguard.config import SqliteConfig
        from trafficguard.sinks.sqlite import SqliteWriterSink
        s = SqliteWriterSink(SqliteConfig(path={str(db)!r}, batch_records=100))
        for lo in (0, 100, 200):  # two full batches handed over, 50 rows still held here
            s.write([flow(i) for i in range(lo, min(lo + 100, 250))])
        print(s._proc.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    kill_parent_and_await_child(script, "the store writer")
    assert query_records(db, limit=None) == [flow(i) for i in range(200)]


def test_writer_module_help_names_its_protocol() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trafficguard.sinks.store_writer", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "store-writer process" in out
