"""Canary leak test: planted payload never leaves the sensor except into sealed evidence.

``tests/data/canary/canary.pcap`` (scripts/make_canary_pcaps.py) carries unique canaries in
HTTP URLs, Host and bodies, DNS names, TLS SNI, SIP numbers/users/display names/bodies,
RTP payload and SMTP envelope and body, for three subscribers inside home_networks. The
capture is replayed through the real CLI into SQLite + JSON lines while /metrics is
scraped and logs are captured; every output, and the audit log, is searched for every
canary (raw, hex, lower case) and for the subscribers' clear addresses.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import REPO_ROOT, RunCli
from trafficguard.escalation.audit import read_entries

DATA = REPO_ROOT / "tests" / "data" / "canary"
DOC = json.loads((DATA / "canaries.json").read_text())
PCAP = DATA / "canary.pcap"
BASE = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)  # packet time of the capture


def _all_canaries(sub: str | None = None) -> dict[str, str]:
    return {
        f"{s}.{place}": value
        for s, places in DOC["canaries"].items()
        if sub is None or s == sub
        for place, value in places.items()
    }


def _forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.lower(), raw.hex().encode(), raw.hex().upper().encode()]


def _leaks(blob: bytes, canaries: dict[str, str]) -> list[str]:
    low = blob.lower()
    return sorted(name for name, v in canaries.items() if any(f in low for f in _forms(v)))


def _clear_addresses(blob: bytes) -> list[str]:
    text = blob.decode("latin-1")
    found = []
    for addr in DOC["subscribers"].values():
        if re.search(r"(?<![0-9a-fA-F.:])" + re.escape(addr) + r"(?![0-9a-fA-F])", text):
            found.append(addr)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    """A sensor in tmp: config, keys, policy with generated authorizers, analyst key."""

    def __init__(self, tmp: Path, run_cli: RunCli) -> None:
        self.tmp = tmp
        self.run_cli = run_cli
        self.authorizers: dict[str, Path] = {}
        auths = []
        for name, role in (("alice", "security_officer"), ("bob", "legal_officer")):
            key = Ed25519PrivateKey.generate()
            path = tmp / f"{name}.pem"
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            self.authorizers[name] = path
            raw = key.public_key().public_bytes_raw()
            auths.append(
                {"name": name, "roles": [role], "public_key": base64.b64encode(raw).decode()}
            )
        policy = {
            "authorizers": auths,
            "purposes": {
                "fraud": {
                    "scopes": ["dns", "http", "tls", "sip", "smtp", "pcap"],
                    "max_duration_s": 7 * 86400,
                    "max_bytes": 10**7,
                    "roles": ["security_officer"],
                }
            },
        }
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(yaml.safe_dump(policy))
        self.grants = tmp / "grants"
        self.grants.mkdir()
        self.audit = tmp / "audit" / "audit.jsonl"
        self.audit.parent.mkdir()
        self.evidence = tmp / "evidence"
        self.store = tmp / "store.db"
        self.jsonl = tmp / "records.jsonl"
        self.keys = tmp / "keys"
        self.analyst_key = tmp / "analyst.key"
        self.analyst_pub = tmp / "analyst.pub"
        self.config = tmp / "trafficguard.yaml"
        cfg = {
            "home_networks": DOC["home_networks"],
            "store": {"sqlite": {"path": str(self.store)}},
            "logging": {"level": "debug", "format": "json"},
            "privacy": {"keys_dir": str(self.keys), "create_keys": False},
            "escalation": {
                "enabled": True,
                "policy": str(self.policy),
                "grants_dir": str(self.grants),
                "audit_log": str(self.audit),
                "evidence_dir": str(self.evidence),
                "analyst_public_key": str(self.analyst_pub),
            },
        }
        self.config.write_text(yaml.safe_dump(cfg))
        self.cli("keys", "init")
        self.cli("evidence", "keygen", "--private", self.analyst_key, "--public", self.analyst_pub)

    def cli(self, *args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = self.run_cli("--config", self.config, *args)
        if ok:
            assert res.returncode == 0, res.stderr
        return res

    def grant(self, gid: str, *target: str, scopes: str) -> None:
        self.cli(
            "grant", "create", "--id", gid, "--purpose", "fraud", *target, "--scope", scopes,
            "--not-before", (BASE - dt.timedelta(hours=1)).isoformat(), "--duration", "2d",
            "--byte-budget", "1000000", "--case-reference", "CASE-1", "--created-by", "test",
        )  # fmt: skip
        self.cli(
            "grant", "sign", self.grants / f"{gid}.yaml", "--authorizer", "alice",
            "--key", self.authorizers["alice"],
        )  # fmt: skip

    def replay(self, preexec: object = None, unshare_ro: Path | None = None) -> dict[str, bytes]:
        """Replay the canary capture via the CLI, scrape /metrics, return every output."""
        port = _free_port()
        cmd = [
            sys.executable, "-m", "trafficguard", "--config", str(self.config), "replay",
            str(PCAP), "--jsonl", str(self.jsonl), "--metrics", f"127.0.0.1:{port}",
            "--keep-serving",
        ]  # fmt: skip
        if unshare_ro is not None:
            preexec = _read_only_mount(unshare_ro)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        proc = subprocess.Popen(
            cmd, cwd=self.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=preexec,  # type: ignore[arg-type]  # noqa: PLW1509 - test child only
        )  # fmt: skip
        metrics = b""
        head: list[bytes] = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # the replay is done once /metrics is kept serving
                head.append(line)
                if line.startswith(b"serving http"):
                    break
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        err = b"".join(head) + err
        assert proc.returncode == 0, err.decode()
        assert b"trafficguard_capture_packets_total 135" in metrics
        outputs = {"stdout+stderr": out + err, "metrics": metrics}
        for path in (self.store, self.jsonl, self.audit):
            for p in path.parent.glob(path.name + "*"):
                outputs[p.name] = p.read_bytes()
        assert outputs.get("store.db") and outputs.get("records.jsonl")
        return outputs

    def evidence_payloads(self, gid: str) -> bytes:
        res = self.cli("evidence", "open", "--grant", gid, "--key", self.analyst_key)
        return b"\n".join(
            base64.b64decode(json.loads(line)["payload_b64"])
            for line in res.stdout.splitlines()
            if line.strip()
        )


@pytest.fixture
def world(tmp_path: Path, run_cli: RunCli) -> World:
    return World(tmp_path, run_cli)


def _assert_no_leak(outputs: dict[str, bytes]) -> None:
    everything = _all_canaries()
    for name, blob in outputs.items():
        assert _leaks(blob, everything) == [], name
        assert _clear_addresses(blob) == [], name


def test_metadata_mode_leaks_nothing(world: World) -> None:
    # an unsigned grant for s1: rejected (audited), so content stays closed
    world.cli(
        "grant", "create", "--id", "G-unsigned", "--purpose", "fraud",
        "--address", DOC["subscribers"]["s1"], "--scope", "dns,http",
        "--not-before", BASE.isoformat(), "--byte-budget", "1000", "--case-reference", "C",
    )  # fmt: skip
    outputs = world.replay()
    _assert_no_leak(outputs)
    entries = list(read_entries(world.audit))
    assert [e["details"]["reason"] for e in entries if e["event"] == "grant.rejected"] == [  # type: ignore[index]
        "missing_signature"
    ]
    assert not any(e["event"] == "grant.activated" for e in entries)
    assert not world.evidence.exists() or not any(world.evidence.rglob("*.tgev"))
    # the store holds records about every subscriber, under pseudonyms
    conn = sqlite3.connect(world.store)
    addrs = {r[0] for r in conn.execute("SELECT src_addr FROM flow")}
    conn.close()
    assert len([a for a in addrs if a.startswith("a1.")]) == 3


def test_grant_opens_only_its_target_and_scopes(world: World) -> None:
    subs = DOC["subscribers"]
    world.grant("G-s1-web", "--address", subs["s1"], scopes="dns,http")
    world.grant("G-s2-sip", "--number", DOC["canaries"]["s2"]["sip_number"], scopes="sip")
    outputs = world.replay()
    _assert_no_leak(outputs)  # store, JSONL, /metrics, logs and audit log: nothing

    s1 = world.evidence_payloads("G-s1-web")
    assert _leaks(s1, _all_canaries()) == sorted(
        ["s1.dns_name", "s1.http_url", "s1.http_host"]
    )  # not the HTTP body, not TLS/SIP/SMTP/RTP, nobody else
    s2 = world.evidence_payloads("G-s2-sip")
    assert _leaks(s2, _all_canaries()) == sorted(
        ["s2.sip_number", "s2.sip_user", "s2.sip_display", "s2.sip_body"]
    )
    events = [e["event"] for e in read_entries(world.audit)]
    for event in ("grant.loaded", "grant.activated", "evidence.written", "evidence.opened"):
        assert event in events
    verify = world.cli("audit", "verify")
    assert "OK" in verify.stdout


def test_read_only_audit_directory_keeps_content_closed(world: World) -> None:
    world.grant("G-ro", "--address", DOC["subscribers"]["s1"], scopes="dns,http")
    outputs = world.replay(unshare_ro=world.audit.parent)
    _assert_no_leak(outputs)
    assert not world.audit.exists()
    assert not world.evidence.exists() or not any(world.evidence.rglob("*.tgev"))
    assert b"trafficguard_audit_write_failures_total" in outputs["metrics"]
    assert not re.search(rb"trafficguard_audit_write_failures_total 0\.0", outputs["metrics"])


def _read_only_mount(path: Path) -> object:
    """preexec_fn: the child gets its own mount namespace where ``path`` is read-only
    (a bind mount remounted ro: even root cannot write there)."""

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ms_rdonly, ms_remount, ms_bind, ms_rec, ms_private = 1, 32, 4096, 16384, 1 << 18
        p = str(path).encode()
        calls = (
            (libc.unshare, (0x00020000,)),  # CLONE_NEWNS
            (libc.mount, (b"none", b"/", None, ms_rec | ms_private, None)),
            (libc.mount, (p, p, None, ms_bind, None)),
            (libc.mount, (p, p, None, ms_bind | ms_remount | ms_rdonly, None)),
        )
        for fn, args in calls:
            if fn(*args) != 0:
                raise OSError(ctypes.get_errno(), "read-only mount setup failed")

    return setup


def _limit_file_size() -> None:
    """The child sees a full disk for every file it grows (EFBIG instead of a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_full_audit_disk_keeps_content_closed(world: World) -> None:
    world.grant("G-full", "--address", DOC["subscribers"]["s1"], scopes="dns,http")
    cfg = yaml.safe_load(world.config.read_text())
    cfg["store"] = {"sqlite": {"enabled": False}}
    world.config.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    res = subprocess.run(
        [sys.executable, "-m", "trafficguard", "--config", str(world.config), "replay",
         str(PCAP), "--jsonl", "-", "--metrics", f"127.0.0.1:{port}", "-q"],
        cwd=world.tmp, env=env, capture_output=True, preexec_fn=_limit_file_size, timeout=120,
        check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    assert b'"kind":"flow"' in res.stdout  # metadata continued
    _assert_no_leak({"stdout": res.stdout, "stderr": res.stderr})
    assert not world.audit.exists() or world.audit.stat().st_size == 0
    assert not world.evidence.exists() or not any(world.evidence.rglob("*.tgev"))


def _export(world: World, *who: str) -> dict[str, list[dict[str, object]]]:
    res = world.cli("subject", "export", *who)
    return json.loads(res.stdout)["records"]  # type: ignore[no-any-return]


def test_subject_export_and_erase(world: World) -> None:
    world.replay()
    subs = DOC["subscribers"]
    s1 = _export(world, "--address", subs["s1"])
    s2_before = _export(world, "--address", subs["s2"])
    # six flows per subscriber: HTTP, DNS, TLS, SIP, RTP, SMTP
    assert len(s1["flow"]) == 6 and len(s2_before["flow"]) == 6
    conn = sqlite3.connect(world.store)
    kinds = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    by_number = _export(world, "--number", DOC["canaries"]["s1"]["sip_number"])
    if "call" in kinds:  # the VoIP stage is wired: the call is found by number too
        assert len(by_number["call"]) == 1
        assert len(s1["call"]) == 1
    total = sum(len(v) for v in s1.values())
    erased = world.cli("subject", "erase", "--address", subs["s1"])
    assert f"{total} record(s) erased" in erased.stdout
    assert sum(len(v) for v in _export(world, "--address", subs["s1"]).values()) == 0
    assert _export(world, "--address", subs["s2"]) == s2_before  # nobody else touched
    events = [e["event"] for e in read_entries(world.audit)]
    assert events.count("subject.exported") >= 4 and events.count("subject.erased") == 1
    _assert_no_leak({"audit": world.audit.read_bytes()})


def test_canary_capture_is_reproducible(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_canary_pcaps.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "canary.pcap").read_bytes() == PCAP.read_bytes()
    assert json.loads((tmp_path / "canaries.json").read_text()) == DOC
