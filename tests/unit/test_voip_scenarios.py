"""VoIP scenario captures (``scripts/make_voip_scenarios.py``) through the whole pipeline.

Each capture in ``tests/data/voip/`` is replayed with ``replay_records`` and its call,
registration and RTP stream records are compared with ``labels.json`` (facts that follow
from how the capture was built). The generator must reproduce the committed files byte
for byte, tshark must see the SIP and RTP the labels claim, and the canary test replays
everything through the CLI (SQLite, JSON lines, /metrics scraped during the replay,
JSON logs) and finds none of the planted identities in any output.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trafficguard.config import Config
from trafficguard.flow.records import FlowRecord
from trafficguard.pipeline import replay_records
from trafficguard.privacy.keys import SensorKeys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.sqlite import query_records
from trafficguard.voip.numbers import NumberClassifier
from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord

REPO = Path(__file__).resolve().parents[2]
VOIP_DIR = REPO / "tests" / "data" / "voip"
GENERATOR = REPO / "scripts" / "make_voip_scenarios.py"
LABELS: dict[str, Any] = json.loads((VOIP_DIR / "labels.json").read_text())
FILES: list[str] = list(LABELS["files"])
TSHARK = "/usr/bin/tshark"  # installed by scripts/setup.sh
NS_PER_MS = 1_000_000


@pytest.fixture(scope="module")
def replayed(keys: SensorKeys) -> dict[str, list[msgspec.Struct]]:
    """Every scenario replayed once (separately), all record kinds."""
    return {name: replay_records([VOIP_DIR / name], Config(), keys=keys) for name in FILES}


def _of(records: list[msgspec.Struct], cls: type) -> list[Any]:
    return [r for r in records if isinstance(r, cls)]


def _user(pseudo: Pseudonymizer, raw: str) -> str:
    """The pseudonym the tracker must give a raw user part (classify → canonical → HMAC)."""
    return pseudo.user(NumberClassifier().classify(raw)[1])


# -- records against the labels -----------------------------------------------------------
@pytest.mark.parametrize("name", FILES)
def test_calls_match_labels(
    name: str, replayed: dict[str, list[msgspec.Struct]], pseudo: Pseudonymizer
) -> None:
    calls = sorted(_of(replayed[name], CallRecord), key=lambda c: c.invite_ns)
    expected = LABELS["files"][name]["calls"]
    assert len(calls) == len(expected)
    for call, want in zip(calls, expected, strict=True):
        assert call.call_id_hash == pseudo.token(want["call_id"])
        assert call.caller == _user(pseudo, want["caller_user"])
        assert call.callee == _user(pseudo, want["callee_user"])
        got = {
            "caller_class": call.caller_class,
            "callee_class": call.callee_class,
            "transport": call.transport,
            "final_code": call.final_code,
            "release": call.release,
            "end_reason": call.end_reason,
            "answered": call.answer_ns is not None,
            "attempts": call.attempts,
            "auth_challenges": call.auth_challenges,
            "forked": call.forked,
            "codecs": list(call.codecs),
            "media": list(call.media),
            "reinvites": call.reinvites,
            "held": call.held,
        }
        assert got == {k: want[k] for k in got}
        assert call.pdd_ms == pytest.approx(want["pdd_ms"], abs=0.001)
        assert call.duration_ms == pytest.approx(want["duration_ms"], abs=0.001)


@pytest.mark.parametrize("name", FILES)
def test_registrations_match_labels(
    name: str, replayed: dict[str, list[msgspec.Struct]], pseudo: Pseudonymizer
) -> None:
    regs = sorted(_of(replayed[name], RegistrationRecord), key=lambda r: r.ts_ns)
    expected = LABELS["files"][name]["registrations"]
    start_ns = LABELS["files"][name]["start_ns"]
    assert len(regs) == len(expected)
    for reg, want in zip(regs, expected, strict=True):
        assert reg.call_id_hash == pseudo.token(want["call_id"])
        assert reg.aor == _user(pseudo, want["aor_user"])
        got = {
            "aor_class": reg.aor_class,
            "transport": reg.transport,
            "result_code": reg.result_code,
            "expires_s": reg.expires_s,
            "challenges": reg.challenges,
            "requests": reg.requests,
            "end_reason": reg.end_reason,
            "ts_ms": (reg.ts_ns - start_ns) / NS_PER_MS,
            "end_ms": (reg.end_ns - start_ns) / NS_PER_MS,
        }
        assert got == {k: want[k] for k in got}


def _stream_key(s: RtpStreamRecord) -> tuple[Any, ...]:
    return (s.ssrc, f"{s.src_addr}:{s.src_port}", f"{s.dst_addr}:{s.dst_port}", s.first_ns)


@pytest.mark.parametrize("name", FILES)
def test_rtp_streams_match_labels(
    name: str, replayed: dict[str, list[msgspec.Struct]], pseudo: Pseudonymizer
) -> None:
    label = LABELS["files"][name]
    streams = sorted(_of(replayed[name], RtpStreamRecord), key=_stream_key)
    call_hashes = [pseudo.token(c["call_id"]) for c in label["calls"]]
    got = Counter(
        (
            s.ssrc,
            f"{s.src_addr}:{s.src_port}",
            f"{s.dst_addr}:{s.dst_port}",
            s.payload_type,
            s.codec,
            s.packets,
            s.expected,
            s.lost,
            s.duplicates,
            s.reordered,
            s.seq_resets,
            s.call_id_hash,
        )
        for s in streams
    )
    want = Counter(
        (
            w["ssrc"],
            w["src"],
            w["dst"],
            w["payload_type"],
            w["codec"],
            w["packets"],
            w["expected"],
            w["lost"],
            w["duplicates"],
            w["reordered"],
            w["seq_resets"],
            call_hashes[w["call"]] if w["call"] is not None else "",
        )
        for w in label["rtp_streams"]
    )
    assert got == want
    for s in streams:  # 20 ms packetisation, 8 kHz: the meter's clock and timing agree
        assert s.clock_rate == 8000
        assert s.max_delta_ms >= 20.0


def test_impaired_stream_has_jitter_only_where_reordered(
    replayed: dict[str, list[msgspec.Struct]],
) -> None:
    streams = {s.ssrc: s for s in _of(replayed["rtp_impairments.pcap"], RtpStreamRecord)}
    impaired, restarted, clean = streams[0x0A0B0012], streams[0x0A0B1012], streams[0x0B0A0012]
    assert impaired.jitter_max_ms > 0.5  # two packets arrived 20 ms late / early
    assert restarted.jitter_max_ms == clean.jitter_max_ms == 0.0
    assert impaired.mos is None or impaired.mos < clean.mos  # type: ignore[operator]


def test_long_call_is_one_call_across_active_timeouts(
    replayed: dict[str, list[msgspec.Struct]],
) -> None:
    """The 3-hour call's SIP flow is cut into interim flow records every 30 minutes (the
    active timeout); the call record is still exactly one, 3 hours long."""
    records = replayed["long_call.pcap"]
    sip_flows = [f for f in _of(records, FlowRecord) if 5060 in (f.src_port, f.dst_port)]
    label = LABELS["files"]["long_call.pcap"]
    assert len({f.flow_id for f in sip_flows}) == 1
    assert len(sip_flows) >= label["sip_flow_min_records"]
    assert [f.end_reason for f in sip_flows].count("active") >= label["sip_flow_min_records"] - 1
    (call,) = _of(records, CallRecord)
    assert call.duration_ms == 3 * 3600 * 1000
    assert call.end_reason == "bye"


def test_other_methods_make_no_call_or_registration(
    replayed: dict[str, list[msgspec.Struct]],
) -> None:
    records = replayed["other_methods.pcap"]
    assert not _of(records, CallRecord)
    assert not _of(records, RegistrationRecord)
    sip_flows = [f for f in _of(records, FlowRecord) if f.dst_port == 5060]
    assert sum(f.packets_fwd + f.packets_rev for f in sip_flows) == 8


def test_fragmented_invite_is_reassembled() -> None:
    """The INVITE really is fragmented in the capture (so the call record proves reassembly)."""
    frags = LABELS["files"]["fragmented.pcap"]["ip_fragments"]
    assert frags >= 3
    out = subprocess.run(
        [
            TSHARK,
            "-r",
            str(VOIP_DIR / "fragmented.pcap"),
            "-Y",
            "ip.flags.mf == 1",
            "-T",
            "fields",
            "-e",
            "ip.id",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert len(out) == frags - 1


# -- the captures themselves ----------------------------------------------------------------
def test_generator_is_reproducible(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GENERATOR), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([*FILES, "labels.json"])
    for name in written:
        assert (tmp_path / name).read_bytes() == (VOIP_DIR / name).read_bytes(), name


def _tshark(path: Path, *stats: str) -> str:
    args = [TSHARK, "-r", str(path), "-q"]
    for stat in stats:
        args += ["-z", stat]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("name", FILES)
def test_labels_agree_with_tshark(name: str) -> None:
    """tshark (the reference decoder) sees the SIP messages and RTP streams we labelled."""
    label = LABELS["files"][name]
    out = _tshark(VOIP_DIR / name, "sip,stat", "rtp,streams")
    requests = {m: int(n) for m, n in re.findall(r"^\s+([A-Z]+)\s+:\s+(\d+) Packets", out, re.M)}
    responses = {
        c: int(n) for c, n in re.findall(r"^\s+SIP (\d{3}) .*:\s+(\d+) Packets", out, re.M)
    }
    assert requests == label["sip_requests"]
    assert responses == label["sip_responses"]
    rtp = Counter()
    for src, sport, dst, dport, ssrc, pkts in re.findall(
        r"^\s+[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+\S+\s+(\d+)",
        out,
        re.M,
    ):
        rtp[(int(ssrc, 16), f"{src}:{sport}", f"{dst}:{dport}")] += int(pkts)
    want = Counter()
    for s in label["rtp_streams"]:
        want[(s["ssrc"], s["src"], s["dst"])] += s["packets"]
    assert rtp == want


def test_every_canary_is_in_its_capture() -> None:
    """Positive control for the canary test: the planted values are really on the wire."""
    seen = 0
    for name, label in LABELS["files"].items():
        raw = (VOIP_DIR / name).read_bytes()
        for canary in label["canaries"]:
            assert canary["value"].encode() in raw, (name, canary)
            seen += 1
    kinds = {c["kind"] for f in LABELS["files"].values() for c in f["canaries"]}
    assert kinds >= {
        "display_name",
        "number",
        "uri_user",
        "uri_host",
        "call_id",
        "body",
        "sdp_user",
        "sdp_session",
        "rtp_payload",
        "rtcp_sdes",
    }
    assert seen >= 100


# -- canaries through the CLI ----------------------------------------------------------------
def _needles() -> dict[str, str]:
    """Every form of every canary to look for (lower-case haystack): text, hex, digits."""
    needles: dict[str, str] = {}
    for label in LABELS["files"].values():
        for canary in label["canaries"]:
            value = canary["value"]
            needles[value.lower()] = value
            needles[value.encode().hex()] = value
            digits = value.lstrip("+")
            if canary["kind"] == "number" and digits.isdigit():
                needles[digits] = value
    return needles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sqlite_dump(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        parts = []
        for table in tables:
            parts += [repr(row) for row in con.execute(f'SELECT * FROM "{table}"')]
        return "\n".join(parts)
    finally:
        con.close()


def test_no_canary_reaches_any_output(tmp_path: Path) -> None:
    db = tmp_path / "voip.db"
    jsonl = tmp_path / "voip.jsonl"
    port = _free_port()
    env_path = str(REPO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trafficguard",
            "replay",
            "--store",
            str(db),
            "--jsonl",
            str(jsonl),
            "--metrics",
            f"127.0.0.1:{port}",
            "--speed",
            "400000",
            *(str(VOIP_DIR / n) for n in FILES),
        ],
        cwd=tmp_path,  # keys are created in ./var/keys
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    scrapes: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    scrapes.append(r.read().decode())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    query = subprocess.run(
        [sys.executable, "-m", "trafficguard", "query", "calls", "--store", str(db), "--json"],
        cwd=tmp_path,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert query.returncode == 0, query.stderr.decode()

    # The outputs are not empty: the replay stored and exported the calls.
    n_calls = sum(len(f["calls"]) for f in LABELS["files"].values())
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sum(1 for line in lines if line.get("kind") == "call") == n_calls
    assert len(query_records(db, "call", limit=None, order="invite_ns")) == n_calls
    assert len(query.stdout.splitlines()) == n_calls  # --json: one JSON object a line
    assert len(scrapes) >= 3
    assert any(re.search(r"^trafficguard_sip\w*_total\{.*\} [1-9]", s, re.M) for s in scrapes)
    assert b'"event"' in stderr  # structured logs were written

    outputs = {
        "sqlite files": b"".join(p.read_bytes() for p in tmp_path.glob("voip.db*")),
        "sqlite dump": _sqlite_dump(db).encode(),
        "jsonl": jsonl.read_bytes(),
        "query": query.stdout + query.stderr,
        "metrics": "\n".join(scrapes).encode(),
        "logs": stderr + stdout,
    }
    needles = _needles()
    hits = [
        (where, needles[needle])
        for where, data in outputs.items()
        for hay in (data.decode("latin-1").lower(),)
        for needle in needles
        if needle in hay
    ]
    assert hits == []
