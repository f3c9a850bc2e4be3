"""SDP (RFC 8866) parsing: just what call records and RTP quality need.

From an offer or answer we keep the media endpoints (``c=`` + ``m=`` port, to tie RTP
flows to calls), the payload types with their codec and clock rate (``m=`` + ``a=rtpmap``
or the static table of RFC 3551), and the direction attribute (hold detection). The
``o=`` and ``s=`` lines, SDES-like attributes and everything else are skipped: they can
hold user names and are not needed.

Codec names come from the wire, so they are mapped onto a closed set (``KNOWN_CODECS``,
anything else becomes ``"other"``): a record or a metric label can never carry free text
a peer chose (such as a phone number smuggled into an rtpmap line).
"""

from __future__ import annotations

import ipaddress
from typing import Final, NamedTuple

# RFC 3551 table 4/5 static payload types: pt -> (codec, clock rate).
STATIC_PAYLOAD_TYPES: Final[dict[int, tuple[str, int]]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),  # RFC 3551: the RTP clock is 8000 although G.722 samples at 16 kHz
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
    25: ("CelB", 90000),
    26: ("JPEG", 90000),
    28: ("nv", 90000),
    31: ("H261", 90000),
    32: ("MPV", 90000),
    33: ("MP2T", 90000),
    34: ("H263", 90000),
}

# Canonical spelling of every codec name a record may carry (keys are lower-case).
_CANONICAL: Final = {
    name.lower(): name
    for name in (
        "PCMU",
        "PCMA",
        "G722",
        "G7221",
        "G723",
        "G726-16",
        "G726-24",
        "G726-32",
        "G726-40",
        "G728",
        "G729",
        "G729D",
        "G729E",
        "GSM",
        "GSM-EFR",
        "DVI4",
        "LPC",
        "L8",
        "L16",
        "QCELP",
        "CN",
        "MPA",
        "iLBC",
        "SILK",
        "speex",
        "opus",
        "AMR",
        "AMR-WB",
        "EVS",
        "G719",
        "telephone-event",
        "red",
        "ulpfec",
        "rtx",
        "H261",
        "H263",
        "H263-1998",
        "H263-2000",
        "H264",
        "H265",
        "VP8",
        "VP9",
        "AV1",
        "JPEG",
        "MPV",
        "MP2T",
        "CelB",
        "nv",
        "T140",
    )
}
KNOWN_CODECS: Final = frozenset(_CANONICAL.values())
OTHER_CODEC: Final = "other"
UNKNOWN_CODEC: Final = "unknown"  # dynamic payload type without an rtpmap

DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_MEDIA: Final = 16  # m= lines kept per description
MAX_FORMATS: Final = 64  # payload types kept per m= line


def canonical_codec(name: str) -> str:
    """The closed-set spelling of a codec name, or ``"other"``."""
    return _CANONICAL.get(name.strip().lower(), OTHER_CODEC)


def codec_of(pt: int, rtpmap: dict[int, tuple[str, int]] | None = None) -> tuple[str, int]:
    """(codec, clock rate) of payload type ``pt``; rtpmap overrides the static table."""
    if rtpmap is not None:
        hit = rtpmap.get(pt)
        if hit is not None:
            return hit
    static = STATIC_PAYLOAD_TYPES.get(pt)
    if static is not None:
        return static
    return UNKNOWN_CODEC, 0


class SdpMedia(NamedTuple):
    """One ``m=`` section with session-level defaults already applied."""

    media: str  # "audio", "video", ... ("other" if not one of the RFC 8866 names)
    port: int  # 0 means the stream is rejected/disabled
    proto: str  # "RTP/AVP", "RTP/SAVP", ... ("other" if unrecognised)
    payload_types: tuple[int, ...]
    address: str  # normalised IP address ("" when absent or not an IP literal)
    rtpmap: dict[int, tuple[str, int]]  # pt -> (canonical codec, clock rate)
    direction: str  # one of DIRECTIONS
    ptime_ms: int  # 0 when not given

    def codecs(self) -> list[str]:
        """Codec names of the payload types, in preference order."""
        return [codec_of(pt, self.rtpmap)[0] for pt in self.payload_types]

    def endpoint(self) -> str:
        """``addr:port`` (``[v6]:port``) of the media, or "" when disabled or unknown."""
        if not self.port or not self.address:
            return ""
        if ":" in self.address:
            return "[" + self.address + "]:" + str(self.port)
        return self.address + ":" + str(self.port)

    @property
    def on_hold(self) -> bool:
        """Hold as signalled in an offer: sendonly/inactive, or the RFC 2543 0.0.0.0."""
        return self.direction in ("sendonly", "inactive") or self.address == "0.0.0.0"


class SdpInfo(NamedTuple):
    """What a session description says about its media."""

    address: str  # session-level c= (normalised IP, or "")
    direction: str  # session-level direction attribute (default sendrecv)
    media: list[SdpMedia]

    @property
    def on_hold(self) -> bool:
        """True when every enabled audio stream is on hold (or none is enabled)."""
        audio = [m for m in self.media if m.media == "audio" and m.port]
        return bool(audio) and all(m.on_hold for m in audio)

    def endpoints(self) -> list[str]:
        """``addr:port`` of every enabled stream with a usable address."""
        return [e for e in (m.endpoint() for m in self.media) if e]

    def codecs(self) -> list[str]:
        """Codec names across enabled streams, first occurrence order, no duplicates."""
        seen: dict[str, None] = {}
        for m in self.media:
            if m.port:
                for c in m.codecs():
                    seen.setdefault(c, None)
        return list(seen)


_MEDIA_TYPES: Final = frozenset({"audio", "video", "text", "application", "message", "image"})
_PROTOS: Final = frozenset(
    {
        "RTP/AVP",
        "RTP/SAVP",
        "RTP/AVPF",
        "RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "UDP/TLS/RTP/SAVPF",
        "UDP",
        "TCP",
        "udptl",
        "TCP/RTP/AVP",
        "TCP/MSRP",
        "TCP/TLS/MSRP",
    }
)


def _address(value: str) -> str:
    # c=IN IP4 192.0.2.1[/ttl[/n]]
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        return ""
    addr = parts[2].split("/", 1)[0]
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return ""  # FQDN or garbage: not usable to tie RTP, and not kept


class _MediaBuilder:
    __slots__ = (
        "address",
        "direction",
        "media",
        "payload_types",
        "port",
        "proto",
        "ptime",
        "rtpmap",
    )

    def __init__(self, media: str, port: int, proto: str, pts: tuple[int, ...]) -> None:
        self.media = media
        self.port = port
        self.proto = proto
        self.payload_types = pts
        self.address = ""
        self.direction = ""
        self.rtpmap: dict[int, tuple[str, int]] = {}
        self.ptime = 0


def _int(text: str, default: int = -1) -> int:
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 9:
        return int(text)
    return default


def parse_sdp(body: bytes) -> SdpInfo:
    """Parse a session description; lenient, never raises on malformed lines.

    Unknown or malformed lines are skipped: an SDP we cannot read simply yields fewer
    media, which the tracker treats as "no media information".
    """
    text = body.decode("latin-1")
    session_addr = ""
    session_dir = ""
    media: list[_MediaBuilder] = []
    cur: _MediaBuilder | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if len(line) < 2 or line[1] != "=":
            continue
        kind = line[0]
        value = line[2:]
        if kind == "m":
            if len(media) >= MAX_MEDIA:
                cur = None
                continue
            parts = value.split()
            if len(parts) < 3:
                cur = None
                continue
            mtype = parts[0] if parts[0] in _MEDIA_TYPES else "other"
            port = _int(parts[1].split("/", 1)[0])
            if not 0 <= port <= 65535:
                cur = None
                continue
            proto = parts[2] if parts[2] in _PROTOS else "other"
            pts = tuple(
                int(p)
                for p in parts[3 : 3 + MAX_FORMATS]
                if p.isascii() and p.isdigit() and int(p) < 128
            )
            cur = _MediaBuilder(mtype, port, proto, pts)
            media.append(cur)
        elif kind == "c":
            addr = _address(value)
            if cur is None:
                session_addr = addr
            else:
                cur.address = addr
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name in DIRECTIONS:
                if cur is None:
                    session_dir = name
                else:
                    cur.direction = name
            elif name == "rtpmap" and cur is not None:
                pt_text, _, enc = rest.partition(" ")
                pt = _int(pt_text)
                if 0 <= pt < 128 and len(cur.rtpmap) < MAX_FORMATS:
                    enc_parts = enc.strip().split("/")
                    rate = _int(enc_parts[1]) if len(enc_parts) > 1 else 0
                    cur.rtpmap[pt] = (canonical_codec(enc_parts[0]), max(rate, 0))
            elif name == "ptime" and cur is not None:
                cur.ptime = max(_int(rest.split(".", 1)[0], 0), 0)
    out = [
        SdpMedia(
            m.media,
            m.port,
            m.proto,
            m.payload_types,
            m.address or session_addr,
            m.rtpmap,
            m.direction or session_dir or "sendrecv",
            m.ptime,
        )
        for m in media
    ]
    return SdpInfo(session_addr, session_dir or "sendrecv", out)
