"""Flow-table benchmarks: bytes per active flow, and packet updates per second.

    python bench/flow_memory.py                    # 100k and 1M flows, 66k-flow/2M-packet mix
    python bench/flow_memory.py --memory 100000 --mix-packets 500000

Memory: N distinct one-packet flows are fed as Packet objects built up front (fresh
address bytes and ints per packet, as the decoder makes them); the packets are then
dropped, so what is left is what the table keeps: flow objects, keys, the ints they hold
and the lanes' hash tables. Measured with tracemalloc and as an RSS delta.

Throughput: a synthetic mix of TCP (handshake, data, FIN), UDP (DNS pairs, long
QUIC/RTP streams) and ICMP flows with heavy-tailed sizes, interleaved in time and fed
in 512-packet batches with a packet-time tick each second; only update_batch is timed
(ticks are reported separately).
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import struct
import time
import tracemalloc

from trafficguard.config import FlowConfig
from trafficguard.decode.packet import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    Packet,
)
from trafficguard.flow.table import FlowTable

S = 1_000_000_000
T0 = 1_700_000_000 * S
BATCH = 512
_TLS_HELLO = bytes.fromhex("160301005b010000570303") + bytes(86)
_HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
_DNS = bytes.fromhex("1234010000010000000000000765786d706c6503636f6d0000010001")
_QUIC = b"\xc3\x00\x00\x00\x01\x08" + bytes(1194)


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _ip(n: int) -> bytes:
    return struct.pack("!I", n)


def _packet(
    ts: int, src: int, dst: int, sport: int, dport: int, proto: int, flags: int, payload: bytes
) -> Packet:
    off = 54 if proto == PROTO_TCP else 42
    data = bytes(off) + payload
    return Packet(
        ts, len(data) + 4, 0, 4, _ip(src), _ip(dst), proto, sport, dport, flags, data, off,
        len(payload), len(data) - 14,
    )  # fmt: skip


def _flow_packets(n: int) -> list[Packet]:
    return [
        _packet(T0 + i * 1000, 0x0A000000 + i // 50000, 0xC0000200 + i % 50000,
                1024 + i % 60000, 443, PROTO_TCP, TCP_SYN, b"")
        for i in range(n)
    ]  # fmt: skip


def _feed(table: FlowTable, packets: list[Packet]) -> None:
    for i in range(0, len(packets), BATCH):
        table.update_batch(packets[i : i + BATCH])


def memory(n: int) -> None:
    """Bytes per one-packet TCP flow: RSS growth (no tracing), then tracemalloc (exact).

    RSS first, while the process has not yet freed memory it could reuse; it leaves out
    objects the flows share with the packets (the timestamp int), tracemalloc does not.
    """
    cfg = FlowConfig(max_flows=max(n, 16))
    table = FlowTable(cfg)
    packets = _flow_packets(n)
    gc.collect()
    rss0 = _rss_kib()
    _feed(table, packets)
    rss = (_rss_kib() - rss0) * 1024
    del table, packets
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    table = FlowTable(cfg)
    packets = _flow_packets(n)
    _feed(table, packets)
    del packets
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert table.stats.active == n
    print(
        f"memory  flows={n:>9,}  tracemalloc={traced / n:4.0f} B/flow  "
        f"rss_growth={rss / n:4.0f} B/flow"
    )


def _mix(n_flows: int, n_packets: int, seed: int = 1) -> list[Packet]:
    """Heavy-tailed flow sizes (Pareto), random start times, packets merged by time.

    60 % TCP (SYN, SYN-ACK, TLS/HTTP request, data; 3 in 4 end with a FIN from each
    side), 20 % DNS query/response pairs, 17 % long UDP (QUIC or RTP-like), 3 % ICMP.
    """
    rnd = random.Random(seed)
    sizes = [rnd.paretovariate(1.1) for _ in range(n_flows)]
    r = [rnd.random() for _ in range(n_flows)]
    kinds = [
        "tcp" if x < 0.6 else ("dns" if x < 0.8 else ("udp" if x < 0.97 else "icmp")) for x in r
    ]
    scale = n_packets / sum(sizes)
    for _ in range(4):  # the minimum flow sizes skew the total: rescale towards n_packets
        counts = [
            2 if k == "dns" else max(4, round(z * scale)) for k, z in zip(kinds, sizes, strict=True)
        ]
        scale *= n_packets / sum(counts)
    events: list[tuple[int, int, int]] = []  # (ts, flow, index in flow)
    for f, count in enumerate(counts):
        start = rnd.randrange(120 * S)
        step = rnd.randrange(1_000_000, 50_000_000)
        events.extend((start + i * step, f, i) for i in range(count))
    events.sort()
    packets = []
    for ts, f, i in events:
        kind, count = kinds[f], counts[f]
        fwd = i % 3 != 1
        client, server = 0x0A000000 + f, 0xC6336400 + f % 251
        cport = 1024 + f % 60000
        if kind == "tcp":
            sport, dport, proto = cport, (443 if f % 3 else 80), PROTO_TCP
            flags = (TCP_SYN, TCP_SYN | TCP_ACK)[i] if i < 2 else TCP_ACK | TCP_PSH
            payload = (_TLS_HELLO if dport == 443 else _HTTP) if i == 2 else bytes(i % 2 * 600)
            if i >= count - 2 and f % 4:
                flags, payload, fwd = TCP_FIN | TCP_ACK, b"", i == count - 2
        elif kind == "dns":
            sport, dport, proto, flags, payload, fwd = cport, 53, PROTO_UDP, 0, _DNS, i == 0
        elif kind == "udp":
            sport, dport, proto, flags = cport, (443 if f % 2 else 40000), PROTO_UDP, 0
            payload = _QUIC if i == 0 else bytes(160 + f % 900)
        else:
            sport = dport = 0
            proto, flags, payload = PROTO_ICMP, 0, bytes(56)
        if fwd:
            packets.append(_packet(T0 + ts, client, server, sport, dport, proto, flags, payload))
        else:
            packets.append(_packet(T0 + ts, server, client, dport, sport, proto, flags, payload))
    return packets


def throughput(n_flows: int, n_packets: int, repeat: int) -> None:
    t = time.perf_counter()
    packets = _mix(n_flows, n_packets)
    built = time.perf_counter() - t
    print(f"mix     flows={n_flows:,} packets={len(packets):,} (built in {built:.1f} s)")
    for run in range(repeat):
        table = FlowTable(FlowConfig())
        gc.collect()
        gc.disable()
        update = tick = 0.0
        next_tick = packets[0].ts_ns
        for i in range(0, len(packets), BATCH):
            batch = packets[i : i + BATCH]
            t = time.perf_counter()
            table.update_batch(batch)
            update += time.perf_counter() - t
            last = batch[-1].ts_ns
            if last >= next_tick:
                next_tick = last + S
                t = time.perf_counter()
                table.tick(last)
                table.take_records()
                tick += time.perf_counter() - t
        gc.enable()
        st = table.stats
        print(
            f"run {run}: update_batch {len(packets) / update / 1e6:.2f} M packets/s "
            f"({update / len(packets) * 1e9:.0f} ns/packet), tick+take {tick:.2f} s; "
            f"flows started={st.started:,} active={st.active:,} "
            f"ended={dict((k, v) for k, v in st.ended_by_reason.items() if v)}"
        )
    apps = {k: v for k, v in table.stats.app_packets.items() if v}
    print("app packets:", dict(sorted(apps.items(), key=lambda kv: -kv[1])[:8]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--mix-flows", type=int, default=66_000)
    ap.add_argument("--mix-packets", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    for n in args.memory:
        memory(n)
    if args.mix_packets:
        throughput(args.mix_flows, args.mix_packets, args.repeat)


if __name__ == "__main__":
    main()
