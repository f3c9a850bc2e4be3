"""Evidence: sealed round trip, wrong key, tamper/truncation detection, budget, purge."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from trafficguard.escalation.audit import AuditLog, read_entries
from trafficguard.escalation.evidence import (
    EvidenceError,
    EvidenceIntegrityError,
    EvidenceKeyError,
    EvidenceTruncatedError,
    EvidenceWriter,
    evidence_bytes_used,
    generate_analyst_keypair,
    load_x25519_private,
    load_x25519_public,
    open_evidence,
    open_grant_evidence,
    purge_expired,
    segments,
)
from trafficguard.escalation.grants import Grant, parse_grant, to_ns

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
NOW = to_ns(T0)
S = 1_000_000_000
ANALYST = X25519PrivateKey.generate()


def _grant(gid: str = "G-1", budget: int = 100) -> Grant:
    return parse_grant({
        "id": gid, "purpose": "fraud", "target": {"kind": "number", "value": "+15550100"},
        "scopes": ["sip"], "not_before": T0, "expires": T0 + dt.timedelta(hours=1),
        "byte_budget": budget, "case_reference": "C-1", "created_by": "ops"})


def _write(tmp: Path, items: list[bytes], budget: int = 1000, close: bool = True) -> Path:
    w = EvidenceWriter(tmp, _grant(budget=budget), ANALYST.public_key(), now_ns=NOW)
    for i, payload in enumerate(items):
        w.write("sip", NOW + i, payload)
    if close:
        w.close(NOW + 99)
    return w.path


def test_round_trip(tmp_path: Path) -> None:
    items = [b"INVITE sip:bob@example.net SIP/2.0\r\n", b"", b"x" * 300]
    path = _write(tmp_path, items)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "G-1").stat().st_mode & 0o777 == 0o700
    got = list(open_evidence(path, ANALYST))
    assert [i.payload for i in got] == items
    assert [i.ts_ns for i in got] == [NOW, NOW + 1, NOW + 2]
    assert {i.kind for i in got} == {"sip"}
    assert b"INVITE" not in path.read_bytes()  # the sensor's file holds no plaintext


def test_wrong_key(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"secret"])
    with pytest.raises(EvidenceKeyError):
        list(open_evidence(path, X25519PrivateKey.generate()))


def test_truncation_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"a" * 50, b"b" * 50])
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 40, len(data) - 48):
        path.write_bytes(data[:cut])
        with pytest.raises(EvidenceTruncatedError):
            list(open_evidence(path, ANALYST))


def test_unclosed_writer_reads_as_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"a", b"b"], close=False)
    got = []
    with pytest.raises(EvidenceTruncatedError):
        for item in open_evidence(path, ANALYST):
            got.append(item.payload)
    assert got == [b"a", b"b"]  # what was written before the crash is still authentic


def test_tamper_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"a" * 50, b"b" * 50])
    data = bytearray(path.read_bytes())
    data[-60] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(EvidenceIntegrityError):
        list(open_evidence(path, ANALYST))


def test_chunk_reorder_and_final_flag_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"a" * 10, b"b" * 10])
    data = path.read_bytes()
    hlen = int.from_bytes(data[8:12], "big")
    start = 12 + hlen
    c1 = data[start:start + 4 + 10 + 9 + 16]
    c2 = data[start + len(c1):start + 2 * len(c1)]
    rest = data[start + 2 * len(c1):]
    path.write_bytes(data[:start] + c2 + c1 + rest)
    with pytest.raises(EvidenceIntegrityError):
        list(open_evidence(path, ANALYST))
    # drop the final chunk and flag the last item as final instead
    flagged = bytes([c2[0] | 0x80]) + c2[1:]
    path.write_bytes(data[:start] + c1 + flagged)
    with pytest.raises(EvidenceIntegrityError):
        list(open_evidence(path, ANALYST))


def test_header_swap_to_other_grant_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"a"])
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"grant":"G-1"', b'"grant":"G-2"'))
    with pytest.raises(EvidenceIntegrityError):
        list(open_evidence(path, ANALYST))


def test_budget_enforced_and_audited(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    audit = AuditLog(tmp_path / "audit.jsonl", key)
    w = EvidenceWriter(tmp_path / "ev", _grant(budget=100), ANALYST.public_key(), now_ns=NOW,
                       audit=audit)
    assert w.write("sip", NOW, b"x" * 60) == (60, False)
    assert w.write("sip", NOW + 1, b"x" * 50) == (0, True)  # would overrun: refused whole
    assert w.write("sip", NOW + 2, b"x" * 10) == (0, True)  # stays exhausted
    w.close(NOW + 3)
    assert [i.payload for i in open_evidence(w.path, ANALYST)] == [b"x" * 60]
    events = [e["event"] for e in read_entries(tmp_path / "audit.jsonl")]
    assert events.count("grant.exhausted") == 1
    assert "evidence.written" in events
    # a second segment (after a restart) continues the same budget
    used = evidence_bytes_used(tmp_path / "ev", "G-1")
    assert used == 60
    w2 = EvidenceWriter(tmp_path / "ev", _grant(budget=100), ANALYST.public_key(),
                        now_ns=NOW, bytes_used=used)
    assert w2.write("dns", NOW, b"y" * 40) == (40, True)
    w2.close(NOW)
    assert len(segments(tmp_path / "ev", "G-1")) == 2
    assert [i.kind for i in open_grant_evidence(tmp_path / "ev", "G-1", ANALYST)] == ["sip", "dns"]
    audit.close()


def test_bad_kind(tmp_path: Path) -> None:
    w = EvidenceWriter(tmp_path, _grant(), ANALYST.public_key(), now_ns=NOW)
    with pytest.raises(ValueError):
        w.write("ftp", NOW, b"")
    w.close(NOW)


def test_purge_expired(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    g1 = _grant("G-1")
    EvidenceWriter(ev, g1, ANALYST.public_key(), now_ns=NOW).close(NOW)
    EvidenceWriter(ev, _grant("G-2"), ANALYST.public_key(), now_ns=NOW).close(NOW)
    key = Ed25519PrivateKey.generate()
    audit = AuditLog(tmp_path / "audit.jsonl", key)
    retention = 86400
    before = g1.expires_ns + retention * S - 1
    assert purge_expired(ev, [g1], retention, before, audit) == []
    # G-2's grant file is gone: its expiry comes from the segment header
    assert purge_expired(ev, [g1], retention, before + 1, audit) == ["G-1", "G-2"]
    assert not any(ev.iterdir())
    purged = [e for e in read_entries(tmp_path / "audit.jsonl") if e["event"] == "evidence.purged"]
    assert len(purged) == 2
    audit.close()


def test_keygen_files(tmp_path: Path) -> None:
    generate_analyst_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    assert os.stat(tmp_path / "a.key").st_mode & 0o777 == 0o600
    priv, pub = load_x25519_private(tmp_path / "a.key"), load_x25519_public(tmp_path / "a.pub")
    w = EvidenceWriter(tmp_path / "ev", _grant(), pub, now_ns=NOW)
    w.write("pcap", NOW, b"\x00\x01")
    w.close(NOW)
    assert [i.payload for i in open_evidence(w.path, priv)] == [b"\x00\x01"]


def test_grant_id_cannot_escape_directory(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError):
        segments(tmp_path, "../etc")
    (tmp_path / ".hidden").mkdir()
    assert purge_expired(tmp_path, [], 0, NOW * 2) == []
