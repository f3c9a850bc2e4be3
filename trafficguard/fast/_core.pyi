"""Type stub of the compiled fast path (``_core.c``)."""

import mmap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trafficguard.decode.packet import Packet

Buffer = bytes | bytearray | memoryview | mmap.mmap

LABELS: tuple[str, ...]
FLOW_SLOT_BYTES: int

Frame = tuple[int, int, bytes, int]
Row = tuple[
    bytes, int, int, int, int, int, int, int, bytes, int, bytes, int,
    int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,
]  # fmt: skip
RecordRow = tuple[
    str, int, int, int, int, int, int, int, str | bytes, int, str | bytes, int,
    int, int, int, int, int, int, int, int, int, int, int, int, int, int, int,
]  # fmt: skip

class Core:
    def __init__(
        self,
        idle_ns: tuple[int, ...],
        active_ns: int,
        max_flows: int,
        scan_per_tick: int,
        classify_packets: int,
        ports: Iterable[tuple[int, int, int]],
        tunnel_ports: Iterable[int],
    ) -> None: ...
    def feed_pcap(
        self, buf: Buffer, off: int, big_endian: bool, frac_ns: int, linktype: int,
        max_frames: int,
    ) -> tuple[int, int, int, int, int, Frame | None]: ...  # fmt: skip
    def feed_frames(self, frames: list[Frame], start: int) -> int: ...
    def feed_block(
        self, buf: Buffer, off: int, packets: int, linktype: int
    ) -> tuple[int, int, int, Frame | None]: ...
    def update_packets(self, packets: Sequence[Packet]) -> None: ...
    def tick(self, now_ns: int) -> None: ...
    def flush_all(self) -> None: ...
    def flush_some(self, max_flows: int) -> int: ...
    # rows, or record objects once set_record_factory was called
    def take_records(self) -> list[Any]: ...
    def set_record_factory(
        self, record_type: Callable[..., object], field_names: tuple[str, ...],
        tcp_states: tuple[str, ...], apps: tuple[str, ...], app_sources: tuple[str, ...],
        encaps: tuple[str, ...], reasons: tuple[str, ...], addr_text: Callable[[bytes], str],
    ) -> None: ...  # fmt: skip
    def flow_info(self, slot: int) -> Row: ...  # last item: classify state, not a reason
    def flow_app(self, slot: int) -> int: ...  # index into APP_LABELS
    def set_start_filter(
        self,
        protos: Iterable[int] | None,
        ports: Iterable[int],
        labels: Iterable[int],
        udp_min: int,
    ) -> None: ...
    def watch_port(self, port: int, delta: int) -> None: ...
    def set_tap(self, ports: Iterable[int]) -> None: ...
    def take_taps(self) -> list[tuple[int, bytes, bytes, int, bytes]]: ...
    def set_callback(
        self,
        callback: Callable[[int, int, object, int], int] | None,
        packet_type: type[Packet] | None = None,
    ) -> None: ...
    def set_interest(self, slot: int, bits: int) -> None: ...
    def rtp_track(self, slot: int, rates: bytes, max_streams: int) -> None: ...
    def rtp_untrack(self, slot: int) -> None: ...
    def rtp_streams(self, slot: int) -> RtpStates: ...
    def counters(self) -> dict[str, int | tuple[int, ...]]: ...
    def app_counters(self) -> list[tuple[int, int, int, int]]: ...
    def memory(self) -> tuple[int, int, int]: ...

RtpState = tuple[int | float, ...]  # voip.rtp.STATE_FIELDS order
RtpStates = tuple[tuple[RtpState, ...], tuple[RtpState, ...], tuple[int, int]]

def rtp_replay(
    rates: bytes, max_streams: int, events: Sequence[tuple[int, bool, bytes]]
) -> tuple[RtpStates, bytes]: ...

def scan_block(buf: Buffer, base: int, linktype: int) -> tuple[int, int, int, int, int]: ...

def dns_question(
    buf: bytes, off: int, end: int
) -> tuple[bool, int, int, tuple[bytes, ...]] | None: ...
def dns_name_features(
    labels: tuple[bytes, ...], count: int
) -> tuple[int, int, float, int, dict[int, int]]: ...
def b32_head(digest: bytes, /) -> str: ...
