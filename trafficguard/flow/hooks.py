"""The seam for analyzers that follow flows (SIP, RTP, DNS, ... metadata analyzers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

from trafficguard.decode.packet import Packet
from trafficguard.flow.state import Flow

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a stage that reports needs it
    from prometheus_client.core import Metric


class FlowHook(Protocol):
    """An analyzer attached to the table; called only when at least one is registered.

    ``on_flow_start`` sees a flow's first packet, then ``on_packet`` sees every packet
    (the first one included); ``direction`` is ``"fwd"`` or ``"rev"``. ``on_flow_end``
    runs once per flow with the end reason, before the flow is forgotten. Hooks may read
    the payload of ``pkt`` but must not keep it.

    Interest (optional, see ``SelectiveFlowHook``): a hook may also define
    ``wants_packets(pkt, flow) -> bool``, asked right after ``on_flow_start``. When it
    answers False, the compiled fast path (``trafficguard.fast``) sends that hook none of
    the flow's ``on_packet``/``on_flow_end`` calls, so flows nobody wants never come back
    to Python. A hook without it gets every packet, as before. The Python table may still
    make those calls, so a hook's output must not depend on flows it declined.

    Start filter (optional): a hook may also have a ``start_filter`` attribute, a
    ``StartFilter`` that covers every flow whose start or packets it could act on. When
    every hook has one, the fast path calls ``on_flow_start`` only for flows inside their
    union; a flow outside it never comes back to Python. The Python table calls every hook
    for every flow, so a hook must ignore the flows outside its filter.

    Later, on the fast path (``FastPath.release(flow, hook)``), a hook may give up a flow
    it wanted (e.g. the RTP heuristic said no); the VoIP stage also hands RTP accounting
    to the C core (``FastPath.track_rtp``/``rtp_only_rest``/``rtp_streams``). Hooks find
    these by ``hasattr`` on the host they were attached to; the Python table has neither.
    """

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None: ...

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None: ...

    def on_flow_end(self, flow: Flow, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class StartFilter:
    """The flows a hook may act on: one of ``protos`` and either one of ``ports`` on either
    side, a flow label (at its first packet) in ``labels``, or, with
    ``unknown_udp_min_port``, an unknown-label UDP flow with both ports at or above it.
    Ports a hook learns while running (announced media) go to ``FastPath.watch_port``."""

    protos: frozenset[int]
    ports: frozenset[int] = frozenset()
    labels: frozenset[str] = frozenset()
    unknown_udp_min_port: int = 0  # 0: none

    @staticmethod
    def union(filters: Iterable[StartFilter]) -> StartFilter:
        """One filter covering all of ``filters``."""
        protos: set[int] = set()
        ports: set[int] = set()
        labels: set[str] = set()
        mins = []
        for f in filters:
            protos |= f.protos
            ports |= f.ports
            labels |= f.labels
            if f.unknown_udp_min_port:
                mins.append(f.unknown_udp_min_port)
        return StartFilter(
            frozenset(protos), frozenset(ports), frozenset(labels), min(mins, default=0)
        )


PayloadTap = Callable[[list[tuple[int, bytes, bytes, int, bytes]]], None]
"""Takes ``(ts_ns, src, dst, proto, payload)`` of tapped TCP/UDP packets, in packet order
(``FastPath.add_tap``): an analyzer that reads payloads on a few ports and keeps no flow
state, such as DNS, needs no flow events at all."""


class SelectiveFlowHook(FlowHook, Protocol):
    """A FlowHook that declares, per flow, whether it needs the flow's packets and end."""

    def wants_packets(self, pkt: Packet, flow: Flow) -> bool: ...


class HookHost(Protocol):
    """What a stage attaches its flow hooks to (the flow table, or the compiled fast path)."""

    def add_hook(self, hook: FlowHook) -> None: ...


class Stage(Protocol):
    """A stage after the flow table: VoIP analyzers, metadata analyzers, detectors, the gate.

    The pipeline calls, in packet time and always from the packet thread:
    ``attach`` once (add flow hooks); ``on_records`` with every record the flow table and
    the earlier stages emitted in this round (a detector reads flow and call records
    here); ``tick`` when the expiry tick runs; ``take_records`` to collect what the stage
    finished (the pipeline passes them to later stages and to the sinks); ``finish`` at
    end of input or shutdown (close everything open, so the next ``take_records`` gets
    it) — or, if the stage has it, ``finish_chunks(now_ns, size)``, an iterator of lists
    of at most ``size`` records that does both, for a stage that holds many at the end;
    ``collect`` at scrape time from the metrics thread (read plain ints only, and
    use only closed-set label values — the registry sanitises them again).
    """

    name: str

    def attach(self, host: HookHost) -> None: ...

    def on_records(self, records: Sequence[Struct]) -> None: ...

    def tick(self, now_ns: int) -> None: ...

    def take_records(self) -> list[Struct]: ...

    def finish(self, now_ns: int) -> None: ...

    def collect(self) -> Iterable[Metric]: ...
