"""The decoded packet: what the decoder hands to the flow table.

Built once per IP packet (or once per reassembled datagram), so it is a ``__slots__``
class with a positional constructor and no validation. The payload is *not* copied:
``data[payload_off:payload_off + payload_len]`` is the L4 payload, read transiently by
the classifier and metadata analyzers and never stored.
"""

from __future__ import annotations

from typing import Final

# Encapsulation codes carried in Packet.encap (outermost tunnel that was stripped).
ENCAP_NONE: Final = 0
ENCAP_GRE: Final = 1
ENCAP_ERSPAN: Final = 2
ENCAP_VXLAN: Final = 3
ENCAP_GENEVE: Final = 4
ENCAP_IPIP: Final = 5  # IPv4/IPv6 in IPv4/IPv6 (proto 4 / 41)
ENCAP_GTPU: Final = 6
ENCAP_MPLS: Final = 7
ENCAP_PPPOE: Final = 8
ENCAP_NAMES: Final = ("", "gre", "erspan", "vxlan", "geneve", "ipip", "gtpu", "mpls", "pppoe")

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10
TCP_URG: Final = 0x20
TCP_ECE: Final = 0x40
TCP_CWR: Final = 0x80

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58
PROTO_SCTP: Final = 132


class Packet:
    """One decoded IP packet (the innermost one, when tunnels were stripped).

    ``src``/``dst`` are 4 or 16 raw address bytes. ``sport``/``dport`` are 0 for
    protocols without ports (for ICMP they are 0 too; ``icmp_type`` holds the type).
    ``frames`` is how many captured frames this packet stands for (>1 only for a
    reassembled fragmented datagram) and ``wire_len`` is their summed wire length, so a
    flow counts every frame that carried it.
    """

    __slots__ = (
        "data",
        "dport",
        "dst",
        "encap",
        "frames",
        "icmp_type",
        "ip_len",
        "ip_version",
        "payload_len",
        "payload_off",
        "proto",
        "sport",
        "src",
        "tcp_flags",
        "ts_ns",
        "vlan",
        "wire_len",
    )

    def __init__(
        self,
        ts_ns: int,
        wire_len: int,
        vlan: int,
        ip_version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        tcp_flags: int,
        data: bytes,
        payload_off: int,
        payload_len: int,
        ip_len: int,
        encap: int = ENCAP_NONE,
        frames: int = 1,
        icmp_type: int = -1,
    ) -> None:
        self.ts_ns = ts_ns
        self.wire_len = wire_len
        self.vlan = vlan
        self.ip_version = ip_version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.tcp_flags = tcp_flags
        self.data = data
        self.payload_off = payload_off
        self.payload_len = payload_len
        self.ip_len = ip_len
        self.encap = encap
        self.frames = frames
        self.icmp_type = icmp_type

    def payload(self) -> bytes:
        """Copy of the L4 payload (slow path: analyzers only, never stored)."""
        off = self.payload_off
        return self.data[off : off + self.payload_len]

    def __repr__(self) -> str:  # no payload in reprs: they end up in logs and tracebacks
        return (
            f"Packet(ts_ns={self.ts_ns}, proto={self.proto}, sport={self.sport}, "
            f"dport={self.dport}, len={self.wire_len}, payload_len={self.payload_len})"
        )
