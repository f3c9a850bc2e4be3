"""Bounded IPv4/IPv6 fragment reassembly, safe against hostile fragment streams.

Fragments are keyed by ``(ip version, src, dst, protocol, id)``. Every bound is enforced
when a fragment arrives, so a teardrop-style or flooding sender can neither crash the
decoder nor grow its memory:

* at most ``max_datagrams`` incomplete datagrams (the oldest is dropped beyond it),
* at most ``max_datagram_bytes`` per datagram and ``max_total_bytes`` held in all,
* at most ``MAX_FRAGMENTS`` stored pieces per datagram,
* a fragment that overlaps held bytes with *different* content drops the whole datagram
  (identical overlaps, i.e. retransmitted fragments, are merged),
* ``expire(now_ns)`` drops datagrams whose first fragment is older than the timeout
  (packet time).

Held data is a sorted list of disjoint byte pieces, never a preallocated buffer, so a
single fragment at a high offset costs only its own bytes. Dropped datagrams are counted
in the shared ``errors`` dict by *frames*, which keeps the decoder's accounting exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from typing import Final

from trafficguard.config import NS_PER_S, FragmentConfig
from trafficguard.decode import reasons

MAX_FRAGMENTS: Final = 256  # stored pieces per datagram (64 KiB / 576-byte MTU ≈ 120)

FragmentKey = tuple[int, bytes, bytes, int, int]


class _Datagram:
    """The pieces of one incomplete datagram plus what its frames are worth."""

    __slots__ = ("chunks", "first_ts_ns", "frames", "nbytes", "starts", "total", "wire_len")

    def __init__(self, first_ts_ns: int) -> None:
        self.first_ts_ns = first_ts_ns
        self.frames = 0
        self.wire_len = 0
        self.starts: list[int] = []
        self.chunks: list[bytes] = []
        self.nbytes = 0
        self.total = -1  # datagram length once the last fragment (MF=0) was seen

    def end(self) -> int:
        """One past the highest byte offset held."""
        if not self.starts:
            return 0
        return self.starts[-1] + len(self.chunks[-1])

    def insert(self, start: int, chunk: bytes) -> int:
        """Merge ``chunk`` at ``start``; return bytes added, or -1 on a content conflict."""
        end = start + len(chunk)
        starts, chunks = self.starts, self.chunks
        i = bisect_right(starts, start) - 1
        if i < 0 or starts[i] + len(chunks[i]) <= start:
            i += 1  # first piece that can intersect [start, end)
        j = i
        while j < len(starts) and starts[j] < end:
            pstart, piece = starts[j], chunks[j]
            lo = max(start, pstart)
            hi = min(end, pstart + len(piece))
            if chunk[lo - start : hi - start] != piece[lo - pstart : hi - pstart]:
                return -1
            j += 1
        if i == j:  # no overlap: plain insert
            starts.insert(i, start)
            chunks.insert(i, chunk)
            self.nbytes += len(chunk)
            return len(chunk)
        # identical overlap: replace pieces i..j-1 by one merged piece
        first_start, last_start, last = starts[i], starts[j - 1], chunks[j - 1]
        merged = chunk
        if first_start < start:
            merged = chunks[i][: start - first_start] + merged
        if last_start + len(last) > end:
            merged = merged + last[end - last_start :]
        old = sum(len(c) for c in chunks[i:j])
        new_start = min(start, first_start)
        del starts[i:j], chunks[i:j]
        starts.insert(i, new_start)
        chunks.insert(i, merged)
        added = len(merged) - old
        self.nbytes += added
        return added


class Reassembler:
    """Holds incomplete datagrams within the configured bounds (see module docstring)."""

    __slots__ = (
        "_dgs",
        "_errors",
        "_max_datagram_bytes",
        "_max_datagrams",
        "_max_total_bytes",
        "_timeout_ns",
        "held_bytes",
        "held_frames",
    )

    def __init__(self, cfg: FragmentConfig, errors: dict[str, int]) -> None:
        self._dgs: OrderedDict[FragmentKey, _Datagram] = OrderedDict()
        self._errors = errors
        self._max_datagrams = cfg.max_datagrams
        self._max_datagram_bytes = cfg.max_datagram_bytes
        self._max_total_bytes = cfg.max_total_bytes
        self._timeout_ns = int(cfg.timeout_s * NS_PER_S)
        self.held_bytes = 0  # payload bytes held across all datagrams
        self.held_frames = 0  # frames whose fragments are held

    def __len__(self) -> int:
        return len(self._dgs)

    def add(
        self,
        key: FragmentKey,
        start: int,
        chunk: bytes,
        *,
        more: bool,
        ts_ns: int,
        frames: int,
        wire_len: int,
    ) -> tuple[bytes, int, int] | None:
        """Add one fragment; return ``(datagram, frames, wire_len)`` once it is complete.

        ``frames``/``wire_len`` are what the carrying frame(s) count for. When ``None`` is
        returned the fragment is either held or counted in ``errors`` with its datagram.
        """
        dgs = self._dgs
        dg = dgs.get(key)
        end = start + len(chunk)
        if end > self._max_datagram_bytes:
            self._fail(key, dg, reasons.FRAGMENT_TOO_LARGE, frames)
            return None
        if more and (not chunk or len(chunk) & 7):
            self._fail(key, dg, reasons.FRAGMENT_BAD_LENGTH, frames)
            return None
        if dg is None:
            if len(dgs) >= self._max_datagrams:
                self._drop_oldest()
            dg = _Datagram(ts_ns)
            dgs[key] = dg
        if more:
            if 0 <= dg.total < end:
                self._fail(key, dg, reasons.FRAGMENT_BAD_LENGTH, frames)
                return None
        else:
            if (dg.total >= 0 and dg.total != end) or dg.end() > end:
                self._fail(key, dg, reasons.FRAGMENT_BAD_LENGTH, frames)
                return None
            dg.total = end
        if chunk:
            if len(dg.starts) >= MAX_FRAGMENTS:
                self._fail(key, dg, reasons.FRAGMENT_TOO_MANY, frames)
                return None
            added = dg.insert(start, chunk)
            if added < 0:
                self._fail(key, dg, reasons.FRAGMENT_OVERLAP, frames)
                return None
            self.held_bytes += added
        dg.frames += frames
        dg.wire_len += wire_len
        self.held_frames += frames
        if dg.nbytes == dg.total:
            del dgs[key]
            self.held_frames -= dg.frames
            self.held_bytes -= dg.nbytes
            return b"".join(dg.chunks), dg.frames, dg.wire_len
        while self.held_bytes > self._max_total_bytes:
            self._drop_oldest()  # ends with this datagram itself if it alone is too big
        return None

    def expire(self, now_ns: int) -> None:
        """Drop datagrams whose first fragment is older than the timeout (packet time)."""
        dgs = self._dgs
        limit = now_ns - self._timeout_ns
        while dgs:
            key = next(iter(dgs))
            if dgs[key].first_ts_ns > limit:
                break
            self._drop(key, reasons.FRAGMENT_TIMEOUT)

    # -- dropping ------------------------------------------------------------------------
    def _fail(self, key: FragmentKey, dg: _Datagram | None, reason: str, frames: int) -> None:
        """Count the arriving frame(s) and drop the datagram they belonged to."""
        self._errors[reason] += frames
        if dg is not None:
            self._drop(key, reason)

    def _drop_oldest(self) -> None:
        self._drop(next(iter(self._dgs)), reasons.FRAGMENT_BUFFER_FULL)

    def _drop(self, key: FragmentKey, reason: str) -> None:
        dg = self._dgs.pop(key)
        self._errors[reason] += dg.frames
        self.held_frames -= dg.frames
        self.held_bytes -= dg.nbytes
