"""Flow state to FlowRecord: the only place addresses become text and ids are made."""

from __future__ import annotations

import hashlib

from trafficguard.decode.packet import ENCAP_NAMES
from trafficguard.flow.keys import addr_text, split_key
from trafficguard.flow.records import TCP_STATES, FlowRecord
from trafficguard.flow.state import Flow


def flow_id(key: bytes, first_ns: int) -> str:
    """16 hex chars from the flow key and start time: stable across interim records and
    replays, different for a later flow on the same 5-tuple."""
    digest = hashlib.blake2b(key, digest_size=8)
    digest.update(first_ns.to_bytes(8, "big", signed=True))
    return digest.hexdigest()


def to_record(f: Flow, reason: str) -> FlowRecord:
    """The record of a flow's current interval (counters are deltas since the last one)."""
    a, b, port_a, port_b, proto, vlan = split_key(f.key)
    if not f.a_is_src:
        a, b, port_a, port_b = b, a, port_b, port_a
    first = f.first_ns
    return FlowRecord(
        flow_id=flow_id(f.key, first),
        seq=f.seq,
        first_seen_ns=first,
        start_ns=f.start_ns,
        end_ns=f.last_ns,
        vlan=vlan,
        ip_version=4 if len(a) == 4 else 6,
        proto=proto,
        src_addr=addr_text(a),
        src_port=port_a,
        dst_addr=addr_text(b),
        dst_port=port_b,
        packets_fwd=f.packets_fwd,
        packets_rev=f.packets_rev,
        bytes_fwd=f.bytes_fwd,
        bytes_rev=f.bytes_rev,
        ip_bytes_fwd=f.bytes_fwd - f.l2_bytes_fwd,
        ip_bytes_rev=f.bytes_rev - f.l2_bytes_rev,
        payload_bytes_fwd=f.payload_fwd,
        payload_bytes_rev=f.payload_rev,
        tcp_flags_fwd=f.flags & 0xFF,
        tcp_flags_rev=f.flags >> 8,
        tcp_state=TCP_STATES[f.tcp_state],
        app=f.app.label,
        app_source=f.app_source,
        encap=ENCAP_NAMES[f.encap] if 0 <= f.encap < len(ENCAP_NAMES) else "",
        end_reason=reason,
    )
