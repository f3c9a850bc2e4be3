"""IPFIX (RFC 7011) export of flow and RTP-stream records over UDP.

Why IPFIX: it is what existing collector fleets (nfcapd/nfdump, pmacct, ElastiFlow, …)
ingest, so one sensor's records can join an operator's flow store without a new format.

* **Biflows** (RFC 5103): one data record per flow record, the initiator's counters in
  ``packetDeltaCount``/``octetDeltaCount`` and the responder's in the reverse elements
  (PEN 29305). nfdump 1.7 decodes those as ``out_packets``/``out_bytes``. Octets are
  IP-layer bytes (``ip_bytes_*``); frame bytes go in ``layer2OctetDeltaCount``.
* **Own elements** under ``export.ipfix.enterprise_number`` (default 32473, the PEN
  reserved for documentation): application label, pseudonym epochs, sensor loss and the
  RTP quality figures (see :data:`TG_IE` and docs/records.md, ``## IPFIX``).
* **Pseudonyms**: a subscriber address reaches sinks as ``a<epoch>.<Crypto-PAn address>``.
  An address field cannot carry the prefix, so the Crypto-PAn address itself is exported
  and the epoch goes in ``sourcePseudonymEpoch``/``destinationPseudonymEpoch`` (0 = clear).
* **UDP rules** (RFC 7011 §10.3): every message fits the configured path MTU; templates
  are resent by time and by message count; the header sequence number counts the data
  records sent before the message in this observation domain.

Only ``flow`` and ``rtp_stream`` records are exported; other kinds (calls, alerts) carry
pseudonymous identities that have no place in a flow collector and are skipped (counted).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

import msgspec

from trafficguard.config import IpfixConfig
from trafficguard.errors import StoreError
from trafficguard.flow.records import FlowRecord
from trafficguard.voip.records import RtpStreamRecord

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

VERSION: Final = 10
HEADER: Final = struct.Struct("!HHIII")  # version, length, export time, sequence, domain
SET_HEADER: Final = struct.Struct("!HH")  # set id, length
TEMPLATE_SET_ID: Final = 2
VARIABLE_LENGTH: Final = 0xFFFF
REVERSE_PEN: Final = 29305  # RFC 5103 reverse information elements
UDP_IPV4_OVERHEAD: Final = 20 + 8
UDP_IPV6_OVERHEAD: Final = 40 + 8
MAX_STRING: Final = 254  # one-byte length prefix (RFC 7011 §7)
U64_MAX: Final = (1 << 64) - 1
U32_MAX: Final = (1 << 32) - 1
U16_MAX: Final = (1 << 16) - 1

# IANA information elements used (id, length).
SRC_V4: Final = (8, 4)
DST_V4: Final = (12, 4)
SRC_V6: Final = (27, 16)
DST_V6: Final = (28, 16)
SRC_PORT: Final = (7, 2)
DST_PORT: Final = (11, 2)
PROTO: Final = (4, 1)
IP_VERSION: Final = (60, 1)
VLAN: Final = (58, 2)
TCP_FLAGS: Final = (6, 2)
START_MS: Final = (152, 8)
END_MS: Final = (153, 8)
END_REASON: Final = (136, 1)
PACKETS: Final = (2, 8)
OCTETS: Final = (1, 8)
L2_OCTETS: Final = (352, 8)
FLOW_ID: Final = (148, 8)

# trafficguard's own elements (under export.ipfix.enterprise_number).
TG_IE: Final = {
    "applicationLabel": (1, VARIABLE_LENGTH),  # string, closed set (flow.app)
    "sourcePseudonymEpoch": (2, 2),  # unsigned16, 0 = address in clear
    "destinationPseudonymEpoch": (3, 2),
    "sensorLoss": (4, 1),  # unsigned8, 1 = the sensor dropped packets meanwhile
    "rtpSsrc": (10, 4),
    "rtpPackets": (11, 8),
    "rtpExpectedPackets": (12, 8),
    "rtpLostPackets": (13, 8),
    "rtpJitterMeanMicroseconds": (14, 4),
    "rtpJitterMaxMicroseconds": (15, 4),
    "rtpMosX100": (16, 2),  # MOS × 100 (e.g. 441), 0 = not estimated
    "rtpPayloadType": (17, 1),
    "rtpCodec": (18, VARIABLE_LENGTH),  # string, closed set (sdp.KNOWN_CODECS, …)
}

FLOW_END_REASONS: Final = {  # flowEndReason (IE 136)
    "idle": 1,  # idle timeout
    "active": 2,  # active timeout
    "tcp_fin": 3,  # end of flow detected
    "tcp_rst": 3,
    "flush": 4,  # forced end
    "evicted": 5,  # lack of resources
}

TEMPLATE_FLOW_V4: Final = 256
TEMPLATE_FLOW_V6: Final = 257
TEMPLATE_RTP_V4: Final = 258
TEMPLATE_RTP_V6: Final = 259

_PSEUDONYM_ADDR: Final = re.compile(r"^a([1-9][0-9]*)\.(.+)$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field specifier of a template: element id, length, enterprise (0 = IANA)."""

    element: int
    length: int
    pen: int = 0

    def encode(self) -> bytes:
        if self.pen:
            return struct.pack("!HHI", self.element | 0x8000, self.length, self.pen)
        return struct.pack("!HH", self.element, self.length)


@dataclass(frozen=True, slots=True)
class Template:
    """A template id and its fields; the data records of the set follow this order."""

    template_id: int
    fields: tuple[FieldSpec, ...]

    def encode(self) -> bytes:
        return SET_HEADER.pack(self.template_id, len(self.fields)) + b"".join(
            f.encode() for f in self.fields
        )


def _iana(spec: tuple[int, int]) -> FieldSpec:
    return FieldSpec(spec[0], spec[1])


def _rev(spec: tuple[int, int]) -> FieldSpec:
    return FieldSpec(spec[0], spec[1], REVERSE_PEN)


def build_templates(pen: int) -> dict[int, Template]:
    """The four templates: flows and RTP streams, each for IPv4 and IPv6."""

    def tg(name: str) -> FieldSpec:
        element, length = TG_IE[name]
        return FieldSpec(element, length, pen)

    def key(src: tuple[int, int], dst: tuple[int, int]) -> tuple[FieldSpec, ...]:
        """Every template starts with the addresses, ports, protocol and IP version."""
        return (
            _iana(src),
            _iana(dst),
            _iana(SRC_PORT),
            _iana(DST_PORT),
            _iana(PROTO),
            _iana(IP_VERSION),
        )

    # ... and ends with the pseudonym epochs and the loss flag, then one string
    privacy = (
        tg("sourcePseudonymEpoch"),
        tg("destinationPseudonymEpoch"),
        tg("sensorLoss"),
    )

    def flow(tid: int, src: tuple[int, int], dst: tuple[int, int]) -> Template:
        return Template(
            tid,
            (
                *key(src, dst),
                _iana(VLAN),
                _rev(TCP_FLAGS),  # before the forward flags: nfdump 1.7 keeps the last one
                _iana(TCP_FLAGS),
                _iana(START_MS),
                _iana(END_MS),
                _iana(END_REASON),
                _iana(PACKETS),
                _iana(OCTETS),
                _rev(PACKETS),
                _rev(OCTETS),
                _iana(L2_OCTETS),
                _rev(L2_OCTETS),
                _iana(FLOW_ID),
                *privacy,
                tg("applicationLabel"),
            ),
        )

    def rtp(tid: int, src: tuple[int, int], dst: tuple[int, int]) -> Template:
        return Template(
            tid,
            (
                *key(src, dst),
                _iana(START_MS),
                _iana(END_MS),
                tg("rtpSsrc"),
                tg("rtpPackets"),
                tg("rtpExpectedPackets"),
                tg("rtpLostPackets"),
                tg("rtpJitterMeanMicroseconds"),
                tg("rtpJitterMaxMicroseconds"),
                tg("rtpMosX100"),
                tg("rtpPayloadType"),
                *privacy,
                tg("rtpCodec"),
            ),
        )

    templates = (
        flow(TEMPLATE_FLOW_V4, SRC_V4, DST_V4),
        flow(TEMPLATE_FLOW_V6, SRC_V6, DST_V6),
        rtp(TEMPLATE_RTP_V4, SRC_V4, DST_V4),
        rtp(TEMPLATE_RTP_V6, SRC_V6, DST_V6),
    )
    return {t.template_id: t for t in templates}


@lru_cache(maxsize=65536)
def export_address(text: str) -> tuple[int, bytes, int]:
    """``(ip version, packed address, pseudonym epoch)`` of a record's address string.

    ``a3.10.7.1.9`` (a pseudonymized subscriber) gives ``(4, 10.7.1.9, 3)``; an address in
    clear gives epoch 0. Anything else raises ValueError.
    """
    try:
        addr = ipaddress.ip_address(text)
        epoch = 0
    except ValueError:
        m = _PSEUDONYM_ADDR.match(text)
        if not m:
            raise ValueError("not an IP address or address pseudonym") from None
        addr = ipaddress.ip_address(m.group(2))
        epoch = int(m.group(1))
    return addr.version, addr.packed, min(epoch, U16_MAX)


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")[:MAX_STRING]
    return bytes((len(raw),)) + raw


def _clamp(value: int, top: int = U64_MAX) -> int:
    return 0 if value < 0 else min(value, top)


_FLOW_FIXED: Final = struct.Struct("!HHBBHHHQQBQQQQQQQHHB")
_RTP_FIXED: Final = struct.Struct("!HHBBQQIQQQIIHBHHB")


def encode_flow(rec: FlowRecord) -> tuple[int, bytes]:
    """``(template id, data record)`` of one flow record."""
    version, src, src_epoch = export_address(rec.src_addr)
    _, dst, dst_epoch = export_address(rec.dst_addr)
    tid = TEMPLATE_FLOW_V4 if version == 4 else TEMPLATE_FLOW_V6
    fixed = _FLOW_FIXED.pack(
        rec.src_port,
        rec.dst_port,
        rec.proto,
        version,
        rec.vlan & 0xFFF,
        rec.tcp_flags_rev & U16_MAX,
        rec.tcp_flags_fwd & U16_MAX,
        rec.start_ns // 1_000_000,
        rec.end_ns // 1_000_000,
        FLOW_END_REASONS.get(rec.end_reason, 4),
        _clamp(rec.packets_fwd),
        _clamp(rec.ip_bytes_fwd),
        _clamp(rec.packets_rev),
        _clamp(rec.ip_bytes_rev),
        _clamp(rec.bytes_fwd),
        _clamp(rec.bytes_rev),
        int(rec.flow_id, 16) & U64_MAX,
        src_epoch,
        dst_epoch,
        1 if rec.sensor_loss else 0,
    )
    return tid, src + dst + fixed + _string(rec.app)


def _us(ms: float) -> int:
    return _clamp(round(ms * 1000), U32_MAX)


def encode_rtp(rec: RtpStreamRecord) -> tuple[int, bytes]:
    """``(template id, data record)`` of one RTP stream record."""
    version, src, src_epoch = export_address(rec.src_addr)
    _, dst, dst_epoch = export_address(rec.dst_addr)
    tid = TEMPLATE_RTP_V4 if version == 4 else TEMPLATE_RTP_V6
    mos = 0 if rec.mos is None else _clamp(round(rec.mos * 100), U16_MAX)
    fixed = _RTP_FIXED.pack(
        rec.src_port,
        rec.dst_port,
        17,
        version,
        rec.first_ns // 1_000_000,
        rec.last_ns // 1_000_000,
        rec.ssrc & U32_MAX,
        _clamp(rec.packets),
        _clamp(rec.expected),
        _clamp(rec.lost),
        _us(rec.jitter_mean_ms),
        _us(rec.jitter_max_ms),
        mos,
        rec.payload_type & 0xFF,
        src_epoch,
        dst_epoch,
        1 if rec.sensor_loss else 0,
    )
    return tid, src + dst + fixed + _string(rec.codec)


class MessageBuilder:
    """Packs data records into IPFIX messages no larger than ``max_message_bytes``.

    No I/O: :meth:`add`, :meth:`finish` and :meth:`templates` return finished messages.
    Templates travel in messages of their own (as many as the MTU needs), sent before the
    next data message when due: at the start, then every ``refresh_s`` of ``clock`` time
    or every ``refresh_messages`` messages, whichever comes first.
    """

    def __init__(
        self,
        templates: dict[int, Template],
        *,
        domain_id: int,
        max_message_bytes: int,
        refresh_s: float,
        refresh_messages: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain_id = domain_id
        self.max_message_bytes = max_message_bytes
        self._encoded = [t.encode() for t in templates.values()]
        room = max_message_bytes - HEADER.size - SET_HEADER.size
        if max(len(t) for t in self._encoded) > room:
            raise ValueError("MTU too small for a template")
        self._refresh_s = refresh_s
        self._refresh_messages = refresh_messages
        self._clock = clock
        self.sequence = 0  # data records sent before the current message (mod 2^32)
        self.messages = 0
        self.template_messages = 0
        self._last_templates = float("-inf")
        self._since_templates = 0  # messages since (and including) the last templates
        self._sets: list[tuple[int, list[bytes]]] = []
        self._size = HEADER.size
        self._records = 0

    def templates_due(self) -> bool:
        """True when the next data message must be preceded by the templates."""
        return (
            self.template_messages == 0
            or self._since_templates >= self._refresh_messages
            or self._clock() - self._last_templates >= self._refresh_s
        )

    def templates(self) -> list[bytes]:
        """Every template, in as few messages as the MTU allows; restarts the refresh."""
        out: list[bytes] = []
        batch: list[bytes] = []
        size = HEADER.size + SET_HEADER.size
        for encoded in self._encoded:
            if batch and size + len(encoded) > self.max_message_bytes:
                out.append(self._template_message(batch))
                batch, size = [], HEADER.size + SET_HEADER.size
            batch.append(encoded)
            size += len(encoded)
        out.append(self._template_message(batch))
        self._last_templates = self._clock()
        self._since_templates = len(out)
        return out

    def _template_message(self, templates: list[bytes]) -> bytes:
        body = b"".join(templates)
        self.template_messages += 1
        return self._message(SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body)

    def add(self, template_id: int, record: bytes) -> list[bytes]:
        """Queue one data record; returns the messages it completed (and templates due)."""
        out: list[bytes] = []
        same_set = bool(self._sets) and self._sets[-1][0] == template_id
        grow = len(record) + (0 if same_set else SET_HEADER.size)
        if self._records and self._size + grow > self.max_message_bytes:
            out.append(self._finish_message())
            same_set = False
            grow = len(record) + SET_HEADER.size
        if not self._records:
            if self._size + grow > self.max_message_bytes:
                raise ValueError("a single data record does not fit the MTU")
            if self.templates_due():
                out.extend(self.templates())
        if same_set:
            self._sets[-1][1].append(record)
        else:
            self._sets.append((template_id, [record]))
        self._size += grow
        self._records += 1
        return out

    def finish(self) -> list[bytes]:
        """The pending (partial) message, if any data records are queued."""
        if not self._records:
            return []
        return [self._finish_message()]

    def _finish_message(self) -> bytes:
        body = bytearray()
        for tid, records in self._sets:
            payload = b"".join(records)
            body += SET_HEADER.pack(tid, SET_HEADER.size + len(payload))
            body += payload
        msg = self._message(bytes(body))
        self.sequence = (self.sequence + self._records) & U32_MAX
        self._sets = []
        self._size = HEADER.size
        self._records = 0
        return msg

    def _message(self, body: bytes) -> bytes:
        """Header + body; the header's sequence counts data records of earlier messages."""
        self.messages += 1
        self._since_templates += 1
        export_s = int(self._clock()) & U32_MAX
        header = HEADER.pack(
            VERSION, HEADER.size + len(body), export_s, self.sequence, self.domain_id
        )
        return header + body


class IpfixExporter:
    """RecordSink: flow (and RTP stream) records → IPFIX messages to one UDP collector.

    ``write`` sends every message it fills; ``flush`` sends the partial one. A failed
    ``sendto`` is counted in ``send_errors`` (UDP export is lossy by nature; the collector
    sees the gap in the sequence numbers), never fatal to the pipeline. ``send`` replaces
    the UDP socket in tests.
    """

    def __init__(
        self,
        cfg: IpfixConfig,
        *,
        clock: Callable[[], float] = time.time,
        send: Callable[[bytes], None] | None = None,
    ) -> None:
        self.cfg = cfg
        host, port = cfg.host_port
        self._sock: socket.socket | None = None
        overhead = UDP_IPV4_OVERHEAD
        if send is None:
            try:
                family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as err:
                raise StoreError(f"ipfix collector {cfg.collector}: {err}") from None
            if family == socket.AF_INET6:
                overhead = UDP_IPV6_OVERHEAD
            sock, target = self._sock, addr

            def send(data: bytes) -> None:
                sock.sendto(data, target)

        self._send = send
        self.builder = MessageBuilder(
            build_templates(cfg.enterprise_number),
            domain_id=cfg.observation_domain_id,
            max_message_bytes=cfg.mtu - overhead,
            refresh_s=cfg.template_refresh_s,
            refresh_messages=cfg.template_refresh_messages,
            clock=clock,
        )
        self.records_exported: dict[str, int] = {}
        self.records_skipped: dict[str, int] = {}
        self.messages_sent = 0
        self.send_errors = 0
        self._closed = False
        self._deliver(self.builder.templates())

    def _deliver(self, messages: list[bytes]) -> None:
        for msg in messages:
            try:
                self._send(msg)
                self.messages_sent += 1
            except OSError:
                self.send_errors += 1

    def write(self, records: Sequence[msgspec.Struct]) -> None:
        """Encode a batch; send each message as soon as it is full."""
        if self._closed:
            raise StoreError(f"ipfix collector {self.cfg.collector}: sink is closed")
        rtp = self.cfg.rtp_streams
        for rec in records:
            kind: str = type(rec).kind  # type: ignore[attr-defined]
            try:
                if isinstance(rec, FlowRecord):
                    tid, data = encode_flow(rec)
                elif rtp and isinstance(rec, RtpStreamRecord):
                    tid, data = encode_rtp(rec)
                else:
                    self.records_skipped[kind] = self.records_skipped.get(kind, 0) + 1
                    continue
            except ValueError:  # an address that is neither IP nor pseudonym
                self.records_skipped[kind] = self.records_skipped.get(kind, 0) + 1
                continue
            self._deliver(self.builder.add(tid, data))
            self.records_exported[kind] = self.records_exported.get(kind, 0) + 1

    def flush(self) -> None:
        """Send the partially filled message."""
        if not self._closed:
            self._deliver(self.builder.finish())

    def close(self) -> None:
        """Send what is pending and close the socket. Idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._sock is not None:
            self._sock.close()

    def collect(self) -> Iterator[Metric]:
        """Export counters for ``/metrics`` (the stage ``collect`` contract; scrape thread)."""
        from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415 (scrape only)

        yield CounterMetricFamily(
            "trafficguard_ipfix_messages",
            "IPFIX messages sent to the collector (templates included)",
            value=self.messages_sent,
        )
        records = CounterMetricFamily(
            "trafficguard_ipfix_records",
            "Records exported as IPFIX data records, by record kind",
            labels=["kind"],
        )
        for kind, n in sorted(dict(self.records_exported).items()):
            records.add_metric([kind], n)
        yield records
        yield CounterMetricFamily(
            "trafficguard_ipfix_send_errors",
            "IPFIX messages whose send failed (lost; the collector sees a sequence gap)",
            value=self.send_errors,
        )
        skipped = CounterMetricFamily(
            "trafficguard_ipfix_records_skipped",
            "Records not exported (kind without a template, or an unexportable address)",
            labels=["kind"],
        )
        for kind, n in sorted(dict(self.records_skipped).items()):
            skipped.add_metric([kind], n)
        yield skipped
