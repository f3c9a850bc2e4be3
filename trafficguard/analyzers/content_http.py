"""Content analyzer (scope ``http``): the request line and Host header of an HTTP request.

Only the first segment of a request is seen (no TCP reassembly): request line and
headers almost always fit. Bodies, cookies and other headers are never extracted.
"""

from __future__ import annotations

from typing import Final

METHODS: Final = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
)
MAX_LINE: Final = 8192


def extract(payload: bytes) -> bytes | None:
    """``request line \\n Host: value`` or None if the payload is not an HTTP request."""
    if not payload.startswith(METHODS):
        return None
    head = payload[:MAX_LINE].split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    request = lines[0]
    if b" HTTP/" not in request:
        return None
    out = [request]
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            out.append(b"Host: " + value.strip())
            break
    return b"\n".join(out)
