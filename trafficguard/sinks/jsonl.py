"""JSON lines sink: one record per line, ``{"kind": ..., <fields in Struct order>}``.

For piping into jq, Vector or a golden-file diff: the field order is the record
Struct's, so output is byte-for-byte deterministic. ``flush`` fsyncs files; ``"-"``
writes to stdout (no fsync). Files are appended to, never truncated.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from trafficguard.errors import StoreError

STDOUT: Final = "-"


class JsonlSink:
    """RecordSink writing newline-delimited JSON objects with ``"kind"`` first."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._encoder = msgspec.json.Encoder()
        self._prefixes: dict[str, bytes] = {}
        self._buf = bytearray()
        self._closed = False
        self.records_written: dict[str, int] = {}  # kind -> records handed to the file
        self._fsync = self.path != STDOUT
        if self.path == STDOUT:
            self._file: BinaryIO = sys.stdout.buffer
            self._owns_file = False
        else:
            p = Path(path)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                self._file = p.open("ab")
            except OSError as err:
                raise StoreError(f"{self.path}: {err.strerror or err}") from None
            self._owns_file = True

    def _prefix(self, kind: str) -> bytes:
        prefix = self._prefixes.get(kind)
        if prefix is None:
            prefix = self._prefixes[kind] = b'{"kind":' + self._encoder.encode(kind) + b","
        return prefix

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        """Encode a batch and hand it to the (buffered) file."""
        if self._closed:
            raise StoreError(f"{self.path}: sink is closed")
        buf = self._buf
        encode_into = self._encoder.encode_into
        written = self.records_written
        for rec in records:
            kind: str = type(rec).kind  # type: ignore[attr-defined]
            buf += self._prefix(kind)
            start = len(buf) - 1
            # the record's own "{" overwrites our trailing ","; put the comma back
            encode_into(rec, buf, start)
            if len(buf) == start + 2:  # "{}": a record without fields
                del buf[start:]
                buf += b"}"
            else:
                buf[start] = 0x2C
            buf += b"\n"
            written[kind] = written.get(kind, 0) + 1
        try:
            self._file.write(buf)
        except OSError as err:
            raise StoreError(f"{self.path}: {err.strerror or err}") from None
        finally:
            buf.clear()

    def flush(self) -> None:
        """Flush Python's buffer and fsync the file (stdout is only flushed)."""
        if self._closed:
            return
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError as err:
            raise StoreError(f"{self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        """Flush, fsync and close the file (never closes stdout). Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
