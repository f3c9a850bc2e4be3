"""Real attack tools in network namespaces the test creates, then the real CLI on the capture.

* ``hydra`` guesses FTP passwords (canary user and passwords) against a pyftpdlib server
  in a namespace; tcpdump records it; ``trafficguard replay`` in metadata mode must raise a
  login brute-force alert naming the client, and no canary may appear in the store, the
  JSON lines or the logs (raw, hex or lower case).
* ``iodine`` and ``iodined`` run a real DNS tunnel between two namespaces (needs
  ``/dev/net/tun``); the capture must raise a DNS tunnel alert naming the client.

Everything runs on a veth pair between two namespaces named after this process; both are
deleted in ``finally``. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trafficguard.detect.alerts import AlertRecord
from trafficguard.sinks.sqlite import query_records
from trafficguard.wiring import build_stages

assert build_stages  # importing wiring registers the alert and dns_summary tables

REPO = Path(__file__).resolve().parents[2]
BROADBAND = REPO / "tests" / "data" / "broadband"
LABELS = json.loads((BROADBAND / "labels.json").read_text())
CLI = [sys.executable, "-m", "trafficguard"]
SERVER_IP, CLIENT_IP = "10.99.0.1", "10.99.0.2"
CANARY_USER = "CanaryUserQ7zx"
CANARY_PASS = "CanaryPassK3vw"

pytestmark = pytest.mark.e2e


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


@dataclass(frozen=True)
class Net:
    server_ns: str
    client_ns: str

    def run(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _sh("ip", "netns", "exec", ns, *args)

    def popen(self, ns: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.fail("these tests create network namespaces and must run as root")
    tag = f"tgbb{os.getpid() % 100000}"
    n = Net(f"{tag}s", f"{tag}c")
    try:
        for ns in (n.server_ns, n.client_ns):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _sh("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        _sh("ip", "link", "set", f"{tag}a", "netns", n.server_ns)
        _sh("ip", "link", "set", f"{tag}b", "netns", n.client_ns)
        _sh("ip", "-n", n.server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", f"{tag}a")
        _sh("ip", "-n", n.client_ns, "addr", "add", f"{CLIENT_IP}/24", "dev", f"{tag}b")
        _sh("ip", "-n", n.server_ns, "link", "set", f"{tag}a", "up")
        _sh("ip", "-n", n.client_ns, "link", "set", f"{tag}b", "up")
        yield n
    finally:
        for ns in (n.server_ns, n.client_ns):
            _sh("ip", "netns", "del", ns, check=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tcpdump(net: Net, pcap: Path, bpf: str) -> subprocess.Popen[bytes]:
    iface = f"{net.server_ns[:-1]}a"
    proc = net.popen(
        net.server_ns,
        "tcpdump", "-i", iface, "-U", "-n", "-w", str(pcap), bpf,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on ..." once the capture is armed
    assert b"listening" in line, line
    return proc


def _replay(tmp: Path, pcaps: list[Path], home: list[str]) -> tuple[Path, Path, str]:
    """Metadata-mode replay through the CLI into SQLite + JSON lines; returns the logs."""
    cfg = tmp / "tg.yaml"
    data = json.loads(json.dumps(LABELS["config"]))
    data["home_networks"] = home
    data["privacy"] = {"keys_dir": str(tmp / "keys")}
    data["logging"] = {"format": "json", "level": "debug"}
    cfg.write_text(json.dumps(data))
    db, jsonl = tmp / "tg.db", tmp / "records.jsonl"
    args = ["--config", str(cfg), "replay", "--store", str(db), "--jsonl", str(jsonl)]
    args += ["--no-metrics", *map(str, pcaps)]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return db, jsonl, proc.stdout + proc.stderr


def _alerts(db: Path) -> list[AlertRecord]:
    recs = query_records(db, "alert", limit=None, order="first_seen_ns")
    return [r for r in recs if isinstance(r, AlertRecord)]


def _assert_no_canary(canaries: list[str], tmp: Path, logs: str) -> None:
    outputs = [p for p in tmp.iterdir() if p.name.startswith(("tg.db", "records.jsonl"))]
    assert len(outputs) >= 2
    blobs = [p.read_bytes() for p in outputs]
    blobs.append(logs.encode())
    for canary in canaries:
        forms = {canary.encode(), canary.lower().encode(), canary.encode().hex().encode()}
        for blob in blobs:
            low = blob.lower()
            for form in forms:
                assert form.lower() not in low, f"canary {canary!r} leaked"


FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_user("admin", "right-password", sys.argv[2])
FTPHandler.authorizer = auth
FTPHandler.max_login_attempts = 1   # one attempt per connection, as many servers do
FTPHandler.auth_failed_timeout = 0.05
print("ready", flush=True)
FTPServer((sys.argv[1], 21), FTPHandler).serve_forever()
"""


def test_hydra_ftp_bruteforce_alert_and_no_canary(net: Net, tmp_path: Path) -> None:
    for tool in ("hydra", "tcpdump"):
        assert shutil.which(tool), f"{tool} missing: run scripts/setup.sh"
    pcap = tmp_path / "hydra-ftp.pcap"
    words = tmp_path / "passwords.txt"
    words.write_text("".join(f"{CANARY_PASS}{i}\n" for i in range(30)))
    home = tmp_path / "ftproot"
    home.mkdir()
    server = net.popen(
        net.server_ns, sys.executable, "-c", FTP_SERVER, SERVER_IP, str(home),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dump = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        dump = _tcpdump(net, pcap, "tcp port 21")
        time.sleep(0.3)
        hydra = net.run(
            net.client_ns,
            "hydra", "-l", CANARY_USER, "-P", str(words), "-t", "2", "-I", "-f",
            f"ftp://{SERVER_IP}",
        )  # fmt: skip
        assert "0 valid password" in hydra.stdout, hydra.stdout[-1000:]
        time.sleep(0.5)
    finally:
        if dump is not None:
            _stop(dump)
        _stop(server)
    assert CANARY_PASS.encode() in pcap.read_bytes()  # the canary really is on the wire
    generated = [BROADBAND / "ftp-bruteforce.pcap", BROADBAND / "dns-tunnel.pcap"]
    home = ["10.1.0.0/16", f"{SERVER_IP}/32"]  # the hydra client stays external (in clear)
    db, jsonl, logs = _replay(tmp_path, [pcap, *generated], home)
    alerts = [a for a in _alerts(db) if a.detector == "login_bruteforce"]
    sources = {a.source for a in alerts}
    assert CLIENT_IP in sources and "198.51.100.23" in sources
    hydra_alerts = [a for a in alerts if a.source == CLIENT_IP]
    assert max(a.evidence["sessions"] for a in hydra_alerts) >= 20
    assert {a.evidence["service"] for a in hydra_alerts} == {"ftp"}
    assert '"kind":"alert"' in jsonl.read_text().replace(" ", "")
    assert any(r["detector"] == "dns_tunnel" for r in map(json.loads, jsonl.open()) if
               r.get("kind") == "alert")  # fmt: skip
    _assert_no_canary([CANARY_USER, CANARY_PASS, *LABELS["canaries"]], tmp_path, logs)


TUNNEL_TRAFFIC = """
import os, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
time.sleep(2.0)  # let iodine finish probing fragment sizes
for _ in range(100):
    s.sendto(os.urandom(400), ("172.30.99.1", 9))
    time.sleep(0.05)
"""


def test_iodine_dns_tunnel_alert(net: Net, tmp_path: Path) -> None:
    for tool in ("iodine", "iodined", "tcpdump"):
        assert shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists(), f"{tool} missing"
    assert Path("/dev/net/tun").exists(), "/dev/net/tun is missing: the tunnel cannot run"
    pcap = tmp_path / "iodine.pcap"
    dump = _tcpdump(net, pcap, "udp port 53")
    iodined = net.popen(
        net.server_ns,
        "iodined", "-f", "-c", "-P", "tgsecret", "-l", SERVER_IP, "172.30.99.1/27",
        "t1.tunnel-example.net",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    iodine = None
    try:
        time.sleep(1.0)
        iodine = net.popen(
            net.client_ns,
            "iodine", "-f", "-r", "-P", "tgsecret", SERVER_IP, "t1.tunnel-example.net",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        up = False
        while time.monotonic() < deadline and not up:
            time.sleep(0.5)
            up = "172.30.99" in net.run(net.client_ns, "ip", "-4", "addr").stdout
        assert up, "iodine did not bring the tunnel up"
        time.sleep(3.0)  # fragment-size probing ends before data flows
        # data through the tunnel: UDP datagrams to the server's tunnel address
        net.run(net.client_ns, sys.executable, "-c", TUNNEL_TRAFFIC)
        time.sleep(2.0)
    finally:
        if iodine is not None:
            _stop(iodine)
        _stop(iodined)
        _stop(dump)
    db, _, _ = _replay(tmp_path, [pcap], home=["10.99.0.0/24"])
    alerts = [a for a in _alerts(db) if a.detector == "dns_tunnel"]
    assert alerts, f"no DNS tunnel alert for a real iodine session ({pcap.stat().st_size} B)"
    assert all(a.source.startswith("a1.") for a in alerts)  # subscriber: pseudonymized
    assert {a.evidence["pattern"] for a in alerts} <= {"tunnel", "exfiltration"}
