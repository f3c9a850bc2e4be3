"""The VoIP stage through the whole pipeline, on traffic built here with scapy.

Each test writes a small capture (answered call with RTP and RTCP, SIP over TCP split
and joined across segments, a fragmented INVITE, a re-INVITE that moves the media,
timeouts, garbage, TLS, unsignalled RTP), replays it with ``replay_records`` and checks
the call, registration, RTP stream and KPI interval records and the metrics.
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap

from trafficguard.config import Config, parse_config
from trafficguard.pipeline import Pipeline, ReplayDriver, replay_records
from trafficguard.privacy.keys import SensorKeys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.memory import MemorySink
from trafficguard.sinks.metrics import build_registry
from trafficguard.voip.kpi import VoipIntervalRecord
from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord
from trafficguard.voip.stage import VoipStage
from trafficguard.wiring import build_context, build_stages

T0 = 1_700_000_000.0
UA = "10.0.0.5"
PROXY = "192.0.2.10"
CALLER = "+4930111222"
CALLEE = "004940333444"
CALLEE_E164 = "+4940333444"
NS = 1_000_000_000


# -- building captures ---------------------------------------------------------------------
class Capture:
    """Frames with packet times (seconds after T0), written as one pcap."""

    def __init__(self) -> None:
        self.frames: list[ScapyPacket] = []

    def add(self, t: float, pkt: ScapyPacket) -> None:
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
        frame.time = T0 + t
        self.frames.append(frame)

    def udp(self, t: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        ip = IPv6 if ":" in src[0] else IP
        self.add(t, ip(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / Raw(payload))

    def write(self, path: Path) -> Path:
        self.frames.sort(key=lambda f: float(f.time))
        wrpcap(str(path), self.frames)
        return path


def sip(
    start: str,
    call_id: str,
    cseq: str,
    *,
    from_tag: str = "ft1",
    to_tag: str = "",
    body: bytes = b"",
    compact: bool = False,
    to_user: str = CALLEE,
    from_user: str = CALLER,
    extra: Sequence[str] = (),
) -> bytes:
    """One SIP message; ``compact`` uses the RFC 3261 §7.3.3 short header names."""
    to = f"<sip:{to_user}@example.net>" + (f";tag={to_tag}" if to_tag else "")
    frm = f'"Alice" <sip:{from_user}@example.net>;tag={from_tag}'
    names = ("v", "f", "t", "i", "l", "c") if compact else (
        "Via", "From", "To", "Call-ID", "Content-Length", "Content-Type"
    )  # fmt: skip
    lines = [
        start,
        f"{names[0]}: SIP/2.0/UDP {UA}:5060;branch=z9hG4bK{cseq.split(maxsplit=1)[0]}{call_id[:4]}",
        f"{names[1]}: {frm}",
        f"{names[2]}: {to}",
        f"{names[3]}: {call_id}",
        f"CSeq: {cseq}",
        f"Contact: <sip:{from_user}@{UA}:5060>",
        *extra,
    ]
    if body:
        lines.append(f"{names[5]}: application/sdp")
    lines.append(f"{names[4]}: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(addr: str, port: int, pts: Sequence[int] = (0, 8), direction: str = "sendrecv") -> bytes:
    maps = {0: "PCMU/8000", 8: "PCMA/8000", 96: "opus/48000/2"}
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {addr}",
        "s=-",
        f"c=IN IP4 {addr}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
        *(f"a=rtpmap:{pt} {maps[pt]}" for pt in pts),
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(seq: int, ts: int, ssrc: int, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + b"\x00" * 160


def rtp_stream(
    cap: Capture,
    t: float,
    src: tuple[str, int],
    dst: tuple[str, int],
    ssrc: int,
    count: int,
    skip: Sequence[int] = (),
    pt: int = 0,
) -> None:
    """``count`` packets every 20 ms (sequence numbers in ``skip`` are lost)."""
    for i in range(count):
        if i not in skip:
            cap.udp(t + i * 0.02, src, dst, rtp(1000 + i, 5000 + 160 * i, ssrc, pt))


def replay(path: Path, keys: SensorKeys, cfg: Config | None = None) -> list[msgspec.Struct]:
    return replay_records([path], cfg or Config(), keys=keys)


def of(records: Sequence[msgspec.Struct], kind: type[msgspec.Struct]) -> list[msgspec.Struct]:
    return [r for r in records if isinstance(r, kind)]


def answered_call(cap: Capture, call_id: str = "call-1@ua", t: float = 0.0) -> None:
    """INVITE / 100 / 180 / 200 / ACK ... BYE / 200 between UA and PROXY over UDP."""
    ua, px = (UA, 5060), (PROXY, 5060)
    inv = f"INVITE sip:{CALLEE}@example.net SIP/2.0"
    cap.udp(t, ua, px, sip(inv, call_id, "1 INVITE", body=sdp(UA, 30000)))
    cap.udp(t + 0.05, px, ua, sip("SIP/2.0 100 Trying", call_id, "1 INVITE"))
    cap.udp(t + 0.5, px, ua, sip("SIP/2.0 180 Ringing", call_id, "1 INVITE", to_tag="tt1"))
    ok = sip("SIP/2.0 200 OK", call_id, "1 INVITE", to_tag="tt1", body=sdp(PROXY, 40000, (0,)))
    cap.udp(t + 3.0, px, ua, ok)
    cap.udp(t + 3.01, ua, px, sip("ACK sip:x@example.net SIP/2.0", call_id, "1 ACK", to_tag="tt1"))
    cap.udp(t + 13.0, ua, px, sip("BYE sip:x@example.net SIP/2.0", call_id, "2 BYE", to_tag="tt1"))
    cap.udp(t + 13.05, px, ua, sip("SIP/2.0 200 OK", call_id, "2 BYE", to_tag="tt1"))


# -- tests ---------------------------------------------------------------------------------
def test_answered_call_with_rtp_and_rtcp(
    tmp_path: Path, keys: SensorKeys, pseudo: Pseudonymizer
) -> None:
    cap = Capture()
    answered_call(cap)
    # 100 packets each way from 3.05 s; the caller's stream loses 3 of them.
    rtp_stream(cap, 3.05, (UA, 30000), (PROXY, 40000), 0x1111, 100, skip=(10, 11, 50))
    rtp_stream(cap, 3.06, (PROXY, 40000), (UA, 30000), 0x2222, 100)
    # RTCP on port+1: SR from the UA about 0x1111, RR from the proxy 100 ms later that
    # held it 40 ms -> RTT 60 ms for the UA's stream; the RR reports 10% loss.
    ntp = (3_900_000_000 << 32) | 0x12345678
    sr = struct.pack("!BBHIQIII", 0x80, 200, 6, 0x1111, ntp, 0, 100, 16000)
    lsr = (ntp >> 16) & 0xFFFFFFFF
    block = struct.pack("!IIIIII", 0x1111, (26 << 24) | 3, 1100, 80, lsr, int(0.04 * 65536))
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0x2222) + block
    cap.udp(4.0, (UA, 30001), (PROXY, 40001), sr)
    cap.udp(4.1, (PROXY, 40001), (UA, 30001), rr)
    records = replay(cap.write(tmp_path / "call.pcap"), keys)

    (call,) = of(records, CallRecord)
    assert isinstance(call, CallRecord)
    assert call.call_id_hash == pseudo.token("call-1@ua")
    assert call.caller == pseudo.user(CALLER) and call.caller_class == "international"
    assert call.callee == pseudo.user(CALLEE_E164) and call.callee_class == "international"
    assert (call.src_addr, call.dst_addr, call.transport) == (UA, PROXY, "udp")
    assert call.invite_ns == int(T0 * NS)
    assert call.first_provisional_ns == int((T0 + 0.5) * NS)
    assert call.answer_ns == int((T0 + 3.0) * NS)
    assert call.pdd_ms == pytest.approx(500.0, abs=0.01)
    assert call.duration_ms == pytest.approx(10_000.0, abs=0.01)
    assert (call.final_code, call.release, call.end_reason) == (200, "caller", "bye")
    assert call.codecs == ("PCMU",)
    assert call.media == (f"{UA}:30000", f"{PROXY}:40000")

    streams = {r.ssrc: r for r in of(records, RtpStreamRecord)}  # type: ignore[attr-defined]
    assert set(streams) == {0x1111, 0x2222}
    up, down = streams[0x1111], streams[0x2222]
    assert isinstance(up, RtpStreamRecord) and isinstance(down, RtpStreamRecord)
    assert (up.packets, up.expected, up.lost) == (97, 100, 3)
    assert (down.packets, down.expected, down.lost) == (100, 100, 0)
    assert up.call_id_hash == down.call_id_hash == call.call_id_hash
    assert (up.src_addr, up.src_port, up.dst_port, up.codec) == (UA, 30000, 40000, "PCMU")
    assert up.rtt_ms == pytest.approx(60.0, abs=0.1)
    assert up.rtcp_fraction_lost == pytest.approx(26 / 256)
    assert up.rtcp_jitter_ms == pytest.approx(10.0)
    assert down.jitter_max_ms == pytest.approx(0.0, abs=1e-6)  # perfectly paced
    assert down.mos is not None and up.mos is not None and up.mos < down.mos <= 4.5

    (interval,) = of(records, VoipIntervalRecord)
    assert isinstance(interval, VoipIntervalRecord)
    assert (interval.attempts, interval.answered, interval.asr, interval.ner) == (1, 1, 1.0, 1.0)
    assert interval.scr == 1.0 and interval.acd_s == pytest.approx(10.0)
    assert interval.pdd_mean_ms == pytest.approx(500.0, abs=0.01)
    assert (interval.final_2xx, interval.rtp_streams) == (1, 2)
    assert interval.mos_mean == pytest.approx((up.mos + down.mos) / 2)


def test_sip_over_tcp_split_and_joined_segments(tmp_path: Path, keys: SensorKeys) -> None:
    cap = Capture()
    ua, px = (UA, 40123), (PROXY, 5060)
    cid = "tcp-call@ua"
    seq = {ua: 1000, px: 5000}

    def seg(
        t: float, src: tuple[str, int], dst: tuple[str, int], data: bytes, at: int = -1
    ) -> None:
        start = seq[src] if at < 0 else at
        tcp = TCP(sport=src[1], dport=dst[1], flags="PA", seq=start, ack=seq[dst])
        cap.add(t, IP(src=src[0], dst=dst[0]) / tcp / Raw(data))
        if at < 0:
            seq[src] += len(data)

    cap.add(0.0, IP(src=UA, dst=PROXY) / TCP(sport=40123, dport=5060, flags="S", seq=999))
    cap.add(
        0.01, IP(src=PROXY, dst=UA) / TCP(sport=5060, dport=40123, flags="SA", seq=4999, ack=1000)
    )
    cap.add(
        0.02, IP(src=UA, dst=PROXY) / TCP(sport=40123, dport=5060, flags="A", seq=1000, ack=5000)
    )
    invite = sip(f"INVITE sip:{CALLEE}@example.net SIP/2.0", cid, "1 INVITE", body=sdp(UA, 30010))
    # The INVITE across three segments, cut inside a header and inside the body.
    first = seq[ua]
    seg(0.1, ua, px, invite[:40])
    seg(0.11, ua, px, invite[40 : len(invite) - 30])
    seg(0.12, ua, px, invite[len(invite) - 30 :])
    seg(0.13, ua, px, invite[:40], at=first)  # a retransmission: must be ignored
    # 100, 180 and 200 in one segment.
    joined = (
        sip("SIP/2.0 100 Trying", cid, "1 INVITE")
        + sip("SIP/2.0 180 Ringing", cid, "1 INVITE", to_tag="tt")
        + sip("SIP/2.0 200 OK", cid, "1 INVITE", to_tag="tt", body=sdp(PROXY, 40010, (8,)))
    )
    seg(1.0, px, ua, joined)
    seg(1.1, ua, px, sip("ACK sip:x@example.net SIP/2.0", cid, "1 ACK", to_tag="tt"))
    bye = sip("BYE sip:x@example.net SIP/2.0", cid, "2 BYE", from_tag="tt", to_tag="ft1")
    seg(6.0, px, ua, bye)
    seg(6.1, ua, px, sip("SIP/2.0 200 OK", cid, "2 BYE", to_tag="tt"))
    stages_cfg = Config()
    path = cap.write(tmp_path / "tcp.pcap")
    records = replay(path, keys, stages_cfg)
    (call,) = of(records, CallRecord)
    assert isinstance(call, CallRecord)
    assert (call.transport, call.final_code, call.end_reason) == ("tcp", 200, "bye")
    assert call.release == "callee"
    assert call.codecs == ("PCMA",)
    assert call.pdd_ms == pytest.approx(880.0, abs=0.01)  # INVITE complete at 0.12 s

    stage, _ = _run_stage(path, keys)
    assert stage.tracker.method_counts == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert stage.metrics.transport_events == {"tcp_retransmission": 1}
    assert stage.metrics.parse_errors == {}


def test_fragmented_invite_with_compact_headers(tmp_path: Path, keys: SensorKeys) -> None:
    cap = Capture()
    cid = "frag-call@ua"
    pad = [f"X-Padding-{i}: {'p' * 60}" for i in range(40)]  # ~3 kB: three fragments
    inv = sip(
        f"INVITE sip:{CALLEE}@example.net SIP/2.0",
        cid,
        "1 INVITE",
        body=sdp(UA, 30020, (96, 0)),
        compact=True,
        extra=pad,
    )
    datagram = IP(src=UA, dst=PROXY, id=77) / UDP(sport=5060, dport=5060) / Raw(inv)
    frags = fragment(datagram, fragsize=1200)
    assert len(frags) == 3
    for i, frag in enumerate(reversed(frags)):  # out of order, too
        cap.add(0.001 * i, frag)
    cap.udp(
        0.2, (PROXY, 5060), (UA, 5060), sip("SIP/2.0 486 Busy Here", cid, "1 INVITE", to_tag="b")
    )
    records = replay(cap.write(tmp_path / "frag.pcap"), keys)
    (call,) = of(records, CallRecord)
    assert isinstance(call, CallRecord)
    assert (call.final_code, call.end_reason, call.release) == (486, "busy", "rejected")
    assert call.media == (f"{UA}:30020",)
    # The INVITE counts when its last fragment arrived (2 ms after the first).
    assert call.pdd_ms == pytest.approx(198.0, abs=0.01)


def test_reinvite_moves_media_and_ties_the_new_stream(tmp_path: Path, keys: SensorKeys) -> None:
    cap = Capture()
    cid = "reinvite@ua"
    answered_call(cap, cid)
    rtp_stream(cap, 3.05, (UA, 30000), (PROXY, 40000), 0xA1, 50)
    # At 5 s the proxy moves its media to another gateway port: re-INVITE with new SDP.
    reinv = sip(
        "INVITE sip:alice@10.0.0.5 SIP/2.0",
        cid,
        "7 INVITE",
        from_tag="tt1",
        to_tag="ft1",
        body=sdp(PROXY, 41000, (8,)),
    )
    cap.udp(5.0, (PROXY, 5060), (UA, 5060), reinv)
    ok = sip("SIP/2.0 200 OK", cid, "7 INVITE", from_tag="tt1", to_tag="ft1", body=sdp(UA, 30000))
    cap.udp(5.05, (UA, 5060), (PROXY, 5060), ok)
    # The new stream goes to the new port, from ports that were never announced.
    rtp_stream(cap, 5.1, (UA, 30002), (PROXY, 41000), 0xB2, 60, pt=8)
    records = replay(cap.write(tmp_path / "reinvite.pcap"), keys)
    (call,) = of(records, CallRecord)
    assert isinstance(call, CallRecord)
    assert call.reinvites == 1
    assert f"{PROXY}:41000" in call.media
    streams = {r.ssrc: r for r in of(records, RtpStreamRecord)}  # type: ignore[attr-defined]
    assert set(streams) == {0xA1, 0xB2}
    new = streams[0xB2]
    assert isinstance(new, RtpStreamRecord)
    assert new.call_id_hash == call.call_id_hash
    assert (new.codec, new.packets, new.lost) == ("PCMA", 60, 0)


def test_timeouts_run_in_packet_time(tmp_path: Path, keys: SensorKeys) -> None:
    cfg = parse_config({"voip": {"timeouts": {"ringing_s": 5, "invite_s": 4}}})
    cap = Capture()
    ua, px = (UA, 5060), (PROXY, 5060)
    inv = f"INVITE sip:{CALLEE}@example.net SIP/2.0"
    cap.udp(0.0, ua, px, sip(inv, "silent@ua", "1 INVITE"))  # never answered
    cap.udp(1.0, ua, px, sip(inv, "ringing@ua", "1 INVITE"))
    cap.udp(1.5, px, ua, sip("SIP/2.0 180 Ringing", "ringing@ua", "1 INVITE", to_tag="r"))
    # Packet time moves on with unrelated traffic only.
    for i in range(20):
        cap.udp(2.0 + i, ("198.51.100.1", 53), ("198.51.100.2", 53), b"\x00" * 12)
    records = replay(cap.write(tmp_path / "timeouts.pcap"), keys, cfg)
    calls = {r.end_reason: r for r in of(records, CallRecord)}  # type: ignore[attr-defined]
    assert set(calls) == {"no_response", "ringing_timeout"}
    silent, ringing = calls["no_response"], calls["ringing_timeout"]
    assert isinstance(silent, CallRecord) and isinstance(ringing, CallRecord)
    assert silent.end_ns == int(T0 * NS) + 4 * NS
    assert ringing.end_ns == int((T0 + 1.5) * NS) + 5 * NS
    assert (silent.final_code, silent.release) == (0, "timeout")
    # Same input, same records: nothing depends on the wall clock.
    again = replay(tmp_path / "timeouts.pcap", keys, cfg)
    assert of(again, CallRecord) == of(records, CallRecord)


def test_registration_garbage_options_and_tls(tmp_path: Path, keys: SensorKeys) -> None:
    cap = Capture()
    ua, px = (UA, 5060), (PROXY, 5060)
    reg = "REGISTER sip:example.net SIP/2.0"
    exp = ("Expires: 600",)
    cap.udp(0.0, ua, px, sip(reg, "reg@ua", "1 REGISTER", to_user=CALLER, extra=exp))
    cap.udp(0.1, px, ua, sip("SIP/2.0 401 Unauthorized", "reg@ua", "1 REGISTER", to_user=CALLER))
    cap.udp(0.2, ua, px, sip(reg, "reg@ua", "2 REGISTER", to_user=CALLER, extra=exp))
    cap.udp(0.3, px, ua, sip("SIP/2.0 200 OK", "reg@ua", "2 REGISTER", to_user=CALLER, extra=exp))
    cap.udp(1.0, px, ua, sip("OPTIONS sip:ua@10.0.0.5 SIP/2.0", "opt@px", "1 OPTIONS"))
    cap.udp(1.1, ua, px, sip("SIP/2.0 200 OK", "opt@px", "1 OPTIONS"))
    cap.udp(1.2, ua, px, b"\x16\x03\x01 this is not SIP at all\r\n\r\n")
    cap.udp(1.3, ua, px, b"\r\n\r\n")  # keep-alive: neither a message nor an error
    tls = TCP(sport=40000, dport=5061, flags="S", seq=1)
    cap.add(2.0, IP(src=UA, dst=PROXY) / tls)
    path = cap.write(tmp_path / "reg.pcap")
    records = replay(path, keys)
    (registration,) = of(records, RegistrationRecord)
    assert isinstance(registration, RegistrationRecord)
    assert (registration.result_code, registration.challenges, registration.requests) == (
        200,
        1,
        2,
    )
    assert registration.expires_s == 600 and registration.aor_class == "international"
    assert of(records, CallRecord) == []

    stage, exposition = _run_stage(path, keys)
    assert stage.tracker.method_counts == {"REGISTER": 2, "OPTIONS": 1}
    assert stage.tracker.response_counts == {
        ("REGISTER", "4xx"): 1,
        ("REGISTER", "2xx"): 1,
        ("OPTIONS", "2xx"): 1,
    }
    assert stage.metrics.parse_errors == {"not_sip": 1}
    assert stage.metrics.sip_tls_flows == 1
    assert 'trafficguard_sip_method_responses_total{class="2xx",method="options"} 1.0' in (
        exposition
    )
    assert 'trafficguard_sip_parse_errors_total{reason="not_sip"} 1.0' in exposition
    assert "trafficguard_sip_tls_flows_total 1.0" in exposition
    assert 'trafficguard_voip_registrations_total{result="2xx"} 1.0' in exposition


def test_unsignalled_rtp_found_by_heuristic_only_when_enabled(
    tmp_path: Path, keys: SensorKeys
) -> None:
    cap = Capture()
    rtp_stream(cap, 0.0, ("198.51.100.7", 16384), ("198.51.100.8", 20000), 0x5151, 40, skip=(7,))
    # Not RTP: random bytes between high ports.
    for i in range(15):
        cap.udp(0.01 * i, ("198.51.100.7", 33333), ("198.51.100.9", 44444), bytes([i]) * 40)
    path = cap.write(tmp_path / "heuristic.pcap")
    (stream,) = of(replay(path, keys), RtpStreamRecord)
    assert isinstance(stream, RtpStreamRecord)
    assert (stream.ssrc, stream.packets, stream.lost, stream.call_id_hash) == (0x5151, 39, 1, "")
    assert stream.codec == "PCMU" and stream.mos is not None
    off = parse_config({"voip": {"rtp_heuristic": False}})
    # The classifier's own RTP label still makes the flow a media flow; with neither, nothing.
    records = replay(path, keys, off)
    assert [r.ssrc for r in of(records, RtpStreamRecord)] in ([], [0x5151])  # type: ignore[attr-defined]


def test_metrics_exposition_has_counters_histograms_and_no_identities(
    tmp_path: Path, keys: SensorKeys
) -> None:
    cap = Capture()
    answered_call(cap, "m1@ua")
    rtp_stream(cap, 3.05, (UA, 30000), (PROXY, 40000), 0x77, 50)
    inv = f"INVITE sip:{CALLEE}@example.net SIP/2.0"
    cap.udp(20.0, (UA, 5060), (PROXY, 5060), sip(inv, "m2@ua", "1 INVITE"))
    cap.udp(20.3, (PROXY, 5060), (UA, 5060), sip("SIP/2.0 486 Busy Here", "m2@ua", "1 INVITE"))
    _stage, text = _run_stage(cap.write(tmp_path / "metrics.pcap"), keys)
    assert 'trafficguard_sip_requests_total{method="invite"} 2.0' in text
    assert 'trafficguard_sip_requests_total{method="bye"} 1.0' in text
    assert 'trafficguard_sip_responses_total{class="2xx"} 2.0' in text
    assert 'trafficguard_sip_responses_total{class="4xx"} 1.0' in text
    assert 'trafficguard_voip_calls_ended_total{reason="bye"} 1.0' in text
    assert 'trafficguard_voip_calls_ended_total{reason="busy"} 1.0' in text
    assert "trafficguard_voip_calls_started_total 2.0" in text
    assert "trafficguard_voip_active_calls 0.0" in text
    assert 'trafficguard_call_pdd_seconds_bucket{le="0.25"} 0.0' in text
    assert 'trafficguard_call_pdd_seconds_bucket{le="0.5"} 2.0' in text
    assert "trafficguard_call_pdd_seconds_count 2.0" in text
    assert "trafficguard_call_duration_seconds_count 1.0" in text
    assert 'trafficguard_call_duration_seconds_bucket{le="10.0"} 1.0' in text
    assert "trafficguard_rtp_mos_count 1.0" in text
    assert "trafficguard_rtp_jitter_seconds_count 1.0" in text
    assert "trafficguard_rtp_packets_total 50.0" in text
    assert "trafficguard_voip_asr_ratio 0.5" in text
    for identity in (CALLER, CALLEE, CALLER[1:], "example.net", "m1@ua", UA, PROXY, "Alice"):
        assert identity not in text


def _run_stage(path: Path, keys: SensorKeys) -> tuple[VoipStage, str]:
    """Replay through a Pipeline; return the VoIP stage and the /metrics exposition."""
    cfg = Config()
    stages = build_stages(build_context(cfg, keys))
    pipeline = Pipeline(cfg, [("memory", MemorySink())], stages=stages)
    ReplayDriver(pipeline).run([path])
    (stage,) = [s for s in stages if isinstance(s, VoipStage)]
    registry = build_registry(pipeline.snapshot, pipeline.collectors())
    return stage, generate_latest(registry).decode()


def test_python_flow_table_and_fast_path_give_the_same_voip_records(
    tmp_path: Path, keys: SensorKeys
) -> None:
    cap = Capture()
    answered_call(cap, "both@ua")
    rtp_stream(cap, 3.05, (UA, 30000), (PROXY, 40000), 0x31, 80, skip=(5,))
    rtp_stream(cap, 1.0, ("198.51.100.7", 16384), ("198.51.100.8", 20000), 0x32, 30)
    cap.udp(30.0, (UA, 5060), (PROXY, 5060), b"garbage\r\n\r\n")
    path = cap.write(tmp_path / "both.pcap")
    voip_kinds = (CallRecord, RegistrationRecord, RtpStreamRecord, VoipIntervalRecord)
    results = []
    for mode in ("off", "auto"):
        cfg = parse_config({"capture": {"fast_path": mode}})
        records = replay(path, keys, cfg)
        results.append([r for r in records if isinstance(r, voip_kinds)])
    assert len(results[0]) == 1 + 2 + 1  # call, two streams, one interval
    assert results[0] == results[1]


def test_media_on_announced_privileged_ports_reaches_voip_on_both_paths(
    tmp_path: Path, keys: SensorKeys
) -> None:
    """RTP between ports below 1024 is neither labelled RTP nor a heuristic candidate:
    only the SDP makes it media. On the fast path such flows pass the start filter because
    the announced ports (and the RTCP port above each) are watched while the call is known;
    after the call they are not, and both paths agree throughout."""
    cap = Capture()
    ua, px, call_id = (UA, 5060), (PROXY, 5060), "low-ports@ua"
    inv = f"INVITE sip:{CALLEE}@example.net SIP/2.0"
    cap.udp(0.0, ua, px, sip(inv, call_id, "1 INVITE", body=sdp(UA, 900)))
    ok = sip("SIP/2.0 200 OK", call_id, "1 INVITE", to_tag="tt1", body=sdp(PROXY, 950, (0,)))
    cap.udp(1.0, px, ua, ok)
    cap.udp(1.01, ua, px, sip("ACK sip:x@example.net SIP/2.0", call_id, "1 ACK", to_tag="tt1"))
    rtp_stream(cap, 1.05, (UA, 900), (PROXY, 950), 0x77, 50)
    cap.udp(1.5, (UA, 901), (PROXY, 951), struct.pack("!BBH", 0x81, 201, 7) + bytes(28))
    cap.udp(4.0, ua, px, sip("BYE sip:x@example.net SIP/2.0", call_id, "2 BYE", to_tag="tt1"))
    cap.udp(4.05, px, ua, sip("SIP/2.0 200 OK", call_id, "2 BYE", to_tag="tt1"))
    cap.udp(3000.0, ("198.51.100.7", 4000), ("198.51.100.8", 4001), b"tick")  # packet time on
    rtp_stream(cap, 3600.0, (UA, 900), (PROXY, 950), 0x78, 20)  # the call is long gone
    path = cap.write(tmp_path / "low.pcap")
    voip_kinds = (CallRecord, RtpStreamRecord, VoipIntervalRecord)
    results = []
    for mode in ("off", "on"):
        cfg = parse_config(  # a batch per packet: ticks (and call expiry) between packets
            {"capture": {"fast_path": mode, "batch_frames": 1}, "voip": {"rtp_heuristic": False}}
        )
        results.append([r for r in replay(path, keys, cfg) if isinstance(r, voip_kinds)])
    assert results[0] == results[1]
    (call,) = of(results[1], CallRecord)
    streams = of(results[1], RtpStreamRecord)
    assert [(s.ssrc, s.call_id_hash) for s in streams] == [(0x77, call.call_id_hash)]  # type: ignore[attr-defined]


def test_query_commands_filter_and_show_pseudonyms_only(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    cap = Capture()
    answered_call(cap, "q1@ua")
    rtp_stream(cap, 3.05, (UA, 30000), (PROXY, 40000), 0x41, 100)  # clean: MOS 4.41
    rtp_stream(cap, 3.06, (PROXY, 40000), (UA, 30000), 0x42, 100, skip=range(2, 100, 4))
    inv = f"INVITE sip:{CALLEE}@example.net SIP/2.0"
    cap.udp(20.0, (UA, 5060), (PROXY, 5060), sip(inv, "q2@ua", "1 INVITE"))
    cap.udp(20.3, (PROXY, 5060), (UA, 5060), sip("SIP/2.0 486 Busy Here", "q2@ua", "1 INVITE"))
    reg = "REGISTER sip:example.net SIP/2.0"
    cap.udp(21.0, (UA, 5060), (PROXY, 5060), sip(reg, "q3@ua", "1 REGISTER", to_user=CALLER))
    ok = sip("SIP/2.0 200 OK", "q3@ua", "1 REGISTER", to_user=CALLER, extra=("Expires: 60",))
    cap.udp(21.1, (PROXY, 5060), (UA, 5060), ok)
    pcap = cap.write(tmp_path / "query.pcap")
    store = tmp_path / "store.db"
    cfg = tmp_path / "tg.yaml"
    cfg.write_text(f"privacy:\n  keys_dir: {tmp_path / 'keys'}\n")
    replayed = run_cli("--config", cfg, "replay", "-q", "--no-metrics", "--store", store, pcap)
    assert replayed.returncode == 0, replayed.stderr

    def query(*args: str) -> list[dict[str, object]]:
        proc = run_cli("--config", cfg, "query", *args, "--store", store, "--json")
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    calls = query("calls")
    assert sorted(c["final_code"] for c in calls) == [200, 486]
    assert [c["final_code"] for c in query("calls", "--final-code", "486")] == [486]
    answered = query("calls", "--answered")
    assert [c["end_reason"] for c in answered] == ["bye"]
    streams = query("rtp")
    assert sorted(s["ssrc"] for s in streams) == [0x41, 0x42]
    bad = query("rtp", "--mos-below", "4")
    assert [s["ssrc"] for s in bad] == [0x42] and bad[0]["lost"] == 25
    assert bad[0]["call_id_hash"] == answered[0]["call_id_hash"]
    (registration,) = query("registrations")
    assert (registration["result_code"], registration["expires_s"]) == (200, 60)

    table = run_cli("--config", cfg, "query", "calls", "--store", store)
    assert table.returncode == 0, table.stderr
    assert "busy" in table.stdout and "international" in table.stdout
    for text in (table.stdout, json.dumps(calls), json.dumps(streams), json.dumps(registration)):
        for identity in (CALLER, CALLEE, CALLER[1:], "example.net", "q1@ua", "Alice"):
            assert identity not in text
    usage = run_cli("query", "rtp", "--store", store, "--limit", "0")
    assert usage.returncode == 2
