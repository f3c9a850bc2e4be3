"""SIP over WebSocket (RFC 7118): the deframer, the upgrade check, and the stage on
captures built here (a SIP call inside WebSocket frames on TCP/8080 and on TCP/5060, and
an HTTP flow on 8080 that never upgrades)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap

from trafficguard.config import Config, parse_config
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.privacy.keys import SensorKeys
from trafficguard.sinks.memory import MemorySink
from trafficguard.voip.records import CallRecord
from trafficguard.voip.stage import VoipStage
from trafficguard.voip.websocket import (
    FAILED,
    OPEN,
    WS_BAD_FRAME,
    WS_COMPRESSED,
    WS_OVERSIZE,
    WsDeframer,
    WsSipFramer,
    is_upgrade_request,
    is_upgrade_response,
    unmask,
)
from trafficguard.wiring import build_context, build_stages


def frame(
    payload: bytes,
    opcode: int = 1,
    *,
    fin: bool = True,
    key: bytes | None = b"\x11\x22\x33\x44",
    rsv: int = 0,
) -> bytes:
    """One WebSocket frame (RFC 6455 §5.2); masked when ``key`` is given."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    m = 0x80 if key is not None else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + unmask(payload, key)


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: sip.example.net\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nCookie: secret=1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
    b"Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
)


# -- the deframer ---------------------------------------------------------------------------
def test_masked_unmasked_and_extended_lengths() -> None:
    d = WsDeframer()
    big = bytes(range(256)) * 300  # 76800 bytes: 64-bit length
    mid = b"x" * 300  # 16-bit length
    data = frame(b"hello") + frame(mid, 2, key=None) + frame(big[:70000], key=b"abcd")
    assert d.feed(data) == [b"hello", mid, big[:70000]]
    assert d.errors == {} and d.buffered == 0


def test_fragmented_message_with_control_frames_between() -> None:
    d = WsDeframer()
    data = (
        frame(b"INVITE ", fin=False)
        + frame(b"ping", 9)
        + frame(b"sip:x ", 0, fin=False, key=b"\x00\xff\x00\xff")
        + frame(b"", 10)
        + frame(b"SIP/2.0", 0)
        + frame(b"\x03\xe8", 8)  # close
    )
    for cut in range(len(data) + 1):  # every split point gives the same message
        d = WsDeframer()
        assert d.feed(data[:cut]) + d.feed(data[cut:]) == [b"INVITE sip:x SIP/2.0"]
        assert d.errors == {}


def test_garbage_is_counted_and_dropped() -> None:
    d = WsDeframer()
    assert d.feed(frame(b"x", 3)) == []  # reserved opcode
    assert d.errors == {WS_BAD_FRAME: 1} and d.buffered == 0
    assert d.feed(frame(b"cont", 0)) == []  # continuation of nothing
    assert d.feed(frame(b"p" * 126, 9)) == []  # control frame too long
    assert d.errors == {WS_BAD_FRAME: 3}
    assert d.feed(frame(b"ok")) == [b"ok"]  # the next frame is read again


def test_compressed_and_oversize_frames_are_skipped_by_count() -> None:
    d = WsDeframer(max_message=100)
    data = frame(b"z" * 50, rsv=0x40) + frame(b"y" * 500) + frame(b"after")
    assert d.feed(data[:30]) + d.feed(data[30:200]) + d.feed(data[200:]) == [b"after"]
    assert d.errors == {WS_COMPRESSED: 1, WS_OVERSIZE: 1}
    d = WsDeframer(max_message=100)  # a fragmented message growing beyond the bound
    data = frame(b"a" * 60, fin=False) + frame(b"b" * 60, 0, fin=False) + frame(b"c", 0)
    assert d.feed(data + frame(b"next")) == [b"next"]
    assert d.errors == {WS_OVERSIZE: 1}


def test_upgrade_checks_read_only_what_matters() -> None:
    assert is_upgrade_request(UPGRADE[:-4].lower())
    assert not is_upgrade_request(b"get / http/1.1\r\nhost: x")
    assert not is_upgrade_request(b"post / http/1.1\r\nupgrade: websocket")
    assert is_upgrade_response(SWITCHING[:-4].lower())
    assert not is_upgrade_response(b"http/1.1 200 ok\r\nupgrade: websocket")


def test_sip_framer_handshake_then_messages() -> None:
    sip = b"OPTIONS sip:x@example.net SIP/2.0\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    client = WsSipFramer(request=True)
    assert client.feed(UPGRADE[:20]) == []
    (msg,) = client.feed(UPGRADE[20:] + frame(sip))  # no Content-Length: the frame ends it
    assert client.state == OPEN and msg.method == "OPTIONS"
    assert not hasattr(client, "_buf") and client._hs is None  # the headers are gone
    server = WsSipFramer(request=False)
    server.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert server.state == FAILED and server.feed(frame(sip)) == []


# -- the stage -------------------------------------------------------------------------------
T0 = 1_700_000_000.0
UA, PROXY = "10.0.0.5", "192.0.2.10"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups by scapy


def sip_msg(start: str, cseq: str, *, to_tag: str = "", body: bytes = b"") -> bytes:
    lines = [
        start,
        "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK" + cseq.split(maxsplit=1)[0],
        'From: "Alice" <sip:alice@example.net>;tag=ft1',
        "To: <sip:+4940333444@example.net>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: ws-call@ua",
        f"CSeq: {cseq}",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = b"v=0\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"


def ws_capture(path: Path, port: int, *, upgrade: bool = True) -> Path:
    frames: list[ScapyPacket] = []
    ua, px = (UA, 40200), (PROXY, port)
    seq = {ua: 1000, px: 5000}

    def seg(t: float, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        tcp = TCP(sport=src[1], dport=dst[1], flags="PA", seq=seq[src], ack=seq[dst])
        f = ETH / IP(src=src[0], dst=dst[0]) / tcp / Raw(data)
        f.time = T0 + t
        frames.append(f)
        seq[src] += len(data)

    syn = ETH / IP(src=UA, dst=PROXY) / TCP(sport=ua[1], dport=port, flags="S", seq=999)
    syn.time = T0
    frames.append(syn)
    seg(0.01, ua, px, UPGRADE if upgrade else UPGRADE.replace(b"Upgrade: websocket\r\n", b""))
    seg(0.02, px, ua, SWITCHING if upgrade else b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    inv = frame(sip_msg("INVITE sip:+4940333444@example.net SIP/2.0", "1 INVITE", body=SDP))
    seg(0.1, ua, px, inv[:30])  # the INVITE's frame across two segments ...
    seg(0.11, ua, px, inv[30:] + frame(b"", 9))  # ... then a ping
    ok = sip_msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=SDP)
    seg(1.0, px, ua, frame(ok[:50], fin=False, key=None) + frame(ok[50:], 0, key=None))
    seg(1.1, ua, px, frame(sip_msg("ACK sip:x@example.net SIP/2.0", "1 ACK", to_tag="tt")))
    seg(9.0, ua, px, frame(sip_msg("BYE sip:x@example.net SIP/2.0", "2 BYE", to_tag="tt")))
    wrpcap(str(path), frames)
    return path


def run_stage(path: Path, keys: SensorKeys, mode: str) -> tuple[VoipStage, list[CallRecord]]:
    cfg = parse_config({"capture": {"fast_path": mode}}) if mode else Config()
    stages = build_stages(build_context(cfg, keys))
    sink = MemorySink()
    ReplayDriver(Pipeline(cfg, [("memory", sink)], stages=stages)).run([path])
    (stage,) = [s for s in stages if isinstance(s, VoipStage)]
    return stage, [r for r in sink.records if isinstance(r, CallRecord)]


@pytest.mark.parametrize("mode", ["off", "auto"])
@pytest.mark.parametrize("port", [8080, 5060])
def test_call_over_websocket(tmp_path: Path, keys: SensorKeys, port: int, mode: str) -> None:
    stage, calls = run_stage(ws_capture(tmp_path / "ws.pcap", port), keys, mode)
    (call,) = calls
    assert (call.transport, call.final_code, call.end_reason) == ("ws", 200, "bye")
    assert call.codecs == ("PCMU",)
    assert stage.tracker.method_counts == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert stage.metrics.parse_errors == {}
    assert not stage._handlers  # flows ended


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_http_flow_that_never_upgrades_is_dropped(
    tmp_path: Path, keys: SensorKeys, mode: str
) -> None:
    stage, calls = run_stage(ws_capture(tmp_path / "http.pcap", 8080, upgrade=False), keys, mode)
    assert calls == [] and stage.tracker.method_counts == {}
    assert stage.metrics.parse_errors == {}
    assert "ws_upgrade" not in stage.metrics.transport_events
