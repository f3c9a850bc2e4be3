"""Flow table: TCP states and initiator, counting, timeouts, eviction, determinism."""

from __future__ import annotations

import ipaddress
import struct

import msgspec
import pytest
from pydantic import ValidationError

from trafficguard.capture.frames import LINKTYPE_ETHERNET, Frame
from trafficguard.config import Config, FlowConfig
from trafficguard.decode.decoder import Decoder
from trafficguard.decode.packet import (
    ENCAP_VXLAN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Packet,
)
from trafficguard.flow.records import FlowRecord
from trafficguard.flow.state import Flow
from trafficguard.flow.table import LANE_DNS, LANE_NAMES, LANE_UDP, FlowTable

S = 1_000_000_000
T0 = 1_700_000_000 * S
CLIENT = "10.0.0.1"
SERVER = "192.0.2.80"
SYN, SYNACK, ACK, PSHACK = TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_PSH | TCP_ACK
FINACK, RST = TCP_FIN | TCP_ACK, TCP_RST


def pkt(
    t: float,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    proto: int = PROTO_TCP,
    flags: int = 0,
    payload: bytes = b"",
    vlan: int = 0,
    encap: int = 0,
    frames: int = 1,
) -> Packet:
    """A decoded packet as the decoder would build it (Ethernet + IP + L4 headers)."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    ip_hdr = 20 if len(s) == 4 else 40
    l4_hdr = {PROTO_TCP: 20, PROTO_UDP: 8}.get(proto, 8)
    off = 14 + ip_hdr + l4_hdr
    data = bytes(off) + payload
    return Packet(
        T0 + int(t * S), len(data), vlan, 4 if len(s) == 4 else 6, s, d, proto, sport, dport,
        flags if proto == PROTO_TCP else 0, data, off, len(payload), len(data) - 14,
        encap, frames,
    )  # fmt: skip


def cfg(**kw: object) -> FlowConfig:
    return FlowConfig.model_validate(kw)


def run(table: FlowTable, packets: list[Packet], tick_at: float | None = None) -> list[FlowRecord]:
    table.update_batch(packets)
    if tick_at is not None:
        table.tick(T0 + int(tick_at * S))
    return table.take_records()


def handshake(t: float = 0.0, sport: int = 40000) -> list[Packet]:
    return [
        pkt(t, CLIENT, SERVER, sport, 80, flags=SYN),
        pkt(t + 0.01, SERVER, CLIENT, 80, sport, flags=SYNACK),
        pkt(t + 0.02, CLIENT, SERVER, sport, 80, flags=ACK),
    ]


def full_tcp(sport: int = 40000) -> list[Packet]:
    return [
        *handshake(0.0, sport),
        pkt(0.03, CLIENT, SERVER, sport, 80, flags=PSHACK, payload=b"x" * 100),
        pkt(0.04, SERVER, CLIENT, 80, sport, flags=PSHACK, payload=b"y" * 1000),
        pkt(0.05, CLIENT, SERVER, sport, 80, flags=FINACK),
        pkt(0.06, SERVER, CLIENT, 80, sport, flags=FINACK),
        pkt(0.07, CLIENT, SERVER, sport, 80, flags=ACK),
    ]


def flow_of(table: FlowTable) -> Flow:
    flows = [f for lane in table._lanes for f in lane.values()]
    assert len(flows) == 1
    return flows[0]


def test_tcp_handshake_states_and_final_record() -> None:
    table = FlowTable(cfg())
    states = []
    for p in full_tcp():
        table.update_batch([p])
        states.append(flow_of(table).tcp_state)
    # syn_sent, syn_received, established x3, fin_wait, closed, closed
    assert states == [1, 2, 3, 3, 3, 4, 5, 5]
    assert run(table, [], tick_at=5) == []  # closing timeout (10 s) not reached yet
    (rec,) = run(table, [], tick_at=10.07)
    assert rec.end_reason == "tcp_fin"
    assert rec.tcp_state == "closed"
    assert (rec.src_addr, rec.src_port, rec.dst_addr, rec.dst_port) == (CLIENT, 40000, SERVER, 80)
    assert (rec.packets_fwd, rec.packets_rev) == (5, 3)
    assert (rec.payload_bytes_fwd, rec.payload_bytes_rev) == (100, 1000)
    assert rec.bytes_fwd == 5 * 54 + 100 and rec.ip_bytes_fwd == rec.bytes_fwd - 5 * 14
    assert rec.tcp_flags_fwd == SYN | ACK | TCP_PSH | TCP_FIN
    assert rec.tcp_flags_rev == SYNACK | TCP_PSH | TCP_FIN
    assert (rec.first_seen_ns, rec.start_ns, rec.end_ns) == (T0, T0, T0 + int(0.07 * S))
    assert rec.seq == 0 and rec.app == "http" and rec.app_source == "port"
    assert len(rec.flow_id) == 16 and int(rec.flow_id, 16) >= 0
    assert table.stats.ended_by_reason["tcp_fin"] == 1 and table.stats.active == 0


def test_late_ack_after_close_stays_in_flow() -> None:
    table = FlowTable(cfg())
    late = pkt(3.0, SERVER, CLIENT, 80, 40000, flags=ACK)
    assert run(table, [*full_tcp(), late]) == []
    assert table.stats.started == 1
    (rec,) = run(table, [], tick_at=13.0)
    assert rec.packets_rev == 4 and rec.end_ns == late.ts_ns


def test_rst_ends_with_tcp_rst() -> None:
    table = FlowTable(cfg())
    rst = pkt(0.5, SERVER, CLIENT, 80, 40000, flags=RST)
    (rec,) = run(table, [*handshake(), rst], tick_at=10.5)
    assert (rec.end_reason, rec.tcp_state) == ("tcp_rst", "reset")
    assert rec.tcp_flags_rev & TCP_RST


def test_syn_ack_first_makes_its_receiver_the_initiator() -> None:
    table = FlowTable(cfg())
    packets = [
        pkt(0.0, SERVER, CLIENT, 80, 40000, flags=SYNACK),
        pkt(0.1, CLIENT, SERVER, 40000, 80, flags=ACK),
    ]
    table.update_batch(packets)
    assert flow_of(table).tcp_state == 3
    table.flush_all()
    (rec,) = table.take_records()
    assert (rec.src_addr, rec.src_port, rec.dst_port) == (CLIENT, 40000, 80)
    assert (rec.packets_fwd, rec.packets_rev) == (1, 1)
    assert rec.tcp_flags_rev == SYNACK and rec.end_reason == "flush"


def test_midstream_first_sender_is_initiator() -> None:
    table = FlowTable(cfg())
    table.update_batch([pkt(0.0, SERVER, CLIENT, 80, 40000, flags=PSHACK, payload=b"z")])
    table.update_batch([pkt(0.1, CLIENT, SERVER, 40000, 80, flags=ACK)])
    table.flush_all()
    (rec,) = table.take_records()
    assert (rec.src_addr, rec.src_port, rec.tcp_state) == (SERVER, 80, "midstream")
    assert (rec.packets_fwd, rec.packets_rev, rec.payload_bytes_fwd) == (1, 1, 1)


def test_embryonic_flow_uses_short_timeout() -> None:
    table = FlowTable(cfg())
    syn_only = pkt(0.0, CLIENT, SERVER, 40001, 80, flags=SYN)
    established = handshake(0.0, 40002)
    table.update_batch([syn_only, *established])
    table.tick(T0 + 29 * S)
    assert table.take_records() == []
    table.tick(T0 + 30 * S)
    (rec,) = table.take_records()
    assert (rec.src_port, rec.tcp_state, rec.end_reason) == (40001, "syn_sent", "idle")
    table.tick(T0 + 299 * S)
    assert table.take_records() == []
    (rec,) = run(table, [], tick_at=300.02)
    assert (rec.src_port, rec.tcp_state, rec.end_reason) == (40002, "established", "idle")


def test_syn_on_closed_flow_starts_a_new_flow() -> None:
    table = FlowTable(cfg())
    table.update_batch(full_tcp())
    again = handshake(1.0)
    records = run(table, again)
    assert [r.end_reason for r in records] == ["tcp_fin"]
    assert records[0].packets_fwd == 5  # the new SYN was not counted in the old flow
    table.flush_all()
    (new,) = table.take_records()
    assert new.first_seen_ns == again[0].ts_ns and new.packets_fwd == 2
    assert new.flow_id != records[0].flow_id
    assert table.stats.started == 2


def test_udp_bidirectional_counting() -> None:
    table = FlowTable(cfg())
    packets = [
        pkt(0.0, CLIENT, SERVER, 5000, 6000, PROTO_UDP, payload=b"a" * 10),
        pkt(0.1, SERVER, CLIENT, 6000, 5000, PROTO_UDP, payload=b"b" * 20),
        pkt(0.2, SERVER, CLIENT, 6000, 5000, PROTO_UDP, payload=b"c" * 30, frames=3),
    ]
    table.update_batch(packets)
    assert table.stats.active == 1
    (rec,) = run(table, [], tick_at=60.2)
    assert rec.end_reason == "idle" and rec.tcp_state == "none"
    assert (rec.packets_fwd, rec.packets_rev) == (1, 4)
    assert (rec.payload_bytes_fwd, rec.payload_bytes_rev) == (10, 50)
    assert (rec.bytes_fwd, rec.bytes_rev) == (42 + 10, 2 * 42 + 50)
    assert (rec.ip_bytes_fwd, rec.ip_bytes_rev) == (28 + 10, 2 * 28 + 50)
    assert (rec.tcp_flags_fwd, rec.tcp_flags_rev) == (0, 0)


def test_udp_idle_timeout_is_exact_in_packet_time() -> None:
    table = FlowTable(cfg(idle_timeout_s={"udp": 5.0}))
    table.update_batch([pkt(0.0, CLIENT, SERVER, 5000, 6000, PROTO_UDP)])
    table.tick(T0 + 5 * S - 1)
    assert table.take_records() == [] and table.stats.active == 1
    table.tick(T0 + 5 * S)
    assert [r.end_reason for r in table.take_records()] == ["idle"]
    assert table.stats.active == 0


def test_gap_longer_than_idle_timeout_splits_even_without_tick() -> None:
    table = FlowTable(cfg())
    a = pkt(0.0, CLIENT, SERVER, 5000, 6000, PROTO_UDP)
    b = pkt(61.0, SERVER, CLIENT, 6000, 5000, PROTO_UDP)
    (old,) = run(table, [a, b])
    assert (old.end_reason, old.end_ns) == ("idle", a.ts_ns)
    table.flush_all()
    (new,) = table.take_records()
    assert new.first_seen_ns == b.ts_ns and new.src_addr == SERVER  # b's sender initiated
    assert table.stats.started == 2


def test_active_timeout_interim_records_sum_to_totals() -> None:
    table = FlowTable(cfg(active_timeout_s=30.0))
    packets = [
        pkt(float(t), CLIENT, SERVER, 5000, 6000, PROTO_UDP, payload=b"p" * t)
        for t in range(0, 100, 10)
    ]
    table.update_batch(packets)
    table.flush_all()
    records = table.take_records()
    assert [r.end_reason for r in records] == ["active", "active", "active", "flush"]
    assert [r.seq for r in records] == [0, 1, 2, 3]
    assert len({r.flow_id for r in records}) == 1
    assert {r.first_seen_ns for r in records} == {T0}
    assert [r.packets_fwd for r in records] == [3, 3, 3, 1]
    assert sum(r.payload_bytes_fwd for r in records) == sum(range(0, 100, 10))
    assert sum(r.bytes_fwd for r in records) == sum(p.wire_len for p in packets)
    # each interval starts with the first packet after the previous interim record
    assert [r.start_ns for r in records] == [T0 + t * S for t in (0, 30, 60, 90)]
    assert [r.end_ns for r in records] == [T0 + t * S for t in (20, 50, 80, 90)]
    assert table.stats.interim_records == 3
    assert table.stats.ended_by_reason["flush"] == 1


def test_eviction_at_capacity_is_lru_and_counted() -> None:
    table = FlowTable(cfg(max_flows=16))
    first = [pkt(i * 0.1, CLIENT, SERVER, 1000 + i, 53, PROTO_UDP) for i in range(16)]
    table.update_batch(first)
    # touch flows 0 and 1 (in that order): flow 2 is now the least recently used
    table.update_batch([pkt(2.0, SERVER, CLIENT, 53, 1000, PROTO_UDP)])
    table.update_batch([pkt(2.1, CLIENT, SERVER, 1001, 53, PROTO_UDP)])
    evicted = run(table, [pkt(3.0, CLIENT, SERVER, 2000, 53, PROTO_UDP)])
    assert [(r.src_port, r.end_reason) for r in evicted] == [(1002, "evicted")]
    evicted = run(table, [pkt(3.1, CLIENT, SERVER, 2001, 53, PROTO_UDP)])
    assert [r.src_port for r in evicted] == [1003]
    st = table.stats
    assert (st.active, st.capacity, st.evicted, st.ended_by_reason["evicted"]) == (16, 16, 2, 2)
    assert st.started == st.ended + st.active


def test_eviction_picks_oldest_across_protocols() -> None:
    table = FlowTable(cfg(max_flows=16))
    udp = [pkt(1.0 + i, CLIENT, SERVER, 1000 + i, 53, PROTO_UDP) for i in range(8)]
    tcp = [pkt(0.5 + i, CLIENT, SERVER, 3000 + i, 443, flags=SYN) for i in range(8)]
    table.update_batch(sorted(udp + tcp, key=lambda p: p.ts_ns))
    (rec,) = run(table, [pkt(20.0, CLIENT, SERVER, 9, 9, PROTO_ICMP)])
    assert (rec.proto, rec.src_port, rec.end_reason) == (PROTO_TCP, 3000, "evicted")


def test_expiry_scan_is_bounded_per_tick() -> None:
    table = FlowTable(cfg(expiry_scan_per_tick=3))
    table.update_batch([pkt(0.0, CLIENT, SERVER, 1000 + i, 53, PROTO_UDP) for i in range(7)])
    table.tick(T0 + 1 * S)  # nothing idle yet; the 7 starts are accounted to this tick
    assert table.take_records() == []
    ended = []
    for _ in range(3):
        table.tick(T0 + 100 * S)
        ended.append(len(table.take_records()))
    assert ended == [3, 3, 1]


def test_expiry_keeps_up_with_more_starts_per_tick_than_the_scan_bound() -> None:
    """50 one-packet flows start per 1 s tick against a bound of 10: the open flows stay
    at one idle timeout's worth instead of growing with the capture's length."""
    table = FlowTable(cfg(expiry_scan_per_tick=10))
    open_after = []
    for second in range(60):
        table.update_batch([pkt(second + i / 100, CLIENT, SERVER, 1024 + second * 50 + i, 53,
                                PROTO_UDP) for i in range(50)])  # fmt: skip
        table.tick(T0 + (second + 1) * S)
        table.take_records()
        open_after.append(table.stats.active)
    timeout = int(cfg().idle_timeout_s.dns)
    assert max(open_after[2 * timeout :]) <= (timeout + 1) * 50
    assert open_after[-1] == open_after[2 * timeout]


def test_same_packets_twice_give_identical_records() -> None:
    def replay() -> bytes:
        table = FlowTable(cfg(active_timeout_s=1.0))
        for i in range(5):
            table.update_batch(full_tcp(40000 + i))
            table.update_batch([pkt(i * 0.7, CLIENT, SERVER, 5000, 53, PROTO_UDP, payload=b"q")])
            table.tick(T0 + int(i * 0.7 * S))
        table.flush_all()
        return msgspec.json.encode(table.take_records())

    assert replay() == replay()


def test_vlan_and_ipv6_and_encap() -> None:
    table = FlowTable(cfg())
    v6a, v6b = "2001:db8::1", "2001:db8:0:0:0:0:0:2"
    table.update_batch(
        [
            pkt(0.0, v6a, v6b, 1, 2, PROTO_UDP, vlan=10, encap=ENCAP_VXLAN),
            pkt(0.1, v6b, v6a, 2, 1, PROTO_UDP, vlan=20),
        ]
    )
    table.flush_all()
    recs = table.take_records()
    assert [(r.vlan, r.ip_version, r.src_addr, r.dst_addr, r.encap) for r in recs] == [
        (10, 6, "2001:db8::1", "2001:db8::2", "vxlan"),
        (20, 6, "2001:db8::2", "2001:db8::1", ""),
    ]


def test_flush_all_orders_by_first_seen_and_empties_table() -> None:
    table = FlowTable(cfg())
    table.update_batch(
        [
            pkt(0.0, CLIENT, SERVER, 7, 7, PROTO_UDP),
            pkt(0.5, CLIENT, SERVER, 8, 8, flags=SYN),
            pkt(1.0, CLIENT, SERVER, 0, 0, PROTO_ICMP),
        ]
    )
    table.flush_all()
    recs = table.take_records()
    assert [r.proto for r in recs] == [PROTO_UDP, PROTO_TCP, PROTO_ICMP]
    assert {r.end_reason for r in recs} == {"flush"}
    assert table.stats.active == 0 and table.take_records() == []


class RecordingHook:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        self.events.append(("start", flow.label))

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        self.events.append(("packet", direction))

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        self.events.append(("end", reason))


def test_hooks_see_start_every_packet_and_end() -> None:
    table = FlowTable(cfg())
    hook = RecordingHook()
    table.add_hook(hook)
    table.update_batch(handshake())
    table.flush_all()
    assert hook.events == [
        ("start", "http"),
        ("packet", "fwd"),
        ("packet", "rev"),
        ("packet", "fwd"),
        ("end", "flush"),
    ]


def test_flow_endpoints_and_repr_hold_no_addresses() -> None:
    table = FlowTable(cfg())
    table.update_batch([pkt(0.0, SERVER, CLIENT, 80, 40000, flags=SYNACK)])
    f = flow_of(table)
    src, sport, dst, dport, proto, vlan = f.endpoints()
    assert (src, sport, dst, dport) == (
        ipaddress.ip_address(CLIENT).packed,
        40000,
        ipaddress.ip_address(SERVER).packed,
        80,
    )
    assert (proto, vlan, f.ip_version) == (PROTO_TCP, 0, 4)
    assert CLIENT not in repr(f) and SERVER not in repr(f)


def test_stats_app_counters_follow_packets() -> None:
    table = FlowTable(cfg())
    table.update_batch(full_tcp())
    st = table.stats
    assert st.app_packets[("http", "fwd")] == 5 and st.app_packets[("http", "rev")] == 3
    assert st.app_bytes[("http", "rev")] == 3 * 54 + 1000
    assert ("dns", "fwd") not in st.app_packets  # only labels that saw packets
    assert st.started == 1 and st.active == 1 and st.ended == 0


def test_records_never_carry_payload() -> None:
    table = FlowTable(cfg())
    canary = b"CANARY-7f3a9c-secret-payload"
    table.update_batch([pkt(0.0, CLIENT, SERVER, 5000, 5060, PROTO_UDP, payload=canary)])
    table.flush_all()
    encoded = msgspec.json.encode(table.take_records())
    assert b"CANARY" not in encoded and b"7f3a9c" not in encoded


# -- the DNS lane: UDP with port 53 on either side, its own (short) idle timeout --------
DNS_SERVER = "192.0.2.53"


def test_dns_lane_is_chosen_by_port_53_on_either_side() -> None:
    table = FlowTable(cfg())
    table.update_batch(
        [
            pkt(0.0, CLIENT, DNS_SERVER, 40001, 53, PROTO_UDP),  # query
            pkt(0.0, DNS_SERVER, CLIENT, 53, 40002, PROTO_UDP),  # answer seen first
            pkt(0.0, CLIENT, SERVER, 40003, 5353, PROTO_UDP),  # mDNS port: not DNS
            pkt(0.0, CLIENT, DNS_SERVER, 40004, 53, flags=SYN),  # DNS over TCP: a TCP lane
        ]
    )
    lanes = {port: LANE_NAMES[i] for i, lane in enumerate(table._lanes) for port in
             (f.endpoints()[1] for f in lane.values())}  # fmt: skip
    assert lanes == {40001: "dns", 53: "dns", 40003: "udp", 40004: "tcp_embryonic"}
    assert len(table._lanes[LANE_DNS]) == 2 and len(table._lanes[LANE_UDP]) == 1


def test_dns_flow_idle_11s_ends_while_other_udp_stays_open() -> None:
    table = FlowTable(cfg())
    dns = [
        pkt(0.0, CLIENT, DNS_SERVER, 40001, 53, PROTO_UDP, payload=b"q" * 30),
        pkt(0.02, DNS_SERVER, CLIENT, 53, 40001, PROTO_UDP, payload=b"a" * 60),
    ]
    udp = pkt(0.02, CLIENT, SERVER, 40002, 6000, PROTO_UDP)
    table.update_batch([*dns, udp])
    table.tick(T0 + int(10.02 * S) - 1)  # idle 10 s less 1 ns: still open
    assert table.take_records() == [] and table.stats.active == 2
    (rec,) = run(table, [], tick_at=11.02)
    assert (rec.src_port, rec.dst_port, rec.end_reason) == (40001, 53, "idle")
    assert (rec.packets_fwd, rec.packets_rev, rec.end_ns) == (1, 1, dns[1].ts_ns)
    assert table.stats.active == 1 and table.stats.ended_by_reason["idle"] == 1
    assert flow_of(table).endpoints()[1] == 40002  # the other UDP flow keeps its 60 s
    (rec,) = run(table, [], tick_at=60.02)
    assert (rec.src_port, rec.end_reason) == (40002, "idle")


def test_dns_gap_longer_than_dns_timeout_splits_without_tick() -> None:
    table = FlowTable(cfg())
    first = pkt(0.0, CLIENT, DNS_SERVER, 40001, 53, PROTO_UDP)
    again = pkt(11.0, CLIENT, DNS_SERVER, 40001, 53, PROTO_UDP)  # same 5-tuple, 11 s later
    udp = [pkt(t, CLIENT, SERVER, 40002, 6000, PROTO_UDP) for t in (0.0, 11.0)]
    (old,) = run(table, [first, udp[0], again, udp[1]])
    assert (old.src_port, old.end_reason, old.end_ns) == (40001, "idle", first.ts_ns)
    table.flush_all()
    recs = table.take_records()
    assert [(r.src_port, r.packets_fwd, r.first_seen_ns) for r in recs] == [
        (40002, 2, T0),  # one flow: 11 s is within the UDP timeout
        (40001, 1, again.ts_ns),
    ]
    assert table.stats.started == 3


def test_dns_idle_timeout_is_configurable_and_validated() -> None:
    assert FlowConfig().idle_timeout_s.dns == 10.0
    table = FlowTable(cfg(idle_timeout_s={"dns": 2.5}))
    table.update_batch([pkt(0.0, CLIENT, DNS_SERVER, 40001, 53, PROTO_UDP)])
    table.tick(T0 + int(2.5 * S) - 1)
    assert table.take_records() == []
    (rec,) = run(table, [], tick_at=2.5)
    assert rec.end_reason == "idle"
    for bad in (0, -1.0):
        with pytest.raises(ValidationError, match="greater than 0"):
            cfg(idle_timeout_s={"dns": bad})


def test_eviction_and_flush_span_the_dns_lane() -> None:
    """The LRU victim is the oldest lane head whichever lane holds it; flush takes all."""
    table = FlowTable(cfg(max_flows=16))
    dns = [pkt(0.1 * i, CLIENT, DNS_SERVER, 1000 + i, 53, PROTO_UDP) for i in range(8)]
    udp = [pkt(0.05 + 0.1 * i, CLIENT, SERVER, 2000 + i, 6000, PROTO_UDP) for i in range(8)]
    table.update_batch(sorted(dns + udp, key=lambda p: p.ts_ns))
    table.update_batch([pkt(1.0, CLIENT, DNS_SERVER, 1000, 53, PROTO_UDP)])  # touch DNS 1000
    got = [r.src_port for r in run(table, [pkt(1.1, CLIENT, SERVER, 3000, 6000, PROTO_UDP)])]
    assert got == [2000]  # udp 2000 (0.05 s) is older than DNS 1001 (0.1 s)
    got = [r.src_port for r in run(table, [pkt(1.2, CLIENT, SERVER, 3001, 6000, PROTO_UDP)])]
    assert got == [1001]
    table.flush_all()
    assert len(table.take_records()) == 16 and table.stats.active == 0


def _eth_udp(t: float, src: str, dst: str, sport: int, dport: int, payload: bytes) -> Frame:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, PROTO_UDP, 0,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    )  # fmt: skip
    data = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + udp
    return (T0 + int(t * S), LINKTYPE_ETHERNET, data, len(data))


@pytest.mark.usefixtures("fast_core")
def test_c_core_dns_lane_matches_python() -> None:
    """The compiled table has the same DNS lane: same records, ticks and gap splits."""
    from trafficguard.fast.path import FastPath  # noqa: PLC0415 - needs the extension

    frames = [
        _eth_udp(0.0, CLIENT, DNS_SERVER, 40001, 53, b"q" * 30),
        _eth_udp(0.02, CLIENT, SERVER, 40002, 6000, b"u"),
        _eth_udp(0.2, DNS_SERVER, CLIENT, 53, 40003, b"a"),  # answer seen first
        _eth_udp(0.9, DNS_SERVER, CLIENT, 53, 40001, b"a" * 60),
        _eth_udp(11.0, CLIENT, DNS_SERVER, 40001, 53, b"q"),  # 10.1 s gap: a new flow
        _eth_udp(11.0, CLIENT, SERVER, 40002, 6000, b"u"),  # 10.98 s gap: same UDP flow
    ]
    batches = [(frames[:4], 10.3), (frames[4:], 30.0)]
    config = Config.model_validate({"flow": {"idle_timeout_s": {"udp": 60, "dns": 10}}})

    python_table = FlowTable(config.flow)
    python_decoder = Decoder(config.decode)
    fast = FastPath(config, Decoder(config.decode))
    out: dict[str, list[FlowRecord]] = {"python": [], "fast": []}
    for batch, tick_s in batches:
        python_table.update_batch(python_decoder.decode_batch(batch))
        fast.process_frames(batch)
        for name, table in (("python", python_table), ("fast", fast)):
            table.tick(T0 + int(tick_s * S))
            out[name].extend(table.take_records())
    for name, table in (("python", python_table), ("fast", fast)):
        table.flush_all()
        out[name].extend(table.take_records())
    assert fast.fast_frames == len(frames)  # every frame went through the C decoder
    assert out["fast"] == out["python"]
    assert [(r.src_port, r.dst_port, r.packets_fwd + r.packets_rev, r.end_reason)
            for r in out["python"]] == [
        (53, 40003, 1, "idle"),  # tick at 10.3 s: idle 10.1 s (40001: 9.4 s, kept)
        (40001, 53, 2, "idle"),  # ended at 11 s by the 10.1 s gap, no tick needed
        (40001, 53, 1, "idle"),  # the new flow, ended by the tick at 30 s
        (40002, 6000, 2, "flush"),  # other UDP: one flow, open until the flush
    ]  # fmt: skip
