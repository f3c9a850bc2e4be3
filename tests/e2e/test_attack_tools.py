"""Real attack tools against a network namespace this test creates; the capture replayed
through trafficguard must raise the matching alerts.

Two namespaces joined by a veth pair (IPv6 disabled in both, so no neighbour discovery
noise): nmap SYN-scans, hping3 SYN-floods and ICMP-floods the peer's address only (bounded
packet counts), tcpdump captures on the attacker's side. Needs root and the tools from
scripts/setup.sh (nmap, hping3, tcpdump, iproute2).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficguard.detect.stage import alerts_of
from trafficguard.pipeline import replay_records

pytestmark = pytest.mark.e2e

ATTACKER = "10.77.0.1"
VICTIM = "10.77.0.2"


def sh(*args: str, ns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str, str]]:
    """(attacker namespace, victim namespace, attacker-side interface)."""
    tag = f"tg{os.getpid() % 100000}"
    a, b, veth = f"{tag}a", f"{tag}b", f"{tag}v"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "link", "add", f"{veth}a", "netns", a, "type", "veth", "peer", "name",
           f"{veth}b", "netns", b)  # fmt: skip
        for ns, dev, addr in ((a, f"{veth}a", ATTACKER), (b, f"{veth}b", VICTIM)):
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
            sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
            sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        deadline = time.monotonic() + 10  # wait for carrier on both ends (DAD-free: no IPv6)
        while "LOWER_UP" not in sh("ip", "link", "show", f"{veth}a", ns=a).stdout:
            assert time.monotonic() < deadline, "veth never came up"
            time.sleep(0.05)
        time.sleep(1.0)
        yield a, b, f"{veth}a"
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False)
        subprocess.run(["ip", "netns", "del", b], check=False)


def capture(ns: str, dev: str, out: Path, *attack: str) -> None:
    """Run one attack command in ``ns`` while tcpdump writes ``out``."""
    dump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            dev,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "128",
            "-w",
            str(out),
            "ip",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # tcpdump writes the file header once it listens
        time.sleep(1.0)  # and is capturing shortly after
        sh(*attack, ns=ns, timeout=120)
        time.sleep(1.5)  # let tcpdump drain its ring buffer before it is stopped
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    assert out.stat().st_size > 24


def opened(path: Path) -> list[tuple[str, str, str]]:
    return [
        (a.detector, a.source, a.target)
        for a in alerts_of(replay_records([path]))
        if a.status == "open"
    ]


def test_nmap_syn_scan_raises_port_scan(netns_pair: tuple[str, str, str], tmp_path: Path) -> None:
    a, _, dev = netns_pair
    pcap = tmp_path / "nmap.pcap"
    capture(a, dev, pcap, "nmap", "-n", "-Pn", "-sS", "-p", "1-200", "-T4", VICTIM)
    alerts = opened(pcap)
    assert ("port_scan", ATTACKER, VICTIM) in alerts
    assert not [d for d, _, _ in alerts if d in ("syn_flood", "icmp_flood", "udp_flood")]


def test_hping3_syn_flood_raises_syn_flood(
    netns_pair: tuple[str, str, str], tmp_path: Path
) -> None:
    a, _, dev = netns_pair
    pcap = tmp_path / "synflood.pcap"
    capture(a, dev, pcap, "hping3", "-q", "-S", "-p", "80", "-c", "3000", "-i", "u100", VICTIM)
    alerts = opened(pcap)
    assert ("syn_flood", ATTACKER, VICTIM) in alerts
    assert not [d for d, _, _ in alerts if d == "port_scan"]


def test_hping3_icmp_flood_raises_icmp_flood(
    netns_pair: tuple[str, str, str], tmp_path: Path
) -> None:
    a, _, dev = netns_pair
    pcap = tmp_path / "icmpflood.pcap"
    capture(a, dev, pcap, "hping3", "-q", "--icmp", "-c", "3000", "-i", "u100", VICTIM)
    assert ("icmp_flood", ATTACKER, VICTIM) in opened(pcap)
