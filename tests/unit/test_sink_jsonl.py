"""JsonlSink and MemorySink: line format, determinism, append, fsync, stdout; the fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from trafficguard.errors import StoreError
from trafficguard.flow.records import FlowRecord
from trafficguard.sinks.base import RecordSink
from trafficguard.sinks.jsonl import JsonlSink
from trafficguard.sinks.memory import MemorySink


def flow(i: int, **kw: object) -> FlowRecord:
    fields: dict[str, object] = dict(
        flow_id=f"{i:016x}", seq=0, first_seen_ns=i, start_ns=i, end_ns=i + 9, vlan=0,
        ip_version=6, proto=17, src_addr="2001:db8::1", src_port=5060, dst_addr="2001:db8::2",
        dst_port=5060, packets_fwd=1, packets_rev=0, bytes_fwd=100, bytes_rev=0,
        ip_bytes_fwd=86, ip_bytes_rev=0, payload_bytes_fwd=38, payload_bytes_rev=0,
        tcp_flags_fwd=0, tcp_flags_rev=0, tcp_state="none", app="sip", app_source="port",
        encap="", end_reason="idle",
    )  # fmt: skip
    fields.update(kw)
    return FlowRecord(**fields)  # type: ignore[arg-type]


class Empty(msgspec.Struct, frozen=True):
    kind: ClassVar[str] = "empty"


def test_one_object_per_line_kind_first_in_struct_order(tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"
    recs = [flow(1), flow(2, sensor_loss=True, app='we"ird\nlabel')]
    with JsonlSink(out) as s:
        s.write(recs)
        assert s.records_written == {"flow": 2}
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) == 3
    names = ["kind", *(f.name for f in msgspec.structs.fields(FlowRecord))]
    for line, rec in zip(lines, recs, strict=False):
        obj = json.loads(line)
        assert list(obj) == names
        assert obj["kind"] == "flow"
        assert msgspec.convert({k: v for k, v in obj.items() if k != "kind"}, FlowRecord) == rec
    assert line.startswith(b'{"kind":"flow","flow_id":')


def test_output_is_deterministic_and_appends(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    recs = [flow(i) for i in range(20)]
    for path in (a, b):
        with JsonlSink(path) as s:
            s.write(recs[:7])
            s.write(recs[7:])
    assert a.read_bytes() == b.read_bytes()
    with JsonlSink(a) as s:
        s.write(recs)
    assert a.read_bytes() == b.read_bytes() * 2


def test_record_without_fields_is_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    with JsonlSink(out) as s:
        s.write([Empty(), flow(3)])
    first, second = out.read_text().splitlines()
    assert first == '{"kind":"empty"}'
    assert json.loads(second)["flow_id"] == f"{3:016x}"


def test_flush_fsyncs_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "f.jsonl"
    s = JsonlSink(out)
    s.write([flow(1)])
    s.flush()
    assert len(synced) == 1
    assert out.read_text().count("\n") == 1
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.write([flow(2)])


def test_dash_means_stdout_and_is_not_closed() -> None:
    code = (
        "import sys, msgspec\n"
        "from trafficguard.flow.records import FlowRecord\n"
        "from trafficguard.sinks.jsonl import JsonlSink\n"
        "rec = msgspec.json.decode(sys.argv[1], type=FlowRecord)\n"
        "s = JsonlSink('-'); s.write([rec]); s.flush(); s.close()\n"
        "sys.stdout.write('still-open\\n')\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, msgspec.json.encode(flow(5))],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    )
    first, second = done.stdout.decode().splitlines()
    assert json.loads(first)["kind"] == "flow"
    assert json.loads(first)["flow_id"] == f"{5:016x}"
    assert second == "still-open"


def test_unwritable_path_is_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="file"):
        JsonlSink(tmp_path / "file" / "f.jsonl")


def test_creates_parent_directories(tmp_path: Path) -> None:
    out = tmp_path / "x" / "y" / "f.jsonl"
    with JsonlSink(out) as s:
        s.write([flow(1)])
    assert out.read_text().startswith('{"kind":"flow"')


def test_memory_sink_is_a_record_sink() -> None:
    m = MemorySink()
    sink: RecordSink = m
    sink.write([flow(1), Empty()])
    sink.write([flow(2)])
    sink.flush()
    assert m.records == [flow(1), Empty(), flow(2)]
    assert m.of_kind("flow") == [flow(1), flow(2)]
    assert m.records_written == {"flow": 2, "empty": 1}
    assert m.flushes == 1
    sink.close()
    sink.close()
    assert m.closed and m.flushes == 2
    with pytest.raises(StoreError):
        sink.write([flow(3)])
