"""Content analyzer (scope ``tls``): ClientHello SNI and, when visible, certificate subjects.

TLS 1.3 encrypts the server certificate, so only TLS ≤ 1.2 handshakes show it. One
segment is parsed at a time (no reassembly): a certificate that spans segments is missed.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography import x509

_U16: Final = struct.Struct("!H")
HANDSHAKE: Final = 22
CLIENT_HELLO: Final = 1
CERTIFICATE: Final = 11
EXT_SNI: Final = 0


def _u24(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 3], "big")


def _sni(body: bytes) -> list[str]:
    off = 2 + 32  # version, random
    off += 1 + body[off]  # session id
    (n,) = _U16.unpack_from(body, off)
    off += 2 + n  # cipher suites
    off += 1 + body[off]  # compression methods
    if off + 2 > len(body):
        return []
    (ext_len,) = _U16.unpack_from(body, off)
    off += 2
    end = min(len(body), off + ext_len)
    names: list[str] = []
    while off + 4 <= end:
        etype, elen = struct.unpack_from("!HH", body, off)
        off += 4
        if etype == EXT_SNI:
            p = off + 2
            while p + 3 <= off + elen:
                ntype = body[p]
                (nlen,) = _U16.unpack_from(body, p + 1)
                if ntype == 0:
                    names.append(body[p + 3 : p + 3 + nlen].decode("ascii", "replace"))
                p += 3 + nlen
        off += elen
    return names


def _subjects(body: bytes) -> list[str]:
    total = _u24(body, 0)
    off, end = 3, min(len(body), 3 + total)
    out: list[str] = []
    while off + 3 <= end:
        n = _u24(body, off)
        der = body[off + 3 : off + 3 + n]
        off += 3 + n
        try:
            out.append(x509.load_der_x509_certificate(der).subject.rfc4514_string())
        except ValueError:
            continue
    return out


def extract(payload: bytes) -> bytes | None:
    """``sni NAME`` and ``subject DN`` lines from the handshake records in the segment."""
    lines: list[str] = []
    off = 0
    try:
        while off + 5 <= len(payload) and payload[off] == HANDSHAKE:
            (rlen,) = _U16.unpack_from(payload, off + 3)
            rec = payload[off + 5 : off + 5 + rlen]
            off += 5 + rlen
            p = 0
            while p + 4 <= len(rec):
                htype, hlen = rec[p], _u24(rec, p + 1)
                body = rec[p + 4 : p + 4 + hlen]
                p += 4 + hlen
                if htype == CLIENT_HELLO:
                    lines.extend("sni " + n for n in _sni(body))
                elif htype == CERTIFICATE:
                    lines.extend("subject " + s for s in _subjects(body))
    except (IndexError, struct.error):
        pass  # keep what was read before the malformed part
    return "\n".join(lines).encode("utf-8", "replace") if lines else None
