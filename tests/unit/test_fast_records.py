"""FlowRecords built inside the C core (``set_record_factory``) equal the Python path's.

The differential tests cover every shipped capture; this adds what none of them holds:
IPv4-mapped IPv6 addresses, which the core hands back to ``addr_text`` to format.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from trafficguard.config import Config
from trafficguard.flow.records import FlowRecord
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.sinks.memory import MemorySink


def _records(path: Path, mode: str) -> list[FlowRecord]:
    memory = MemorySink()
    cfg = Config.model_validate({"capture": {"fast_path": mode}})
    pipeline = Pipeline(cfg, [("memory", memory)])
    assert (pipeline.fast is not None) == (mode == "on")
    ReplayDriver(pipeline).run([path])
    return [r for r in memory.records if isinstance(r, FlowRecord)]


def test_ipv4_mapped_addresses_same_as_python(tmp_path: Path, fast_core: None) -> None:
    frames = []
    for i in range(4):
        ip = IPv6(src="::ffff:192.0.2.10", dst="2001:db8::20")
        l4 = UDP(sport=4000 + i, dport=53) if i % 2 else TCP(sport=4000 + i, dport=80)
        pkt = Ether() / ip / l4 / (b"x" * (10 + i))
        pkt.time = 1_700_000_000 + i
        frames.append(pkt)
    path = tmp_path / "mapped.pcap"
    wrpcap(str(path), frames)
    fast, python = _records(path, "on"), _records(path, "off")
    assert fast == python
    assert len(fast) == 4
    # whatever this Python's ipaddress prints for it (3.11: ::ffff:c000:20a)
    assert {r.src_addr for r in fast} == {str(ipaddress.IPv6Address("::ffff:192.0.2.10"))}
    assert all(type(r) is FlowRecord for r in fast)
