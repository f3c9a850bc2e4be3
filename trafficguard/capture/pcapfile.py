"""Capture files as a FrameSource: open, sniff the format by magic, stream in chunks.

The file is read ``read_chunk_bytes`` at a time and never held whole, so a 100 GB
capture replays in the same memory as a 1 MB one. gzip (magic ``1f 8b``) is
decompressed on the fly with ``zlib`` directly (not ``gzip.GzipFile``) so every byte
decoded before a corrupt or cut-off gzip stream still reaches the parser, and
decompression output is capped per call (no gzip-bomb blow-up).

The record parsers live in ``pcap.py`` and ``pcapng.py``; both take a ``ChunkReader``.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO, Final

from trafficguard.capture.frames import Frame
from trafficguard.capture.pcap import PCAP_MAGICS, read_pcap
from trafficguard.capture.pcapng import PCAPNG_MAGIC, read_pcapng
from trafficguard.errors import CaptureError, TruncatedCapture

GZIP_MAGIC: Final = b"\x1f\x8b"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # gzip container, checks CRC32 and ISIZE
_MIN_CHUNK: Final = 1

Parser = Callable[["ChunkReader", bytes, int], Iterator[list[Frame]]]


class ChunkReader:
    """Hands out the (decompressed) byte stream in chunks; defers read errors.

    A decompression or I/O error is not raised from ``read()``: it is remembered and
    ``read()`` returns ``b""`` as at end of file, so the parser first yields every
    frame it already holds and then raises ``truncated(offset)``/``deferred(offset)``
    at the record that could not be completed. ``head`` is the first raw chunk,
    already read to look for the gzip magic (no seek, so pipes work too).
    """

    __slots__ = ("_chunk", "_fresh", "_gzip", "_pending", "_raw", "_spill", "_z", "error",
                 "path", "raw_bytes")

    def __init__(self, path: str, raw: BinaryIO, chunk: int, head: bytes) -> None:
        self.path = path
        self._raw = raw
        self._chunk = max(chunk, _MIN_CHUNK)
        self._gzip = head[:2] == GZIP_MAGIC
        self._z = zlib.decompressobj(_GZIP_WBITS)
        self._fresh = True  # no input fed to the current gzip member yet
        self._pending = head  # raw bytes not yet handed out (plain) or decompressed (gzip)
        self._spill = b""  # stream bytes that did not fit a ``readinto`` buffer
        self.error: tuple[type[CaptureError], str] | None = None
        self.raw_bytes = len(head)  # bytes of the file on disk read so far

    def read(self) -> bytes:
        """Return the next chunk of the stream, ``b""`` at end of file or on error."""
        if self._spill:
            data, self._spill = self._spill, b""
            return data
        if self.error is not None:
            return b""
        if self._gzip:
            return self._read_gzip()
        if self._pending:
            head, self._pending = self._pending, b""
            return head
        try:
            data = self._raw.read(self._chunk)
        except OSError:
            self.error = (CaptureError, "read error")
            return b""
        self.raw_bytes += len(data)
        return data

    def _read_gzip(self) -> bytes:
        """Decompress until some output exists; handle member ends and trailing zeros."""
        chunk = self._chunk
        while True:
            z = self._z
            if z.eof:  # member done; what follows is another member or padding
                self._pending = z.unused_data + self._pending
                z = self._z = zlib.decompressobj(_GZIP_WBITS)
                self._fresh = True
            src = z.unconsumed_tail or self._pending
            self._pending = b""
            if not src:
                try:
                    src = self._raw.read(chunk)
                except OSError:
                    self.error = (CaptureError, "read error")
                    return b""
                if not src:
                    if not self._fresh:
                        self.error = (TruncatedCapture, "gzip stream ends early")
                    return b""
                self.raw_bytes += len(src)
            if self._fresh:
                src = src.lstrip(b"\x00")  # gzip(1) and GzipFile accept zero padding
                if not src:
                    continue
                self._fresh = False
            before = z.copy()
            try:
                out = z.decompress(src, chunk)
            except zlib.error:
                self.error = (CaptureError, "gzip stream is corrupt")
                return _salvage(before, src, chunk)
            if out:
                return out

    @property
    def chunk_size(self) -> int:
        """Bytes one ``read`` hands out at most (plain files and gzip output alike)."""
        return self._chunk

    def readinto(self, view: memoryview) -> int:
        """``read`` into the caller's buffer; 0 at end of file or on error.

        Plain files are read straight into ``view``, so a framer can reuse one buffer
        instead of allocating and concatenating a fresh chunk per read (page faults and
        a copy per megabyte). Whatever does not fit is handed out by the next call.
        """
        if not (self._spill or self._pending or self._gzip or self.error):
            try:
                got = self._raw.readinto(view[: self._chunk])  # type: ignore[attr-defined]
            except OSError:
                self.error = (CaptureError, "read error")
                return 0
            got = got or 0
            self.raw_bytes += got
            return int(got)
        data = self.read()
        room = len(view)
        if len(data) > room:
            data, self._spill = data[:room], data[room:]
        view[: len(data)] = data
        return len(data)

    def refill(self, buf: bytes, off: int) -> bytes | None:
        """``buf[off:]`` (the unparsed rest) and the next chunk; None at end of stream."""
        data = self.read()
        return buf[off:] + data if data else None

    def end_error(self, offset: int, partial: bool, reason: str) -> CaptureError | None:
        """The error at end of stream: ``truncated`` if a record was left ``partial``,
        else the deferred read error (None after a clean end)."""
        return self.truncated(offset, reason) if partial else self.deferred(offset)

    def truncated(self, offset: int, reason: str) -> CaptureError:
        """The error for a record at ``offset`` cut off by the end of the stream.

        A deferred read/decompression error wins over plain truncation.
        """
        return self.deferred(offset) or TruncatedCapture(self.path, offset, reason)

    def deferred(self, offset: int) -> CaptureError | None:
        """The deferred read/decompression error, placed at ``offset``, if any."""
        if self.error is None:
            return None
        cls, why = self.error
        return cls(self.path, offset, why)

    def fill(self, buf: bytes, need: int) -> bytes:
        """Read until ``buf`` holds ``need`` bytes or the stream ends (header reads only)."""
        while len(buf) < need:
            data = self.read()
            if not data:
                break
            buf += data
        return buf

    @property
    def closed(self) -> bool:
        """Whether the file has been closed."""
        return self._raw.closed

    def close(self) -> None:
        """Close the file on disk."""
        self._raw.close()


class FileFrameSource:
    """A pcap/pcapng file (optionally gzip-compressed) as batches of frames.

    Iterate ``batches()`` once. Progress: ``bytes_read`` against ``total_bytes``, both
    measured on the file on disk (compressed bytes for gzip).
    """

    __slots__ = ("_first", "_parser", "_reader", "frames_read", "name",
                 "total_bytes")

    def __init__(self, name: str, reader: ChunkReader, first: bytes, parser: Parser,
                 total_bytes: int | None) -> None:
        self.name = name
        self.total_bytes = total_bytes
        self.frames_read = 0
        self._reader = reader
        self._first: bytes | None = first
        self._parser = parser

    @property
    def bytes_read(self) -> int:
        """File bytes consumed so far (compressed bytes for gzip)."""
        return self._reader.raw_bytes

    def batches(self, max_frames: int = 512) -> Iterator[list[Frame]]:
        """Yield lists of at most ``max_frames`` frames; close the file at the end.

        On corruption, every complete frame before the bad offset is yielded first,
        then ``CaptureError``/``TruncatedCapture`` is raised.
        """
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        first = self._first
        if first is None:
            raise RuntimeError("a FileFrameSource can be iterated only once")
        self._first = None
        try:
            for batch in self._parser(self._reader, first, max_frames):
                self.frames_read += len(batch)
                yield batch
        finally:
            self.close()

    def claim_pcap_stream(self) -> tuple[ChunkReader, bytes] | None:
        """The byte stream of a classic pcap source not yet iterated, or None (pcapng).

        For a framer outside Python (the compiled fast path): it reads the same
        decompressed chunks ``batches`` would; the source then counts as iterated and is
        still closed by its context manager.
        """
        first = self._first
        if first is None or self._parser is not read_pcap:
            return None
        self._first = None
        return self._reader, first

    def close(self) -> None:
        """Release the file; safe to call twice."""
        if not self._reader.closed:
            self._reader.close()

    def __enter__(self) -> FileFrameSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileFrameSource(frames_read={self.frames_read})"


def _salvage(z: zlib._Decompress, src: bytes, limit: int) -> bytes:
    """Re-feed ``src`` in ever smaller pieces to keep what decodes before the bad byte.

    ``zlib`` drops a whole call's output when it raises; this error path recovers it
    (up to ``limit`` bytes) so frames before a corrupt spot or bad CRC are not lost.
    """
    out: list[bytes] = []
    size = 0
    pos = 0
    for step in (4096, 64, 1):
        while pos < len(src) and size < limit and not z.eof:
            piece = src[pos : pos + step]
            trial = z.copy()
            try:
                got = trial.decompress(piece)
            except zlib.error:
                break
            z = trial
            out.append(got)
            size += len(got)
            pos += len(piece)
    return b"".join(out)


def _sniff(reader: ChunkReader, first: bytes) -> tuple[bytes, Parser]:
    """Pick the parser from the first four bytes of the (decompressed) stream."""
    first = reader.fill(first, 4)
    if not first:
        raise reader.deferred(0) or CaptureError(reader.path, 0, "empty file")
    if len(first) < 4:
        raise reader.truncated(0, "file ends inside the file header")
    magic = first[:4]
    if magic in PCAP_MAGICS:
        return first, read_pcap
    if magic == PCAPNG_MAGIC:
        return first, read_pcapng
    raise CaptureError(reader.path, 0, "unknown capture format (bad magic)")


def open_capture(path: str | os.PathLike[str],
                 read_chunk_bytes: int = 1 << 20) -> FileFrameSource:
    """Open a pcap/pcapng file, plain or gzip, detected by magic bytes not extension.

    Raises ``CaptureError`` for an unreadable, empty or unknown file.
    """
    name = os.fspath(path)
    try:
        raw: BinaryIO = open(name, "rb", buffering=0)  # noqa: SIM115 - owned by the source
    except OSError as exc:
        raise CaptureError(name, 0, "cannot open file: " + (exc.strerror or "error")) from None
    try:
        st = os.fstat(raw.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
        head = raw.read(max(read_chunk_bytes, 2))
        while 0 < len(head) < 2:  # a pipe may hand out one byte
            more = raw.read(read_chunk_bytes)
            if not more:
                break
            head += more
        reader = ChunkReader(name, raw, read_chunk_bytes, head)
        first, parser = _sniff(reader, reader.read())
        return FileFrameSource(name, reader, first, parser, total)
    except OSError as exc:
        raw.close()
        raise CaptureError(name, 0, "cannot read file: " + (exc.strerror or "error")) from None
    except BaseException:
        raw.close()
        raise
