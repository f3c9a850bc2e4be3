#!/usr/bin/env python3
"""Write the labelled attack captures in tests/data/attacks/ (deterministic, scapy).

Each ``<attack>.pcap`` mixes one attack into benign background traffic (web sessions,
DNS with answers, a slow ping); each ``benign_<attack>.pcap`` holds benign traffic that
comes near the same detector's thresholds and must stay silent. ``labels.json`` lists,
per file, the alerts expected: detector, source, target (victim) and the attack's time
window in ns. Addresses: 10.1.0.0/16 subscribers, 203.0.113.0/24 attackers,
198.51.100.0/24 and 192.0.2.0/24 external servers.

    python scripts/make_attack_pcaps.py [OUT_DIR]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

T0 = 1_700_000_000.0
NS = 1_000_000_000
MAC_A = "02:00:00:00:00:01"
MAC_B = "02:00:00:00:00:02"


class Capture:
    """Packets of one file, sorted by time at the end."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pkts: list = []
        self.sport = 20000

    def add(self, t: float, layer3: object) -> None:
        p = Ether(src=MAC_A, dst=MAC_B) / layer3
        p.time = T0 + t
        self.pkts.append(p)

    def port(self) -> int:
        self.sport = 20000 + (self.sport - 19999) % 40000
        return self.sport

    def tcp_session(self, t: float, cli: str, srv: str, dport: int, data: int = 200) -> None:
        """A complete TCP session: handshake, one request/response, FIN both ways."""
        sp = self.port()
        self.add(t, IP(src=cli, dst=srv) / TCP(sport=sp, dport=dport, flags="S", seq=1))
        self.add(t + 0.01, IP(src=srv, dst=cli) / TCP(sport=dport, dport=sp, flags="SA", ack=2))
        self.add(t + 0.02, IP(src=cli, dst=srv) / TCP(sport=sp, dport=dport, flags="A", seq=2))
        self.add(
            t + 0.03,
            IP(src=cli, dst=srv) / TCP(sport=sp, dport=dport, flags="PA", seq=2) / Raw(b"q" * data),
        )
        self.add(
            t + 0.05,
            IP(src=srv, dst=cli)
            / TCP(sport=dport, dport=sp, flags="PA", ack=2 + data)
            / Raw(b"r" * 300),
        )
        self.add(t + 0.06, IP(src=cli, dst=srv) / TCP(sport=sp, dport=dport, flags="FA"))
        self.add(t + 0.07, IP(src=srv, dst=cli) / TCP(sport=dport, dport=sp, flags="FA"))
        self.add(t + 0.08, IP(src=cli, dst=srv) / TCP(sport=sp, dport=dport, flags="A"))

    def background(self, start: float, end: float) -> None:
        """Benign traffic: web sessions, DNS with answers, a 1 pps ping."""
        rng = self.rng
        t = start
        while t < end:
            self.tcp_session(t, "10.1.0.5", f"198.51.100.{rng.randint(1, 20)}", 443)
            t += rng.uniform(2.0, 6.0)
        t = start
        while t < end:
            sp = self.port()
            self.add(
                t, IP(src="10.1.0.6", dst="10.1.0.53") / UDP(sport=sp, dport=53) / Raw(b"d" * 40)
            )
            self.add(
                t + 0.005,
                IP(src="10.1.0.53", dst="10.1.0.6") / UDP(sport=53, dport=sp) / Raw(b"a" * 120),
            )
            t += rng.uniform(1.0, 4.0)
        t = start
        seq = 0
        while t < end:
            self.add(t, IP(src="10.1.0.7", dst="192.0.2.8") / ICMP(type=8, id=7, seq=seq))
            self.add(t + 0.02, IP(src="192.0.2.8", dst="10.1.0.7") / ICMP(type=0, id=7, seq=seq))
            seq += 1
            t += 1.0

    def write(self, path: Path) -> None:
        self.pkts.sort(key=lambda p: float(p.time))
        wrpcap(str(path), self.pkts)


def ns(t: float) -> int:
    return round((T0 + t) * NS)


def syn_flood(c: Capture) -> list[dict]:
    for i in range(1500):  # 1000/s for 1.5 s to port 80, from random source ports
        t = 5.0 + i / 1000
        sp = 1024 + i
        c.add(t, IP(src="203.0.113.66", dst="10.1.0.80") / TCP(sport=sp, dport=80, flags="S"))
        c.add(
            t + 0.0003,
            IP(src="10.1.0.80", dst="203.0.113.66") / TCP(sport=80, dport=sp, flags="SA"),
        )
    c.background(0, 20)
    return [_label("syn_flood", "203.0.113.66", "10.1.0.80", 5.0, 6.5)]


def benign_syn_flood(c: Capture) -> list[dict]:
    for i in range(900):  # 900 half-open in 9 s: below 1000 in the window
        t = 2.0 + i / 100
        c.add(t, IP(src="203.0.113.66", dst="10.1.0.80") / TCP(sport=1024 + i, dport=80, flags="S"))
    for i in range(300):  # a flash crowd of completed connections
        c.tcp_session(2.0 + i / 100, f"192.0.2.{1 + i % 200}", "10.1.0.81", 443)
    c.background(0, 20)
    return []


def udp_flood(c: Capture) -> list[dict]:
    for i in range(3000):  # 3000/s, no answers, random destination ports
        t = 4.0 + i / 3000
        c.add(
            t,
            IP(src="203.0.113.67", dst="10.1.0.81")
            / UDP(sport=40000 + i % 50, dport=1 + (i * 7) % 60000)
            / Raw(b"x" * 32),
        )
    c.background(0, 15)
    return [_label("udp_flood", "203.0.113.67", "10.1.0.81", 4.0, 5.0)]


def benign_udp_flood(c: Capture) -> list[dict]:
    for i in range(2400):  # a busy two-way UDP stream (game/VPN): answered packet for packet
        t = 2.0 + i / 1000
        c.add(
            t,
            IP(src="198.51.100.30", dst="10.1.0.82")
            / UDP(sport=7777, dport=50000)
            / Raw(b"g" * 60),
        )
        c.add(
            t + 0.0004,
            IP(src="10.1.0.82", dst="198.51.100.30")
            / UDP(sport=50000, dport=7777)
            / Raw(b"h" * 60),
        )
    for i in range(1800):  # a one-way burst just under the packet threshold
        c.add(
            8.0 + i / 1000,
            IP(src="198.51.100.31", dst="10.1.0.83")
            / UDP(sport=9000, dport=9001)
            / Raw(b"v" * 100),
        )
    c.background(0, 15)
    return []


def icmp_flood(c: Capture) -> list[dict]:
    for i in range(3000):  # 6000/s echo requests, the victim answers each
        t = 3.0 + i / 6000
        c.add(
            t, IP(src="203.0.113.68", dst="10.1.0.83") / ICMP(type=8, id=99, seq=i) / Raw(b"p" * 8)
        )
        c.add(
            t + 0.0001,
            IP(src="10.1.0.83", dst="203.0.113.68") / ICMP(type=0, id=99, seq=i) / Raw(b"p" * 8),
        )
    c.background(0, 12)
    return [_label("icmp_flood", "203.0.113.68", "10.1.0.83", 3.0, 3.5)]


def benign_icmp_flood(c: Capture) -> list[dict]:
    for i in range(2200):  # 220 pps for 10 s (a fast monitoring ping): under 500 pps
        t = 1.0 + i / 220
        c.add(t, IP(src="10.1.0.9", dst="192.0.2.9") / ICMP(type=8, id=5, seq=i))
        c.add(t + 0.001, IP(src="192.0.2.9", dst="10.1.0.9") / ICMP(type=0, id=5, seq=i))
    c.background(0, 12)
    return []


def amplification(c: Capture) -> list[dict]:
    for r in range(40):  # 40 DNS reflectors, 3 large responses each; request never seen
        for k in range(3):
            t = 6.0 + r * 0.01 + k * 0.3
            c.add(
                t,
                IP(src=f"192.0.2.{100 + r}", dst="10.1.0.84")
                / UDP(sport=53, dport=33333)
                / Raw(b"A" * 1400),
            )
    for r in range(10):  # and 10 NTP reflectors (monlist-sized)
        t = 6.5 + r * 0.01
        c.add(
            t,
            IP(src=f"198.51.100.{200 + r}", dst="10.1.0.84")
            / UDP(sport=123, dport=33333)
            / Raw(b"N" * 468),
        )
    c.background(0, 15)
    return [_label("amplification", "", "10.1.0.84", 6.0, 7.1)]


def benign_amplification(c: Capture) -> list[dict]:
    # a subscriber resolver querying 30 authoritative servers: ratio 4 (threshold 5)
    for s in range(30):
        for k in range(10):
            t = 1.0 + s * 0.1 + k * 0.5
            sp = c.port()
            c.add(
                t,
                IP(src="10.1.0.53", dst=f"192.0.2.{50 + s}")
                / UDP(sport=sp, dport=53)
                / Raw(b"q" * 72),
            )
            c.add(
                t + 0.02,
                IP(src=f"192.0.2.{50 + s}", dst="10.1.0.53")
                / UDP(sport=53, dport=sp)
                / Raw(b"r" * 372),
            )
    c.background(0, 15)
    return []


def port_scan(c: Capture) -> list[dict]:
    open_ports = {22, 80}
    for i, port in enumerate(range(1, 201)):  # SYN scan of ports 1-200, like nmap -sS
        t = 5.0 + i * 0.002
        sp = 45000
        c.add(t, IP(src="203.0.113.69", dst="10.1.0.85") / TCP(sport=sp, dport=port, flags="S"))
        if port in open_ports:
            c.add(
                t + 0.0005,
                IP(src="10.1.0.85", dst="203.0.113.69") / TCP(sport=port, dport=sp, flags="SA"),
            )
            c.add(
                t + 0.0007,
                IP(src="203.0.113.69", dst="10.1.0.85") / TCP(sport=sp, dport=port, flags="R"),
            )
        else:
            c.add(
                t + 0.0005,
                IP(src="10.1.0.85", dst="203.0.113.69") / TCP(sport=port, dport=sp, flags="RA"),
            )
    c.background(0, 15)
    return [_label("port_scan", "203.0.113.69", "10.1.0.85", 5.0, 5.4)]


def benign_port_scan(c: Capture) -> list[dict]:
    # one client using 12 services on 4 servers; 2 refused (a stopped service, a typo)
    t = 1.0
    for srv in range(4):
        for port in (22, 80, 443):
            c.tcp_session(t, "10.1.0.10", f"198.51.100.{40 + srv}", port)
            t += 0.3
    for port in (8080, 8443):
        sp = c.port()
        c.add(t, IP(src="10.1.0.10", dst="198.51.100.40") / TCP(sport=sp, dport=port, flags="S"))
        c.add(
            t + 0.001,
            IP(src="198.51.100.40", dst="10.1.0.10") / TCP(sport=port, dport=sp, flags="RA"),
        )
        t += 0.3
    c.background(0, 15)
    return []


def host_sweep(c: Capture) -> list[dict]:
    for h in range(60):  # SMB sweep of 60 hosts, 5 answer
        t = 4.0 + h * 0.01
        sp = 50000 + h
        dst = f"10.1.1.{h + 1}"
        c.add(t, IP(src="203.0.113.70", dst=dst) / TCP(sport=sp, dport=445, flags="S"))
        if h % 12 == 0:
            c.add(t + 0.001, IP(src=dst, dst="203.0.113.70") / TCP(sport=445, dport=sp, flags="SA"))
            c.add(t + 0.002, IP(src="203.0.113.70", dst=dst) / TCP(sport=sp, dport=445, flags="R"))
    c.background(0, 12)
    return [_label("host_sweep", "203.0.113.70", "", 4.0, 4.6)]


def benign_host_sweep(c: Capture) -> list[dict]:
    for h in range(40):  # browsing 40 distinct web servers, all answer
        c.tcp_session(1.0 + h * 0.2, "10.1.0.11", f"192.0.2.{10 + h}", 443)
    c.background(0, 12)
    return []


def smtp_spam(c: Capture) -> list[dict]:
    for s in range(30):  # a subscriber host delivering mail directly to 30 MX servers
        c.tcp_session(3.0 + s * 0.5, "10.1.0.99", f"198.51.100.{100 + s}", 25, data=1500)
    c.background(0, 20)
    return [_label("smtp_spam", "10.1.0.99", "", 3.0, 17.6)]


def benign_smtp_spam(c: Capture) -> list[dict]:
    for s in range(12):  # a small office MTA: 12 distinct MX servers (threshold 20)
        c.tcp_session(2.0 + s * 0.5, "10.1.0.98", f"198.51.100.{150 + s}", 25)
    for k in range(50):  # and 50 submissions to its provider on 587, each with a message
        c.tcp_session(2.1 + k * 0.3, "10.1.0.97", "192.0.2.25", 587, data=1400)
    c.background(0, 20)
    return []


def beaconing(c: Capture) -> list[dict]:
    rng = c.rng
    t = 10.0
    for _ in range(40):  # every 60 s +- 1 s, same size: a C2 implant
        c.tcp_session(t, "10.1.0.77", "198.51.100.77", 443, data=180)
        t += 60 + rng.uniform(-1, 1)
    end = t - 60
    c.background(0, 30)
    return [_label("beaconing", "10.1.0.77", "198.51.100.77", 10.0, end + 0.1)]


def benign_beaconing(c: Capture) -> list[dict]:
    rng = c.rng
    t = 10.0
    for _ in range(40):  # a person using one site: irregular intervals and sizes
        c.tcp_session(t, "10.1.0.78", "198.51.100.78", 443, data=rng.randint(100, 4000))
        t += rng.expovariate(1 / 60)
    c.background(0, 30)
    return []


def _label(detector: str, source: str, target: str, start: float, end: float) -> dict:
    return {
        "detector": detector,
        "source": source,
        "target": target,
        "start_ns": ns(start),
        "end_ns": ns(end),
    }


SCENARIOS = {
    "syn_flood": syn_flood,
    "udp_flood": udp_flood,
    "icmp_flood": icmp_flood,
    "amplification": amplification,
    "port_scan": port_scan,
    "host_sweep": host_sweep,
    "smtp_spam": smtp_spam,
    "beaconing": beaconing,
}
BENIGN = {
    "syn_flood": benign_syn_flood,
    "udp_flood": benign_udp_flood,
    "icmp_flood": benign_icmp_flood,
    "amplification": benign_amplification,
    "port_scan": benign_port_scan,
    "host_sweep": benign_host_sweep,
    "smtp_spam": benign_smtp_spam,
    "beaconing": benign_beaconing,
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[dict]] = {}
    for seed, (name, make) in enumerate(SCENARIOS.items()):
        c = Capture(seed)
        labels[f"{name}.pcap"] = make(c)
        c.write(out / f"{name}.pcap")
    for seed, (name, make) in enumerate(BENIGN.items(), start=100):
        c = Capture(seed)
        labels[f"benign_{name}.pcap"] = make(c)
        c.write(out / f"benign_{name}.pcap")
    (out / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "tests/data/attacks"
    )
