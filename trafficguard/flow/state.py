"""Per-flow state kept by the flow table (and read by analyzer hooks).

``Flow`` is a ``__slots__`` object: attribute updates are the cheapest mutation CPython
has (~35 ns, specialised by 3.11), and there is no per-flow dict. It holds counters for
the current record interval, never payload. ``AppCounter`` is shared by every flow with
the same label, so per-application metrics cost two int additions per packet.
"""

from __future__ import annotations

from typing import Final

from trafficguard.decode.packet import Packet
from trafficguard.flow.keys import KEY4_LEN, split_key

# TCP state codes: indexes into records.TCP_STATES.
ST_NONE: Final = 0
ST_SYN_SENT: Final = 1
ST_SYN_RECEIVED: Final = 2
ST_ESTABLISHED: Final = 3
ST_FIN_WAIT: Final = 4
ST_CLOSED: Final = 5
ST_RESET: Final = 6
ST_MIDSTREAM: Final = 7

CLASSIFIED_BY_SIGNATURE: Final = -1  # Flow.classify once a signature decided

DIR_FWD: Final = "fwd"
DIR_REV: Final = "rev"


class AppCounter:
    """Packets and wire bytes per direction for one application label."""

    __slots__ = ("bytes_fwd", "bytes_rev", "label", "packets_fwd", "packets_rev")

    def __init__(self, label: str) -> None:
        self.label = label
        self.packets_fwd = 0
        self.packets_rev = 0
        self.bytes_fwd = 0
        self.bytes_rev = 0


class Flow:
    """One open bidirectional flow. ``fwd`` is the initiator's direction.

    ``a_is_src`` says whether the initiator is the first endpoint of ``key``. Counters
    cover the current record interval (reset by an interim record); TCP flags are
    cumulative for the whole flow. A few fields are packed because every 8-byte slot and
    every int above 256 (CPython caches only small ints) costs memory in each of up to
    millions of flows:

    * ``flags``: fwd flags in bits 0-7, rev flags in bits 8-15;
    * ``l2_bytes_*``: frame bytes minus IP bytes (link and tunnel headers); stays a
      small cached int for short flows, where a second byte counter would not;
    * ``classify``: payload packets still to inspect (bits 0-5) plus the classifier's
      pending state above them while classifying; then 0 (budget spent) or
      CLASSIFIED_BY_SIGNATURE, so the app source needs no slot of its own.
    """

    __slots__ = (
        "a_is_src",
        "app",
        "bytes_fwd",
        "bytes_rev",
        "classify",
        "encap",
        "first_ns",
        "flags",
        "key",
        "l2_bytes_fwd",
        "l2_bytes_rev",
        "last_ns",
        "packets_fwd",
        "packets_rev",
        "payload_fwd",
        "payload_rev",
        "seq",
        "start_ns",
        "tcp_state",
    )

    def __init__(
        self,
        key: bytes,
        a_is_src: bool,
        pkt: Packet,
        fwd: bool,
        app: AppCounter,
        classify: int,
        tcp_state: int,
    ) -> None:
        """A flow is born from its first packet, which is accounted here."""
        ts = pkt.ts_ns
        n = pkt.frames
        w = pkt.wire_len
        l2 = w - pkt.ip_len
        pl = pkt.payload_len
        fl = pkt.tcp_flags if tcp_state else 0
        self.key = key
        self.a_is_src = a_is_src
        self.first_ns = self.start_ns = self.last_ns = ts
        if fwd:
            self.packets_fwd, self.bytes_fwd, self.l2_bytes_fwd, self.payload_fwd = n, w, l2, pl
            self.packets_rev = self.bytes_rev = self.l2_bytes_rev = self.payload_rev = 0
            self.flags = fl
        else:
            self.packets_rev, self.bytes_rev, self.l2_bytes_rev, self.payload_rev = n, w, l2, pl
            self.packets_fwd = self.bytes_fwd = self.l2_bytes_fwd = self.payload_fwd = 0
            self.flags = fl << 8
        self.tcp_state = tcp_state
        self.app = app
        self.classify = classify
        self.seq = 0
        self.encap = pkt.encap

    @property
    def label(self) -> str:
        """The current application label."""
        return self.app.label

    @property
    def app_source(self) -> str:
        """How the label was decided: one of records.APP_SOURCES."""
        if self.classify == CLASSIFIED_BY_SIGNATURE:
            return "signature"
        return "none" if self.app.label == "unknown" else "port"

    @property
    def flags_fwd(self) -> int:
        return self.flags & 0xFF

    @property
    def flags_rev(self) -> int:
        return self.flags >> 8

    @property
    def ip_version(self) -> int:
        return 4 if len(self.key) == KEY4_LEN else 6

    def endpoints(self) -> tuple[bytes, int, bytes, int, int, int]:
        """``(src_addr, src_port, dst_addr, dst_port, proto, vlan)``, initiator first."""
        a, b, pa, pb, proto, vlan = split_key(self.key)
        if self.a_is_src:
            return a, pa, b, pb, proto, vlan
        return b, pb, a, pa, proto, vlan

    def __repr__(self) -> str:  # no addresses in reprs: they end up in logs
        return (
            f"Flow(proto={self.key[-3]}, app={self.app.label}, state={self.tcp_state}, "
            f"packets={self.packets_fwd}+{self.packets_rev})"
        )
