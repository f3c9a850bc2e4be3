"""Live capture from interfaces: AF_PACKET with a TPACKET_V3 mmap ring, BPF and fanout.

Why a ring: the kernel writes packets into memory shared with us and hands over whole
*blocks* (up to ``block_size`` bytes, or whatever arrived within ``block_timeout_ms``);
one Python iteration per block gives the pipeline its batch, with no system call per
packet. A block is returned to the kernel as soon as its frames are copied out — or,
with the compiled fast path (``use_fast_path``), lent in place as a :class:`RingBlock`
that the C core walks and decodes with no Frame per packet, and returned once processed.

Why fanout: N worker processes each open a socket on the same interface and join one
``PACKET_FANOUT`` group with ``HASH | FLAG_DEFRAG``; the kernel hashes both directions
of a flow (and all fragments of a datagram) to the same socket, so each worker owns
whole flows and needs nothing from the others.

Kernel counters (``PACKET_STATISTICS``) are reset on every read and ``tp_packets``
includes the drops; :class:`KernelCounters` accumulates them into monotonic totals.

Where TPACKET_V3 is unavailable (old kernels, some container sandboxes), the
``socket`` backend reads the same socket with ``recvmsg_into`` — one system call per
packet, a fallback, not the normal path. Both restore VLAN tags the NIC/veth stripped
(``tp_vlan_tci``), as libpcap does, so decoding matches a pcap of the same wire.

The parsing of a ring block (:func:`parse_block`) is a pure function over a buffer, so
it is tested on synthetic blocks without a socket.
"""

from __future__ import annotations

import errno
import mmap
import select
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol

from trafficguard.capture.bpf import Instruction, attach_filter, compile_filter
from trafficguard.capture.frames import LINKTYPE_ETHERNET, LINKTYPE_RAW, Frame
from trafficguard.config import LiveConfig
from trafficguard.errors import TrafficguardError

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_MR_PROMISC: Final = 1
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_AUXDATA: Final = 8
PACKET_VERSION: Final = 10
PACKET_FANOUT: Final = 18
PACKET_IGNORE_OUTGOING: Final = 23
TPACKET_V3: Final = 2
PACKET_FANOUT_HASH: Final = 0
PACKET_FANOUT_FLAG_DEFRAG: Final = 0x8000
SO_RCVBUFFORCE: Final = 33
SO_TIMESTAMPNS: Final = 35

TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
TP_STATUS_VLAN_VALID: Final = 0x10
TP_STATUS_VLAN_TPID_VALID: Final = 0x40
ETH_P_8021Q: Final = 0x8100

ARPHRD_LINKTYPES: Final = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 65534: LINKTYPE_RAW}
"""ARPHRD_ETHER and ARPHRD_LOOPBACK carry Ethernet headers; ARPHRD_NONE (tun) raw IP."""
ARPHRD_LOOPBACK: Final = 772

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 at +8
BLOCK_STATUS_OFF: Final = 8
_BLOCK_HDR: Final = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net; hv1 at +28
_PKT_HDR: Final = struct.Struct("=IIIIIIHH")
_PKT_VLAN: Final = struct.Struct("=IIH")  # tp_rxhash, tp_vlan_tci, tp_vlan_tpid
_PKT_VLAN_OFF: Final = 28
_STATUS: Final = struct.Struct("=I")
_TAG: Final = struct.Struct("!HH")
_REQ3: Final = struct.Struct("=7I")
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA: Final = struct.Struct("=IIIHHHH")
_TIMESPEC: Final = struct.Struct("=qq")


class LiveCaptureError(TrafficguardError):
    """An interface cannot be opened for capture (missing, no permission, bad setting)."""

    def __init__(self, interface: str, reason: str) -> None:
        self.interface = interface
        self.reason = reason
        super().__init__(f"interface {interface}: {reason}")


@dataclass(slots=True)
class KernelCounters:
    """Monotonic totals of the kernel's reset-on-read ``PACKET_STATISTICS``.

    ``packets`` counts every packet that passed the filter, *including* ``drops``
    (ring or buffer full); ``freeze_q_cnt`` counts times the ring was frozen full.
    """

    packets: int = 0
    drops: int = 0
    freeze_q_cnt: int = 0

    def add(self, raw: bytes) -> None:
        """Add one ``tpacket_stats`` (8 bytes) or ``tpacket_stats_v3`` (12 bytes) reading."""
        if len(raw) >= 12:
            packets, drops, freeze = struct.unpack_from("=III", raw)
        else:
            packets, drops = struct.unpack_from("=II", raw)
            freeze = 0
        self.packets += packets
        self.drops += drops
        self.freeze_q_cnt += freeze


def _vlan_frame(data: bytes, tci: int, tpid: int) -> bytes:
    """Put back the 802.1Q tag the kernel moved into the packet's metadata."""
    return data[:12] + _TAG.pack(tpid or ETH_P_8021Q, tci & 0xFFFF) + data[12:]


def parse_block(ring: bytes | mmap.mmap, base: int, linktype: int) -> list[Frame]:
    """Frames of the TPACKET_V3 block at ``base`` (the caller checked it is user-owned).

    Frame data is copied out (``bytes``), so the block may go back to the kernel at once.
    """
    _status, num_pkts, first = _BLOCK_HDR.unpack_from(ring, base + BLOCK_STATUS_OFF)
    unpack_hdr = _PKT_HDR.unpack_from
    frames: list[Frame] = []
    append = frames.append
    off = base + first
    for _ in range(num_pkts):
        nxt, sec, nsec, snap, wire_len, status, mac, _net = unpack_hdr(ring, off)
        start = off + mac
        data = ring[start : start + snap]
        if status & TP_STATUS_VLAN_VALID and linktype == LINKTYPE_ETHERNET:
            _hash, tci, tpid = _PKT_VLAN.unpack_from(ring, off + _PKT_VLAN_OFF)
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = ETH_P_8021Q
            data = _vlan_frame(data, tci, tpid)
            wire_len += 4
        append((sec * 1_000_000_000 + nsec, linktype, data, wire_len))
        off += nxt
    return frames


@dataclass(slots=True)
class RingBlock:
    """A retired ring block lent in place to the compiled fast path (no Frame per packet).

    ``first_off`` is the offset of its first ``tpacket3_hdr`` in ``ring``; ``packets``,
    ``first_ts``/``last_ts`` and ``wire_bytes`` (VLAN tags restored) are from the C scan
    (:class:`BlockScanner`), which checked every header. The block goes back to the kernel
    when the consumer asks for the next batch (see ``RingSocket.ready_batches``).
    """

    ring: mmap.mmap | bytes
    first_off: int
    packets: int
    linktype: int
    first_ts: int
    last_ts: int
    wire_bytes: int

    def __len__(self) -> int:
        return self.packets


Batch = list[Frame] | RingBlock
"""What a capture socket yields: copied Frames, or a block the fast path reads in place."""


def batch_span(batch: Batch) -> tuple[int, int]:
    """(ts_ns of the first packet, ts_ns of the last) of a non-empty batch."""
    if isinstance(batch, RingBlock):
        return batch.first_ts, batch.last_ts
    return batch[0][0], batch[-1][0]


class BlockScanner(Protocol):
    """What lends ring blocks in place: the fast path (``fast.path.ring_block``), which
    checks every header of the block in C and sums it up into a :class:`RingBlock`
    (``ValueError`` where :func:`parse_block` raises ``struct.error``)."""

    def ring_block(self, ring: mmap.mmap | bytes, base: int, linktype: int) -> RingBlock: ...


def linktype_of(interface: str, sys_class_net: Path = Path("/sys/class/net")) -> int:
    """The LINKTYPE of frames read from ``interface`` with a SOCK_RAW packet socket."""
    try:
        arphrd = int((sys_class_net / interface / "type").read_text().strip())
    except (OSError, ValueError):
        raise LiveCaptureError(interface, "no such interface") from None
    linktype = ARPHRD_LINKTYPES.get(arphrd)
    if linktype is None:
        raise LiveCaptureError(interface, f"unsupported hardware type {arphrd}")
    return linktype


def _is_loopback(interface: str) -> bool:
    try:
        return int(Path("/sys/class/net", interface, "type").read_text()) == ARPHRD_LOOPBACK
    except (OSError, ValueError):
        return False


def accept_all(snaplen: int) -> list[Instruction]:
    """``ret #snaplen``: every packet, truncated to ``snaplen`` (V3 rings have no snaplen)."""
    return [(0x06, 0, 0, snaplen)]


def filter_program(expression: str, linktype: int, snaplen: int) -> list[Instruction]:
    """The program to attach: the compiled expression, or accept-all with the snaplen."""
    if not expression.strip():
        return accept_all(snaplen)
    return compile_filter(expression, linktype, snaplen)


class PacketSocket(Protocol):
    """One capture socket on one interface (ring or recv backend)."""

    interface: str
    linktype: int
    counters: KernelCounters

    def fileno(self) -> int: ...

    def ready_batches(self, max_frames: int) -> Iterable[Batch]: ...

    def read_stats(self) -> None: ...

    def set_filter(self, program: list[Instruction]) -> None: ...

    def close(self) -> None: ...


def _open_socket(
    interface: str, cfg: LiveConfig, program: list[Instruction]
) -> tuple[socket.socket, int]:
    """An unbound packet socket (protocol 0: receives nothing yet) with its filter."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, program)
        if _is_loopback(interface):  # lo shows every frame twice (outgoing + host)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        ifindex = socket.if_nametoindex(interface)
    except OSError:
        sock.close()
        raise
    return sock, ifindex


def _bind_and_join(
    sock: socket.socket, interface: str, ifindex: int, cfg: LiveConfig, fanout_id: int | None
) -> None:
    """Promiscuous mode, bind with ETH_P_ALL (packets start flowing), join the fanout group."""
    if cfg.promiscuous:
        mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    sock.bind((interface, ETH_P_ALL))
    if fanout_id is not None:
        arg = (fanout_id & 0xFFFF) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", arg))


class _SocketBase:
    """What both backends share: the packet socket, its kernel counters and its filter."""

    _STATS_LEN: ClassVar[int]  # bytes of the PACKET_STATISTICS struct the backend gets
    _sock: socket.socket

    def __init__(self, interface: str, linktype: int) -> None:
        self.interface = interface
        self.linktype = linktype
        self.counters = KernelCounters()

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_stats(self) -> None:
        self.counters.add(self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, self._STATS_LEN))

    def set_filter(self, program: list[Instruction]) -> None:
        attach_filter(self._sock, program)

    def close(self) -> None:
        self._sock.close()


class RingSocket(_SocketBase):
    """AF_PACKET socket with a TPACKET_V3 receive ring; one batch per retired block."""

    _STATS_LEN = 12  # struct tpacket_stats_v3

    def __init__(
        self,
        interface: str,
        cfg: LiveConfig,
        program: list[Instruction],
        linktype: int,
        fanout_id: int | None = None,
    ) -> None:
        super().__init__(interface, linktype)
        self._block_size = cfg.block_size
        self._block_count = cfg.block_count
        self._current = 0
        self.in_place: BlockScanner | None = None  # lend blocks to the fast path, no copies
        self._lent = False  # the block at _current is lent (RingBlock) and not yet given back
        sock, ifindex = _open_socket(interface, cfg, program)
        self._sock = sock
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = min(cfg.frame_size, cfg.block_size)
            frames_per_block = cfg.block_size // frame_size
            req = _REQ3.pack(
                cfg.block_size,
                cfg.block_count,
                frame_size,
                frames_per_block * cfg.block_count,
                cfg.block_timeout_ms,
                0,
                0,
            )
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._ring = mmap.mmap(
                sock.fileno(),
                cfg.block_size * cfg.block_count,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError:
            sock.close()
            raise
        try:
            _bind_and_join(sock, interface, ifindex, cfg, fanout_id)
        except OSError:
            self.close()
            raise

    def ready_batches(self, max_frames: int) -> Iterable[Batch]:
        """Every block the kernel has retired, in ring order (at most one ring's worth)."""
        if self.in_place is not None:
            return self._lend_blocks(self.in_place)
        ring = self._ring
        out: list[list[Frame]] = []
        for _ in range(self._block_count):
            base = self._current * self._block_size
            (status,) = _STATUS.unpack_from(ring, base + BLOCK_STATUS_OFF)
            if not status & TP_STATUS_USER:
                break
            frames = parse_block(ring, base, self.linktype)
            _STATUS.pack_into(ring, base + BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
            self._current = (self._current + 1) % self._block_count
            if frames:
                out.append(frames)
        return out

    def _lend_blocks(self, scanner: BlockScanner) -> Iterator[RingBlock]:
        """Retired blocks in ring order, each lent until the consumer asks for the next
        one (or stops iterating, or calls ``ready_batches`` again), then given back."""
        ring = self._ring
        self._give_back()
        try:
            for _ in range(self._block_count):
                base = self._current * self._block_size
                (status,) = _STATUS.unpack_from(ring, base + BLOCK_STATUS_OFF)
                if not status & TP_STATUS_USER:
                    return
                self._lent = True
                block = scanner.ring_block(ring, base, self.linktype)
                if block.packets:
                    yield block
                self._give_back()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        """Return the lent block (if any) to the kernel and move to the next one."""
        if not self._lent:
            return
        self._lent = False
        if not self._ring.closed:
            base = self._current * self._block_size
            _STATUS.pack_into(self._ring, base + BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
        self._current = (self._current + 1) % self._block_count

    def close(self) -> None:
        ring = getattr(self, "_ring", None)
        if ring is not None and not ring.closed:
            ring.close()
        super().close()


class RecvSocket(_SocketBase):
    """The fallback backend: the same packet socket read with ``recvmsg_into``."""

    _STATS_LEN = 8  # struct tpacket_stats

    def __init__(
        self,
        interface: str,
        cfg: LiveConfig,
        program: list[Instruction],
        linktype: int,
        fanout_id: int | None = None,
    ) -> None:
        super().__init__(interface, linktype)
        self._buf = bytearray(cfg.snaplen)
        self._view = memoryview(self._buf)
        sock, ifindex = _open_socket(interface, cfg, program)
        self._sock = sock
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, cfg.socket_rcvbuf_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.socket_rcvbuf_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            _bind_and_join(sock, interface, ifindex, cfg, fanout_id)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise

    def ready_batches(self, max_frames: int) -> list[list[Frame]]:
        """What is queued on the socket now, up to ``max_frames`` (never blocks)."""
        frames: list[Frame] = []
        recv = self._sock.recvmsg_into
        bufs = [self._buf]
        view = self._view
        linktype = self.linktype
        snaplen = len(self._buf)
        while len(frames) < max_frames:
            try:
                nbytes, ancdata, _flags, _addr = recv(bufs, 256, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            ts_ns = 0
            wire_len = nbytes
            tci = tpid = -1
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    ts_ns = sec * 1_000_000_000 + nsec
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, tp_len, _snap, _mac, _net, vtci, vtpid = _AUXDATA.unpack_from(cdata)
                    wire_len = tp_len
                    if status & TP_STATUS_VLAN_VALID:
                        tci = vtci
                        tpid = vtpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
            data = bytes(view[: min(nbytes, snaplen)])
            if tci >= 0 and linktype == LINKTYPE_ETHERNET:
                data = _vlan_frame(data, tci, tpid)
                wire_len += 4
            frames.append((ts_ns, linktype, data, wire_len))
        return [frames] if frames else []


class LiveCapture:
    """Every capture socket of one worker, polled together; a ``FrameSource`` for live use.

    ``batches`` yields one list per ring block (or per drained socket queue), and an
    empty list when ``poll_timeout_ms`` passes with no traffic, so the caller can run
    packet-time expiry, report counters and handle signals while the link is idle.
    """

    def __init__(self, sockets: Sequence[PacketSocket], cfg: LiveConfig, backend: str) -> None:
        self.sockets = list(sockets)
        self.backend = backend
        self.name = ",".join(s.interface for s in self.sockets)
        self._cfg = cfg
        self._poll_timeout_ms = cfg.poll_timeout_ms
        self._poller = select.poll()
        for s in self.sockets:
            self._poller.register(s.fileno(), select.POLLIN | select.POLLERR)
        self.stop_requested = False

    def use_fast_path(self, scanner: BlockScanner | None) -> None:
        """With the pipeline's fast path, ring blocks are lent in place (:class:`RingBlock`)
        instead of copied out as Frames; the recv backend always copies Frames."""
        for s in self.sockets:
            if isinstance(s, RingSocket):
                s.in_place = scanner

    def batches(self, max_frames: int = 512) -> Iterator[Batch]:
        while not self.stop_requested:
            got = False
            for s in self.sockets:
                for batch in s.ready_batches(max_frames):
                    got = True
                    yield batch
            if got:
                continue
            try:
                events = self._poller.poll(self._poll_timeout_ms)
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                events = []
            if not events:
                yield []

    def counters(self) -> KernelCounters:
        """Read the kernel counters now and return the totals over every socket."""
        total = KernelCounters()
        for s in self.sockets:
            s.read_stats()
            total.packets += s.counters.packets
            total.drops += s.counters.drops
            total.freeze_q_cnt += s.counters.freeze_q_cnt
        return total

    def set_filter(self, expression: str) -> None:
        """Compile and attach a new filter on every socket (a reload); raises FilterError."""
        programs = {
            s.linktype: filter_program(expression, s.linktype, self._cfg.snaplen)
            for s in self.sockets
        }
        for s in self.sockets:
            s.set_filter(programs[s.linktype])

    @property
    def bytes_read(self) -> int:
        return 0

    @property
    def total_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def open_live(
    cfg: LiveConfig, interfaces: Sequence[str], fanout: bool, backend: str | None = None
) -> LiveCapture:
    """Open one socket per interface with the configured backend and filter.

    With ``fanout`` each socket joins group ``cfg.fanout_group + index``. ``auto`` tries
    the ring and falls back to the recv socket when the kernel refuses TPACKET_V3
    (``ENOPROTOOPT``/``EINVAL``/``ENOMEM``). Raises :class:`LiveCaptureError` or
    ``FilterError``.
    """
    chosen = backend or cfg.backend
    sockets: list[PacketSocket] = []
    try:
        for index, interface in enumerate(interfaces):
            linktype = linktype_of(interface)
            program = filter_program(cfg.bpf_filter, linktype, cfg.snaplen)
            fanout_id = (cfg.fanout_group + index) & 0xFFFF if fanout else None
            sock: PacketSocket
            try:
                if chosen == "socket":
                    sock = RecvSocket(interface, cfg, program, linktype, fanout_id)
                else:
                    try:
                        sock = RingSocket(interface, cfg, program, linktype, fanout_id)
                        chosen = "ring"
                    except OSError as err:
                        if chosen != "auto" or err.errno not in _NO_RING:
                            raise
                        chosen = "socket"
                        sock = RecvSocket(interface, cfg, program, linktype, fanout_id)
            except OSError as err:
                raise LiveCaptureError(interface, err.strerror or str(err)) from None
            sockets.append(sock)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return LiveCapture(sockets, cfg, chosen)


_NO_RING: Final = frozenset({errno.ENOPROTOOPT, errno.EINVAL, errno.ENOMEM, errno.EPERM})
