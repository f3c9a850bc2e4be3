"""tshark as the reference for per-conversation TCP/UDP counters.

Two views of one capture:

* ``conversation_table(path)`` parses ``tshark -q -z conv,tcp -z conv,udp``. Its byte
  columns are abbreviated above 9999 bytes ("32 kB"), so it cannot be compared exactly.
* ``frame_conversations(path)`` rebuilds the same table from per-frame fields
  (``-T fields``): exact frame and byte counts per conversation and direction, plus
  what is needed to model the documented differences from trafficguard:

  - **fragments**: tshark attributes a reassembled datagram to the reassembling frame
    only; trafficguard counts every fragment frame (``Packet.frames``/``wire_len``).
    We read ``ip.fragment``/``ipv6.fragment`` (the frame numbers that made up the
    datagram) and add those frames to the conversation. Datagrams that never complete
    are dropped by both tools, so no conversation exists for them in either.
  - **tunnels**: tshark lists the outer VXLAN/Geneve/GTP-U UDP conversation as well as
    the inner one; trafficguard strips the tunnel and records only the inner flow, so
    the trafficguard view uses the first TCP/UDP layer that is not a tunnel carrier.
  - **flow splits**: tshark never times a conversation out, and (tshark 4.0) shows a
    reused TCP port pair as one row per ``tcp.stream``; older versions merged them.
    We therefore compare *sums per endpoint pair* and predict how many flow records
    trafficguard must produce for each pair: one per ``tcp.stream`` (a new SYN after
    the old connection closed) and, for UDP, one more per silence longer than the idle
    timeout (the DNS one for UDP with port 53 on either side, trafficguard's "dns" lane).
    Gaps too close to a timeout to call are rejected, not guessed.
  - **RTP set up by SDP**: tshark 4.0 may show the two directions of one RTP stream as
    two rows ("A <-> B" and "B <-> A"); summing per unordered pair merges them.

``check_against_table`` proves the field-based view reproduces the table, so the
reference itself is tested on every file.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

TSHARK: Final = "tshark"
PROTO_NUM: Final = {"tcp": 6, "udp": 17}
DNS_PORT: Final = 53  # UDP flows with this port on either side use the DNS idle timeout
# Tokens of frame.protocols that mean "the next layers are a tunnelled frame/packet"
# when they directly follow a UDP layer (trafficguard strips these; see DecodeConfig).
UDP_TUNNELS: Final = frozenset({"vxlan", "geneve", "gtp"})
# Transport headers quoted inside ICMP errors are not conversations (tshark skips them).
ICMP_ERRORS: Final = frozenset({"icmp", "icmpv6"})

Endpoint = tuple[str, int]  # (normalised address, port)
ConvKey = tuple[int, Endpoint, Endpoint]  # (proto, lower endpoint, higher endpoint)

FIELDS: Final = (
    "frame.number",
    "frame.len",
    "frame.time_epoch",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.fragment",
    "ipv6.fragment",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.stream",
    "udp.srcport",
    "udp.dstport",
)


def norm_addr(addr: str) -> str:
    """Canonical text form, so '2001:DB8:0::1' and '2001:db8::1' compare equal."""
    return str(ipaddress.ip_address(addr))


def conv_key(proto: int, a: Endpoint, b: Endpoint) -> ConvKey:
    """Direction-free key: endpoints sorted by (address as integer, port)."""

    def order(ep: Endpoint) -> tuple[int, int, int]:
        ip = ipaddress.ip_address(ep[0])
        return (ip.version, int(ip), ep[1])

    lo, hi = sorted((a, b), key=order)
    return (proto, lo, hi)


@dataclass
class ConvStats:
    """Frames and bytes sent by each endpoint of one conversation, and its flow splits."""

    frames: dict[Endpoint, int] = field(default_factory=lambda: defaultdict(int))
    bytes: dict[Endpoint, int] = field(default_factory=lambda: defaultdict(int))
    times: list[float] = field(default_factory=list)
    streams: set[int] = field(default_factory=set)

    def add(self, sender: Endpoint, frame_len: int, frames: int = 1) -> None:
        """Count ``frames`` frames totalling ``frame_len`` bytes sent by ``sender``."""
        self.frames[sender] += frames
        self.bytes[sender] += frame_len

    def totals(self) -> tuple[int, int]:
        """(frames, bytes) in both directions."""
        return sum(self.frames.values()), sum(self.bytes.values())


# ------------------------------------------------------------------- conversation table

_ROW = re.compile(
    r"^(?P<a>\S+):(?P<pa>\d+)\s+<->\s+(?P<b>\S+):(?P<pb>\d+)\s+"
    r"(?P<f_ba>\d+)\s+(?P<b_ba>\d+ \S+)\s+(?P<f_ab>\d+)\s+(?P<b_ab>\d+ \S+)\s+"
    r"(?P<f_tot>\d+)\s+(?P<b_tot>\d+ \S+)\s+(?P<start>[\d.]+)\s+(?P<dur>[\d.]+)\s*$"
)
_UNITS: Final = {"bytes": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9}


@dataclass(frozen=True)
class ByteCount:
    """A byte column as printed: exact when the unit is 'bytes', else rounded."""

    value: int
    unit: int

    @classmethod
    def parse(cls, text: str) -> ByteCount:
        """Parse '5477 bytes' or '32 kB'."""
        num, unit = text.split()
        return cls(int(num), _UNITS[unit])

    def matches(self, exact: int) -> bool:
        """True if ``exact`` prints as this value (tshark rounds to the unit)."""
        if self.unit == 1:
            return exact == self.value
        return abs(exact - self.value * self.unit) <= self.unit


@dataclass(frozen=True)
class TableRow:
    """One row of ``-z conv,tcp|udp``; ``a``/``b`` as tshark printed them."""

    proto: int
    a: Endpoint
    b: Endpoint
    frames_ab: int
    bytes_ab: ByteCount
    frames_ba: int
    bytes_ba: ByteCount
    start_s: float


def run_tshark(args: list[str]) -> str:
    """Run tshark and return stdout; a failure is an error, not an empty table."""
    proc = subprocess.run([TSHARK, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tshark {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def conversation_table(path: Path) -> list[TableRow]:
    """Parse tshark's TCP and UDP conversation tables for ``path``."""
    out = run_tshark(["-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"])
    rows: list[TableRow] = []
    proto = 0
    for line in out.splitlines():
        if line.endswith(" Conversations"):
            proto = PROTO_NUM[line.split()[0].lower()]
            continue
        if "<->" not in line:
            continue
        m = _ROW.match(line)
        if m is None:
            raise ValueError(f"unparsed tshark conversation row: {line!r}")
        rows.append(
            TableRow(
                proto=proto,
                a=(norm_addr(m["a"]), int(m["pa"])),
                b=(norm_addr(m["b"]), int(m["pb"])),
                frames_ab=int(m["f_ab"]),
                bytes_ab=ByteCount.parse(m["b_ab"]),
                frames_ba=int(m["f_ba"]),
                bytes_ba=ByteCount.parse(m["b_ba"]),
                start_s=float(m["start"]),
            )
        )
    return rows


# ---------------------------------------------------------------------- per-frame view


@dataclass(frozen=True)
class Layer:
    """One TCP/UDP layer of a frame, with the IP header that carried it."""

    proto: int
    src: Endpoint
    dst: Endpoint
    stream: int  # tcp.stream, -1 for UDP
    tunnel_carrier: bool  # UDP whose payload is a tunnel trafficguard strips
    in_icmp_error: bool


@dataclass(frozen=True)
class FrameInfo:
    """The fields of one frame that the conversation views need."""

    number: int
    length: int
    time_s: float
    layers: tuple[Layer, ...]
    fragment_frames: tuple[int, ...]  # frames reassembled into this one (incl. itself)


def _split(value: str) -> list[str]:
    return value.split(",") if value else []


def parse_frame(cols: list[str]) -> FrameInfo:
    """Pair each tcp/udp token of frame.protocols with its ports and enclosing IP header.

    ``-E occurrence=a`` lists every occurrence of a field in layer order, so the n-th
    ``ip.src`` belongs to the n-th ``ip`` token; walking the protocol tokens in order
    gives each transport layer the addresses of the IP header right before it.
    """
    vals = dict(zip(FIELDS, cols, strict=True))
    tokens = vals["frame.protocols"].split(":")
    ip_src, ip_dst = _split(vals["ip.src"]), _split(vals["ip.dst"])
    ip6_src, ip6_dst = _split(vals["ipv6.src"]), _split(vals["ipv6.dst"])
    ports = {
        "tcp": (_split(vals["tcp.srcport"]), _split(vals["tcp.dstport"])),
        "udp": (_split(vals["udp.srcport"]), _split(vals["udp.dstport"])),
    }
    streams = _split(vals["tcp.stream"])
    used = {"ip": 0, "ipv6": 0, "tcp": 0, "udp": 0}
    cur: tuple[str, str] | None = None
    in_error = False
    layers: list[Layer] = []
    for i, tok in enumerate(tokens):
        if tok in ICMP_ERRORS:
            in_error = True
        elif tok == "ip":
            n = used["ip"]
            cur = (ip_src[n], ip_dst[n]) if n < len(ip_src) else None
            used["ip"] += 1
        elif tok == "ipv6":
            n = used["ipv6"]
            cur = (ip6_src[n], ip6_dst[n]) if n < len(ip6_src) else None
            used["ipv6"] += 1
        elif tok in ("tcp", "udp"):
            n = used[tok]
            used[tok] += 1
            srcs, dsts = ports[tok]
            if cur is None or n >= len(srcs):
                continue  # truncated header: tshark shows the token but no ports
            stream = int(streams[n]) if tok == "tcp" and n < len(streams) else -1
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            layers.append(
                Layer(
                    proto=PROTO_NUM[tok],
                    src=(norm_addr(cur[0]), int(srcs[n])),
                    dst=(norm_addr(cur[1]), int(dsts[n])),
                    stream=stream,
                    tunnel_carrier=tok == "udp" and nxt in UDP_TUNNELS,
                    in_icmp_error=in_error,
                )
            )
    frags = tuple(int(x) for x in _split(vals["ip.fragment"]) + _split(vals["ipv6.fragment"]))
    return FrameInfo(
        number=int(vals["frame.number"]),
        length=int(vals["frame.len"]),
        time_s=float(vals["frame.time_epoch"]),
        layers=tuple(layers),
        fragment_frames=frags,
    )


def read_frames(path: Path) -> list[FrameInfo]:
    """Every frame of ``path`` as tshark dissects it (default preferences)."""
    args = [
        "-n",
        "-r",
        str(path),
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]
    for name in FIELDS:
        args += ["-e", name]
    return [parse_frame(line.split("\t")) for line in run_tshark(args).splitlines()]


def table_view(frames: list[FrameInfo]) -> dict[ConvKey, ConvStats]:
    """What tshark's conversation table counts: every TCP/UDP layer, reassembling frame only."""
    convs: dict[ConvKey, ConvStats] = defaultdict(ConvStats)
    for fr in frames:
        for layer in fr.layers:
            if not layer.in_icmp_error:
                convs[conv_key(layer.proto, layer.src, layer.dst)].add(layer.src, fr.length)
    return dict(convs)


def trafficguard_view(frames: list[FrameInfo]) -> dict[ConvKey, ConvStats]:
    """What trafficguard must record: innermost non-tunnel flow, every fragment frame."""
    by_number = {fr.number: fr for fr in frames}
    convs: dict[ConvKey, ConvStats] = defaultdict(ConvStats)
    for fr in frames:
        layer = next((x for x in fr.layers if not x.in_icmp_error and not x.tunnel_carrier), None)
        if layer is None:
            continue
        st = convs[conv_key(layer.proto, layer.src, layer.dst)]
        st.add(layer.src, fr.length)
        st.times.append(fr.time_s)
        if layer.stream >= 0:
            st.streams.add(layer.stream)
        for num in fr.fragment_frames:
            if num != fr.number:  # the other fragments of the datagram this frame completed
                st.add(layer.src, by_number[num].length)
    return dict(convs)


class AmbiguousExpectation(AssertionError):
    """A silence is too close to an idle timeout to predict whether the flow splits."""


def expected_flow_count(
    key: ConvKey, st: ConvStats, udp_idle_s: float, tcp_min_idle_s: float, dns_idle_s: float
) -> int:
    """How many flow records trafficguard must emit for this conversation.

    TCP: one per tcp.stream (tshark starts a new stream on a SYN that reuses a closed
    connection's ports). A silence longer than the shortest TCP idle timeout inside one
    stream would depend on the TCP state machine; we refuse to guess.
    UDP: one, plus one per silence longer than the UDP idle timeout (the DNS idle timeout
    when either port is 53).
    """
    times = sorted(st.times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if key[0] == 6:
        if len(st.streams) == 1 and any(g > tcp_min_idle_s for g in gaps):
            raise AmbiguousExpectation(f"{key}: silence > {tcp_min_idle_s}s within one stream")
        return max(1, len(st.streams))
    if DNS_PORT in (key[1][1], key[2][1]):
        udp_idle_s = dns_idle_s
    margin = 0.05 * udp_idle_s
    for g in gaps:
        if abs(g - udp_idle_s) < margin:
            raise AmbiguousExpectation(f"{key}: silence of {g:.1f}s ~ udp idle timeout")
    return 1 + sum(1 for g in gaps if g > udp_idle_s)


def check_against_table(path: Path) -> list[str]:
    """Problems found comparing ``table_view`` with tshark's own table (empty = agree)."""
    rows = conversation_table(path)
    table: dict[ConvKey, list[TableRow]] = defaultdict(list)
    for row in rows:
        table[conv_key(row.proto, row.a, row.b)].append(row)
    view = table_view(read_frames(path))
    problems: list[str] = []
    if set(table) != set(view):
        problems.append(
            f"keys only in table: {sorted(set(table) - set(view))}; "
            f"only in fields: {sorted(set(view) - set(table))}"
        )
    for key in set(table) & set(view):
        st = view[key]
        for ep in (key[1], key[2]):
            sent_frames = sum(r.frames_ab if r.a == ep else r.frames_ba for r in table[key])
            if sent_frames != st.frames.get(ep, 0):
                problems.append(
                    f"{key} frames from {ep}: table {sent_frames}, fields {st.frames.get(ep, 0)}"
                )
            shown = [r.bytes_ab if r.a == ep else r.bytes_ba for r in table[key]]
            exact = st.bytes.get(ep, 0)
            if len(shown) == 1:
                ok = shown[0].matches(exact)
            else:  # several rows: only exact columns can be summed
                ok = any(s.unit != 1 for s in shown) or sum(s.value for s in shown) == exact
            if not ok:
                problems.append(f"{key} bytes from {ep}: table {shown}, fields {exact}")
    return problems
