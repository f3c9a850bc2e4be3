"""What a capture source hands to the decoder: batches of raw frames.

A frame is a plain tuple ``(ts_ns, linktype, data, wire_len)`` because tuples are the
cheapest record CPython builds (~70 ns); the decoder unpacks it positionally.

* ``ts_ns``    capture timestamp, nanoseconds since the epoch (packet time)
* ``linktype`` DLT/LINKTYPE number of the interface the frame came from
* ``data``     the captured bytes (``caplen`` = ``len(data)``)
* ``wire_len`` the original length on the wire (>= caplen when snapped)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

Frame = tuple[int, int, bytes, int]

# LINKTYPE_* values from https://www.tcpdump.org/linktypes.html
LINKTYPE_NULL: Final = 0  # BSD loopback, host byte order AF_ value
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101  # raw IPv4/IPv6, version nibble decides
LINKTYPE_RAW_OPENBSD: Final = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW_BSDOS: Final = 14
LINKTYPE_LOOP: Final = 108  # OpenBSD loopback, network byte order AF_ value
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276


class FrameSource(Protocol):
    """A stream of frame batches from one capture (file or interface)."""

    name: str

    def batches(self, max_frames: int = 512) -> Iterator[list[Frame]]:
        """Yield lists of at most ``max_frames`` frames until the source ends.

        A file source that meets corruption raises ``CaptureError`` *after* it has
        yielded every complete frame before the bad offset.
        """
        ...

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (for progress)."""
        ...

    @property
    def total_bytes(self) -> int | None:
        """Size of the input on disk if known (compressed size for gzip; None for pipes)."""
        ...
