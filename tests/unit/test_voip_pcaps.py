"""Real captures: SIP counts and final codes against ``tshark -z sip,stat``, RTP against
``tshark -z rtp,streams``. Skipped when the captures or tshark are not available."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
from pathlib import Path

import dpkt
import pytest
from realdata import real_pcap

from trafficguard.voip.dialogs import CallTracker
from trafficguard.voip.numbers import NumberClassifier
from trafficguard.voip.records import CallRecord, RegistrationRecord
from trafficguard.voip.rtp import RtpStreams
from trafficguard.voip.sip import parse_sip_datagram

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
FILES = ["zeek-sip-wireshark.pcap", "ndpi-sip.pcap"]

pytestmark = [pytest.mark.golden]  # tshark is installed by scripts/setup.sh


class HmacPseudonymizer:
    """HMAC-SHA256 test double of the keyed pseudonymizer (as in test_voip_dialogs)."""

    def user(self, value: str) -> str:
        return hmac.new(b"k", b"u" + value.encode(), hashlib.sha256).hexdigest()[:20]

    def token(self, value: str) -> str:
        return hmac.new(b"k", b"t" + value.encode(), hashlib.sha256).hexdigest()[:20]


def _path(name: str) -> Path:
    return real_pcap(name)


def _udp(path: Path):  # type: ignore[no-untyped-def]
    with path.open("rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP):
                udp = ip.data
                src = (".".join(map(str, ip.src)), udp.sport)
                dst = (".".join(map(str, ip.dst)), udp.dport)
                yield round(ts * 1e9), src, dst, bytes(udp.data)


def _tshark_sip_stat(path: Path) -> tuple[int, dict[str, int], dict[int, int]]:
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-q", "-z", "sip,stat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"Number of SIP messages: (\d+)", out).group(1))  # type: ignore[union-attr]
    codes = {int(c): int(n) for c, n in re.findall(r"SIP (\d{3}) [^:]*:\s+(\d+) Packets", out)}
    methods = {m: int(n) for m, n in re.findall(r"^\s+([A-Z]+)\s+:\s+(\d+) Packets", out, re.M)}
    return total, methods, codes


def _replay(path: Path) -> tuple[CallTracker, int, list[CallRecord | RegistrationRecord]]:
    tracker = CallTracker(HmacPseudonymizer(), NumberClassifier())
    parsed = 0
    for ts, src, dst, payload in _udp(path):
        if 5060 not in (src[1], dst[1]):
            continue
        msgs, reason = parse_sip_datagram(payload)
        assert reason is None
        for msg in msgs:
            parsed += 1
            tracker.tick(ts)
            tracker.observe(msg, ts, src, dst, "udp")
    tracker.flush_all()
    return tracker, parsed, tracker.take_records()


@pytest.mark.parametrize("name", FILES)
def test_sip_counts_match_tshark(name: str) -> None:
    path = _path(name)
    total, methods, codes = _tshark_sip_stat(path)
    tracker, parsed, _ = _replay(path)
    assert parsed == total == 81
    assert tracker.method_counts == methods
    assert tracker.code_counts == codes
    assert sum(tracker.response_counts.values()) == sum(codes.values())


def test_calls_and_registrations_of_the_wireshark_trace() -> None:
    _, _, records = _replay(_path("zeek-sip-wireshark.pcap"))
    calls = [r for r in records if isinstance(r, CallRecord)]
    regs = [r for r in records if isinstance(r, RegistrationRecord)]
    summary = sorted(
        (r.invite_ns, r.final_code, r.release, r.end_reason, r.attempts, r.auth_challenges)
        for r in calls
    )
    assert [s[1:] for s in summary] == [
        (408, "cancel", "cancelled", 1, 0),  # INVITE, 100, CANCEL x11, 408
        (403, "rejected", "rejected", 2, 1),  # 407, INVITE with credentials, 403
        (403, "rejected", "rejected", 2, 1),
        (480, "rejected", "no_answer", 2, 1),  # 407, INVITE, 100, 183, 480
    ]
    no_answer = min(calls, key=lambda r: abs(r.final_code - 480))
    assert no_answer.first_provisional_ns is not None
    assert no_answer.pdd_ms == pytest.approx(426.462, abs=0.001)  # frames 72 -> 74
    assert all(r.caller_class == "non_numeric" or r.caller for r in calls)
    assert [r.result_code for r in regs if r.end_reason == "final"] == [403, 200, 200, 200]
    assert sum(r.challenges for r in regs) == 14  # every 401 belongs to one attempt
    assert all(r.aor and r.aor_class for r in regs)


def test_rtp_stream_matches_tshark() -> None:
    path = _path("ndpi-sip.pcap")
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-q", "-z", "rtp,streams"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line.split() for line in out.splitlines() if "0x" in line)
    # Start End SrcIP SrcPort DstIP DstPort SSRC Payload Pkts Lost (pct) MinD MeanD MaxD
    # MinJ MeanJ MaxJ
    ssrc = int(row[6], 16)
    pkts, lost = int(row[8]), int(row[9])
    max_delta, mean_jitter, max_jitter = float(row[13]), float(row[15]), float(row[16])
    streams = RtpStreams()
    for ts, src, dst, payload in _udp(path):
        if (src[0], src[1], dst[0], dst[1]) == (row[2], int(row[3]), row[4], int(row[5])):
            assert streams.observe_packet(ts, payload)
    st = streams.streams[ssrc]
    assert (st.packets, st.lost) == (pkts, lost)
    assert st.max_delta_ns / 1e6 == pytest.approx(max_delta, abs=0.001)
    assert st.jitter_mean_ms == pytest.approx(mean_jitter, abs=0.001)
    assert st.jitter_max_ms == pytest.approx(max_jitter, abs=0.001)
