"""The seam for analyzers that follow flows (SIP, RTP, DNS, ... metadata analyzers)."""

from __future__ import annotations

from typing import Protocol

from trafficguard.decode.packet import Packet
from trafficguard.flow.state import Flow


class FlowHook(Protocol):
    """An analyzer attached to the table; called only when at least one is registered.

    ``on_flow_start`` sees a flow's first packet, then ``on_packet`` sees every packet
    (the first one included); ``direction`` is ``"fwd"`` or ``"rev"``. ``on_flow_end``
    runs once per flow with the end reason, before the flow is forgotten. Hooks may read
    the payload of ``pkt`` but must not keep it.
    """

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None: ...

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None: ...

    def on_flow_end(self, flow: Flow, reason: str) -> None: ...
