"""Content analyzer (scope ``smtp``): the SMTP envelope (MAIL FROM / RCPT TO).

Looks at client command lines in one segment; message bodies (after DATA) and headers
are never extracted.
"""

from __future__ import annotations

from typing import Final

ENVELOPE: Final = (b"MAIL FROM:", b"RCPT TO:")


def extract(payload: bytes) -> bytes | None:
    """Envelope command lines found in the segment, or None."""
    found = [
        line.strip()
        for line in payload.split(b"\n")
        if line.strip()[:10].upper().startswith(ENVELOPE)
    ]
    return b"\n".join(found) if found else None
