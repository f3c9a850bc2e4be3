#!/usr/bin/env python3
"""Drive every entry point of the C core on real captures, for valgrind/ASan runs.

Loads ``_core`` straight from its shared object (not through the package, so the run
under valgrind stays short) and exercises feed_pcap, feed_frames, feed_block/scan_block
(TPACKET_V3 ring blocks), update_packets, callbacks, flow_info/flow_app, the start filter
(set_start_filter, watch_port), the payload tap (set_tap, take_taps), tick,
flush_some/flush_all, take_records (tuples and set_record_factory objects), the counters,
per-flow interest, the RTP accounting (rtp_track/rtp_streams/rtp_untrack, rtp_replay), the
DNS helpers (dns_question, dns_name_features) and the id speller (b32_head).

    PYTHONMALLOC=malloc valgrind --leak-check=full python bench/fast_memcheck.py
"""

from __future__ import annotations

import contextlib
import glob
import importlib.machinery
import importlib.util
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent


def load_core():  # type: ignore[no-untyped-def]
    so = glob.glob(str(REPO / "trafficguard" / "fast" / "_core*.so"))[0]
    loader = importlib.machinery.ExtensionFileLoader("trafficguard.fast._core", so)
    spec = importlib.util.spec_from_file_location("trafficguard.fast._core", so, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def ring_block(frames: list[tuple[int, int, bytes, int]], shift: int) -> bytes:
    """Frames as one TPACKET_V3 block (as tests/unit/test_live_ring.py builds them)."""
    body = bytearray()
    for i, (ts, _lt, data, wire) in enumerate(frames):
        mac = 66
        size = (mac + len(data) + 15) & ~15
        nxt = size if i + 1 < len(frames) else 0
        status = 0x11 if i % 3 == 0 else 1  # TP_STATUS_USER | TP_STATUS_VLAN_VALID
        sec, nsec = divmod(ts + shift, 10**9)
        hdr = struct.pack("=IIIIIIHH", nxt, sec, nsec, len(data), wire, status, mac, mac)
        hdr += struct.pack("=IIH", 0, 100 + i, 0)
        pkt = bytearray(size)
        pkt[: len(hdr)] = hdr
        pkt[mac : mac + len(data)] = data
        body += pkt
    return struct.pack("=IIIII", 3, 0, 1, len(frames), 48).ljust(48, b"\0") + bytes(body)


def main() -> int:
    core_mod = load_core()
    s = 10**9
    core = core_mod.Core(
        idle_ns=(300 * s, 30 * s, 10 * s, 60 * s, 30 * s, 60 * s, 10 * s), active_ns=2 * s,
        max_flows=16, scan_per_tick=5, classify_packets=4,
        ports=[(17, 5060, 0), (6, 80, 6), (17, 53, 4), (6, 443, 7)], tunnel_ports=[4789],
    )  # fmt: skip
    events = []
    rates = struct.pack("128I", *([8000] * 128))

    def callback(ev: int, slot: int, obj: object, arg: int) -> int:
        events.append((ev, core.flow_info(slot), core.flow_app(slot)))
        if ev == 0:  # start: meter RTP on every flow, every third one only non-RTP packets
            core.rtp_track(slot, rates, 2)
            return 7 if slot % 3 else 6
        if ev == 2:
            events.append(core.rtp_streams(slot))
        elif len(events) % 50 == 0:
            core.rtp_untrack(slot)
            core.set_interest(slot, 2)
        return 0

    core.set_callback(callback, lambda *fields: fields)  # Packets built in C
    # a start filter (SIP ports, DNS label, unknown UDP between high ports, a watched port),
    # switched off again halfway; a tap on port 53 emptied as it goes; bad values refused
    core.set_start_filter((6, 17), (5060,), (4,), 1024)
    core.watch_port(80, 1)
    core.set_tap((53,))
    for bad in ((70000, 1), (81, -1)):
        with contextlib.suppress(ValueError):
            core.watch_port(*bad)
    with contextlib.suppress(ValueError):
        core.set_start_filter((6,), (), (99,), 0)
    taps = []
    frames = []
    for name in ("mix.pcap", "sip-call-rtp.pcap", "dns.pcap", "http.pcap", "tls.pcap"):
        buf = (REPO / "pcaps" / name).read_bytes()
        off = 24
        while True:
            off, _done, status, _last, _wire, slow = core.feed_pcap(buf, off, False, 1000, 1, 64)
            if slow is not None:
                frames.append(slow)
            if status in (1, 3):
                break
            core.tick(_last)
            taps.extend(core.take_taps())
        if name == "dns.pcap":
            core.set_start_filter(None, (), (), 0)
            core.watch_port(80, -1)
        # the same bytes once more as Frames, and a truncated tail
        pos = 24
        while pos + 16 <= len(buf):
            sec, frac, caplen, wire = struct.unpack_from("<IIII", buf, pos)
            data = buf[pos + 16 : pos + 16 + caplen]
            frames.append((sec * s + frac * 1000 + 10 * s, 1, data, wire))
            pos += 16 + caplen
        core.feed_pcap(buf[:-7], 24, False, 1000, 1, 10**6)
    i = 0
    while i < len(frames):
        i = core.feed_frames(frames, i) + 1
    # the same frames once more as TPACKET_V3 ring blocks (scan_block + feed_block), every
    # third with a stripped VLAN tag to put back, and a block cut short (ValueError)
    for start in range(0, len(frames), 40):
        block = ring_block(frames[start : start + 40], shift=20 * s)
        first, count, _first_ts, _last_ts, _wire = core_mod.scan_block(block, 0, 1)
        while count:
            first, count, _last, slow = core.feed_block(block, first, count, 1)
        core.feed_block(memoryview(block), 48, 1, 113)  # not Ethernet: a slow Frame
        with contextlib.suppress(ValueError):
            core_mod.scan_block(block[: len(block) // 2], 0, 1)
        with contextlib.suppress(ValueError):
            core.feed_block(block[: len(block) // 2], 48, 40, 1)
    pkt = SimpleNamespace(ts_ns=frames[-1][0], wire_len=80, vlan=0, ip_version=4, proto=17,
                          sport=5060, dport=5060, tcp_flags=0, payload_off=42, payload_len=20,
                          ip_len=60, encap=1, frames=2, src=b"\x01\x02\x03\x04",
                          dst=b"\x05\x06\x07\x08",
                          data=bytes(42) + b"INVITE sip:x SIP/2.0\r\n")  # fmt: skip
    core.update_packets([pkt, pkt])
    with contextlib.suppress(AttributeError):  # not a Packet: an error, no leak
        core.update_packets([SimpleNamespace(ts_ns=1)])
    rtp = [(i * 20_000_000, i % 5 == 0, struct.pack("!BBHII", 0x80, 0, (i * 7919) & 0xFFFF,
            i * 160, i % 3) + bytes(i % 13)) for i in range(300)]  # fmt: skip
    core_mod.rtp_replay(rates, 2, rtp)
    with contextlib.suppress(ValueError):
        core_mod.rtp_replay(b"short", 2, rtp)
    while core.flush_some(3):
        pass
    core.set_callback(None)
    core.flush_all()
    rows = core.take_records()
    # records built in C (dict(**fields) stands in for FlowRecord), then a label table too
    # short for the end reasons: a ValueError at the first record, no leak
    names = tuple(str(i) for i in range(256))
    fields = tuple(f"field{i}" for i in range(27))
    core.set_record_factory(dict, fields, names, names, names, names, names, bytes.hex)
    i = 0
    while i < len(frames):
        i = core.feed_frames(frames, i) + 1
    core.flush_all()
    objects = core.take_records()
    core.set_record_factory(dict, fields, names, names, names, names, (), bytes.hex)
    core.feed_frames(frames, 0)
    with contextlib.suppress(ValueError):
        core.flush_all()
    with contextlib.suppress(ValueError):
        core.set_record_factory(dict, fields[:-1], names, names, names, names, names, bytes.hex)
    if not (objects and all(isinstance(o, dict) and len(o) == 27 for o in objects)):
        return 1
    assert taps, "the tap saw no DNS payload"
    # the DNS helpers on every tapped payload, whole and cut short, and the id speller
    questions = 0
    for tap in taps:
        payload = tap[-1]
        for end in (len(payload), len(payload) // 2, 13):
            q = core_mod.dns_question(payload, 0, min(end, len(payload)))
            if q is not None:
                questions += 1
                core_mod.dns_name_features(q[3], 1)
    for bad in ((b"\x00" * 12, 0, 99), (b"", 0, 0)):
        with contextlib.suppress(ValueError):
            core_mod.dns_question(*bad)
    core_mod.b32_head(bytes(range(32)))
    for bad_digest in (b"short", "text"):
        with contextlib.suppress(ValueError, TypeError):
            core_mod.b32_head(bad_digest)  # type: ignore[arg-type]
    if not questions:
        return 1
    print(len(rows), "records", len(events), "events", len(taps), "taps", core.counters()["packets"], "packets",
          len(core.app_counters()), core.memory())  # fmt: skip
    return 0 if rows and events else 1


if __name__ == "__main__":
    sys.exit(main())
