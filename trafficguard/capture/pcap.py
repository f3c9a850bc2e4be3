"""Classic libpcap files: 24-byte file header, then 16-byte record headers + data.

Both byte orders and both timestamp resolutions (µs magic ``a1b2c3d4``, ns magic
``a1b23c4d``). Layout per draft-ietf-opsawg-pcap; the link type is the low 16 bits
of the header's LinkType field (the upper bits carry FCS information).

The record loop is the hottest code in file replay: one ``unpack_from``, one slice,
one tuple per frame, no calls besides ``append``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from trafficguard.capture.frames import Frame
from trafficguard.errors import CaptureError

if TYPE_CHECKING:
    from trafficguard.capture.pcapfile import ChunkReader

# magic as stored on disk -> (byte order prefix, multiplier from fraction to ns)
PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
FILE_HEADER_LEN: Final = 24
RECORD_HEADER_LEN: Final = 16
MAX_CAPLEN: Final = 262144  # libpcap's largest snapshot length
LINKTYPE_MASK: Final = 0xFFFF

_FILE_HEADER: Final = {bo: struct.Struct(bo + "IHHiIII") for bo in "<>"}
_RECORD: Final = {bo: struct.Struct(bo + "IIII") for bo in "<>"}
_NS: Final = 1_000_000_000


def read_pcap(reader: ChunkReader, buf: bytes, max_frames: int) -> Iterator[list[Frame]]:
    """Yield batches of frames from a pcap stream whose first bytes are in ``buf``."""
    path = reader.path
    buf = reader.fill(buf, FILE_HEADER_LEN)
    if len(buf) < FILE_HEADER_LEN:
        raise reader.truncated(0, "file ends inside the file header")
    order, frac_ns = PCAP_MAGICS[buf[:4]]
    linktype = _FILE_HEADER[order].unpack_from(buf, 0)[6] & LINKTYPE_MASK
    unpack = _RECORD[order].unpack_from
    base = 0  # stream offset of buf[0]
    off = FILE_HEADER_LEN
    n = len(buf)
    batch: list[Frame] = []
    append = batch.append
    err: CaptureError | None = None
    while True:
        # Fast path: whole records inside buf, until the batch is full.
        for _ in range(max_frames - len(batch)):
            if off + 16 > n:
                break
            sec, frac, caplen, wire_len = unpack(buf, off)
            end = off + 16 + caplen
            if end > n or caplen > MAX_CAPLEN:
                break
            append((sec * _NS + frac * frac_ns, linktype, buf[off + 16 : end], wire_len))
            off = end
        else:
            yield batch
            batch = []
            append = batch.append
            continue
        # Slow path, once per chunk: bad record, or refill.
        if off + 16 <= n and unpack(buf, off)[2] > MAX_CAPLEN:
            err = CaptureError(path, base + off, "record caplen too large")
            break
        rest = reader.refill(buf, off)
        if rest is None:
            err = reader.end_error(base + off, off < n, "file ends inside a record")
            break
        buf, base, off, n = rest, base + off, 0, len(rest)
    if batch:
        yield batch
    if err is not None:
        raise err
