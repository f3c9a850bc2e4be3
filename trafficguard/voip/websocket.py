"""SIP over WebSocket (RFC 7118): the HTTP upgrade and the frames (RFC 6455 §5), no I/O.

A TCP flow becomes a WebSocket when one side sends an HTTP ``GET`` with
``Upgrade: websocket`` and the other answers ``101``. The handshake is read
*transiently*: the header section is searched for the few tokens that matter and then
dropped; no header value (cookies, hosts, keys) is stored or logged.

After the upgrade, ``WsDeframer`` (one per direction) turns bytes into whole messages:
FIN and continuation frames are joined, the masking key is applied, 7/16/64-bit payload
lengths are read, ping/pong/close are skipped. Each text or binary message carries one
SIP message; WebSocket framing replaces Content-Length framing (RFC 7118 §5), so a
message is parsed like a datagram. Buffers are bounded: a frame or message beyond
``max_message`` is skipped by count without being buffered; garbage (reserved opcodes,
bad control frames, a continuation with no message) drops the buffered bytes and is
counted in ``errors`` by reason (``WS_PARSE_REASONS``, a closed set).
"""

from __future__ import annotations

from typing import Final

from trafficguard.voip.sip import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    SipMessage,
    drop_skipped,
    parse_sip_datagram,
)

WS_BAD_FRAME: Final = "ws_bad_frame"  # reserved opcode, bad control frame, lost continuation
WS_COMPRESSED: Final = "ws_compressed"  # RSV bits set (permessage-deflate): not inflated
WS_OVERSIZE: Final = "ws_oversize"  # a frame or message beyond the bound
WS_BAD_HANDSHAKE: Final = "ws_bad_handshake"  # an upgrade request answered by no 101
WS_PARSE_REASONS: Final = (WS_BAD_FRAME, WS_COMPRESSED, WS_OVERSIZE, WS_BAD_HANDSHAKE)

MAX_MESSAGE: Final = MAX_HEADER_BYTES + MAX_BODY_BYTES
MAX_HANDSHAKE: Final = 16384  # an HTTP header section longer than this is not an upgrade

# TCP ports (besides ``voip.sip_ports``) whose flows are watched for a WebSocket upgrade:
# common SIP-over-WebSocket listeners (Kamailio/OpenSIPS 80/8080, Asterisk 8088,
# FreeSWITCH 5066). 443 and 7443 are WSS: TLS, never decrypted.
WS_PORTS: Final = frozenset({80, 5066, 8080, 8088})

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_CRLF2: Final = b"\r\n\r\n"


def looks_like_http_request(data: bytes) -> bool:
    """The first bytes of a direction open an HTTP GET (the start of an upgrade)."""
    return data[:4] == b"GET "


def _head(buf: bytes | bytearray) -> bytes | None:
    """The header section when complete (lower-cased), else None."""
    end = buf.find(_CRLF2)
    if end < 0:
        return None
    return bytes(buf[:end]).lower()


def _has_token(head: bytes, name: bytes, token: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip() == name and token in (t.strip() for t in value.split(b",")):
            return True
    return False


def is_upgrade_request(head: bytes) -> bool:
    """A lower-cased header section: ``GET`` with ``Upgrade: websocket``."""
    return head.startswith(b"get ") and _has_token(head, b"upgrade", b"websocket")


def is_upgrade_response(head: bytes) -> bool:
    """A lower-cased header section: ``HTTP/1.x 101``."""
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"http/1.") and status[1] == b"101"


class WsHandshake:
    """One direction's HTTP header section, held only until it is complete.

    ``feed`` returns None while the section is incomplete, else ``(head, rest)``: the
    lower-cased section (for one check by the caller, then dropped) and the bytes after
    it (the first WebSocket frames). A section beyond ``MAX_HANDSHAKE`` yields ``b""``.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        buf = self._buf
        scan = max(0, len(buf) - 3)
        buf += data
        end = buf.find(_CRLF2, scan)
        if end < 0:
            if len(buf) > MAX_HANDSHAKE:
                buf.clear()
                return b"", b""
            return None
        head = bytes(buf[:end]).lower()
        rest = bytes(buf[end + 4 :])
        buf.clear()
        return head, rest


def unmask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` repeated (RFC 6455 §5.3)."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(n, "big")


class WsDeframer:
    """One direction of a WebSocket stream -> whole text/binary messages.

    ``feed`` takes the next bytes (any segmentation) and returns the messages they
    complete, unmasked. Between calls at most one frame header and one frame payload
    (each bounded by ``max_message``) plus the message being assembled are held.
    """

    __slots__ = ("_buf", "_msg", "_skip", "_skip_msg", "errors", "max_message", "messages")

    def __init__(
        self, max_message: int = MAX_MESSAGE, errors: dict[str, int] | None = None
    ) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._msg: bytearray | None = None  # a fragmented message being assembled
        self._skip = 0  # payload bytes of an oversize or compressed frame still to discard
        self._skip_msg = False  # the rest of the current message is being discarded
        self.errors: dict[str, int] = {} if errors is None else errors
        self.messages = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + (len(self._msg) if self._msg is not None else 0)

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def feed(self, data: bytes) -> list[bytes]:
        rest, self._skip = drop_skipped(data, self._skip)
        if rest is None:
            return []
        data = rest
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        limit = self.max_message
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hlen = 2
            if length == 126:
                hlen = 4
                if n - pos < hlen:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                hlen = 10
                if n - pos < hlen:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            masked = b1 & 0x80
            if masked:
                hlen += 4
                if n - pos < hlen:
                    break
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if opcode >= 0x8:  # control: FIN set, at most 125 bytes, never fragmented
                if opcode > OP_PONG or not fin or length > 125:
                    self._garbage()
                    pos = n
                    break
                if n - pos < hlen + length:
                    break
                pos += hlen + length
                continue
            if opcode > OP_BINARY or (
                opcode == OP_CONT and self._msg is None and not self._skip_msg
            ):
                self._garbage()
                pos = n
                break
            if opcode != OP_CONT:
                if self._msg is not None or self._skip_msg:  # the previous one never ended
                    self._count(WS_BAD_FRAME)
                self._msg = None
                self._skip_msg = False
            bad = None
            if b0 & 0x70:
                bad = WS_COMPRESSED
            elif length > limit or (self._msg is not None and len(self._msg) + length > limit):
                bad = WS_OVERSIZE
            if bad is not None or self._skip_msg:
                if bad is not None and not self._skip_msg:
                    self._count(bad)
                self._msg = None
                self._skip_msg = not fin
                avail = n - pos - hlen
                if avail >= length:
                    pos += hlen + length
                    continue
                self._skip = length - avail
                pos = n
                break
            end = pos + hlen + length
            if end > n:
                break
            payload: bytes | bytearray = buf[pos + hlen : end]
            if masked:
                payload = unmask(payload, bytes(buf[pos + hlen - 4 : pos + hlen]))
            pos = end
            if fin:
                if self._msg is None:
                    out.append(bytes(payload))
                else:
                    self._msg += payload
                    out.append(bytes(self._msg))
                    self._msg = None
            elif self._msg is None:
                self._msg = bytearray(payload)
            else:
                self._msg += payload
        if pos:
            del buf[:pos]
        self.messages += len(out)
        return out

    def _garbage(self) -> None:
        """Not a frame where one should start: drop what is held (no way to resync)."""
        self._count(WS_BAD_FRAME)
        self._buf.clear()
        self._msg = None
        self._skip_msg = False


HANDSHAKE: Final = 0
OPEN: Final = 1
FAILED: Final = 2


class WsSipFramer:
    """One direction of a SIP-over-WebSocket flow: the handshake, then SIP messages.

    ``request`` says whether this direction sent the upgrade request (the other one must
    answer 101). Same interface as ``SipStreamFramer`` (``feed``, ``errors``); ``state``
    becomes ``FAILED`` when the handshake is not an upgrade, and the direction then
    yields nothing.
    """

    __slots__ = ("_deframer", "_hs", "errors", "request", "state")

    def __init__(self, request: bool, max_message: int = MAX_MESSAGE) -> None:
        self.request = request
        self.state = HANDSHAKE
        self.errors: dict[str, int] = {}
        self._hs: WsHandshake | None = WsHandshake()
        self._deframer = WsDeframer(max_message, self.errors)

    def restart(self) -> None:
        """A TCP gap: frame boundaries are lost; start over at the next segment."""
        if self.state == OPEN:
            self._deframer = WsDeframer(self._deframer.max_message, self.errors)
        elif self.state == HANDSHAKE:
            self._hs = WsHandshake()

    def feed(self, data: bytes) -> list[SipMessage]:
        if self.state == OPEN:
            return self._messages(data)
        if self.state == FAILED or self._hs is None:
            return []
        done = self._hs.feed(data)
        if done is None:
            return []
        head, rest = done
        ok = is_upgrade_request(head) if self.request else is_upgrade_response(head)
        self._hs = None  # the header section is gone: only the verdict is kept
        if not ok:
            self.state = FAILED
            return []
        self.state = OPEN
        return self._messages(rest) if rest else []

    def _messages(self, data: bytes) -> list[SipMessage]:
        out: list[SipMessage] = []
        errors = self.errors
        for payload in self._deframer.feed(data):
            msgs, reason = parse_sip_datagram(payload)
            out += msgs
            if reason is not None:
                errors[reason] = errors.get(reason, 0) + 1
        return out
