"""Cut and corrupted capture files: only CaptureError, and every whole frame before the cut."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realdata import real_pcap

from trafficguard.capture.frames import Frame
from trafficguard.capture.pcapfile import open_capture
from trafficguard.errors import CaptureError, TruncatedCapture

# A built capture: the bytes, where the file header ends, and (end offset, is a packet)
# for every record/block after it.
Built = tuple[bytes, int, list[tuple[int, bool]]]

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

payloads = st.binary(max_size=70)


@st.composite
def pcaps(draw: st.DrawFn) -> Built:
    order = draw(st.sampled_from("<>"))
    nano = draw(st.booleans())
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4,
                                2, 4, 0, 0, 65535, draw(st.sampled_from([1, 101, 113]))))
    ends = []
    for data in draw(st.lists(payloads, max_size=10)):
        sec = draw(st.integers(0, 2**32 - 1))
        frac = draw(st.integers(0, 999_999_999 if nano else 999_999))
        wire = len(data) + draw(st.integers(0, 9))
        out += struct.pack(order + "IIII", sec, frac, len(data), wire) + data
        ends.append((len(out), True))
    return bytes(out), 24, ends


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(order + "II", btype, 12 + len(body)) + body + struct.pack(order + "I",
                                                                                12 + len(body))


def _shb(order: str) -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(order: str, linktype: int, resol: int | None) -> bytes:
    opts = b""
    if resol is not None:
        opts = struct.pack(order + "HH", 9, 1) + bytes([resol, 0, 0, 0]) + b"\0" * 4
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + opts)


@st.composite
def pcapngs(draw: st.DrawFn) -> Built:
    order = draw(st.sampled_from("<>"))
    out = bytearray(_shb(order))
    header_end = len(out)
    ends: list[tuple[int, bool]] = []
    n_if = 0

    def add(blk: bytes, packet: bool) -> None:
        out.extend(blk)
        ends.append((len(out), packet))

    add(_idb(order, 1, None), False)
    n_if = 1
    kinds = st.sampled_from(["epb", "epb", "epb", "spb", "opb", "idb", "skip", "shb"])
    for kind in draw(st.lists(kinds, max_size=10)):
        if kind == "epb":
            data = draw(payloads)
            ts = draw(st.integers(0, 2**64 - 1))
            add(_block(order, 6, struct.pack(order + "IIIII", draw(st.integers(0, n_if - 1)),
                                             ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
                       + data), True)
        elif kind == "opb":
            data = draw(payloads)
            add(_block(order, 2, struct.pack(order + "HHIIII", 0, 0, 0, 7, len(data), len(data))
                       + data), True)
        elif kind == "spb":
            data = draw(payloads)
            add(_block(order, 3, struct.pack(order + "I", len(data)) + data), True)
        elif kind == "idb":
            add(_idb(order, draw(st.sampled_from([1, 101, 276])),
                     draw(st.sampled_from([None, 6, 9, 0x8A]))), False)
            n_if += 1
        elif kind == "skip":
            add(_block(order, draw(st.sampled_from([4, 5, 10, 0x40000BAD, 77])),
                       draw(st.binary(max_size=30))), False)
        else:  # a new section (other byte order), with its own first interface
            order = "<" if order == ">" else ">"
            add(_shb(order), False)
            add(_idb(order, 1, 9), False)
            n_if = 1
    return bytes(out), header_end, ends


captures = st.one_of(pcaps(), pcapngs())


def _read(path: Path, chunk: int) -> tuple[list[Frame], CaptureError | None]:
    """Every frame the reader yields, and the error it ended with (if any)."""
    frames: list[Frame] = []
    try:
        with open_capture(path, chunk) as src:
            for batch in src.batches(4):
                frames.extend(batch)
    except CaptureError as exc:
        return frames, exc
    return frames, None


def _full_frames(tmp_path: Path, data: bytes) -> list[Frame]:
    frames, err = _read(_write(tmp_path, "full", data), 1 << 20)
    assert err is None
    return frames


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@SETTINGS
@given(built=captures, where=st.floats(0, 1), chunk=st.integers(1, 200), gz=st.booleans())
def test_truncation_yields_every_whole_frame_before_the_cut(
        tmp_path: Path, built: Built, where: float, chunk: int, gz: bool) -> None:
    data, header_end, ends = built
    full = _full_frames(tmp_path, data)
    assert len(full) == sum(packet for _, packet in ends)
    cut = int(where * len(data))
    cut_data = data[:cut]
    frames, err = _read(_write(tmp_path, "cut", gzip.compress(cut_data) if gz else cut_data),
                        chunk)

    whole = [end for end, _ in ends if end <= cut]
    assert frames == full[: sum(packet for end, packet in ends if end <= cut)]
    boundaries = {header_end, *(end for end, _ in ends)}
    if cut == 0:
        assert err is not None and err.reason == "empty file"
    elif cut in boundaries:
        assert err is None
    else:
        assert isinstance(err, TruncatedCapture)
        assert err.offset == (max(whole) if whole else (0 if cut < header_end else header_end))
        assert err.offset <= cut <= len(data)


@SETTINGS
@given(built=captures, where=st.floats(0, 1), chunk=st.integers(1, 200))
def test_truncated_gzip_stream_yields_a_prefix(
        tmp_path: Path, built: Built, where: float, chunk: int) -> None:
    data = built[0]
    full = _full_frames(tmp_path, data)
    gz = gzip.compress(data)
    cut = int(where * len(gz))
    frames, err = _read(_write(tmp_path, "gzcut", gz[:cut]), chunk)
    assert frames == full[: len(frames)]
    if cut < len(gz):
        assert err is not None and err.offset <= len(data)
    else:
        assert err is None and frames == full


def _inflated_len(stream: bytes) -> int:
    """Bytes a (possibly corrupt) gzip stream inflates to before its first error."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    for i in range(len(stream)):
        try:
            total += len(inflater.decompress(stream[i : i + 1]))
        except zlib.error:
            break
        if inflater.eof:
            break
    return total


@SETTINGS
@given(built=captures, chunk=st.integers(1, 200), gz=st.booleans(),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_corruption_raises_only_capture_error(
        tmp_path: Path, built: Built, chunk: int, gz: bool,
        edits: list[tuple[float, int]]) -> None:
    data, _, ends = built
    full = _full_frames(tmp_path, data)
    bad = bytearray(gzip.compress(data) if gz else data)
    positions = [int(w * len(bad)) for w, _ in edits]
    for pos, (_, value) in zip(positions, edits, strict=True):
        bad[pos] = value
    frames, err = _read(_write(tmp_path, "bad", bytes(bad)), chunk)  # anything else propagates
    if err is not None:
        # offsets count decompressed bytes; a corrupted deflate stream may inflate to more
        # (or fewer) bytes than the original capture, so bound by what it does inflate to
        limit = _inflated_len(bytes(bad)) if gz else len(bad)
        assert 0 <= err.offset <= max(len(data), limit)
    if not gz:
        first = min(positions)
        untouched = sum(packet for end, packet in ends if end <= first)
        assert frames[:untouched] == full[:untouched]


@pytest.mark.parametrize("chunk", [1, 13, 4096])
def test_real_pcapng_cut_everywhere(tmp_path: Path, chunk: int) -> None:
    """Exhaustive cuts of a real two-interface pcapng: frames are always a prefix."""
    data = real_pcap("zeek-pcapng-multi-interface.pcapng").read_bytes()
    full = _full_frames(tmp_path, data)
    boundaries = [0]
    while boundaries[-1] < len(data):  # the file is little-endian
        boundaries.append(boundaries[-1] + struct.unpack_from("<I", data, boundaries[-1] + 4)[0])
    assert boundaries[-1] == len(data)
    seen = set()
    for cut in range(1, len(data), 3 if chunk == 1 else 1):
        frames, err = _read(_write(tmp_path, "c", data[:cut]), chunk)
        assert frames == full[: len(frames)]
        if cut in boundaries:
            assert err is None
        else:
            assert isinstance(err, TruncatedCapture)
            assert err.offset == max(b for b in boundaries if b <= cut)
        seen.add(len(frames))
    assert seen == set(range(len(full)))
