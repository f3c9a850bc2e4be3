#!/usr/bin/env python3
"""Write the VoIP scenario captures in ``tests/data/voip/`` and their ``labels.json``.

Each capture is one SIP situation a NOC engineer meets (answered, busy, cancelled,
challenged, forked, held, over TCP, fragmented, 3 hours long, impaired RTP, REGISTER,
non-call methods, an SDP answer in a reliable 183). ``labels.json`` says, per file, what
the VoIP stage must report: the call, registration and RTP stream facts that follow
from how the capture was built (not from running trafficguard), plus every *canary*
planted in it: display names, SIP URI users and hosts, phone numbers, Call-IDs,
message bodies, SDP user/session names, RTCP SDES items and RTP payload bytes. None of
them may ever reach an output in metadata mode (``tests/unit/test_voip_scenarios.py``
greps for them).

Deterministic like ``scripts/make_sample_pcaps.py``: fixed MACs, IP ids, ports, tags,
branches, sequence numbers and microsecond timestamps; the pcap writer is our own.
Running the script twice gives byte-identical files (the test checks it against the
committed copies). Only documentation/private address ranges are used; nothing is sent.

Usage: scripts/make_voip_scenarios.py [OUT_DIR]   (default: tests/data/voip/)
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

BASE_S = 1_700_000_000  # 2023-11-14T22:13:20Z; scenario i starts i days later
DAY_S = 86_400
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
RTP_HEADER = struct.Struct("!BBHII")
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
MAC_SUBSCRIBER = "02:00:00:00:01:01"
MAC_NETWORK = "02:00:00:00:01:02"

PROXY = ("203.0.113.10", 5060)  # the operator's SBC / proxy: the monitored access leg
MEDIA_GW = "203.0.113.20"  # media gateway the SBC anchors RTP on
PTIME_MS = 20
SAMPLES = 160  # 20 ms of 8 kHz audio

Addr = tuple[str, int]
Record = tuple[int, bytes]  # (µs since the epoch, Ethernet frame)


def write_pcap(path: Path, records: list[Record]) -> None:
    """Classic little-endian µs pcap, records in time order (stable for equal times)."""
    with path.open("wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        for ts_us, frame in sorted(records, key=lambda r: r[0]):
            f.write(PCAP_RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)


def ether(src_ip: str) -> Ether:
    """Fixed MACs: subscriber side (10/8) or network side."""
    if src_ip.startswith("10."):
        return Ether(src=MAC_SUBSCRIBER, dst=MAC_NETWORK)
    return Ether(src=MAC_NETWORK, dst=MAC_SUBSCRIBER)


# --------------------------------------------------------------------------- captures


@dataclass
class Capture:
    """The frames of one scenario file and the facts its label needs."""

    base_us: int
    records: list[Record] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    canaries: list[dict[str, str]] = field(default_factory=list)

    def at(self, ms: float) -> int:
        """Packet time ``ms`` milliseconds after the scenario start, in µs."""
        return self.base_us + round(ms * 1000)

    def canary(self, kind: str, value: str) -> str:
        """Remember a planted value (returned for inline use)."""
        entry = {"kind": kind, "value": value}
        if entry not in self.canaries:
            self.canaries.append(entry)
        return value

    def count_sip(self, msg: bytes) -> None:
        """Account a SIP message like ``tshark -z sip,stat`` does (requests by method)."""
        first = msg.split(b"\r\n", 1)[0].decode()
        if first.startswith("SIP/2.0 "):
            self.responses[int(first.split()[1])] += 1
        else:
            self.requests[first.split()[0]] += 1

    def udp(self, ms: float, src: Addr, dst: Addr, payload: bytes, ip_id: int = 0) -> None:
        """One UDP datagram (DF set, so it is never mistaken for a fragment)."""
        pkt = (
            ether(src[0])
            / IP(src=src[0], dst=dst[0], id=ip_id, flags="DF", ttl=64)
            / UDP(sport=src[1], dport=dst[1])
            / Raw(payload)
        )
        self.records.append((self.at(ms), bytes(pkt)))

    def sip(self, ms: float, msg: Msg) -> None:
        """A SIP message over UDP."""
        self.count_sip(msg.data)
        self.udp(ms, msg.src, msg.dst, msg.data)

    def rtp(self, stream: RtpStream) -> None:
        """Every packet of an RTP stream, as planned."""
        for ms, payload in stream.packets():
            self.udp(ms, stream.src, stream.dst, payload)


@dataclass(frozen=True)
class Msg:
    """One SIP message on the wire: sender, receiver, bytes."""

    src: Addr
    dst: Addr
    data: bytes


def sip_bytes(start: str, headers: list[tuple[str, str]], body: bytes, ctype: str) -> bytes:
    """A SIP message with CRLF line ends and a correct Content-Length."""
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Ua:
    """A SIP party: display name, URI user and host (all canaries), signalling address."""

    display: str
    user: str
    host: str
    addr: Addr

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.host}"

    @property
    def name_addr(self) -> str:
        return f'"{self.display}" <{self.aor}>'

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]}>"


@dataclass(frozen=True)
class Req:
    """A request as sent, so that responses can copy its Via/From/To/Call-ID/CSeq."""

    msg: Msg
    via: str
    frm: str
    to: str
    call_id: str
    cseq: str


class Dialog:
    """Builds the requests and responses of one SIP dialog (caller ↔ callee/proxy)."""

    def __init__(
        self,
        caller: Ua,
        callee: Ua,
        call_id: str,
        from_tag: str,
        transport: str = "UDP",
        branch_prefix: str = "z9hG4bK",
    ) -> None:
        self.caller, self.callee = caller, callee
        self.call_id = call_id
        self.from_tag = from_tag
        self.transport = transport
        self._branch_prefix = branch_prefix
        self._branches = 0

    def _branch(self) -> str:
        self._branches += 1
        return f"{self._branch_prefix}{self.from_tag}{self._branches:03d}"

    def request(
        self,
        method: str,
        cseq: int,
        *,
        to_tag: str = "",
        from_callee: bool = False,
        body: bytes = b"",
        ctype: str = "application/sdp",
        extra: tuple[tuple[str, str], ...] = (),
        branch: str = "",
        ruri: str = "",
    ) -> Req:
        """A request; ``from_callee`` for in-dialog requests the callee sends (its BYE)."""
        if from_callee:
            sender, receiver = self.callee, self.caller
            frm = f"{self.callee.name_addr};tag={to_tag}"
            to = f"{self.caller.name_addr};tag={self.from_tag}"
            ruri = self.caller.contact.strip("<>")
        else:
            sender, receiver = self.caller, self.callee
            frm = f"{self.caller.name_addr};tag={self.from_tag}"
            to = self.callee.name_addr + (f";tag={to_tag}" if to_tag else "")
            ruri = ruri or self.callee.aor
        via = f"SIP/2.0/{self.transport} {sender.addr[0]}:{sender.addr[1]};branch="
        via += branch or self._branch()
        cseq_value = f"{cseq} {method}"
        headers = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", frm),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", cseq_value),
        ]
        if method in ("INVITE", "REGISTER", "SUBSCRIBE", "NOTIFY"):
            headers.append(("Contact", sender.contact))
        headers.extend(extra)
        data = sip_bytes(f"{method} {ruri} SIP/2.0", headers, body, ctype)
        return Req(Msg(sender.addr, receiver.addr, data), via, frm, to, self.call_id, cseq_value)

    def response(
        self,
        req: Req,
        code: int,
        reason: str,
        *,
        to_tag: str = "",
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Msg:
        """The response to ``req`` (the To gets ``to_tag`` unless it already has one)."""
        to = req.to if ";tag=" in req.to or not to_tag else f"{req.to};tag={to_tag}"
        headers = [
            ("Via", req.via),
            ("From", req.frm),
            ("To", to),
            ("Call-ID", req.call_id),
            ("CSeq", req.cseq),
        ]
        if 200 <= code < 300 and req.cseq.endswith("INVITE"):
            responder = self.callee if req.msg.src == self.caller.addr else self.caller
            headers.append(("Contact", responder.contact))
        headers.extend(extra)
        data = sip_bytes(f"SIP/2.0 {code} {reason}", headers, body, "application/sdp")
        return Msg(req.msg.dst, req.msg.src, data)


def sdp(
    addr: str,
    port: int,
    *,
    user: str,
    session: str,
    version: int = 1,
    pts: tuple[int, ...] = (0, 8, 101),
    direction: str = "sendrecv",
    padding_lines: int = 0,
) -> bytes:
    """An audio offer/answer; ``user``/``session`` (o= and s= lines) are canaries."""
    lines = [
        "v=0",
        f"o={user} 1000 {version} IN IP4 {addr}",
        f"s={session}",
        f"c=IN IP4 {addr}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
    ]
    names = {0: "PCMU/8000", 8: "PCMA/8000", 18: "G729/8000", 101: "telephone-event/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in pts]
    if 101 in pts:
        lines.append("a=fmtp:101 0-16")
    # Large offers (many attributes) are what gets an INVITE fragmented in real networks.
    lines += [f"a=x-padding-{i:03d}:{'0123456789abcdef' * 4}" for i in range(padding_lines)]
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()


# --------------------------------------------------------------------------- RTP


@dataclass
class RtpStream:
    """One planned RTP stream: which sequence numbers arrive when, in which order.

    ``drop``, ``duplicate`` and ``swap`` are packet indexes (0 = first packet); the
    expected quality counters follow from them (see ``facts``).
    """

    src: Addr
    dst: Addr
    ssrc: int
    start_ms: float
    count: int
    payload: bytes  # canary bytes, 160 per packet
    seq0: int = 1000
    ts0: int = 0
    pt: int = 8
    drop: frozenset[int] = frozenset()
    duplicate: frozenset[int] = frozenset()
    swap: tuple[int, ...] = ()  # index i is swapped with i + 1

    def packets(self) -> list[tuple[float, bytes]]:
        """(ms, RTP packet) in arrival order."""
        out: list[tuple[float, bytes]] = []
        for i in range(self.count):
            if i in self.drop:
                continue
            slot = i
            if i in self.swap:
                slot = i + 1
            elif i - 1 in self.swap:
                slot = i - 1
            ms = self.start_ms + slot * PTIME_MS + (0.5 if i - 1 in self.swap else 0.0)
            hdr = RTP_HEADER.pack(
                0x80,
                self.pt | (0x80 if i == 0 else 0),
                (self.seq0 + i) & 0xFFFF,
                (self.ts0 + i * SAMPLES) & 0xFFFFFFFF,
                self.ssrc,
            )
            out.append((ms, hdr + self.payload))
            if i in self.duplicate:
                out.append((ms + 1.0, hdr + self.payload))
        return out

    def facts(self, call: int | None, codec: str) -> dict[str, Any]:
        """The stream's expected record fields (RFC 3550 A.3 counting)."""
        kept = self.count - len(self.drop)
        return {
            "ssrc": self.ssrc,
            "src": f"{self.src[0]}:{self.src[1]}",
            "dst": f"{self.dst[0]}:{self.dst[1]}",
            "payload_type": self.pt,
            "codec": codec,
            "packets": kept + len(self.duplicate),
            "expected": self.count,
            "lost": len(self.drop),
            "duplicates": len(self.duplicate),
            "reordered": len(self.swap),
            "seq_resets": 0,
            "call": call,
        }


def rtp_payload(cap: Capture, key: str) -> bytes:
    """160 payload bytes made of a canary string (never to be seen in any output)."""
    mark = cap.canary("rtp_payload", f"CNYRTP-{key}-")
    return (mark.encode() * (SAMPLES // len(mark) + 1))[:SAMPLES]


def rtcp_sr_sdes(cap: Capture, key: str, who: str, ssrc: int, ntp_s: int) -> bytes:
    """RTCP SR + SDES with CNAME/NAME/PHONE canaries (personal data the meter skips)."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_s, 0, 0, 0, 0)
    items = b""
    for item_type, value in (
        (1, cap.canary("rtcp_sdes", f"cnycname-{key}-{who}@cnyhost-rtcp-{key}.example")),
        (2, cap.canary("rtcp_sdes", f"Cny Sdes Name {key} {who}")),
        (4, cap.canary("rtcp_sdes", f"+49155501998{len(key):02d}{len(who)}")),
    ):
        raw = value.encode()
        items += bytes([item_type, len(raw)]) + raw
    items += b"\x00"
    items += b"\x00" * (-(len(items) + 8) % 4)
    sdes = struct.pack("!BBHI", 0x81, 202, (8 + len(items)) // 4 - 1, ssrc) + items
    return sr + sdes


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """A scenario's capture plus its expected records."""

    key: str
    description: str
    shows: str
    cap: Capture
    calls: list[dict[str, Any]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    rtp_streams: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def subscriber(cap: Capture, key: str, n: int) -> Ua:
    """The monitored subscriber (10.20.n.10): display name, number and host are canaries."""
    return Ua(
        display=cap.canary("display_name", f"Cny Caller {key.title()}"),
        user=cap.canary("number", f"+4915550199{n:02d}1"),
        host=cap.canary("uri_host", f"cnyhost-{key}-a.example.net"),
        addr=(f"10.20.{n}.10", 5060),
    )


def parties(cap: Capture, key: str, n: int, callee_user: str = "") -> tuple[Ua, Ua]:
    """Caller (the subscriber) and callee (behind the proxy); all canaries."""
    if not callee_user:
        callee_user = f"+4915550199{n:02d}2"
    kind = "number" if callee_user.lstrip("+").isdigit() else "uri_user"
    callee = Ua(
        display=cap.canary("display_name", f"Cny Callee {key.title()}"),
        user=cap.canary(kind, callee_user),
        host=cap.canary("uri_host", f"cnyhost-{key}-b.example.org"),
        addr=PROXY,
    )
    return subscriber(cap, key, n), callee


def call_label(
    d: Dialog,
    *,
    final_code: int,
    release: str,
    end_reason: str,
    answered: bool,
    pdd_ms: float | None,
    duration_ms: float,
    caller_class: str = "international",
    callee_class: str = "international",
    transport: str = "udp",
    attempts: int = 1,
    auth_challenges: int = 0,
    forked: int = 0,
    codecs: tuple[str, ...] = (),
    media: tuple[str, ...] = (),
    reinvites: int = 0,
    held: bool = False,
) -> dict[str, Any]:
    """Expected CallRecord facts; ``call_id`` and the users let the test recompute the
    pseudonyms with its keys."""
    return {
        "call_id": d.call_id,
        "caller_user": d.caller.user,
        "callee_user": d.callee.user,
        "caller_class": caller_class,
        "callee_class": callee_class,
        "transport": transport,
        "final_code": final_code,
        "release": release,
        "end_reason": end_reason,
        "answered": answered,
        "pdd_ms": pdd_ms,
        "duration_ms": duration_ms,
        "attempts": attempts,
        "auth_challenges": auth_challenges,
        "forked": forked,
        "codecs": list(codecs),
        "media": list(media),
        "reinvites": reinvites,
        "held": held,
    }


def new_dialog(cap: Capture, key: str, n: int, caller: Ua, callee: Ua, suffix: str = "") -> Dialog:
    call_id = cap.canary("call_id", f"cnycallid-{key}{suffix}-7f3a9c@cnyhost-{key}-a.example.net")
    return Dialog(caller, callee, call_id, from_tag=f"ft{n:02d}{suffix}a1")


def offer_answer(
    cap: Capture, key: str, caller: Ua, port: int, gw_port: int
) -> tuple[bytes, bytes]:
    """Offer (PCMU, PCMA, telephone-event) from the caller; answer PCMA from the gateway."""
    user = cap.canary("sdp_user", f"cnysdpuser-{key}")
    session = cap.canary("sdp_session", f"Cny Session {key}")
    offer = sdp(caller.addr[0], port, user=user, session=session)
    answer = sdp(MEDIA_GW, gw_port, user=user, session=session, pts=(8, 101))
    return offer, answer


ANSWER_CODECS: tuple[str, ...] = ("PCMA", "telephone-event")


def basic_answered(
    sc: Scenario,
    n: int,
    *,
    bye_from_callee: bool,
    rtp_s: float = 3.0,
) -> None:
    """INVITE/100/180/200/ACK, RTP both ways, BYE from one side, 200."""
    cap, key = sc.cap, sc.key
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    cap.sip(30, d.response(inv, 100, "Trying"))
    cap.sip(250, d.response(inv, 180, "Ringing", to_tag="tt01"))
    cap.sip(2250, d.response(inv, 200, "OK", to_tag="tt01", body=answer))
    cap.sip(2280, d.request("ACK", 1, to_tag="tt01").msg)
    payload = rtp_payload(cap, key)
    media_a, media_b = (caller.addr[0], 40000), (MEDIA_GW, 30000)
    packets = round(rtp_s * 1000 / PTIME_MS)
    up = RtpStream(media_a, media_b, 0x0A0B0001 + n, 2300, packets, payload)
    # The gateway's sequence numbers wrap through 65535 -> 0 during the call.
    down = RtpStream(media_b, media_a, 0x0B0A0001 + n, 2310, packets, payload, seq0=65500)
    cap.rtp(up)
    cap.rtp(down)
    sc.rtp_streams += [up.facts(0, "PCMA"), down.facts(0, "PCMA")]
    end_ms = 2300 + rtp_s * 1000 + 200
    if bye_from_callee:
        bye = d.request("BYE", 7001, to_tag="tt01", from_callee=True)
    else:
        bye = d.request("BYE", 2, to_tag="tt01")
    cap.sip(end_ms, bye.msg)
    cap.sip(end_ms + 40, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="callee" if bye_from_callee else "caller",
            end_reason="bye",
            answered=True,
            pdd_ms=250.0,
            duration_ms=end_ms - 2250,
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
            forked=1,
        )
    )


def sc_answered(sc: Scenario) -> None:
    basic_answered(sc, 1, bye_from_callee=False)
    # RTCP sender reports with SDES items (CNAME, NAME, PHONE) on the RTCP ports.
    cap = sc.cap
    caller_rtcp, gw_rtcp = ("10.20.1.10", 40001), (MEDIA_GW, 30001)
    cap.udp(4300, caller_rtcp, gw_rtcp, rtcp_sr_sdes(cap, sc.key, "a", 0x0A0B0002, 1))
    cap.udp(4310, gw_rtcp, caller_rtcp, rtcp_sr_sdes(cap, sc.key, "b", 0x0B0A0002, 2))


def sc_bye_callee(sc: Scenario) -> None:
    basic_answered(sc, 2, bye_from_callee=True, rtp_s=2.0)


def failed_call(
    sc: Scenario,
    n: int,
    code: int,
    reason: str,
    *,
    ringing_ms: float | None,
    final_ms: float,
    suffix: str = "",
    t0: float = 0.0,
    end_reason: str,
    callee_user: str = "",
    callee_class: str = "international",
) -> None:
    """INVITE/100/[180]/final non-2xx/ACK, no media."""
    cap, key = sc.cap, sc.key
    caller, callee = parties(cap, key, n, callee_user)
    d = new_dialog(cap, key, n, caller, callee, suffix)
    offer, _ = offer_answer(cap, key, caller, 40000, 30000)
    tag = f"tt{n:02d}{suffix}"
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(t0, inv.msg)
    cap.sip(t0 + 20, d.response(inv, 100, "Trying"))
    if ringing_ms is not None:
        cap.sip(t0 + ringing_ms, d.response(inv, 180, "Ringing", to_tag=tag))
    cap.sip(t0 + final_ms, d.response(inv, code, reason, to_tag=tag))
    cap.sip(t0 + final_ms + 20, d.request("ACK", 1, to_tag=tag).msg)
    sc.calls.append(
        call_label(
            d,
            final_code=code,
            release="rejected",
            end_reason=end_reason,
            answered=False,
            pdd_ms=ringing_ms if ringing_ms is not None else final_ms,
            duration_ms=0.0,
            callee_class=callee_class,
            media=(f"{caller.addr[0]}:40000",),
            forked=1 if ringing_ms is not None else 0,
        )
    )


def sc_busy(sc: Scenario) -> None:
    # The callee is a domestic number (no country code configured: all digits, > 6).
    failed_call(
        sc,
        3,
        486,
        "Busy Here",
        ringing_ms=None,
        final_ms=180,
        end_reason="busy",
        callee_user="0555019903",
        callee_class="domestic",
    )


def sc_no_answer(sc: Scenario) -> None:
    failed_call(
        sc,
        4,
        480,
        "Temporarily Unavailable",
        ringing_ms=300,
        final_ms=30300,
        end_reason="no_answer",
    )
    # The 408 variant, a minute later, to a premium-rate number.
    failed_call(
        sc,
        4,
        408,
        "Request Timeout",
        ringing_ms=400,
        final_ms=32400,
        suffix="b",
        t0=60_000,
        end_reason="no_answer",
        callee_user="09005550199042",
        callee_class="premium",
    )


def sc_cancelled(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 5
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, _ = offer_answer(cap, key, caller, 40000, 30000)
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(500, d.response(inv, 180, "Ringing", to_tag="tt05"))
    # CANCEL reuses the INVITE's branch and CSeq number (RFC 3261 §9.1).
    branch = inv.via.rsplit("branch=", 1)[1]
    cancel = d.request("CANCEL", 1, branch=branch)
    cap.sip(4500, cancel.msg)
    cap.sip(4520, d.response(cancel, 200, "OK", to_tag="tt05"))
    cap.sip(4540, d.response(inv, 487, "Request Terminated", to_tag="tt05"))
    cap.sip(4560, d.request("ACK", 1, to_tag="tt05", branch=branch).msg)
    sc.calls.append(
        call_label(
            d,
            final_code=487,
            release="cancel",
            end_reason="cancelled",
            answered=False,
            pdd_ms=500.0,
            duration_ms=0.0,
            media=(f"{caller.addr[0]}:40000",),
            forked=1,
        )
    )


def sc_challenged(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 6
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    realm = cap.canary("uri_host", f"cnyrealm-{key}.example.net")
    challenge = (("Proxy-Authenticate", f'Digest realm="{realm}", nonce="4f3c2b1a", qop="auth"'),)
    cap.sip(
        15, d.response(inv, 407, "Proxy Authentication Required", to_tag="tt06x", extra=challenge)
    )
    cap.sip(30, d.request("ACK", 1, to_tag="tt06x", branch=inv.via.rsplit("=", 1)[1]).msg)
    creds = (
        (
            "Proxy-Authorization",
            f'Digest username="{caller.user}", realm="{realm}", nonce="4f3c2b1a", '
            f'uri="{callee.aor}", response="0123456789abcdef0123456789abcdef"',
        ),
    )
    inv2 = d.request("INVITE", 2, body=offer, extra=creds)
    cap.sip(1000, inv2.msg)
    cap.sip(1020, d.response(inv2, 100, "Trying"))
    cap.sip(1400, d.response(inv2, 180, "Ringing", to_tag="tt06"))
    cap.sip(3000, d.response(inv2, 200, "OK", to_tag="tt06", body=answer))
    cap.sip(3020, d.request("ACK", 2, to_tag="tt06").msg)
    payload = rtp_payload(cap, key)
    up = RtpStream((caller.addr[0], 40000), (MEDIA_GW, 30000), 0x0A0B0006, 3040, 50, payload)
    down = RtpStream((MEDIA_GW, 30000), (caller.addr[0], 40000), 0x0B0A0006, 3050, 50, payload)
    cap.rtp(up)
    cap.rtp(down)
    sc.rtp_streams += [up.facts(0, "PCMA"), down.facts(0, "PCMA")]
    bye = d.request("BYE", 3, to_tag="tt06")
    cap.sip(5000, bye.msg)
    cap.sip(5030, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=400.0,
            duration_ms=2000.0,
            attempts=2,
            auth_challenges=1,
            forked=1,
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
        )
    )


def sc_forked(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 7
    # The callee is a SIP user name (a hunt group), not a number.
    caller, callee = parties(cap, key, n, callee_user="cnyuser-forked-huntgroup")
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(300, d.response(inv, 180, "Ringing", to_tag="tt07desk"))
    cap.sip(350, d.response(inv, 180, "Ringing", to_tag="tt07mobile"))
    cap.sip(4000, d.response(inv, 200, "OK", to_tag="tt07mobile", body=answer))
    cap.sip(4020, d.request("ACK", 1, to_tag="tt07mobile").msg)
    payload = rtp_payload(cap, key)
    up = RtpStream((caller.addr[0], 40000), (MEDIA_GW, 30000), 0x0A0B0007, 4040, 50, payload)
    down = RtpStream((MEDIA_GW, 30000), (caller.addr[0], 40000), 0x0B0A0007, 4050, 50, payload)
    cap.rtp(up)
    cap.rtp(down)
    sc.rtp_streams += [up.facts(0, "PCMA"), down.facts(0, "PCMA")]
    bye = d.request("BYE", 2, to_tag="tt07mobile")
    cap.sip(6000, bye.msg)
    cap.sip(6020, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=300.0,
            duration_ms=2000.0,
            forked=2,
            callee_class="non_numeric",
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
        )
    )


def sc_hold_resume(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 8
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    user = f"cnysdpuser-{key}"
    session = f"Cny Session {key}"
    ip = caller.addr[0]
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(200, d.response(inv, 180, "Ringing", to_tag="tt08"))
    cap.sip(1000, d.response(inv, 200, "OK", to_tag="tt08", body=answer))
    cap.sip(1020, d.request("ACK", 1, to_tag="tt08").msg)
    payload = rtp_payload(cap, key)
    gw = (MEDIA_GW, 30000)
    streams = [
        # talking (1 s), then on hold: only the caller's music-on-hold flows (2 s)
        RtpStream((ip, 40000), gw, 0x0A0B0008, 1040, 150, payload),
        RtpStream(gw, (ip, 40000), 0x0B0A0008, 1050, 50, payload),
    ]
    hold = d.request(
        "INVITE",
        2,
        to_tag="tt08",
        body=sdp(ip, 40000, user=user, session=session, version=2, direction="sendonly"),
    )
    cap.sip(2050, hold.msg)
    cap.sip(
        2080,
        d.response(
            hold,
            200,
            "OK",
            body=sdp(
                MEDIA_GW,
                30000,
                user=user,
                session=session,
                version=2,
                pts=(8, 101),
                direction="recvonly",
            ),
        ),
    )
    cap.sip(2100, d.request("ACK", 2, to_tag="tt08").msg)
    # Resume on a new local port: the media moves to 40010 (a new RTP flow, same call).
    resume = d.request(
        "INVITE", 3, to_tag="tt08", body=sdp(ip, 40010, user=user, session=session, version=3)
    )
    cap.sip(4100, resume.msg)
    cap.sip(
        4130,
        d.response(
            resume,
            200,
            "OK",
            body=sdp(MEDIA_GW, 30000, user=user, session=session, version=3, pts=(8, 101)),
        ),
    )
    cap.sip(4150, d.request("ACK", 3, to_tag="tt08").msg)
    streams += [
        RtpStream((ip, 40010), gw, 0x0A0B0018, 4200, 100, payload, seq0=20000),
        RtpStream(gw, (ip, 40010), 0x0B0A0008, 4210, 100, payload, seq0=1050),
    ]
    for s in streams:
        cap.rtp(s)
    sc.rtp_streams += [s.facts(0, "PCMA") for s in streams]
    bye = d.request("BYE", 4, to_tag="tt08")
    cap.sip(6500, bye.msg)
    cap.sip(6520, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=200.0,
            duration_ms=5500.0,
            forked=1,
            reinvites=2,
            held=True,
            codecs=ANSWER_CODECS,
            media=(f"{ip}:40000", f"{MEDIA_GW}:30000", f"{ip}:40010"),
        )
    )


class TcpConn:
    """Segments of one TCP connection with consistent sequence numbers."""

    def __init__(self, cap: Capture, client: Addr, server: Addr) -> None:
        self.cap, self.client, self.server = cap, client, server
        self.seq = {True: 1_000_000, False: 5_000_000}

    def seg(self, ms: float, from_client: bool, flags: str, payload: bytes = b"") -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            seq=self.seq[from_client],
            ack=self.seq[not from_client] if "A" in flags else 0,
            flags=flags,
            window=64240,
        )
        pkt = ether(src[0]) / IP(src=src[0], dst=dst[0], id=0, flags="DF", ttl=64) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        self.seq[from_client] += len(payload) + ("S" in flags) + ("F" in flags)
        self.cap.records.append((self.cap.at(ms), bytes(pkt)))

    def send(self, ms: float, from_client: bool, *msgs: bytes, split: tuple[int, ...] = ()) -> None:
        """Send messages in one stream; ``split`` cuts the bytes into several segments."""
        data = b"".join(msgs)
        for m in msgs:
            self.cap.count_sip(m)
        cuts = [0, *split, len(data)]
        for i in range(len(cuts) - 1):
            self.seg(ms + i, from_client, "PA", data[cuts[i] : cuts[i + 1]])


def sc_sip_tcp(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 9
    caller, callee = parties(cap, key, n)
    caller = Ua(caller.display, caller.user, caller.host, (caller.addr[0], 50609))
    d = new_dialog(cap, key, n, caller, callee)
    d.transport = "TCP"
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    conn = TcpConn(cap, caller.addr, PROXY)
    conn.seg(0, True, "S")
    conn.seg(10, False, "SA")
    conn.seg(20, True, "A")
    inv = d.request("INVITE", 1, body=offer)
    # One message across three segments: cut inside the headers and inside the body.
    conn.send(30, True, inv.msg.data, split=(100, len(inv.msg.data) - 40))
    # Two messages in one segment.
    conn.send(
        60,
        False,
        d.response(inv, 100, "Trying").data,
        d.response(inv, 180, "Ringing", to_tag="tt09").data,
    )
    conn.send(1060, False, d.response(inv, 200, "OK", to_tag="tt09", body=answer).data)
    bye = d.request("BYE", 2, to_tag="tt09")
    payload = rtp_payload(cap, key)
    up = RtpStream((caller.addr[0], 40000), (MEDIA_GW, 30000), 0x0A0B0009, 1100, 100, payload)
    down = RtpStream((MEDIA_GW, 30000), (caller.addr[0], 40000), 0x0B0A0009, 1110, 100, payload)
    cap.rtp(up)
    cap.rtp(down)
    sc.rtp_streams += [up.facts(0, "PCMA"), down.facts(0, "PCMA")]
    # ACK and, later, BYE; the proxy's 200 to the BYE; then the connection closes.
    conn.send(1080, True, d.request("ACK", 1, to_tag="tt09").msg.data)
    conn.send(3200, True, bye.msg.data)
    conn.send(3230, False, d.response(bye, 200, "OK").data)
    conn.seg(3300, True, "FA")
    conn.seg(3310, False, "FA")
    conn.seg(3320, True, "A")
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            # The INVITE counts when its last segment arrives (32 ms), as in tshark.
            pdd_ms=28.0,
            duration_ms=2140.0,
            transport="tcp",
            forked=1,
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
        )
    )


def sc_fragmented(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 10
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    _, answer = offer_answer(cap, key, caller, 40000, 30000)
    offer = sdp(
        caller.addr[0],
        40000,
        user=f"cnysdpuser-{key}",
        session=f"Cny Session {key}",
        padding_lines=40,
    )
    inv = d.request("INVITE", 1, body=offer)
    whole = (
        ether(caller.addr[0])
        / IP(src=caller.addr[0], dst=PROXY[0], id=0x4A10, ttl=64)
        / UDP(sport=5060, dport=5060)
        / Raw(inv.msg.data)
    )
    frags = fragment(whole[IP], fragsize=1200)  # type: ignore[no-untyped-call]
    for i, frag in enumerate(frags):
        cap.records.append((cap.at(i * 0.1), bytes(ether(caller.addr[0]) / frag)))
    cap.count_sip(inv.msg.data)
    sc.extra["ip_fragments"] = len(frags)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(600, d.response(inv, 183, "Session Progress", to_tag="tt10"))
    cap.sip(2000, d.response(inv, 200, "OK", to_tag="tt10", body=answer))
    cap.sip(2020, d.request("ACK", 1, to_tag="tt10").msg)
    bye = d.request("BYE", 2, to_tag="tt10")
    cap.sip(3000, bye.msg)
    cap.sip(3020, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            # The INVITE counts when its last fragment arrives (reassembly).
            pdd_ms=600.0 - (len(frags) - 1) * 0.1,
            duration_ms=1000.0,
            forked=1,
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
        )
    )


LONG_CALL_S = 3 * 3600
KEEPALIVE_S = 45  # CRLF ping/pong (RFC 5626): keeps the SIP UDP flow alive (< 60 s idle)
REFRESH_S = 1800  # session-timer re-INVITE (RFC 4028)


def sc_long_call(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 11
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    user, session = f"cnysdpuser-{key}", f"Cny Session {key}"
    ip = caller.addr[0]
    inv = d.request("INVITE", 1, body=offer, extra=(("Session-Expires", "1800"),))
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(1000, d.response(inv, 180, "Ringing", to_tag="tt11"))
    cap.sip(5000, d.response(inv, 200, "OK", to_tag="tt11", body=answer))
    cap.sip(5020, d.request("ACK", 1, to_tag="tt11").msg)
    answer_ms = 5000
    bye_ms = answer_ms + LONG_CALL_S * 1000
    payload = rtp_payload(cap, key)
    gw = (MEDIA_GW, 30000)
    # 2 s of RTP after the answer and 2 s before the BYE (the rest is left out to keep
    # the file small); the RTP flow goes idle in between, so each burst is its own flow
    # and its own stream record.
    streams = [
        RtpStream((ip, 40000), gw, 0x0A0B0011, 5040, 100, payload),
        RtpStream(gw, (ip, 40000), 0x0B0A0011, 5050, 100, payload),
        RtpStream(
            (ip, 40000), gw, 0x0A0B0011, bye_ms - 2500, 100, payload, seq0=1100, ts0=100 * SAMPLES
        ),
        RtpStream(
            gw, (ip, 40000), 0x0B0A0011, bye_ms - 2490, 100, payload, seq0=1100, ts0=100 * SAMPLES
        ),
    ]
    for s in streams:
        cap.rtp(s)
    sc.rtp_streams += [s.facts(0, "PCMA") for s in streams]
    refreshes = 0
    cseq = 1
    for t_s in range(KEEPALIVE_S, LONG_CALL_S, KEEPALIVE_S):
        ms = answer_ms + t_s * 1000
        cap.udp(ms, caller.addr, PROXY, b"\r\n\r\n")
        cap.udp(ms + 15, PROXY, caller.addr, b"\r\n")
    for t_s in range(REFRESH_S, LONG_CALL_S, REFRESH_S):
        ms = answer_ms + t_s * 1000 + 7000
        cseq += 1
        refreshes += 1
        body = sdp(ip, 40000, user=user, session=session, version=1 + refreshes)
        reinv = d.request(
            "INVITE",
            cseq,
            to_tag="tt11",
            body=body,
            extra=(("Session-Expires", "1800;refresher=uac"),),
        )
        cap.sip(ms, reinv.msg)
        cap.sip(ms + 40, d.response(reinv, 200, "OK", body=answer))
        cap.sip(ms + 60, d.request("ACK", cseq, to_tag="tt11").msg)
    bye = d.request("BYE", cseq + 1, to_tag="tt11")
    cap.sip(bye_ms, bye.msg)
    cap.sip(bye_ms + 30, d.response(bye, 200, "OK"))
    sc.extra["sip_flow_min_records"] = LONG_CALL_S // 1800  # active timeout 1800 s
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=1000.0,
            duration_ms=float(LONG_CALL_S * 1000),
            forked=1,
            reinvites=refreshes,
            codecs=ANSWER_CODECS,
            media=(f"{ip}:40000", f"{MEDIA_GW}:30000"),
        )
    )


def sc_rtp_impairments(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 12
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    ip = caller.addr[0]
    inv = d.request("INVITE", 1, body=offer)
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    cap.sip(300, d.response(inv, 180, "Ringing", to_tag="tt12"))
    cap.sip(1000, d.response(inv, 200, "OK", to_tag="tt12", body=answer))
    cap.sip(1020, d.request("ACK", 1, to_tag="tt12").msg)
    payload = rtp_payload(cap, key)
    gw = (MEDIA_GW, 30000)
    impaired = RtpStream(
        (ip, 40000),
        gw,
        0x0A0B0012,
        1040,
        200,
        payload,
        drop=frozenset({10, 50, 51, 100, 150}),
        duplicate=frozenset({20, 80, 120}),
        swap=(30, 170),
    )
    # The phone restarts its RTP session mid-call: new SSRC, new sequence base.
    restarted = RtpStream(
        (ip, 40000), gw, 0x0A0B1012, 1040 + 200 * PTIME_MS, 100, payload, seq0=30000, ts0=123456
    )
    clean = RtpStream(gw, (ip, 40000), 0x0B0A0012, 1050, 300, payload)
    for s in (impaired, restarted, clean):
        cap.rtp(s)
        sc.rtp_streams.append(s.facts(0, "PCMA"))
    bye = d.request("BYE", 2, to_tag="tt12")
    cap.sip(8000, bye.msg)
    cap.sip(8020, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=300.0,
            duration_ms=7000.0,
            forked=1,
            codecs=ANSWER_CODECS,
            media=(f"{ip}:40000", f"{MEDIA_GW}:30000"),
        )
    )


def sc_register(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 13
    ua = subscriber(cap, key, n)
    # REGISTER's To and From are both the AOR being registered.
    registrar = Ua(ua.display, ua.user, ua.host, PROXY)
    d = new_dialog(cap, key, n, ua, registrar)
    realm = cap.canary("uri_host", f"cnyrealm-{key}.example.net")
    ruri = f"sip:{ua.host}"
    reg = d.request("REGISTER", 1, ruri=ruri, extra=(("Expires", "3600"),))
    cap.sip(0, reg.msg)
    cap.sip(
        25,
        d.response(
            reg,
            401,
            "Unauthorized",
            to_tag="tt13",
            extra=(("WWW-Authenticate", f'Digest realm="{realm}", nonce="9a8b"'),),
        ),
    )
    creds = (
        ("Expires", "3600"),
        (
            "Authorization",
            f'Digest username="{ua.user}", realm="{realm}", nonce="9a8b", '
            f'uri="sip:{ua.host}", response="fedcba9876543210fedcba9876543210"',
        ),
    )
    reg2 = d.request("REGISTER", 2, ruri=ruri, extra=creds)
    cap.sip(100, reg2.msg)
    cap.sip(
        140,
        d.response(
            reg2, 200, "OK", to_tag="tt13", extra=(("Contact", f"{ua.contact};expires=1800"),)
        ),
    )
    # A minute later the phone de-registers (Expires: 0), accepted at once.
    unreg = d.request("REGISTER", 3, ruri=ruri, extra=(("Expires", "0"),))
    cap.sip(60_000, unreg.msg)
    cap.sip(60_030, d.response(unreg, 200, "OK", to_tag="tt13"))
    for label in (
        {
            "result_code": 200,
            "expires_s": 1800,
            "challenges": 1,
            "requests": 2,
            "end_reason": "final",
            "ts_ms": 0,
            "end_ms": 140,
        },
        {
            "result_code": 200,
            "expires_s": 0,
            "challenges": 0,
            "requests": 1,
            "end_reason": "final",
            "ts_ms": 60_000,
            "end_ms": 60_030,
        },
    ):
        sc.registrations.append(
            {
                "call_id": d.call_id,
                "aor_user": ua.user,
                "aor_class": "international",
                "transport": "udp",
                **label,
            }
        )


def sc_other_methods(sc: Scenario) -> None:
    cap, key, n = sc.cap, sc.key, 14
    alice, bob = parties(cap, key, n)
    body_text = cap.canary("body", f"cnybody-{key}: meet me at the usual place 4711")
    presence = cap.canary("body", f"cnypidf-{key}-open")
    t = 0.0
    for i, (method, extra, body, ctype) in enumerate(
        (
            ("OPTIONS", (("Accept", "application/sdp"),), b"", ""),
            ("MESSAGE", (), body_text.encode(), "text/plain"),
            ("SUBSCRIBE", (("Event", "presence"), ("Expires", "600")), b"", ""),
        )
    ):
        d = new_dialog(cap, key, n, alice, bob, suffix=f"m{i}")
        req = d.request(method, 1, body=body, ctype=ctype, extra=extra)
        cap.sip(t, req.msg)
        cap.sip(
            t + 30,
            d.response(
                req,
                200 if method != "MESSAGE" else 202,
                "OK" if method != "MESSAGE" else "Accepted",
                to_tag=f"tt14{i}",
            ),
        )
        t += 1000
    # The notifier (behind the proxy) sends NOTIFY in the SUBSCRIBE's dialog.
    pidf = (
        f'<?xml version="1.0"?><presence entity="{bob.aor}"><tuple id="t1"><status>'
        f"<basic>{presence}</basic></status></tuple></presence>"
    ).encode()
    notify = d.request(
        "NOTIFY",
        9001,
        from_callee=True,
        to_tag="tt142",
        body=pidf,
        ctype="application/pidf+xml",
        extra=(("Event", "presence"), ("Subscription-State", "active;expires=600")),
    )
    cap.sip(t, notify.msg)
    cap.sip(t + 20, d.response(notify, 200, "OK"))


def sc_early_answer(sc: Scenario) -> None:
    """The answer SDP comes in a reliable 183 (RFC 3262); the 200 carries none."""
    cap, key, n = sc.cap, sc.key, 15
    caller, callee = parties(cap, key, n)
    d = new_dialog(cap, key, n, caller, callee)
    offer, answer = offer_answer(cap, key, caller, 40000, 30000)
    inv = d.request("INVITE", 1, body=offer, extra=(("Supported", "100rel"),))
    cap.sip(0, inv.msg)
    cap.sip(20, d.response(inv, 100, "Trying"))
    rel = (("Require", "100rel"), ("RSeq", "1"))
    cap.sip(400, d.response(inv, 183, "Session Progress", to_tag="tt15", body=answer, extra=rel))
    prack = d.request("PRACK", 2, to_tag="tt15", extra=(("RAck", "1 1 INVITE"),))
    cap.sip(420, prack.msg)
    cap.sip(440, d.response(prack, 200, "OK"))
    cap.sip(3000, d.response(inv, 200, "OK", to_tag="tt15"))  # no SDP: the 183's answer holds
    cap.sip(3020, d.request("ACK", 1, to_tag="tt15").msg)
    payload = rtp_payload(cap, key)
    up = RtpStream((caller.addr[0], 40000), (MEDIA_GW, 30000), 0x0A0B000F, 3040, 50, payload)
    down = RtpStream((MEDIA_GW, 30000), (caller.addr[0], 40000), 0x0B0A000F, 3050, 50, payload)
    cap.rtp(up)
    cap.rtp(down)
    sc.rtp_streams += [up.facts(0, "PCMA"), down.facts(0, "PCMA")]
    bye = d.request("BYE", 3, to_tag="tt15")
    cap.sip(5000, bye.msg)
    cap.sip(5020, d.response(bye, 200, "OK"))
    sc.calls.append(
        call_label(
            d,
            final_code=200,
            release="caller",
            end_reason="bye",
            answered=True,
            pdd_ms=400.0,
            duration_ms=2000.0,
            forked=1,
            codecs=ANSWER_CODECS,
            media=(f"{caller.addr[0]}:40000", f"{MEDIA_GW}:30000"),
        )
    )


SCENARIOS: tuple[tuple[str, Callable[[Scenario], None], str, str], ...] = (
    (
        "answered",
        sc_answered,
        "answered call, RTP both ways (one seq wrap), RTCP SR+SDES, BYE from the caller",
        "CDR basics: answered, PDD, duration, codecs, release=caller, "
        "streams tied to the call, SDES never decoded",
    ),
    (
        "bye_callee",
        sc_bye_callee,
        "answered call ended by the callee's BYE",
        "release side = callee",
    ),
    (
        "busy",
        sc_busy,
        "INVITE answered 486 Busy Here (no ringing)",
        "busy: final code, PDD up to the final response, domestic callee class",
    ),
    (
        "no_answer",
        sc_no_answer,
        "180 then 480 after 30 s; a second call 180 then 408 to a premium number",
        "no_answer end reason for 480 and 408; premium class",
    ),
    (
        "cancelled",
        sc_cancelled,
        "caller CANCELs while ringing: 200 to CANCEL, 487, ACK",
        "release=cancel, final 487, not answered",
    ),
    (
        "challenged",
        sc_challenged,
        "407, ACK, INVITE with Proxy-Authorization, 180, 200",
        "one call with 2 attempts and 1 challenge; PDD from the last INVITE",
    ),
    (
        "forked",
        sc_forked,
        "two 180s with different To-tags, 200 from the second fork",
        "forked=2; non-numeric callee",
    ),
    (
        "hold_resume",
        sc_hold_resume,
        "re-INVITE sendonly (hold), re-INVITE sendrecv on a new port (resume), RTP moves there",
        "reinvites=2, held, media change tied to the call",
    ),
    (
        "sip_tcp",
        sc_sip_tcp,
        "SIP over TCP: INVITE split across 3 segments, 100+180 in one segment",
        "TCP reassembly/framing; transport=tcp",
    ),
    (
        "fragmented",
        sc_fragmented,
        "INVITE with a large SDP in IPv4 fragments, 183, 200",
        "IP reassembly before SIP parsing",
    ),
    (
        "long_call",
        sc_long_call,
        "3-hour call: RTP for 2 s after answer and before BYE, CRLF "
        "keep-alives every 45 s, session-timer re-INVITEs every 30 min",
        "one call record across 6 active-timeout interim flow records; 3 h duration",
    ),
    (
        "rtp_impairments",
        sc_rtp_impairments,
        "RTP with 5 lost, 3 duplicated, 2 reordered packets, then an SSRC change",
        "loss/duplicate/reorder accounting; a new SSRC is a new stream",
    ),
    (
        "register",
        sc_register,
        "REGISTER, 401, REGISTER with credentials, 200 (expires 1800); de-REGISTER a minute later",
        "registration records: challenges, requests, expiry",
    ),
    (
        "other_methods",
        sc_other_methods,
        "OPTIONS, MESSAGE (text body), SUBSCRIBE, NOTIFY (PIDF)",
        "non-call methods produce no call records; bodies never stored",
    ),
    (
        "early_answer",
        sc_early_answer,
        "reliable 183 with the SDP answer, PRACK, 200 without SDP, ACK, RTP, BYE",
        "codecs from the early answer (RFC 3262), not the bodiless 2xx",
    ),
)


def build(out_dir: Path) -> dict[str, Any]:
    """Write every scenario into ``out_dir`` and return the labels."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for i, (key, make, description, shows) in enumerate(SCENARIOS):
        sc = Scenario(key, description, shows, Capture((BASE_S + i * DAY_S) * 1_000_000))
        make(sc)
        name = f"{key}.pcap"
        write_pcap(out_dir / name, sc.cap.records)
        files[name] = {
            "description": sc.description,
            "shows": sc.shows,
            "start_ns": sc.cap.base_us * 1000,
            "frames": len(sc.cap.records),
            "sip_requests": dict(sorted(sc.cap.requests.items())),
            "sip_responses": {str(k): v for k, v in sorted(sc.cap.responses.items())},
            "calls": sc.calls,
            "registrations": sc.registrations,
            "rtp_streams": sc.rtp_streams,
            "canaries": sc.cap.canaries,
            **sc.extra,
        }
    labels = {
        "generator": "scripts/make_voip_scenarios.py",
        "notes": "Expected facts follow from how each capture was built. Times in ms are "
        "packet time; pdd_ms/duration_ms as in trafficguard.voip.records.CallRecord.",
        "files": files,
    }
    with (out_dir / "labels.json").open("w") as f:
        json.dump(labels, f, indent=1, sort_keys=False)
        f.write("\n")
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "voip"
    parser.add_argument("out_dir", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    labels = build(args.out_dir)
    for name, facts in labels["files"].items():
        print(f"{args.out_dir / name}: {facts['frames']} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
