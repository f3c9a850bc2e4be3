"""SIP message parsing (RFC 3261 §7, §18.3, §20) and TCP stream framing.

Bytes in, ``SipMessage`` out, no I/O. A ``SipMessage`` holds header values and the body
*transiently*: they are personal data (URIs, numbers, display names, Call-IDs) that the
dialog tracker reads once and turns into pseudonyms and classes. Nothing here logs, and
``SipMessage.__repr__`` shows no header value, because reprs end up in tracebacks.

Garbage raises ``SipParseError`` whose ``reason`` is one of ``SIP_PARSE_REASONS`` (a
closed set, so counters and metric labels stay bounded, like Zeek's weirds). It derives
from ``DecodeError`` so the packet loop counts it in the same place as decoder errors.

Transports: over UDP a datagram normally holds one message and a missing Content-Length
means "the rest of the datagram" (§18.3); ``parse_sip_datagram`` also accepts several
messages in one datagram. Over TCP Content-Length is mandatory and ``SipStreamFramer``
(one per direction) turns segments into messages with a bounded buffer, scanning every
byte once (h11's receive buffer is the model).
"""

from __future__ import annotations

from typing import Final

from trafficguard.errors import DecodeError

# -- the closed set of reasons -------------------------------------------------------------
NOT_SIP: Final = "not_sip"  # the first line is neither a request nor a status line
BAD_START_LINE: Final = "bad_start_line"  # looks like SIP but the start line is malformed
BAD_STATUS_CODE: Final = "bad_status_code"
BAD_HEADER_LINE: Final = "bad_header_line"  # no colon, bad header name, leading fold
TOO_MANY_HEADERS: Final = "too_many_headers"
MISSING_HEADER: Final = "missing_header"  # no Call-ID or CSeq: nothing to track by
BAD_CSEQ: Final = "bad_cseq"
BAD_CONTENT_LENGTH: Final = "bad_content_length"
TRUNCATED_BODY: Final = "truncated_body"  # UDP: fewer body bytes than Content-Length
OVERSIZE: Final = "oversize"  # header section or body beyond the configured bound
TRAILING_GARBAGE: Final = "trailing_garbage"  # UDP: bytes after a message that are not SIP

SIP_PARSE_REASONS: Final = (
    NOT_SIP,
    BAD_START_LINE,
    BAD_STATUS_CODE,
    BAD_HEADER_LINE,
    TOO_MANY_HEADERS,
    MISSING_HEADER,
    BAD_CSEQ,
    BAD_CONTENT_LENGTH,
    TRUNCATED_BODY,
    OVERSIZE,
    TRAILING_GARBAGE,
)

# Methods counted by name; anything else is counted as "OTHER" so that a peer cannot grow
# the counter dicts (and metric label sets) by inventing methods.
KNOWN_METHODS: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "MESSAGE",
        "SUBSCRIBE",
        "NOTIFY",
        "INFO",
        "UPDATE",
        "PRACK",
        "REFER",
        "PUBLISH",
    }
)
OTHER_METHOD: Final = "OTHER"

MAX_HEADER_BYTES: Final = 16384
MAX_BODY_BYTES: Final = 65536
MAX_HEADERS: Final = 256

# RFC 3261 §7.3.3 and later RFCs' compact header names.
COMPACT_FORMS: Final = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}
# Headers whose comma-separated values are separate entries (split quote/angle-aware).
_LIST_HEADERS: Final = frozenset({"via", "contact", "route", "record-route"})
_TOKEN_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_CRLF2: Final = b"\r\n\r\n"


class SipParseError(DecodeError):
    """A SIP message could not be parsed; ``reason`` is one of SIP_PARSE_REASONS."""


class SipMessage:
    """One parsed SIP request or response: transient, never stored or logged.

    ``method`` is the request method, or for a response the CSeq method (what the
    tracker needs); ``status`` is 0 for requests. Header names are lower-case long
    forms; ``headers`` maps each to its values in order (Via/Contact/Route/Record-Route
    split at top-level commas). The frequently used fields are extracted once here.
    """

    __slots__ = (
        "body",
        "branch",
        "call_id",
        "content_length",
        "cseq",
        "from_tag",
        "headers",
        "method",
        "status",
        "to_tag",
        "uri",
    )

    def __init__(
        self,
        *,
        method: str,
        status: int,
        uri: str,
        headers: dict[str, list[str]],
        call_id: str,
        cseq: int,
        from_tag: str,
        to_tag: str,
        branch: str,
        content_length: int | None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.status = status
        self.uri = uri
        self.headers = headers
        self.call_id = call_id
        self.cseq = cseq
        self.from_tag = from_tag
        self.to_tag = to_tag
        self.branch = branch
        self.content_length = content_length
        self.body = body

    @property
    def is_request(self) -> bool:
        """True for a request, False for a response."""
        return self.status == 0

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (long lower-case name), or None."""
        values = self.headers.get(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` in message order (empty list if absent)."""
        return self.headers.get(name, [])

    def __repr__(self) -> str:  # no header values: they are personal data
        kind = "request" if self.status == 0 else f"response {self.status}"
        return f"SipMessage({kind}, method={self.method}, cseq={self.cseq})"


def split_list(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and angle brackets."""
    if "," not in value:
        return [value.strip()]
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def header_params(value: str) -> str:
    """The header-parameter part of a name-addr/addr-spec value (after ``>`` or ``;``).

    In ``"A" <sip:a@h;transport=tcp>;tag=x`` the URI parameters are inside the angle
    brackets and do not count; without brackets every ``;param`` is a header parameter
    (RFC 3261 §20.10).
    """
    gt = value.rfind(">")
    if gt >= 0:
        return value[gt + 1 :]
    semi = value.find(";")
    return value[semi:] if semi >= 0 else ""


def param(params: str, name: str) -> str:
    """Value of ``;name=value`` in a parameter string (case-insensitive name), or ""."""
    if not params:
        return ""
    for item in params.split(";"):
        key, sep, val = item.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"') if sep else ""
    return ""


def _decode(raw: bytes) -> str:
    # UTF-8 is what SIP mandates; fall back to Latin-1 so odd bytes never raise and the
    # same bytes always give the same text (hence the same pseudonyms).
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_start(line: str) -> tuple[str, int, str]:
    """(method, status, uri) of a start line; method is "" for a status line."""
    if line[:4].upper() == "SIP/":
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
            raise SipParseError(BAD_START_LINE)
        code = parts[1]
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or not ("1" <= code[0] <= "6"):
            raise SipParseError(BAD_STATUS_CODE)
        return "", int(code), ""
    parts = line.split(" ")
    if len(parts) != 3:
        if parts and parts[-1].upper() == "SIP/2.0":
            raise SipParseError(BAD_START_LINE)
        raise SipParseError(NOT_SIP)
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        raise SipParseError(NOT_SIP)
    if not method or not method.isascii() or not method.isalpha() or not method.isupper():
        raise SipParseError(BAD_START_LINE)
    if ":" not in uri:
        raise SipParseError(BAD_START_LINE)
    return method, 0, uri


def parse_head(raw: bytes) -> SipMessage:
    """Parse a start line plus header lines (no blank line, no body).

    Folded lines (leading SP/HT) continue the previous header (RFC 3261 §7.3.1); bare
    LF line ends are tolerated. Raises ``SipParseError``.
    """
    text = _decode(raw)
    lines = text.split("\n")
    start = lines[0].rstrip("\r").strip()
    if not start:
        raise SipParseError(NOT_SIP)
    method, status, uri = _parse_start(start)
    if len(lines) > MAX_HEADERS + 1:
        raise SipParseError(TOO_MANY_HEADERS)
    headers: dict[str, list[str]] = {}
    last_name = ""
    for i in range(1, len(lines)):
        line = lines[i].rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if not last_name:
                raise SipParseError(BAD_HEADER_LINE)
            values = headers[last_name]
            values[-1] = values[-1] + " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN_CHARS.issuperset(name):
            raise SipParseError(BAD_HEADER_LINE)
        key = name.lower()
        key = COMPACT_FORMS.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last_name = key
    for key in _LIST_HEADERS:
        listed = headers.get(key)
        if listed and any("," in v for v in listed):
            headers[key] = [p for v in listed for p in split_list(v)]

    call_ids = headers.get("call-id")
    cseqs = headers.get("cseq")
    if not call_ids or not call_ids[0] or not cseqs:
        raise SipParseError(MISSING_HEADER)
    num, _, cseq_method = cseqs[0].partition(" ")
    cseq_method = cseq_method.strip()
    if not (num.isascii() and num.isdigit()) or len(num) > 10 or not cseq_method:
        raise SipParseError(BAD_CSEQ)
    cseq = int(num)
    if cseq >= 1 << 31:
        raise SipParseError(BAD_CSEQ)
    if status:  # a response's method is the one its CSeq names (RFC 3261 §8.1.3.1)
        method = cseq_method if cseq_method.isupper() and cseq_method.isalpha() else ""
        if not method:
            raise SipParseError(BAD_CSEQ)

    content_length: int | None = None
    lengths = headers.get("content-length")
    if lengths:
        first = lengths[0]
        if (
            not (first.isascii() and first.isdigit())
            or len(first) > 9
            or any(v != first for v in lengths)
        ):
            raise SipParseError(BAD_CONTENT_LENGTH)
        content_length = int(first)

    from_values = headers.get("from")
    to_values = headers.get("to")
    vias = headers.get("via")
    from_tag = param(header_params(from_values[0]), "tag") if from_values else ""
    to_tag = param(header_params(to_values[0]), "tag") if to_values else ""
    branch = ""
    if vias:
        semi = vias[0].find(";")
        if semi >= 0:
            branch = param(vias[0][semi:], "branch")
    return SipMessage(
        method=method,
        status=status,
        uri=uri,
        headers=headers,
        call_id=call_ids[0],
        cseq=cseq,
        from_tag=from_tag,
        to_tag=to_tag,
        branch=branch,
        content_length=content_length,
    )


def _skip_blank(data: bytes, pos: int) -> int:
    n = len(data)
    while pos < n and data[pos] in b"\r\n \t":
        pos += 1
    return pos


def _parse_one(data: bytes, pos: int) -> tuple[SipMessage, int]:
    """Parse the message at ``pos`` of a datagram; returns it and the next offset."""
    n = len(data)
    end = data.find(_CRLF2, pos)
    if end >= 0:
        body_start = end + 4
    else:
        end = data.find(b"\n\n", pos)
        if end >= 0:
            body_start = end + 2
        else:  # no blank line: a header-only message cut at the datagram end
            end = body_start = n
    if end - pos > MAX_HEADER_BYTES:
        raise SipParseError(OVERSIZE)
    msg = parse_head(data[pos:end])
    cl = msg.content_length
    if cl is None:
        stop = n
    else:
        if cl > MAX_BODY_BYTES:
            raise SipParseError(OVERSIZE)
        stop = body_start + cl
        if stop > n:
            raise SipParseError(TRUNCATED_BODY)
    msg.body = data[body_start:stop]
    return msg, stop


def parse_sip(data: bytes) -> SipMessage | None:
    """Parse the first SIP message of a datagram or buffer.

    Returns None when ``data`` holds only blank lines (a CRLF keep-alive, RFC 5626) and
    raises ``SipParseError`` on anything that is not a well-formed SIP message.
    """
    pos = _skip_blank(data, 0)
    if pos >= len(data):
        return None
    return _parse_one(data, pos)[0]


def parse_sip_datagram(data: bytes) -> tuple[list[SipMessage], str | None]:
    """Every SIP message in one UDP datagram, and the reason parsing stopped early.

    The reason is None when the whole datagram was consumed; otherwise the messages
    before the bad part are still returned so one trailing bad message does not hide
    the good ones. Never raises.
    """
    out: list[SipMessage] = []
    pos = _skip_blank(data, 0)
    n = len(data)
    while pos < n:
        try:
            msg, pos = _parse_one(data, pos)
        except SipParseError as exc:
            reason = exc.reason if not out or exc.reason != NOT_SIP else TRAILING_GARBAGE
            return out, reason
        out.append(msg)
        pos = _skip_blank(data, pos)
    return out, None


def drop_skipped(data: bytes, skip: int) -> tuple[bytes | None, int]:
    """A stream framer's input after ``skip`` bytes still to discard (an oversize body or
    frame): the bytes left, or None when the skip takes all of them, and the skip left."""
    if not skip:
        return data, 0
    if len(data) <= skip:
        return None, skip - len(data)
    return data[skip:], 0


class SipStreamFramer:
    """Turns one direction of a SIP-over-TCP stream into messages.

    Bytes in (``feed``), messages out. Every byte is scanned for the end of a header
    section at most once (the search restarts 3 bytes before where the last one stopped)
    and consumed bytes are dropped once per ``feed``, so the work is O(n) however the
    stream is segmented. The buffer never holds more than ``max_header_bytes +
    max_body_bytes`` after ``feed`` returns: a header section that grows beyond its bound
    is dropped, a body beyond its bound is skipped by count without being buffered, and a
    malformed header section is dropped whole; each is counted in ``errors`` by reason.
    """

    __slots__ = (
        "_body_start",
        "_buf",
        "_pending",
        "_scan",
        "_skip",
        "errors",
        "max_body_bytes",
        "max_header_bytes",
        "messages",
    )

    def __init__(
        self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next search for CRLFCRLF may start
        self._skip = 0  # bytes of an oversize body still to discard
        self._pending: SipMessage | None = None
        self._body_start = 0
        self.errors: dict[str, int] = {}
        self.messages = 0

    @property
    def max_buffer(self) -> int:
        """The most bytes held between ``feed`` calls."""
        return self.max_header_bytes + self.max_body_bytes

    @property
    def buffered(self) -> int:
        """Bytes currently held (an incomplete message)."""
        return len(self._buf)

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def feed(self, data: bytes) -> list[SipMessage]:
        """Add the next bytes of this direction; return the messages they completed."""
        rest, self._skip = drop_skipped(data, self._skip)
        if rest is None:
            return []
        data = rest
        buf = self._buf
        buf += data
        out: list[SipMessage] = []
        start = 0
        n = len(buf)
        max_head = self.max_header_bytes
        while True:
            pending = self._pending
            if pending is not None:
                need = pending.content_length or 0
                body_start = self._body_start
                if n - body_start < need:
                    break
                pending.body = bytes(buf[body_start : body_start + need])
                out.append(pending)
                self._pending = None
                start = body_start + need
                self._scan = start
                continue
            while start < n and buf[start] in b"\r\n":  # CRLF keep-alives between messages
                start += 1
            if start >= n:
                self._scan = start
                break
            i = buf.find(_CRLF2, max(self._scan - 3, start))
            if i < 0:
                self._scan = n
                if n - start > max_head:
                    self._count(OVERSIZE)
                    start = self._scan = n
                break
            head_end = i + 4
            self._scan = head_end
            if i - start > max_head:
                self._count(OVERSIZE)
                start = head_end
                continue
            try:
                msg = parse_head(bytes(buf[start:i]))
            except SipParseError as exc:
                self._count(exc.reason)
                start = head_end
                continue
            cl = msg.content_length or 0
            if cl > self.max_body_bytes:
                self._count(OVERSIZE)
                avail = n - head_end
                if avail >= cl:
                    start = self._scan = head_end + cl
                else:
                    self._skip = cl - avail
                    start = self._scan = n
                continue
            self._pending = msg
            self._body_start = head_end
        if start:
            del buf[:start]
            self._scan = max(0, self._scan - start)
            self._body_start -= start
        self.messages += len(out)
        return out
