"""Content analyzer (scope ``sip``): full SIP message text, and transient party lookup.

``extract`` returns the whole message (start line, headers, body). ``users`` reads the
Request-URI, From and To users of a message so the gate can decide whether a number or
SIP-URI grant covers it; the caller compares them with its grant index and keeps
nothing unless one matches.
"""

from __future__ import annotations

import re
from typing import Final

_METHODS: Final = (
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"REGISTER ",
    b"OPTIONS ",
    b"PRACK ",
    b"SUBSCRIBE ",
    b"NOTIFY ",
    b"PUBLISH ",
    b"INFO ",
    b"REFER ",
    b"MESSAGE ",
    b"UPDATE ",
)
_URI: Final = re.compile(rb"<?((?:sips?|tel):[^>;\s,]+)", re.IGNORECASE)
_HEADERS: Final = {b"from": b"from", b"f": b"from", b"to": b"to", b"t": b"to"}


def is_sip(payload: bytes) -> bool:
    return payload.startswith(_METHODS) or payload.startswith(b"SIP/2.0 ")


def extract(payload: bytes) -> bytes | None:
    """The message as captured, or None if the payload is not SIP."""
    return payload if is_sip(payload) else None


def uris(payload: bytes) -> list[str]:
    """Request-URI, From and To URIs of one message (transient; never stored)."""
    if not is_sip(payload):
        return []
    head = payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    found: list[bytes] = []
    if not head[0].startswith(b"SIP/2.0"):
        parts = head[0].split(b" ")
        if len(parts) >= 2:
            found.append(parts[1])
    for line in head[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in _HEADERS:
            m = _URI.search(value)
            if m:
                found.append(m.group(1))
    return [u.decode("utf-8", "replace") for u in found]
