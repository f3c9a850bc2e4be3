"""Record rows from the C table to ``FlowRecord``: the same fields ``flow/export.py`` makes.

The C core already computed the flow id (the same blake2b) and the address text (IPv4,
and IPv6 except IPv4-mapped addresses, which arrive as bytes and use ``addr_text``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from trafficguard.decode.packet import ENCAP_NAMES
from trafficguard.flow.classify import APP_LABELS
from trafficguard.flow.keys import addr_text
from trafficguard.flow.records import APP_SOURCES, FLOW_END_REASONS, TCP_STATES, FlowRecord

if TYPE_CHECKING:
    from trafficguard.fast._core import RecordRow

_ENCAPS: Final = (*ENCAP_NAMES, *([""] * (256 - len(ENCAP_NAMES))))


def _text(addr: str | bytes) -> str:
    return addr if isinstance(addr, str) else addr_text(addr)


def to_records(rows: list[RecordRow]) -> list[FlowRecord]:
    """One ``FlowRecord`` per row of ``Core.take_records()``, in order."""
    return [
        FlowRecord(
            flow_id=fid, seq=seq, first_seen_ns=first, start_ns=start, end_ns=end, vlan=vlan,
            ip_version=ver, proto=proto, src_addr=_text(src), src_port=sport,
            dst_addr=_text(dst), dst_port=dport, packets_fwd=pkf, packets_rev=pkr,
            bytes_fwd=byf, bytes_rev=byr, ip_bytes_fwd=ipf, ip_bytes_rev=ipr,
            payload_bytes_fwd=plf, payload_bytes_rev=plr, tcp_flags_fwd=flf, tcp_flags_rev=flr,
            tcp_state=TCP_STATES[state], app=APP_LABELS[app], app_source=APP_SOURCES[source],
            encap=_ENCAPS[encap], end_reason=FLOW_END_REASONS[reason],
        )
        for (fid, seq, first, start, end, vlan, ver, proto, src, sport, dst, dport, pkf, pkr,
             byf, byr, ipf, ipr, plf, plr, flf, flr, state, app, source, encap, reason) in rows
    ]  # fmt: skip
