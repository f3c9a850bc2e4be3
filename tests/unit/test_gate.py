"""The escalation gate in a running pipeline: grant rejections, matching, auto-escalation,
budget, targeted capture and fail-closed audit, all in packet time."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from prometheus_client.core import Metric
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from trafficguard.capture.frames import LINKTYPE_RAW, Frame
from trafficguard.config import Config
from trafficguard.detect.alerts import AlertRecord
from trafficguard.escalation.audit import AuditLog, AuditWriteError, read_entries
from trafficguard.escalation.evidence import open_grant_evidence
from trafficguard.escalation.gate import GateStage
from trafficguard.escalation.grants import (
    append_revocation,
    parse_grant,
    sign_grant,
    write_signatures,
)
from trafficguard.escalation.policy import parse_policy
from trafficguard.flow.hooks import HookHost
from trafficguard.pipeline import Pipeline
from trafficguard.privacy.keys import init_keys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.memory import MemorySink

T0 = 1_700_000_000 * 10**9
S = 10**9
SUB = "10.1.1.11"
PEER = "198.51.100.99"


def Alert(detector: str, severity: str, source: str, last_seen_ns: int) -> AlertRecord:
    """The detect stage's own record, as the gate gets it."""
    return AlertRecord(
        alert_id="0" * 16, seq=0, detector=detector, rule="r", severity=severity,
        status="open", first_seen_ns=last_seen_ns - 10 * S, last_seen_ns=last_seen_ns,
        source=source, target="", evidence={},
    )  # fmt: skip


class AlertFeeder:
    """A stage before the gate that emits given alerts when packet time reaches their
    last activity plus ``delay_ns`` (detectors report flows after they end)."""

    name = "alert_feeder"

    def __init__(self, alerts: list[AlertRecord], delay_ns: int = 0) -> None:
        self.pending = sorted(alerts, key=lambda a: a.last_seen_ns)
        self.delay_ns = delay_ns
        self.out: list[msgspec.Struct] = []

    def attach(self, host: HookHost) -> None:
        pass

    def on_records(self, records: Sequence[msgspec.Struct]) -> None:
        pass

    def tick(self, now_ns: int) -> None:
        while self.pending and self.pending[0].last_seen_ns + self.delay_ns <= now_ns:
            self.out.append(self.pending.pop(0))

    def take_records(self) -> list[msgspec.Struct]:
        out, self.out = self.out, []
        return out

    def finish(self, now_ns: int) -> None:
        pass

    def collect(self) -> Iterable[Metric]:
        return []


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = init_keys(tmp / "keys")
        self.pz = Pseudonymizer(self.keys.pseudonym_keys, ["10.0.0.0/8"])
        self.signers = {n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "mallory")}
        auths = [
            {"name": n, "roles": ["sec"], "public_key": base64.b64encode(
                k.public_key().public_bytes_raw()).decode()}
            for n, k in self.signers.items() if n != "mallory"
        ]  # fmt: skip
        self.policy = parse_policy(
            {
                "authorizers": auths,
                "purposes": {
                    "fraud": {"scopes": ["dns", "sip", "pcap"], "max_duration_s": 86400,
                              "max_bytes": 10**6, "roles": ["sec"]},
                    "legal_process": {"scopes": ["sip"], "max_duration_s": 86400,
                                      "max_bytes": 10**6, "roles": ["sec"]},
                    "attack_mitigation": {"scopes": ["sip"], "max_duration_s": 3600,
                                          "max_bytes": 10**6, "roles": ["sec"],
                                          "automatic_allowed": True},
                },
                "auto_rules": [{"name": "invite-flood", "detector": "invite_flood",
                                "min_severity": "high", "purpose": "attack_mitigation",
                                "scopes": ["sip"], "duration_s": 600, "byte_budget": 10**5}],
            }
        )  # fmt: skip
        self.grants = tmp / "grants"
        self.grants.mkdir()
        self.audit_path = tmp / "audit.jsonl"
        self.evidence = tmp / "evidence"
        self.analyst = X25519PrivateKey.generate()

    def grant(
        self, gid: str, signers: Sequence[str] = ("alice",), *, start: int = T0 - 3600 * S,
        hours: float = 2, target: dict[str, str] | None = None, scopes: Sequence[str] = ("dns",),
        purpose: str = "fraud", budget: int = 10**5, raw: object = None,
    ) -> None:  # fmt: skip
        path = self.grants / f"{gid}.yaml"
        if raw is not None:
            path.write_text(str(raw))
            return
        nb = dt.datetime.fromtimestamp(start / S, dt.UTC)
        doc = {
            "id": gid, "purpose": purpose, "target": target or {"kind": "address", "value": SUB},
            "scopes": list(scopes), "not_before": nb, "expires": nb + dt.timedelta(hours=hours),
            "byte_budget": budget, "case_reference": "C-1", "created_by": "t",
        }  # fmt: skip
        grant = parse_grant(doc)
        path.write_text(yaml.safe_dump(grant.model_dump(mode="json")))
        sigs = [sign_grant(grant, n, self.signers[n]) for n in signers]
        write_signatures(path, sigs)

    def gate(self, audit_opener: object = None) -> GateStage:
        def opener() -> AuditLog:
            return AuditLog(self.audit_path, self.keys.audit_private)

        return GateStage(
            policy=self.policy, grants_dir=self.grants, evidence_dir=self.evidence,
            recipient=self.analyst.public_key(), pseudonymizer=self.pz,
            audit_opener=audit_opener or opener,  # type: ignore[arg-type]
            reload_interval_s=60, rematch_window_s=300, evidence_retention_s=86400,
        )  # fmt: skip

    def run(
        self, gate: GateStage, frames: list[Frame], alerts: Sequence[AlertRecord] = (),
        alert_delay_s: int = 0,
    ) -> None:  # fmt: skip
        cfg = Config(home_networks=("10.0.0.0/8",))
        stages = [AlertFeeder(list(alerts), alert_delay_s * S), gate]
        p = Pipeline(cfg, [("memory", MemorySink())], stages=stages)  # type: ignore[list-item]
        for f in frames:
            p.process_batch([f])
        p.finish()

    def audit(self, event: str) -> list[dict[str, object]]:
        out = []
        for e in read_entries(self.audit_path):
            if e["event"] == event:
                d = e["details"]
                assert isinstance(d, dict)
                out.append({**d, "ts_ns": e["ts_ns"]})
        return out

    def evidence_items(self, gid: str) -> list[bytes]:
        return [i.payload for i in open_grant_evidence(self.evidence, gid, self.analyst)]


def udp(ts: int, src: str, dst: str, sport: int, dport: int, payload: bytes) -> Frame:
    data = bytes(IP(src=src, dst=dst, id=1) / UDP(sport=sport, dport=dport) / Raw(payload))
    return (ts, LINKTYPE_RAW, data, len(data))


def dns_query(ts: int, src: str, name: str, sport: int = 40000) -> Frame:
    q = bytes(DNS(id=1, rd=1, qd=DNSQR(qname=name)))
    return udp(ts, src, "198.51.100.53", sport, 53, q)


def invite(ts: int, src: str, user: str, n: int) -> Frame:
    msg = (
        f"INVITE sip:{user}@example.net SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9{n}\r\n"
        f"From: <sip:attacker{n}@evil.example>;tag={n}\r\nTo: <sip:{user}@example.net>\r\n"
        f"Call-ID: flood{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return udp(ts, src, "10.9.9.9", 5060, 5060, msg)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_every_rejection_reason_is_audited_by_the_running_gate(env: Env) -> None:
    env.grant("G-ok")
    env.grant("G-badsig")
    sig = (env.grants / "G-badsig.sig").read_text()
    (env.grants / "G-badsig.yaml").write_text(
        (env.grants / "G-badsig.yaml").read_text().replace("C-1", "C-2")
    )
    assert sig == (env.grants / "G-badsig.sig").read_text()
    env.grant("G-nosig", signers=())
    (env.grants / "G-nosig.sig").unlink()
    env.grant("G-unknown", signers=("mallory",))
    env.grant("G-legal", signers=("alice",), purpose="legal_process", scopes=("sip",))
    env.grant("G-expired", start=T0 - 10 * 3600 * S, hours=1)
    env.grant("G-future", start=T0 + 3600 * S)
    env.grant("G-scope", scopes=("http",))
    env.grant("G-long", hours=48)
    env.grant("G-budget", budget=10**7)
    env.grant("G-revoked")
    append_revocation(env.grants / "revoked.yaml", "G-revoked", "case closed",
                      dt.datetime(2023, 1, 1, tzinfo=dt.UTC))  # fmt: skip
    env.grant("G-malformed", raw="id: [unclosed\n")
    gate = env.gate()
    env.run(gate, [dns_query(T0, SUB, "a.example")])
    reasons = {str(d["grant"] or d["file"]): d["reason"] for d in env.audit("grant.rejected")}
    assert reasons == {
        "G-badsig": "bad_signature",
        "G-nosig": "missing_signature",
        "G-unknown": "unknown_authorizer",
        "G-legal": "too_few_approvers",
        "G-expired": "expired",
        "G-future": "not_yet_valid",
        "G-scope": "scope_not_allowed",
        "G-long": "duration_exceeds_policy",
        "G-budget": "budget_exceeds_policy",
        "G-revoked": "revoked",
        "G-malformed.yaml": "malformed",
    }
    assert [d["grant"] for d in env.audit("grant.activated")] == ["G-ok"]
    assert [p.split(b"\n", 1)[1] for p in env.evidence_items("G-ok")] == [b"query a.example 1"]


def test_not_yet_valid_grant_activates_at_reload_and_expires_in_packet_time(env: Env) -> None:
    env.grant("G-later", start=T0 + 30 * S, hours=0.05)  # valid T0+30s .. T0+210s
    gate = env.gate()
    frames = [dns_query(T0 + i * 10 * S, SUB, f"q{i}.example", 40000 + i) for i in range(40)]
    env.run(gate, frames)
    act = env.audit("grant.activated")
    assert len(act) == 1 and T0 + 30 * S <= int(act[0]["ts_ns"]) <= T0 + 90 * S  # type: ignore[call-overload]
    exp = env.audit("grant.expired")
    assert len(exp) == 1 and T0 + 210 * S <= int(exp[0]["ts_ns"]) < T0 + 212 * S  # type: ignore[call-overload]
    names = [p.split(b"\n", 1)[1] for p in env.evidence_items("G-later")]
    assert names and all(
        int(n.split(b" ")[1][1:].split(b".")[0]) * 10 < 210 for n in names
    )  # nothing after expiry
    assert gate.open_escalations == []


def test_unmatched_flows_are_not_watched_and_other_subscribers_untouched(env: Env) -> None:
    env.grant("G-one", scopes=("dns", "pcap"))
    gate = env.gate()
    frames = [dns_query(T0 + i * S, "10.1.1.22", f"other{i}.example", 41000 + i) for i in range(5)]
    frames.append(dns_query(T0 + 6 * S, SUB, "mine.example"))
    env.run(gate, frames)
    assert gate.flows_matched == 1
    items = env.evidence_items("G-one")
    assert b"other" not in b"".join(items)
    pcap = b"".join(i for i in items if i.startswith(b"\n\r\r\n") or i[:4] == b"\x06\x00\x00\x00")
    assert pcap.startswith(b"\n\r\r\n") and b"mine" in pcap  # pcapng: SHB first, then EPBs


def test_budget_exhaustion_closes_the_escalation(env: Env) -> None:
    env.grant("G-small", budget=200)
    gate = env.gate()
    frames = [dns_query(T0 + i * S, SUB, f"name{i}.example", 42000 + i) for i in range(20)]
    env.run(gate, frames)
    assert len(env.audit("grant.exhausted")) == 1
    assert sum(len(p) for p in env.evidence_items("G-small")) <= 200
    assert gate.open_escalations == []


def test_number_target_matches_only_sip_messages_carrying_that_user(env: Env) -> None:
    env.grant("G-num", target={"kind": "number", "value": "+49 155 5000 1001"}, scopes=("sip",))
    gate = env.gate()
    users = ["+4915550001001", "+4915550009999", "+4915550001001"]
    frames = [invite(T0 + i * S, "192.0.2.10", u, i) for i, u in enumerate(users)]
    env.run(gate, frames)
    items = env.evidence_items("G-num")
    assert len(items) == 2 and all(b"+4915550001001" in i for i in items)
    assert b"9999" not in b"".join(items)


def test_invite_flood_alert_opens_auto_escalation_that_closes_at_expiry(env: Env) -> None:
    gate = env.gate()
    frames = [invite(T0 + i * 30 * S, PEER, "100", i) for i in range(30)]  # 15 min of flood
    alerts = [
        Alert("invite_flood", "high", PEER, T0 + 60 * S),
        Alert("invite_flood", "high", SUB, T0 + 60 * S),  # subscriber: never automatic
        Alert("invite_flood", "low", "198.51.100.7", T0 + 60 * S),  # below min_severity
    ]
    env.run(gate, frames, alerts)
    opened = env.audit("escalation.opened")
    assert len(opened) == 1 and opened[0]["target"] == PEER and opened[0]["rule"] == "invite-flood"
    closed = env.audit("escalation.closed")
    expires = int(opened[0]["expires_ns"])  # type: ignore[call-overload]
    assert expires == T0 + 660 * S
    assert len(closed) == 1 and closed[0]["reason"] == "expired"
    assert expires <= int(closed[0]["ts_ns"]) < expires + 31 * S  # type: ignore[call-overload]
    items = env.evidence_items(str(opened[0]["grant"]))
    # the flow already open when the alert came is matched again at its next packet:
    # INVITEs at 90 s .. 630 s (the one at 60 s was processed before the alert's tick)
    assert items and all(b"INVITE sip:100@" in i for i in items)
    assert len(items) == 19


def test_auto_escalation_starts_at_the_alerts_last_activity(env: Env) -> None:
    """The alert reaches the gate 90 s after its activity (flow records come when a flow
    ends): the escalation's window counts from the alert's last_seen_ns, not the gate's
    clock."""
    gate = env.gate()
    frames = [invite(T0 + i * 30 * S, PEER, "100", i) for i in range(8)]
    env.run(gate, frames, [Alert("invite_flood", "high", PEER, T0 + 45 * S)], alert_delay_s=90)
    (opened,) = env.audit("escalation.opened")
    assert int(opened["ts_ns"]) == T0 + 45 * S  # type: ignore[call-overload]
    assert int(opened["expires_ns"]) == T0 + 645 * S  # type: ignore[call-overload]


class FullAudit(AuditLog):
    """An audit log on a full disk: every append fails to sync."""

    def append(self, event, ts_ns, details=None):  # type: ignore[no-untyped-def,override]
        raise AuditWriteError(f"{self.path}: No space left on device")


def test_failed_audit_write_keeps_content_closed(env: Env) -> None:
    env.grant("G-closed")
    gate = env.gate(lambda: FullAudit(env.tmp / "full.jsonl", env.keys.audit_private))
    env.run(gate, [dns_query(T0, SUB, "secret.example")],
            [Alert("invite_flood", "critical", PEER, T0)])  # fmt: skip
    assert gate.open_escalations == [] and gate.flows_matched == 0
    assert gate.audit_failures >= 2
    assert not env.evidence.exists() or not any(env.evidence.rglob("*.tgev"))


def test_reload_picks_up_revocation(env: Env) -> None:
    env.grant("G-rev")
    frames = [dns_query(T0 + i * S, SUB, f"r{i}.example", 43000 + i) for i in range(3)]
    gate2 = env.gate()
    cfg = Config(home_networks=("10.0.0.0/8",))
    p = Pipeline(cfg, [("m", MemorySink())], stages=[gate2])
    p.process_batch([frames[1]])
    assert gate2.open_escalations == ["G-rev"]
    append_revocation(env.grants / "revoked.yaml", "G-rev", "done",
                      dt.datetime(2023, 1, 1, tzinfo=dt.UTC))  # fmt: skip
    gate2.reload()
    p.tick(T0 + 2 * S)
    assert gate2.open_escalations == []
    assert [d["grant"] for d in env.audit("grant.revoked")] == ["G-rev"]
    assert env.audit("config.reloaded")


def test_escalations_opened_counter_by_purpose_and_origin(env: Env) -> None:
    env.grant("G-fraud")
    gate = env.gate()
    frames = [invite(T0 + i * 30 * S, PEER, "100", i) for i in range(4)]
    env.run(gate, frames, [Alert("invite_flood", "high", PEER, T0 + 30 * S)])
    fams = {f.name: f for f in gate.collect()}
    samples = {
        (s.labels["purpose"], s.labels["origin"]): s.value
        for s in fams["trafficguard_escalations_opened"].samples
        if s.name == "trafficguard_escalations_opened_total"
    }
    assert samples == {("fraud", "grant"): 1, ("attack_mitigation", "auto"): 1}
    assert len(env.audit("grant.activated")) == len(env.audit("escalation.opened")) == 1
