"""Content analyzer (scope ``dns``): the query names of one DNS message.

Runs only on packets of flows an active grant covers (the escalation gate calls it);
its output goes only into that grant's sealed evidence. Metadata mode never calls it.
"""

from __future__ import annotations

from typing import Final

import dpkt

DNS_PORTS: Final = frozenset({53, 5353, 5355})


def extract(payload: bytes, sport: int, dport: int, proto: int) -> bytes | None:
    """``"query NAME TYPE"`` / ``"answer NAME TYPE"`` lines, or None if not DNS."""
    if sport not in DNS_PORTS and dport not in DNS_PORTS:
        return None
    data = payload[2:] if proto == 6 else payload  # DNS over TCP: 2-byte length prefix
    try:
        msg = dpkt.dns.DNS(data)
    except (dpkt.dpkt.UnpackError, IndexError, ValueError):
        return None
    if not msg.qd:
        return None
    side = "answer" if msg.qr else "query"
    lines = [f"{side} {q.name} {q.type}" for q in msg.qd]
    return "\n".join(lines).encode("utf-8", "replace")
