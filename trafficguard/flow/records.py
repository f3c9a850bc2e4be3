"""Flow records: what the flow table emits and every sink stores.

One schema, documented in ``docs/records.md``. Counters are *deltas* since the
previous record of the same flow (as IPFIX ``octetDeltaCount``): a long flow emits
interim records (``end_reason == "active"``) at each active timeout and one final
record; summing the records of one ``flow_id`` gives the flow's totals.

"fwd" is the initiator's direction (TCP SYN sender, otherwise first packet seen);
``src_*`` is the initiator. ``bytes_*`` are frame bytes on the wire (what tshark's
conversation table counts); ``ip_bytes_*`` are IP-layer bytes (what NetFlow/IPFIX
octet counters mean); ``payload_bytes_*`` are L4 payload bytes.
"""

# No `from __future__ import annotations`: the store reads these Structs' annotations at
# start-up (msgspec.structs.fields), and each string one costs a typing.ForwardRef compile.
from typing import ClassVar, Final

import msgspec

FLOW_END_REASONS: Final = ("idle", "active", "tcp_fin", "tcp_rst", "evicted", "flush")
TCP_STATES: Final = (
    "none",  # not TCP
    "syn_sent",
    "syn_received",
    "established",
    "fin_wait",  # one side sent FIN
    "closed",  # both sides FIN'd
    "reset",
    "midstream",  # first packet seen was not a SYN
)
APP_SOURCES: Final = ("port", "signature", "none")


class FlowRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One bidirectional flow (or an interim slice of a long one)."""

    kind: ClassVar[str] = "flow"

    flow_id: str  # 16 hex chars, stable for the flow across its interim records and replays
    seq: int  # 0 for the first record of a flow, +1 for each later one
    first_seen_ns: int  # flow start (packet time), same on every record of the flow
    start_ns: int  # start of this record's interval
    end_ns: int  # last packet of this record's interval
    vlan: int
    ip_version: int
    proto: int
    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int
    packets_fwd: int
    packets_rev: int
    bytes_fwd: int
    bytes_rev: int
    ip_bytes_fwd: int
    ip_bytes_rev: int
    payload_bytes_fwd: int
    payload_bytes_rev: int
    tcp_flags_fwd: int  # OR of all flags seen in this direction (cumulative)
    tcp_flags_rev: int
    tcp_state: str  # one of TCP_STATES
    app: str  # application label, "unknown" when undecided
    app_source: str  # one of APP_SOURCES: how the label was decided
    encap: str  # outermost tunnel stripped to reach this flow, "" if none
    end_reason: str  # one of FLOW_END_REASONS
    sensor_loss: bool = False  # the sensor itself dropped packets while this flow was open
