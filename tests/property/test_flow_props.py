"""Flow-table invariants over random packet sequences (hypothesis).

Whatever the packets, ticks, timeouts and evictions: the records of a conversation add
up to exactly what was fed, the gauges agree with the table, and every flow's records
form one numbered sequence ending in a single final record.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.config import FlowConfig
from trafficguard.decode.packet import PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Packet
from trafficguard.flow.classify import APP_LABELS
from trafficguard.flow.records import FLOW_END_REASONS, FlowRecord
from trafficguard.flow.table import FlowTable

S = 1_000_000_000
HOSTS = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3]))
PORTS = (53, 80, 5060, 40000)
PAYLOADS = (b"", b"GET / HTTP/1.1\r\n\r\n", b"SSH-2.0-x\r\n", b"\x80\x00\x00\x01" + bytes(20))

packet_spec = st.tuples(
    st.integers(-1, 40),  # time step in 0.5 s units (negative: slightly out of order)
    st.sampled_from(HOSTS),
    st.sampled_from(HOSTS),
    st.sampled_from(PORTS),
    st.sampled_from(PORTS),
    st.sampled_from((PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_SCTP)),
    st.integers(0, 0x3F),  # TCP flags
    st.sampled_from(PAYLOADS),
    st.integers(1, 3),  # frames
    st.booleans(),  # tick after this packet
)


def conversation(rec_or_pkt: FlowRecord | Packet) -> tuple[object, ...]:
    if isinstance(rec_or_pkt, Packet):
        p = rec_or_pkt
        ends = sorted([(p.src, p.sport), (p.dst, p.dport)])
        return (p.vlan, p.proto, *ends)
    r = rec_or_pkt
    src = bytes(int(x) for x in r.src_addr.split("."))
    dst = bytes(int(x) for x in r.dst_addr.split("."))
    ends = sorted([(src, r.src_port), (dst, r.dst_port)])
    return (r.vlan, r.proto, *ends)


def build(
    specs: list[tuple[int, bytes, bytes, int, int, int, int, bytes, int, bool]],
) -> list[tuple[Packet, bool]]:
    out = []
    t = 0
    for step, src, dst, sport, dport, proto, flags, payload, frames, tick in specs:
        t += step * S // 2
        has_ports = proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP)
        off = 54
        data = bytes(off) + payload
        pkt = Packet(
            t, len(data) * frames, 0, 4, src, dst, proto, sport if has_ports else 0,
            dport if has_ports else 0,
            flags if proto == PROTO_TCP else 0, data, off, len(payload), len(data) - 14,
            0, frames,
        )  # fmt: skip
        out.append((pkt, tick))
    return out


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(packet_spec, max_size=120),
    max_flows=st.integers(16, 20),
    active_s=st.sampled_from((2.0, 7.5, 1800.0)),
    idle_s=st.sampled_from((1.0, 4.0, 60.0)),
    scan=st.integers(1, 5),
)
def test_records_add_up_and_gauges_agree(
    specs: list[tuple[int, bytes, bytes, int, int, int, int, bytes, int, bool]],
    max_flows: int,
    active_s: float,
    idle_s: float,
    scan: int,
) -> None:
    cfg = FlowConfig.model_validate(
        {
            "max_flows": max_flows,
            "active_timeout_s": active_s,
            "expiry_scan_per_tick": scan,
            "idle_timeout_s": {"udp": idle_s, "tcp_closing": idle_s / 2, "other": idle_s},
        }
    )
    table = FlowTable(cfg)
    fed_packets: Counter[tuple[object, ...]] = Counter()
    fed_bytes: Counter[tuple[object, ...]] = Counter()
    records: list[FlowRecord] = []
    for pkt, tick in build(specs):
        fed_packets[conversation(pkt)] += pkt.frames
        fed_bytes[conversation(pkt)] += pkt.wire_len
        table.update_batch([pkt])
        if tick:
            table.tick(pkt.ts_ns)
        records.extend(table.take_records())
        st_ = table.stats
        assert st_.active == sum(len(lane) for lane in table._lanes)
        assert st_.active <= max_flows
        assert st_.started == st_.ended + st_.active
    table.flush_all()
    records.extend(table.take_records())
    st_ = table.stats
    assert st_.active == 0 and st_.started == st_.ended

    got_packets: Counter[tuple[object, ...]] = Counter()
    got_bytes: Counter[tuple[object, ...]] = Counter()
    by_flow: dict[str, list[FlowRecord]] = defaultdict(list)
    for r in records:
        got_packets[conversation(r)] += r.packets_fwd + r.packets_rev
        got_bytes[conversation(r)] += r.bytes_fwd + r.bytes_rev
        by_flow[r.flow_id].append(r)
        assert r.app in APP_LABELS and r.end_reason in FLOW_END_REASONS
        assert r.start_ns <= r.end_ns and r.first_seen_ns <= r.start_ns
    assert got_packets == fed_packets
    assert got_bytes == fed_bytes
    assert st_.interim_records == sum(r.end_reason == "active" for r in records)
    assert st_.started == len(by_flow)
    for recs in by_flow.values():
        assert [r.seq for r in recs] == list(range(len(recs)))
        assert [r.end_reason == "active" for r in recs] == [True] * (len(recs) - 1) + [False]
        assert len({(r.first_seen_ns, r.src_addr, r.src_port) for r in recs}) == 1
    app_total = sum(st_.app_packets.values())
    assert app_total == sum(fed_packets.values())


@settings(max_examples=50, deadline=None)
@given(specs=st.lists(packet_spec, max_size=80))
def test_replay_is_deterministic(
    specs: list[tuple[int, bytes, bytes, int, int, int, int, bytes, int, bool]],
) -> None:
    def replay() -> list[FlowRecord]:
        table = FlowTable(FlowConfig(max_flows=16, active_timeout_s=5.0))
        out = []
        for pkt, tick in build(specs):
            table.update_batch([pkt])
            if tick:
                table.tick(pkt.ts_ns)
            out.extend(table.take_records())
        table.flush_all()
        return out + table.take_records()

    assert replay() == replay()
