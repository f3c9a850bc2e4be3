#!/usr/bin/env python3
"""Write the labelled broadband-abuse captures in ``tests/data/broadband/`` (deterministic).

One small capture per detector, each with a near-threshold benign twin that must stay
silent, plus ``labels.json`` saying what every file holds, which alerts (detector, rule,
source) it must raise, and which canary strings were planted in payloads (DNS query names,
FTP USER/PASS) that must never reach any output in metadata mode.

Frames are built with scapy with every host-dependent field set (MACs, IP ids, ports,
sequence numbers) and written by hand with fixed timestamps, so two runs give
byte-identical files. Volume scenarios use *snapped* frames (headers captured, the wire
length recorded as the full 64 KiB segment, as GRO/TSO captures show) to stay small.

Addresses: subscribers in 10.0.0.0/8 (the tests' ``home_networks``; 10.2.0.0/16
residential, 10.3.0.0/16 business), external peers in the documentation ranges
192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24. Nothing is ever sent.

Usage: scripts/make_broadband_pcaps.py [OUT_DIR]   (default: tests/data/broadband/)
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

BASE_US = 1_700_000_000 * 1_000_000
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
SNAPLEN = 262144
MAC_A = "02:00:00:00:0b:01"
MAC_B = "02:00:00:00:0b:02"

CANARY_USER = "CanaryUserQ7zx"
CANARY_PASS = "CanaryPassK3vw"
CANARY_QNAME = "canaryqname9mw"
CANARIES = (CANARY_USER, CANARY_PASS, CANARY_QNAME)

# (ts_us, frame bytes, wire length)
Frame = tuple[int, bytes, int]


def write_pcap(path: Path, frames: Iterable[Frame]) -> int:
    """A classic little-endian µs pcap; frames sorted by time (stable)."""
    n = 0
    with path.open("wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for ts_us, data, wire in sorted(frames, key=lambda r: r[0]):
            f.write(PCAP_RECORD.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(data), wire))
            f.write(data)
            n += 1
    return n


class Capture:
    """Collects frames of one scenario, with per-scenario deterministic ids and ports."""

    def __init__(self, seed: int) -> None:
        self.frames: list[Frame] = []
        self.rng = random.Random(seed)
        self._ip_id = 1
        self._port = 40000

    def port(self) -> int:
        self._port += 1
        return self._port

    def add(self, t_s: float, pkt: IP, wire_extra: int = 0, snap: int | None = None) -> None:
        frame = Ether(src=MAC_A, dst=MAC_B) / pkt
        frame[IP].id = self._ip_id
        self._ip_id = self._ip_id % 65535 + 1
        data = bytes(frame)
        wire = len(data) + wire_extra
        if snap is not None:
            data = data[:snap]
        self.frames.append((BASE_US + round(t_s * 1_000_000), data, wire))

    def tcp_session(
        self,
        t0: float,
        client: str,
        server: str,
        dport: int,
        exchanges: list[tuple[str, bytes]],
        gap_s: float = 0.05,
        close: str = "fin",
        bulk: tuple[str, int] | None = None,
    ) -> float:
        """Handshake, payload exchanges (``"c"``/``"s"`` sender), optional bulk segments
        (``(sender, count)`` 64 KiB snapped segments), teardown; returns the end time."""
        sport = self.port()
        cs, ss = self.rng.randrange(1 << 31), self.rng.randrange(1 << 31)
        t = t0
        c2s = IP(src=client, dst=server)
        s2c = IP(src=server, dst=client)
        self.add(t, c2s / TCP(sport=sport, dport=dport, flags="S", seq=cs, window=64240))
        t += 0.01
        self.add(t, s2c / TCP(sport=dport, dport=sport, flags="SA", seq=ss, ack=cs + 1))
        cs += 1
        ss += 1
        t += 0.01
        self.add(t, c2s / TCP(sport=sport, dport=dport, flags="A", seq=cs, ack=ss))
        for who, payload in exchanges:
            t += gap_s
            if who == "c":
                self.add(
                    t,
                    c2s / TCP(sport=sport, dport=dport, flags="PA", seq=cs, ack=ss) / Raw(payload),
                )
                cs += len(payload)
            else:
                self.add(
                    t,
                    s2c / TCP(sport=dport, dport=sport, flags="PA", seq=ss, ack=cs) / Raw(payload),
                )
                ss += len(payload)
        if bulk is not None:
            who, count = bulk
            seg = 65000
            for _ in range(count):
                t += 0.002
                if who == "c":
                    pkt = c2s / TCP(sport=sport, dport=dport, flags="A", seq=cs, ack=ss)
                    cs += seg
                else:
                    pkt = s2c / TCP(sport=dport, dport=sport, flags="A", seq=ss, ack=cs)
                    ss += seg
                self.add(t, pkt, wire_extra=seg, snap=54)
        t += gap_s
        if close == "rst":
            self.add(t, s2c / TCP(sport=dport, dport=sport, flags="RA", seq=ss, ack=cs))
            return t
        self.add(t, s2c / TCP(sport=dport, dport=sport, flags="FA", seq=ss, ack=cs))
        t += 0.01
        self.add(t, c2s / TCP(sport=sport, dport=dport, flags="FA", seq=cs, ack=ss + 1))
        t += 0.01
        self.add(t, s2c / TCP(sport=dport, dport=sport, flags="A", seq=ss + 1, ack=cs + 1))
        return t

    def dns(
        self,
        t: float,
        client: str,
        server: str,
        qname: str,
        qtype: str = "A",
        answer: str | bytes | list[bytes] | None = "192.0.2.1",
        rcode: int = 0,
    ) -> None:
        """One query and its response over UDP."""
        sport = self.port()
        qid = self.rng.randrange(65536)
        q = DNS(id=qid, rd=1, qd=DNSQR(qname=qname, qtype=qtype))
        self.add(t, IP(src=client, dst=server) / UDP(sport=sport, dport=53) / q)
        an = None
        if answer is not None and rcode == 0:
            an = DNSRR(rrname=qname, type=qtype, ttl=60, rdata=answer)
        r = DNS(id=qid, qr=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=qname, qtype=qtype), an=an)
        self.add(t + 0.004, IP(src=server, dst=client) / UDP(sport=53, dport=sport) / r)


# -- login brute force -------------------------------------------------------------------
SSH_BANNER_S = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
SSH_BANNER_C = b"SSH-2.0-libssh_0.10.4\r\n"


def ssh_failed(cap: Capture, t: float, client: str, server: str) -> float:
    """An SSH session that ends after a few auth attempts: ~3 KB each way, seconds long."""
    rnd = cap.rng.randbytes
    ex = [
        ("s", SSH_BANNER_S),
        ("c", SSH_BANNER_C),
        ("c", rnd(1200)),
        ("s", rnd(1100)),
        ("c", rnd(48)),
        ("s", rnd(560)),
        ("c", rnd(96)),
        ("s", rnd(96)),
        ("c", rnd(128)),
        ("s", rnd(64)),
        ("c", rnd(128)),
        ("s", rnd(64)),
    ]
    return cap.tcp_session(t, client, server, 22, ex, gap_s=0.12)


def scenario_ssh_bruteforce(out: Path) -> dict[str, object]:
    """40 failed SSH logins from one external host in ~5 min, then one long session."""
    cap = Capture(22)
    attacker, server = "203.0.113.66", "10.1.0.5"
    t = 0.0
    for _ in range(40):
        t = ssh_failed(cap, t, attacker, server) + 6.0
    rnd = cap.rng.randbytes
    ex = [("s", SSH_BANNER_S), ("c", SSH_BANNER_C)] + [("c", rnd(100)), ("s", rnd(300))] * 20
    cap.tcp_session(t + 5, attacker, server, 22, ex, gap_s=6.0)
    write_pcap(out / "ssh-bruteforce.pcap", cap.frames)
    return {
        "what": "40 short failed SSH sessions 203.0.113.66 -> 10.1.0.5:22, then a 4-minute "
        "session (the success signal)",
        "alerts": [
            {
                "detector": "login_bruteforce",
                "pattern": "guessing",
                "source": attacker,
                "possible_success": 1,
            }
        ],
    }


def ftp_attempt(cap: Capture, t: float, client: str, server: str, user: str, pw: str) -> float:
    ex = [
        ("s", b"220 ProFTPD Server ready.\r\n"),
        ("c", f"USER {user}\r\n".encode()),
        ("s", f"331 Password required for {user}\r\n".encode()),
        ("c", f"PASS {pw}\r\n".encode()),
        ("s", b"530 Login incorrect.\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"221 Goodbye.\r\n"),
    ]
    return cap.tcp_session(t, client, server, 21, ex, gap_s=0.3)


def scenario_ftp_bruteforce(out: Path) -> dict[str, object]:
    """25 failed FTP logins (canary user and passwords) from one external host."""
    cap = Capture(21)
    attacker, server = "198.51.100.23", "10.1.0.21"
    t = 0.0
    for i in range(25):
        t = ftp_attempt(cap, t, attacker, server, CANARY_USER, f"{CANARY_PASS}{i}") + 1.5
    write_pcap(out / "ftp-bruteforce.pcap", cap.frames)
    return {
        "what": "25 failed FTP logins 198.51.100.23 -> 10.1.0.21:21 (canary USER/PASS)",
        "alerts": [{"detector": "login_bruteforce", "pattern": "guessing", "source": attacker}],
    }


def scenario_ftp_few_failures(out: Path) -> dict[str, object]:
    """Benign: a user mistypes the password 4 times, then logs in and transfers files."""
    cap = Capture(2121)
    user, server = "192.0.2.10", "10.1.0.21"
    t = 0.0
    for i in range(4):
        t = ftp_attempt(cap, t, user, server, CANARY_USER, f"{CANARY_PASS}typo{i}") + 8.0
    ex = [
        ("s", b"220 ProFTPD Server ready.\r\n"),
        ("c", f"USER {CANARY_USER}\r\n".encode()),
        ("s", b"331 Password required\r\n"),
        ("c", f"PASS {CANARY_PASS}\r\n".encode()),
        ("s", b"230 User logged in.\r\n"),
    ] + [("c", b"NOOP\r\n"), ("s", b"200 NOOP ok.\r\n")] * 20
    cap.tcp_session(t, user, server, 21, ex, gap_s=5.0)
    write_pcap(out / "ftp-few-failures.pcap", cap.frames)
    return {"what": "4 failed FTP logins then a long session (benign)", "alerts": []}


def scenario_imap_stuffing(out: Path) -> dict[str, object]:
    """A subscriber host tries stolen credentials on 24 external IMAPS servers."""
    cap = Capture(993)
    bot = "10.2.0.44"
    t = 0.0
    for i in range(24):
        server = f"198.51.100.{100 + i}"
        rnd = cap.rng.randbytes
        ex = [("c", rnd(517)), ("s", rnd(1800)), ("c", rnd(120)), ("s", rnd(90))]
        ex += [("c", rnd(80)), ("s", rnd(60))]
        t = cap.tcp_session(t, bot, server, 993, ex, gap_s=0.08) + 3.0
    write_pcap(out / "imap-stuffing.pcap", cap.frames)
    return {
        "what": "10.2.0.44 opens one short IMAPS session to each of 24 external servers",
        "alerts": [{"detector": "login_bruteforce", "pattern": "stuffing", "source": bot}],
    }


def scenario_imap_polling(out: Path) -> dict[str, object]:
    """Benign: a phone polls its IMAP server every 60 s (15 short sessions in 15 min)."""
    cap = Capture(143)
    phone, server = "10.2.0.45", "192.0.2.143"
    for i in range(15):
        rnd = cap.rng.randbytes
        ex = [("s", b"* OK IMAP4rev1 ready\r\n"), ("c", rnd(40)), ("s", rnd(300))]
        cap.tcp_session(i * 60.0, phone, server, 143, ex, gap_s=0.1)
    write_pcap(out / "imap-polling.pcap", cap.frames)
    return {"what": "15 short IMAP polls to one server in 15 min (benign)", "alerts": []}


# -- DNS tunnel ----------------------------------------------------------------------------
def scenario_dns_tunnel(out: Path) -> dict[str, object]:
    """A subscriber moves data in base32 labels of NULL/TXT queries under one domain."""
    cap = Capture(53)
    client, resolver = "10.1.0.30", "10.1.0.53"
    rng = cap.rng
    for i in range(240):
        chunk = base64.b32encode(rng.randbytes(35)).decode().rstrip("=").lower()
        labels = f"{chunk[:50]}.{chunk[50:]}"
        if i % 40 == 0:
            labels = f"{CANARY_QNAME}{i}.{labels}"
        qtype = "NULL" if i % 3 else "TXT"
        answer = rng.randbytes(180) if qtype == "NULL" else [rng.randbytes(64)]
        cap.dns(i * 0.2, client, resolver, f"{labels}.t.tunnel-example.net", qtype, answer)
    write_pcap(out / "dns-tunnel.pcap", cap.frames)
    return {
        "what": "240 NULL/TXT queries with 56-char base32 subdomains under one domain "
        "from 10.1.0.30 in 48 s",
        "alerts": [{"detector": "dns_tunnel", "pattern": "tunnel", "source": client}],
    }


def scenario_dns_busy_resolver(out: Path) -> dict[str, object]:
    """Benign: a busy home resolver: many domains, a CDN with many short hashed names,
    DNSBL lookups (digits), anti-virus hash lookups (long but hex: near the threshold)."""
    cap = Capture(5353)
    resolver, upstream = "10.1.0.53", "192.0.2.53"
    rng = cap.rng
    t = 0.0
    hosts = ("www", "mail", "api", "cdn", "static", "login", "img")
    for d in range(60):
        for h in hosts[: 2 + d % 5]:
            cap.dns(t, resolver, upstream, f"{h}.site{d}-example.com")
            t += 0.05
    for _ in range(80):  # CDN: distinct but short hex names
        cap.dns(t, resolver, upstream, f"e{rng.randrange(16**5):05x}.a.cdn-example.net")
        t += 0.05
    for _ in range(80):  # DNSBL: reversed IPv4 addresses, digits
        ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        cap.dns(t, resolver, upstream, f"{ip}.zen.dnsbl-example.org", answer=None, rcode=3)
        t += 0.05
    for _ in range(60):  # anti-virus hash lookups: long (32) and distinct, but hex only
        digest = rng.randbytes(16).hex()
        cap.dns(t, resolver, upstream, f"{digest}.avqs.av-example.com", answer="127.0.0.2")
        t += 0.05
    for i in range(20):
        cap.dns(t, resolver, upstream, f"{CANARY_QNAME}-{i}.example.com", "TXT", [b"v=hello"])
        t += 0.05
    write_pcap(out / "dns-busy-resolver.pcap", cap.frames)
    return {"what": "busy but normal resolver traffic, ~520 queries (benign)", "alerts": []}


# -- acceptable use ------------------------------------------------------------------------
def scenario_open_resolver(out: Path) -> dict[str, object]:
    """A subscriber CPE answers recursive queries from 12 external hosts."""
    cap = Capture(5300)
    cpe = "10.2.0.9"
    for i in range(12):
        cap.dns(i * 4.0, f"203.0.113.{10 + i}", cpe, f"www.site{i}-example.com")
    # near-threshold twin in the same file: a home client using its own resolver
    for i in range(30):
        cap.dns(i * 2.0 + 1, "10.2.0.10", "10.2.0.11", f"www.site{i}-example.com")
    write_pcap(out / "open-resolver.pcap", cap.frames)
    return {
        "what": "10.2.0.9 answers DNS queries from 12 external hosts; 10.2.0.11 answers "
        "only a home client",
        "alerts": [{"detector": "open_resolver", "source": cpe}],
    }


def scenario_secondary_dns(out: Path) -> dict[str, object]:
    """Benign: a business DNS server answers 2 external secondaries."""
    cap = Capture(5301)
    for i in range(20):
        cap.dns(i * 3.0, f"192.0.2.{20 + i % 2}", "10.3.0.53", "example-business.com", "SOA")
    write_pcap(out / "secondary-dns.pcap", cap.frames)
    return {"what": "2 external hosts query a subscriber DNS server (benign)", "alerts": []}


def scenario_open_proxy(out: Path) -> dict[str, object]:
    """12 external peers relay sizable traffic through a subscriber's port 3128."""
    cap = Capture(3128)
    proxy = "10.2.0.31"
    t = 0.0
    for i in range(12):
        rnd = cap.rng.randbytes
        ex = [("c", b"CONNECT 192.0.2.80:443 HTTP/1.1\r\n\r\n"), ("s", b"HTTP/1.1 200 OK\r\n\r\n")]
        ex += [("c", rnd(200)), ("s", rnd(400))] * 3
        peer = f"198.51.100.{40 + i}"
        t = cap.tcp_session(t, peer, proxy, 3128, ex, gap_s=0.05, bulk=("s", 1)) + 2.0
    # near-threshold twin: a development server on 8080 visited by 3 peers
    for i in range(3):
        ex = [("c", b"GET / HTTP/1.1\r\n\r\n"), ("s", cap.rng.randbytes(20000))]
        cap.tcp_session(100.0 + i, f"192.0.2.{60 + i}", "10.2.0.32", 8080, ex)
    write_pcap(out / "open-proxy.pcap", cap.frames)
    return {
        "what": "10.2.0.31 relays ~66 KB for each of 12 external peers on 3128; 10.2.0.32 "
        "serves 3 peers on 8080",
        "alerts": [{"detector": "open_proxy", "source": proxy}],
    }


def scenario_smtp(out: Path) -> dict[str, object]:
    """A residential host sends mail straight to 15 external MX hosts; a business mail
    server in the same capture does the same (silent)."""
    cap = Capture(25)
    spammer, mailserver = "10.2.0.77", "10.3.0.25"
    t = 0.0
    for i in range(15):
        for src in (spammer, mailserver):
            ex = [
                ("s", b"220 mx.example.net ESMTP\r\n"),
                ("c", b"EHLO host\r\n"),
                ("s", b"250 ok\r\n"),
                ("c", cap.rng.randbytes(2000)),
                ("s", b"250 queued\r\n"),
            ]
            t = cap.tcp_session(t, src, f"203.0.113.{100 + i}", 25, ex) + 1.0
    write_pcap(out / "smtp-residential.pcap", cap.frames)
    return {
        "what": "10.2.0.77 (residential) and 10.3.0.25 (business) each deliver to 15 MX hosts",
        "alerts": [{"detector": "residential_smtp", "source": spammer}],
    }


def scenario_server_hosting(out: Path) -> dict[str, object]:
    """30 external peers connect to one port of a subscriber host; another gets 4."""
    cap = Capture(8443)
    server = "10.2.0.88"
    t = 0.0
    for i in range(30):
        ex = [("c", cap.rng.randbytes(300)), ("s", cap.rng.randbytes(3000))]
        t = cap.tcp_session(t, f"203.0.113.{130 + i}", server, 8443, ex) + 1.0
    for i in range(4):
        ex = [("c", cap.rng.randbytes(300)), ("s", cap.rng.randbytes(3000))]
        cap.tcp_session(10.0 + i, f"192.0.2.{130 + i}", "10.2.0.89", 27015, ex)
    write_pcap(out / "server-hosting.pcap", cap.frames)
    return {
        "what": "10.2.0.88 serves 30 external peers on 8443; 10.2.0.89 serves 4 on 27015",
        "alerts": [{"detector": "server_hosting", "source": server}],
    }


def _volume_session(cap: Capture, t: float, sub: str, segments: int) -> None:
    path = b"/f" * cap.rng.randint(1, 40)  # different files: requests of varied sizes
    ex = [("c", b"GET " + path + b" HTTP/1.1\r\n\r\n"), ("s", b"HTTP/1.1 200 OK\r\n\r\n")]
    cap.tcp_session(t, sub, "192.0.2.200", 80, ex, gap_s=0.01, bulk=("s", segments))


def _volume_minute(cap: Capture, start: float, sub: str, segments: int) -> None:
    """A minute's download in 1-3 sessions at irregular moments (people, not a beacon)."""
    parts = min(segments, cap.rng.randint(1, 3))
    for k in range(parts):
        t = start + k * 9 + cap.rng.uniform(0, 8)
        _volume_session(cap, t, sub, segments // parts + (k < segments % parts))


def scenario_volume(out: Path) -> dict[str, object]:
    """Two subscribers, 40 one-minute buckets: one steady heavy user (±30 %), one light
    user who suddenly downloads 40x its usual volume in minute 35."""
    cap = Capture(80)
    heavy, spiky = "10.2.0.100", "10.2.0.101"
    for minute in range(40):
        _volume_minute(cap, minute * 60.0 + 2, heavy, 90 + cap.rng.randrange(-25, 26))  # ~6 MB
        light = 4 + cap.rng.randrange(-1, 2)  # ~260 KB/min
        _volume_minute(cap, minute * 60.0 + 30, spiky, light if minute != 35 else 160)
    write_pcap(out / "volume.pcap", cap.frames)
    return {
        "what": "10.2.0.100 steady ~6 MB/min (above min_bytes); 10.2.0.101 ~260 KB/min "
        "then ~10 MB in minute 35 (snapped 64 KiB segments)",
        "alerts": [{"detector": "volume_anomaly", "source": spiky}],
    }


SCENARIOS = (
    scenario_ssh_bruteforce,
    scenario_ftp_bruteforce,
    scenario_ftp_few_failures,
    scenario_imap_stuffing,
    scenario_imap_polling,
    scenario_dns_tunnel,
    scenario_dns_busy_resolver,
    scenario_open_resolver,
    scenario_secondary_dns,
    scenario_open_proxy,
    scenario_smtp,
    scenario_server_hosting,
    scenario_volume,
)
FILES = (
    "ssh-bruteforce.pcap",
    "ftp-bruteforce.pcap",
    "ftp-few-failures.pcap",
    "imap-stuffing.pcap",
    "imap-polling.pcap",
    "dns-tunnel.pcap",
    "dns-busy-resolver.pcap",
    "open-resolver.pcap",
    "secondary-dns.pcap",
    "open-proxy.pcap",
    "smtp-residential.pcap",
    "server-hosting.pcap",
    "volume.pcap",
)
# What the tests configure (labels.json repeats it): subscriber ranges and the one
# threshold scaled down so the volume capture stays small.
TEST_CONFIG = {
    "home_networks": ["10.0.0.0/8"],
    "detect": {
        "broadband": {
            "residential_smtp": {
                "residential_networks": ["10.2.0.0/16"],
                "business_networks": ["10.3.0.0/16"],
            },
            "volume_anomaly": {"bucket_s": 60, "min_bytes": 4000000},
        }
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "tests" / "data" / "broadband"
    parser.add_argument("out", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, object] = {
        "config": TEST_CONFIG,
        "canaries": list(CANARIES),
        "files": {},
    }
    files: dict[str, object] = {}
    for name, scenario in zip(FILES, SCENARIOS, strict=True):
        files[name] = scenario(out)
        size = (out / name).stat().st_size
        print(f"{name}: {size} bytes", file=sys.stderr)
    labels["files"] = files
    (out / "labels.json").write_text(json.dumps(labels, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
