"""The fast path's start filter and payload tap: flows and payloads no hook can use stay in C.

Hooks that declare a ``StartFilter`` get ``on_flow_start`` only for flows inside the union
of the filters (ports on either side, labels, unknown-label UDP between high ports, ports
watched while a hook needs them); one hook without a filter makes every flow come back.
The tap hands over ``(ts_ns, src, dst, proto, payload)`` of TCP/UDP packets on its ports.
That the default stages give the same records on both paths with these in use is the
differential suite's job (``test_fast_differential``); here, what the filter lets through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from trafficguard.config import Config
from trafficguard.decode.packet import Packet
from trafficguard.fast.path import FastPath
from trafficguard.flow.hooks import StartFilter
from trafficguard.flow.state import Flow
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.sinks.memory import MemorySink

A, B = "192.0.2.1", "198.51.100.2"
T0 = 1_700_000_000


class Starts:
    """Records the (sport, dport, label) of every flow start it is shown."""

    def __init__(self, start_filter: StartFilter | None) -> None:
        if start_filter is not None:
            self.start_filter = start_filter
        self.seen: list[tuple[int, int, str]] = []

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        self.seen.append((pkt.sport, pkt.dport, flow.label))

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        pass

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        pass


def _pcap(tmp_path: Path, packets: list[Any]) -> Path:
    for i, pkt in enumerate(packets):
        pkt.time = T0 + i * 0.001
    path = tmp_path / "f.pcap"
    wrpcap(str(path), packets)
    return path


def _run(path: Path, *hooks: Starts, taps: list[Any] | None = None) -> FastPath:
    pipeline = Pipeline(
        Config.model_validate({"capture": {"fast_path": "on"}}), [("m", MemorySink())]
    )
    fast = pipeline.fast
    assert fast is not None
    for hook in hooks:
        fast.add_hook(hook)
    if taps is not None:
        fast.add_tap(frozenset({53}), taps.extend)
    ReplayDriver(pipeline).run([path])
    return fast


def _flows(tmp_path: Path) -> Path:
    return _pcap(tmp_path, [
        Ether() / IP(src=A, dst=B) / UDP(sport=40000, dport=5060) / b"OPTIONS x SIP/2.0\r\n\r\n",
        Ether() / IP(src=A, dst=B) / TCP(sport=40001, dport=443, flags="S"),
        Ether() / IP(src=A, dst=B) / UDP(sport=40002, dport=53) / (b"\x00" * 20),
        Ether() / IP(src=A, dst=B) / UDP(sport=20000, dport=30000) / (b"\x01" * 30),
        Ether() / IP(src=A, dst=B) / UDP(sport=900, dport=30000) / (b"\x01" * 30),
        Ether() / IP(src=A, dst=B) / UDP(sport=7777, dport=80) / (b"\x02" * 10),
        Ether() / IP(src=A, dst=B) / ICMP(),
    ])  # fmt: skip


def test_filtered_hooks_see_only_flows_in_the_union(tmp_path: Path) -> None:
    path = _flows(tmp_path)
    sip = Starts(StartFilter(frozenset({17}), ports=frozenset({5060})))
    high = Starts(
        StartFilter(frozenset({17}), labels=frozenset({"dns"}), unknown_udp_min_port=1024)
    )
    _run(path, sip, high)
    # each hook is shown the union: the SIP flow, the DNS flow (label), the high-port UDP flow
    expected = [(40000, 5060, "sip"), (40002, 53, "dns"), (20000, 30000, "unknown")]
    assert sip.seen == high.seen == expected


def test_a_hook_without_a_filter_sees_every_flow(tmp_path: Path) -> None:
    path = _flows(tmp_path)
    narrow = Starts(StartFilter(frozenset({17}), ports=frozenset({5060})))
    everything = Starts(None)
    _run(path, narrow, everything)
    assert len(everything.seen) == 7
    assert narrow.seen == everything.seen


def test_watched_ports_pass_while_counted(tmp_path: Path) -> None:
    packets = [Ether() / IP(src=A, dst=B) / UDP(sport=900 + i, dport=999) / b"x" for i in range(3)]
    path = _pcap(tmp_path, packets)
    hook = Starts(StartFilter(frozenset({17})))
    pipeline = Pipeline(
        Config.model_validate({"capture": {"fast_path": "on"}}), [("m", MemorySink())]
    )
    fast = pipeline.fast
    assert fast is not None
    fast.add_hook(hook)
    fast.watch_port(901, 1)
    fast.watch_port(902, 1)
    fast.watch_port(902, 1)
    fast.watch_port(902, -1)  # still counted once
    ReplayDriver(pipeline).run([path])
    assert [s[0] for s in hook.seen] == [901, 902]
    fast.watch_port(901, -1)
    with pytest.raises(ValueError, match="watch_port"):
        fast.watch_port(901, -1)  # more releases than watches
    with pytest.raises(ValueError, match="watch_port"):
        fast.watch_port(70000, 1)


def test_tap_gets_port_53_payloads_in_packet_order(tmp_path: Path) -> None:
    path = _pcap(tmp_path, [
        Ether() / IP(src=A, dst=B) / UDP(sport=40002, dport=53) / b"query",
        Ether() / IP(src=B, dst=A) / UDP(sport=53, dport=40002) / b"answer",
        Ether() / IP(src=A, dst=B) / TCP(sport=40003, dport=53, flags="S"),  # no payload
        Ether() / IP(src=A, dst=B) / TCP(sport=40003, dport=53, flags="PA") / b"\x00\x02hi",
        Ether() / IP(src=A, dst=B) / UDP(sport=40004, dport=5353) / b"mdns",
        Ether() / IP(src=A, dst=B) / ICMP() / b"ping",
    ])  # fmt: skip
    taps: list[Any] = []
    _run(path, taps=taps)
    a, b = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2])
    ns = [T0 * 10**9 + i * 10**6 for i in range(4)]  # the pcap's microseconds, in ns
    assert taps == [
        (ns[0], a, b, 17, b"query"),
        (ns[1], b, a, 17, b"answer"),
        (ns[3], a, b, 6, b"\x00\x02hi"),
    ]


def test_one_tap_per_fast_path(tmp_path: Path) -> None:
    fast = _run(_flows(tmp_path), taps=[])
    with pytest.raises(ValueError, match="one payload tap"):
        fast.add_tap(frozenset({53}), print)
