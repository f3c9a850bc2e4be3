"""Capture file reading: pcap/pcapng/gzip by magic, timestamps, errors, real files."""

from __future__ import annotations

import gzip
import os
import re
import struct
import threading
import tracemalloc
from pathlib import Path

import dpkt
import pytest
from realdata import all_real_pcaps, real_pcap, sources_lines
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, wrpcap

from trafficguard.capture.frames import Frame
from trafficguard.capture.pcapfile import open_capture
from trafficguard.errors import CaptureError, TruncatedCapture

NS = 1_000_000_000


# ---------------------------------------------------------------- builders


def pcap(records: list[tuple[int, int, bytes, int]], order: str = "<", nano: bool = False,
         linktype: int = 1) -> bytes:
    """records: (sec, frac, data, wire_len)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for sec, frac, data, wire in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(order: str, btype: int, body: bytes) -> bytes:
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + pad4(value)


def shb(order: str = "<") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, snaplen: int = 0, options: bytes = b"") -> bytes:
    if options:
        options += opt(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def epb(order: str, ifid: int, ts: int, data: bytes, wire: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data),
                       len(data) if wire is None else wire)
    return block(order, 6, head + data)


def opb(order: str, ifid: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", ifid, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + data)


def spb(order: str, data: bytes, wire: int | None = None) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data) if wire is None else wire) + data)


def write(tmp_path: Path, data: bytes, name: str = "cap.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def read_all(path: Path, chunk: int = 1 << 20, max_frames: int = 512) -> list[Frame]:
    with open_capture(path, chunk) as src:
        return [f for batch in src.batches(max_frames) for f in batch]


def read_until_error(path: Path, chunk: int = 1 << 20) -> tuple[list[Frame], CaptureError]:
    frames: list[Frame] = []
    src = open_capture(path, chunk)
    with pytest.raises(CaptureError) as info:
        for batch in src.batches(3):
            frames.extend(batch)
    return frames, info.value


# ---------------------------------------------------------------- pcap

RECS = [(1_700_000_000, 123_456, b"\x01" * 60, 60), (1_700_000_001, 999_999, b"\x02" * 14, 1514),
        (1_700_000_002, 0, b"", 0)]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_microseconds_both_byte_orders(tmp_path: Path, order: str) -> None:
    frames = read_all(write(tmp_path, pcap(RECS, order)))
    assert frames == [(s * NS + us * 1000, 1, d, w) for s, us, d, w in RECS]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_nanoseconds_both_byte_orders(tmp_path: Path, order: str) -> None:
    recs = [(1_700_000_000, 123_456_789, b"abc", 3), (5, 999_999_999, b"x" * 100, 200)]
    frames = read_all(write(tmp_path, pcap(recs, order, nano=True, linktype=101)))
    assert frames == [(1_700_000_000_123_456_789, 101, b"abc", 3),
                      (5_999_999_999, 101, b"x" * 100, 200)]


def test_pcap_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    # F bit (26) set, FCS length 4 in bits 28..31
    frames = read_all(write(tmp_path, pcap(RECS[:1], linktype=0x4400_0071)))
    assert frames[0][1] == 113


def test_scapy_written_pcap(tmp_path: Path) -> None:
    pkts = []
    for i in range(5):
        p = Ether() / IP(dst="192.0.2.1") / UDP(dport=5060 + i) / (b"x" * i)
        p.time = 1_700_000_000 + i + 0.25
        pkts.append(p)
    path = tmp_path / "scapy.pcap"
    wrpcap(str(path), pkts)
    frames = read_all(path)
    assert [f[2] for f in frames] == [bytes(p) for p in pkts]
    assert [f[0] for f in frames] == [(1_700_000_000 + i) * NS + 250_000_000 for i in range(5)]
    assert all(f[1] == 1 and f[3] == len(f[2]) for f in frames)


def test_header_only_pcap_is_empty_capture(tmp_path: Path) -> None:
    path = write(tmp_path, pcap([]))
    with open_capture(path) as src:
        assert list(src.batches()) == []
        assert src.frames_read == 0
        assert src.bytes_read == src.total_bytes == 24


def test_empty_file_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="empty file") as info:
        open_capture(write(tmp_path, b""))
    assert not isinstance(info.value, TruncatedCapture)
    assert info.value.offset == 0


def test_unknown_magic(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="bad magic") as info:
        open_capture(write(tmp_path, b"GIF89a" + b"\0" * 100))
    assert info.value.offset == 0


def test_missing_file_is_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        open_capture(tmp_path / "nope.pcap")


@pytest.mark.parametrize("size", [2, 20])
def test_file_ending_inside_file_header(tmp_path: Path, size: int) -> None:
    path = write(tmp_path, pcap([])[:size])
    with pytest.raises(TruncatedCapture) as info:
        list(open_capture(path).batches())
    assert info.value.offset == 0


@pytest.mark.parametrize("chunk", [1, 5, 16, 1 << 20])
def test_truncated_record_yields_complete_frames_first(tmp_path: Path, chunk: int) -> None:
    recs = [(i, 0, bytes([i]) * (10 + i), 10 + i) for i in range(7)]
    data = pcap(recs)
    cut = len(data) - 5  # inside the data of the last record
    frames, err = read_until_error(write(tmp_path, data[:cut]), chunk)
    assert isinstance(err, TruncatedCapture)
    assert [f[2] for f in frames] == [r[2] for r in recs[:6]]
    assert err.offset == len(pcap(recs[:6]))
    assert err.path.endswith("cap.bin")


def test_caplen_too_large_is_capture_error_after_good_frames(tmp_path: Path) -> None:
    good = pcap(RECS[:2])
    bad = struct.pack("<IIII", 1, 0, 262145, 262145) + b"\0" * 262145
    frames, err = read_until_error(write(tmp_path, good + bad))
    assert not isinstance(err, TruncatedCapture)
    assert "caplen" in err.reason
    assert err.offset == len(good)
    assert [f[2] for f in frames] == [r[2] for r in RECS[:2]]


def test_caplen_too_large_detected_before_buffering_it(tmp_path: Path) -> None:
    bad = pcap([]) + struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 0)
    frames, err = read_until_error(write(tmp_path, bad))
    assert frames == []
    assert "caplen" in err.reason and err.offset == 24


@pytest.mark.parametrize("chunk", [1, 3, 17, 64, 1 << 20])
@pytest.mark.parametrize("max_frames", [1, 2, 512])
def test_chunk_and_batch_sizes_do_not_change_frames(tmp_path: Path, chunk: int,
                                                    max_frames: int) -> None:
    recs = [(i, i, bytes([i % 256]) * (i * 7 % 50), 60) for i in range(40)]
    path = write(tmp_path, pcap(recs))
    batches = list(open_capture(path, chunk).batches(max_frames))
    assert all(1 <= len(b) <= max_frames for b in batches)
    assert [f for b in batches for f in b] == [(s * NS + u * 1000, 1, d, w) for s, u, d, w in recs]


def test_source_progress_and_lifecycle(tmp_path: Path) -> None:
    path = write(tmp_path, pcap(RECS))
    src = open_capture(path)
    assert src.name == str(path)
    assert src.total_bytes == path.stat().st_size
    assert sum(len(b) for b in src.batches()) == 3
    assert src.frames_read == 3
    assert src.bytes_read == src.total_bytes
    with pytest.raises(RuntimeError):
        list(src.batches())
    src.close()  # idempotent
    assert "cap.bin" not in repr(src)
    with pytest.raises(ValueError):
        list(open_capture(path).batches(0))


# ---------------------------------------------------------------- pcapng


def multi_interface_ng(order: str = "<") -> tuple[bytes, list[Frame]]:
    """Two interfaces (Ethernet µs, raw IP ns + offset), a 2^-10 one, SPB, OPB, skipped blocks."""
    o = order
    data = b"".join([
        shb(o),
        idb(o, 1, 65535),  # if 0: default 10^-6
        idb(o, 101, 0, opt(o, 9, b"\x09") + opt(o, 14, struct.pack(o + "q", 100))),  # 10^-9, +100 s
        idb(o, 113, 0, opt(o, 9, b"\x8a")),  # 2^-10
        block(o, 4, b"\x01\x00\x08\x00" + b"\xc0\x00\x02\x01name\0\0\0\0\0\0\0\0"),  # NRB
        epb(o, 0, 1_700_000_000_123_456, b"E" * 61, 70),
        block(o, 0x40000BAD, b"\x00\x00\x7e\x7e" + b"custom"),
        epb(o, 1, 1_700_000_000_123_456_789, b"R" * 20),
        block(o, 5, struct.pack(o + "IIII", 0, 0, 0, 0)),  # ISB
        epb(o, 2, 1024 * 5 + 512, b"S" * 3),
        block(o, 0x0000_7777, b"unknown block type"),
        spb(o, b"P" * 10, 10),
        opb(o, 1, 42, b"O" * 5),
        block(o, 10, b"DSB-secrets"),
    ])
    expected: list[Frame] = [
        (1_700_000_000_123_456_000, 1, b"E" * 61, 70),
        (1_700_000_100_123_456_789, 101, b"R" * 20, 20),
        (5_500_000_000, 113, b"S" * 3, 3),
        (5_500_000_000, 1, b"P" * 10, 10),  # SPB: interface 0, previous packet's time
        (100 * NS + 42, 101, b"O" * 5, 5),
    ]
    return data, expected


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_multi_interface_resolutions_offset_spb(tmp_path: Path, order: str) -> None:
    data, expected = multi_interface_ng(order)
    assert read_all(write(tmp_path, data)) == expected


@pytest.mark.parametrize("chunk", [1, 7, 32, 100])
def test_pcapng_chunk_sizes(tmp_path: Path, chunk: int) -> None:
    data, expected = multi_interface_ng(">")
    assert read_all(write(tmp_path, data), chunk, max_frames=2) == expected


def test_pcapng_tsresol_other_powers(tmp_path: Path) -> None:
    o = "<"
    data = (shb(o) + idb(o, 1, 0, opt(o, 9, b"\x03")) + idb(o, 1, 0, opt(o, 9, b"\x0c"))
            + idb(o, 1, 0, opt(o, 9, b"\x80")) + epb(o, 0, 7, b"a") + epb(o, 1, 7_000, b"b")
            + epb(o, 2, 3, b"c"))
    assert [f[0] for f in read_all(write(tmp_path, data))] == [7_000_000, 7, 3 * NS]


def test_spb_caplen_limited_by_snaplen_and_block(tmp_path: Path) -> None:
    o = "<"
    data = shb(o) + idb(o, 1, 8) + spb(o, b"0123456789AB", 1500) + spb(o, b"xyz", 3)
    frames = read_all(write(tmp_path, data))
    assert frames == [(0, 1, b"01234567", 1500), (0, 1, b"xyz", 3)]


def test_pcapng_multiple_sections_reset_interfaces(tmp_path: Path) -> None:
    sec1 = shb("<") + idb("<", 1) + epb("<", 0, 1, b"first")
    sec2 = shb(">") + idb(">", 101, 0, opt(">", 9, b"\x09")) + epb(">", 0, 2, b"second")
    frames = read_all(write(tmp_path, sec1 + sec2))
    assert frames == [(1000, 1, b"first", 5), (2, 101, b"second", 6)]
    # interface 1 of section 1 does not exist in section 2
    bad = sec1 + shb(">") + idb(">", 1) + epb(">", 1, 2, b"x")
    got, err = read_until_error(write(tmp_path, bad, "bad.pcapng"))
    assert got == [(1000, 1, b"first", 5)]
    assert "unknown interface" in err.reason
    assert err.offset == len(sec1) + len(shb(">")) + len(idb(">", 1))


def test_scapy_written_pcapng(tmp_path: Path) -> None:
    pkts = []
    for i in range(4):
        p = Ether() / IP(dst="198.51.100.7") / TCP(dport=443 + i)
        p.time = 1_600_000_000 + i
        pkts.append(p)
    path = tmp_path / "scapy.pcapng"
    with PcapNgWriter(str(path)) as w:
        for p in pkts:
            w.write(p)
    frames = read_all(path)
    assert [f[2] for f in frames] == [bytes(p) for p in pkts]
    assert [f[0] // NS for f in frames] == [1_600_000_000 + i for i in range(4)]
    assert all(f[1] == 1 for f in frames)


def _ng_err(tmp_path: Path, tail: bytes) -> tuple[list[Frame], CaptureError, int]:
    head = shb() + idb("<", 1) + epb("<", 0, 1, b"ok")
    frames, err = read_until_error(write(tmp_path, head + tail))
    return frames, err, len(head)


@pytest.mark.parametrize(("tail", "reason"), [
    (struct.pack("<III", 6, 13, 13), "block length"),  # not a multiple of 4
    (struct.pack("<III", 6, 8, 8), "block length"),  # < 12
    (struct.pack("<III", 6, 0x7FFF_FFFC, 0), "block length"),  # absurdly long
    (struct.pack("<III", 6, 12, 16), "mismatch"),  # trailing length differs
    (epb("<", 5, 1, b"x"), "unknown interface"),
    (struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 100, 100) + struct.pack("<I", 32), "overruns"),
    (struct.pack("<III", 6, 12, 12), "too short"),
    (block("<", 1, b"\x01\x00"), "too short"),  # IDB without snaplen
    (block("<", 1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 40)), "option"),
    (block("<", 0x0A0D0D0A, b"\xde\xad\xbe\xef" + b"\0" * 12), "byte-order"),
    (block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)), "section header"),
])
def test_pcapng_corrupt_blocks(tmp_path: Path, tail: bytes, reason: str) -> None:
    frames, err, offset = _ng_err(tmp_path, tail)
    assert frames == [(1000, 1, b"ok", 2)]
    assert not isinstance(err, TruncatedCapture)
    assert reason in err.reason
    assert err.offset == offset


def test_pcapng_truncated_block(tmp_path: Path) -> None:
    frames, err, offset = _ng_err(tmp_path, epb("<", 0, 2, b"cut here")[:-3])
    assert isinstance(err, TruncatedCapture)
    assert frames == [(1000, 1, b"ok", 2)] and err.offset == offset


def test_spb_without_interface_is_error(tmp_path: Path) -> None:
    frames, err = read_until_error(write(tmp_path, shb() + spb("<", b"abc")))
    assert frames == [] and "unknown interface" in err.reason and err.offset == 28


# ---------------------------------------------------------------- gzip


def _samples() -> dict[str, bytes]:
    return {
        "pcap-le": pcap(RECS),
        "pcap-be-ns": pcap(RECS, ">", nano=True),
        "pcapng-le": multi_interface_ng("<")[0],
        "pcapng-be": multi_interface_ng(">")[0],
    }


@pytest.mark.parametrize("kind", sorted(_samples()))
@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_gzip_of_each_format(tmp_path: Path, kind: str, chunk: int) -> None:
    raw = _samples()[kind]
    plain = read_all(write(tmp_path, raw, "plain"), chunk)
    gz = write(tmp_path, gzip.compress(raw), "compressed.pcap")  # extension is irrelevant
    with open_capture(gz, chunk) as src:
        frames = [f for b in src.batches() for f in b]
        assert src.total_bytes == gz.stat().st_size
        assert src.bytes_read == src.total_bytes
    assert frames == plain and len(frames) >= 3


def test_gzip_multi_member_and_zero_padding(tmp_path: Path) -> None:
    raw = pcap(RECS)
    gz = gzip.compress(raw[:30]) + gzip.compress(raw[30:]) + b"\0" * 10
    assert read_all(write(tmp_path, gz), 5) == read_all(write(tmp_path, raw, "p"))


def test_gzip_truncated_yields_frames_then_truncated_error(tmp_path: Path) -> None:
    recs = [(i, 0, bytes([i]) * 300, 300) for i in range(200)]
    raw = pcap(recs)
    gz = gzip.compress(raw, compresslevel=1)
    frames, err = read_until_error(write(tmp_path, gz[: len(gz) // 2]), 4096)
    assert isinstance(err, TruncatedCapture)
    assert 0 < len(frames) < 200
    assert [f[2] for f in frames] == [r[2] for r in recs[: len(frames)]]
    assert err.offset == len(pcap(recs[: len(frames)]))


def test_gzip_corrupt_is_capture_error(tmp_path: Path) -> None:
    raw = pcap([(i, 0, b"\xaa" * 100, 100) for i in range(50)])
    gz = bytearray(gzip.compress(raw))
    gz[-8] ^= 0xFF  # CRC32
    frames, err = read_until_error(write(tmp_path, bytes(gz)))
    assert "gzip" in err.reason
    assert len(frames) == 50  # every frame decoded before the bad trailer


def test_gzip_of_empty_and_of_garbage(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="empty file"):
        open_capture(write(tmp_path, gzip.compress(b""), "e"))
    with pytest.raises(CaptureError, match="bad magic"):
        open_capture(write(tmp_path, gzip.compress(b"hello world"), "g"))
    with pytest.raises(CaptureError, match="gzip"):
        open_capture(write(tmp_path, b"\x1f\x8b\x08\x00garbage garbage", "c"))


def test_reads_gzip_from_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = gzip.compress(pcap(RECS))
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    with open_capture(fifo, 7) as src:
        frames = [f for b in src.batches() for f in b]
        assert src.total_bytes is None  # a pipe has no size
        assert src.bytes_read == len(data)
    writer.join()
    assert frames == read_all(write(tmp_path, pcap(RECS)))


@pytest.mark.parametrize("compress", [False, True])
def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path: Path, compress: bool) -> None:
    rec = struct.pack("<IIII", 1, 2, 1000, 1000) + b"\0" * 1000
    path = tmp_path / "big"
    with (gzip.open(path, "wb", compresslevel=1) if compress else path.open("wb")) as f:
        f.write(pcap([]))
        for _ in range(30):
            f.write(rec * 1000)  # 30 MB uncompressed
    frames = 0
    tracemalloc.start()
    try:
        with open_capture(path, 1 << 18) as src:
            for batch in src.batches():
                frames += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 30_000
    assert peak < 6 * 2**20  # 30 MB through a 256 KiB window (+ two 512-frame batches)


# ---------------------------------------------------------------- real files


def _sources_counts() -> dict[str, int]:
    counts = {}
    for line in sources_lines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 8 and re.fullmatch(r"[\w.-]+\.pcap(ng)?", cells[1]) and cells[7].isdigit():
            counts[cells[1]] = int(cells[7])
    return counts


COUNTS = _sources_counts()
REAL_FILES = [p.name for p in all_real_pcaps()]


def test_sources_table_covers_every_real_file() -> None:
    assert REAL_FILES and sorted(COUNTS) == REAL_FILES
    assert COUNTS["zeek-pcapng-multi-interface.pcapng"] == 6 and COUNTS["ndpi-sip.pcap"] == 112


def _dpkt_read(path: Path) -> list[tuple[float, bytes]]:
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        return [(ts, bytes(buf)) for ts, buf in reader]


@pytest.mark.golden
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_matches_sources_and_dpkt(tmp_path: Path, name: str) -> None:
    path = real_pcap(name)
    frames = read_all(path)
    assert len(frames) == COUNTS[name]
    ref = _dpkt_read(path)
    assert [f[2] for f in frames] == [b for _, b in ref]
    for (ts_ns, _, data, wire), (ts, _) in zip(frames, ref, strict=True):
        # dpkt applies the first IDB's if_tsresol to every interface; that file is
        # checked against capinfos in the next test instead.
        assert abs(ts_ns / NS - ts) < 2e-6 or name == "zeek-pcapng-multi-interface.pcapng"
        assert wire >= len(data)
    gz = write(tmp_path, gzip.compress(path.read_bytes()), name + ".gz")
    assert read_all(gz, 4096) == frames


def test_real_multi_interface_pcapng_per_interface_resolution() -> None:
    # interface 0 has if_tsresol 10^-9, interface 1 the default 10^-6; capinfos reports
    # a duration of 347.640611507 s, which only comes out if each EPB uses its own IDB.
    frames = read_all(real_pcap("zeek-pcapng-multi-interface.pcapng"))
    ts = [f[0] for f in frames]
    assert {f[1] for f in frames} == {1}
    assert max(ts) - min(ts) == 347_640_611_507
    assert ts[0] == (411566134 << 32 | 3829176829)
    assert ts[2] == (411566 << 32 | 926966361) * 1000
