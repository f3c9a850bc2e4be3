"""Per-key tumbling windows shared by the broadband detectors.

``PeerWindow`` counts, for one subject (a subscriber host, a host and port), the distinct
peers and sessions seen within a window of packet time; ``expire_idle`` forgets keys idle
for a whole window, oldest first, so a tick costs only the keys that actually expired.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, TypeVar

from trafficguard.detect.sketch import DistinctCounter, LruMap
from trafficguard.flow.records import FlowRecord


class HasLastSeen(Protocol):
    last_ns: int


K = TypeVar("K", bound=Hashable)
T = TypeVar("T", bound=HasLastSeen)


def expire_idle(table: LruMap[K, T], now_ns: int, window_ns: int) -> None:
    """Drop keys whose last activity is a whole window old (stops at the first live one)."""
    stale = []
    for key, st in table.oldest():
        if now_ns - st.last_ns < window_ns:
            break
        stale.append(key)
    for key in stale:
        table.pop(key)


class PeerWindow:
    """Distinct peers, sessions and bytes of one subject in the current window."""

    __slots__ = ("bytes", "first_ns", "last_ns", "peers", "sessions", "window_start_ns")

    def __init__(self, start_ns: int) -> None:
        self.window_start_ns = self.first_ns = self.last_ns = start_ns
        self.sessions = 0
        self.bytes = 0
        self.peers = DistinctCounter(exact_cap=64)

    def add(self, rec: FlowRecord, peer: str, window_ns: int) -> int:
        """Count one session of ``peer`` (restarting an expired window); distinct peers."""
        start = rec.first_seen_ns
        if start - self.window_start_ns >= window_ns:
            self.window_start_ns = self.first_ns = start
            self.sessions = self.bytes = 0
            self.peers.clear()
        self.first_ns = min(self.first_ns, start)
        self.last_ns = max(self.last_ns, rec.end_ns)
        self.sessions += 1
        self.bytes += rec.bytes_fwd + rec.bytes_rev
        self.peers.add(peer)
        return self.peers.count()
