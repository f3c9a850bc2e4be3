"""pcapng files: sections of blocks, each ``type, length, body, length``.

Handled: Section Header (either byte order; a new one starts a new section and
forgets the interfaces), Interface Description (link type, snaplen, ``if_tsresol``
in 10^-n and 2^-n form, ``if_tsoffset``), Enhanced Packet, Simple Packet and the
obsolete Packet Block. Every other block (name resolution, statistics, decryption
secrets, custom, unknown) is skipped by its length. Layout per
draft-ietf-opsawg-pcapng.

Simple Packet Blocks carry no timestamp; they get the timestamp of the packet
before them (0 if none) so packet time never jumps backwards.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from trafficguard.capture.frames import Frame
from trafficguard.errors import CaptureError

if TYPE_CHECKING:
    from trafficguard.capture.pcapfile import ChunkReader

PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
BLOCK_SHB: Final = 0x0A0D0D0A
BLOCK_IDB: Final = 1
BLOCK_OPB: Final = 2  # obsolete Packet Block
BLOCK_SPB: Final = 3
BLOCK_EPB: Final = 6
MAX_BLOCK_LEN: Final = 16 * 1024 * 1024  # libpcap's limit; longer means corruption

_BOM_LE: Final = b"\x4d\x3c\x2b\x1a"
_BOM_BE: Final = b"\x1a\x2b\x3c\x4d"
_OPT_ENDOFOPT: Final = 0
_OPT_TSRESOL: Final = 9
_OPT_TSOFFSET: Final = 14
_NS: Final = 1_000_000_000

# (linktype, snaplen, ts multiplier, ts divisor, ts offset in ns)
Interface = tuple[int, int, int, int, int]
_Unpack = Callable[[bytes, int], tuple[int, ...]]


def _unpackers(order: str) -> tuple[_Unpack, ...]:
    """Block header, u32, EPB fixed part, OPB fixed part, SHB fixed part, IDB fixed part."""
    return tuple(
        struct.Struct(order + fmt).unpack_from
        for fmt in ("II", "I", "IIIII", "HHIIII", "HH", "HHI", "HH", "q")
    )


_UNPACKERS: Final = {"<": _unpackers("<"), ">": _unpackers(">")}


def _interface(buf: bytes, off: int, blen: int, order: str) -> Interface | str:
    """Parse an IDB body; return the interface or the reason it is malformed."""
    _, _, _, _, _, idb, opt, i64 = _UNPACKERS[order]
    if blen < 20:
        return "interface block too short"
    linktype, _, snaplen = idb(buf, off + 8)
    mul, div, ts_off = 1000, 1, 0  # default resolution: microseconds
    p = off + 16
    end = off + blen - 4
    while p + 4 <= end:
        code, olen = opt(buf, p)
        p += 4
        if code == _OPT_ENDOFOPT:
            break
        if p + olen > end:
            return "interface option overruns block"
        if code == _OPT_TSRESOL and olen >= 1:
            r = buf[p]
            if r & 0x80:
                mul, div = _NS, 1 << (r & 0x7F)
            elif r <= 9:
                mul, div = 10 ** (9 - r), 1
            else:
                mul, div = 1, 10 ** (r - 9)
        elif code == _OPT_TSOFFSET and olen == 8:
            ts_off = i64(buf, p)[0] * _NS
        p += (olen + 3) & ~3
    return (linktype, snaplen, mul, div, ts_off)


def read_pcapng(reader: ChunkReader, buf: bytes, max_frames: int) -> Iterator[list[Frame]]:
    """Yield batches of frames from a pcapng stream whose first bytes are in ``buf``."""
    path = reader.path
    hdr, u32, epb, opb, shb, _, _, _ = _UNPACKERS["<"]
    order = "<"
    ifaces: list[Interface] = []
    ts = 0
    base = 0
    off = 0
    n = len(buf)
    batch: list[Frame] = []
    append = batch.append
    err: CaptureError | None = None
    while True:
        # At most one block per iteration, so the batch never exceeds max_frames.
        for _ in range(max_frames - len(batch)):
            if off + 12 > n:
                break
            btype, blen = hdr(buf, off)
            if btype == BLOCK_SHB:
                bom = buf[off + 8 : off + 12]
                if bom == _BOM_LE:
                    order = "<"
                elif bom == _BOM_BE:
                    order = ">"
                else:
                    err = CaptureError(path, base + off, "bad pcapng byte-order magic")
                    break
                hdr, u32, epb, opb, shb, _, _, _ = _UNPACKERS[order]
                blen = hdr(buf, off)[1]
            if blen & 3 or blen < 12 or blen > MAX_BLOCK_LEN:
                err = CaptureError(path, base + off, "bad pcapng block length")
                break
            if blen > n - off:
                break
            if u32(buf, off + blen - 4)[0] != blen:
                err = CaptureError(path, base + off, "pcapng block length mismatch")
                break
            if btype == BLOCK_EPB:
                if blen < 32:
                    err = CaptureError(path, base + off, "packet block too short")
                    break
                ifid, hi, lo, caplen, wire_len = epb(buf, off + 8)
                if caplen > blen - 32:
                    err = CaptureError(path, base + off, "packet data overruns block")
                    break
                try:
                    linktype, _, mul, div, ts_off = ifaces[ifid]
                except IndexError:
                    err = CaptureError(path, base + off, "packet names unknown interface")
                    break
                ts = ((hi << 32) | lo) * mul // div + ts_off
                start = off + 28
                append((ts, linktype, buf[start : start + caplen], wire_len))
            elif btype == BLOCK_SPB:
                if blen < 16:
                    err = CaptureError(path, base + off, "packet block too short")
                    break
                if not ifaces:
                    err = CaptureError(path, base + off, "packet names unknown interface")
                    break
                linktype, snaplen = ifaces[0][:2]
                wire_len = u32(buf, off + 8)[0]
                caplen = min(wire_len, blen - 16)
                if 0 < snaplen < caplen:
                    caplen = snaplen
                append((ts, linktype, buf[off + 12 : off + 12 + caplen], wire_len))
            elif btype == BLOCK_IDB:
                iface = _interface(buf, off, blen, order)
                if isinstance(iface, str):
                    err = CaptureError(path, base + off, iface)
                    break
                ifaces.append(iface)
            elif btype == BLOCK_SHB:
                if blen < 28 or shb(buf, off + 12)[0] != 1:
                    err = CaptureError(path, base + off, "unsupported pcapng section header")
                    break
                ifaces = []
            elif btype == BLOCK_OPB:
                if blen < 32:
                    err = CaptureError(path, base + off, "packet block too short")
                    break
                ifid, _, hi, lo, caplen, wire_len = opb(buf, off + 8)
                if caplen > blen - 32:
                    err = CaptureError(path, base + off, "packet data overruns block")
                    break
                try:
                    linktype, _, mul, div, ts_off = ifaces[ifid]
                except IndexError:
                    err = CaptureError(path, base + off, "packet names unknown interface")
                    break
                ts = ((hi << 32) | lo) * mul // div + ts_off
                start = off + 28
                append((ts, linktype, buf[start : start + caplen], wire_len))
            off += blen
        else:
            if len(batch) == max_frames:
                yield batch
                batch = []
                append = batch.append
            continue
        if err is not None:
            break
        rest = reader.refill(buf, off)
        if rest is None:
            err = reader.end_error(base + off, off < n, "file ends inside a block")
            break
        buf, base, off, n = rest, base + off, 0, len(rest)
    if batch:
        yield batch
    if err is not None:
        raise err
