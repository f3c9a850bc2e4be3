"""The committed sample captures are exactly what scripts/make_sample_pcaps.py writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, GRE, Dot1AD, Dot1Q
from scapy.utils import rdpcap

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "make_sample_pcaps.py"
PCAPS = REPO_ROOT / "pcaps"

# Packets per file; pcaps/README.md lists the same numbers.
EXPECTED_PACKETS = {
    "sip-call-rtp.pcap": 313,
    "dns.pcap": 17,
    "http.pcap": 28,
    "tls.pcap": 22,
    "mix.pcap": 30,
}


def load_generator() -> ModuleType:
    """Import the script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_sample_pcaps", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh run of the generator's command line into a temporary directory."""
    out = tmp_path_factory.mktemp("pcaps")
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True)
    return out


def test_generator_writes_every_file(regenerated: Path) -> None:
    assert sorted(p.name for p in regenerated.iterdir()) == sorted(EXPECTED_PACKETS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PACKETS))
def test_committed_file_is_byte_identical(name: str, regenerated: Path) -> None:
    """Regenerating gives the committed bytes (fixed timestamps, seeds and header fields)."""
    assert (regenerated / name).read_bytes() == (PCAPS / name).read_bytes()


@pytest.mark.parametrize("name", sorted(EXPECTED_PACKETS))
def test_packet_counts(name: str) -> None:
    assert len(rdpcap(str(PCAPS / name))) == EXPECTED_PACKETS[name]


def test_generate_returns_counts(tmp_path: Path) -> None:
    """The in-process API reports what it wrote."""
    assert load_generator().generate(tmp_path) == EXPECTED_PACKETS


def test_timestamps_are_fixed_and_ordered() -> None:
    """Every file starts at the same fixed instant and is in capture-time order."""
    for name in EXPECTED_PACKETS:
        times = [float(p.time) for p in rdpcap(str(PCAPS / name))]
        assert times[0] == 1_700_000_000.0, name
        assert times == sorted(times), name


def test_mix_holds_every_encapsulation() -> None:
    """mix.pcap carries each layer the decoder must handle."""
    pkts = rdpcap(str(PCAPS / "mix.pcap"))
    assert sum(ARP in p for p in pkts) == 2
    assert sum(Dot1AD in p and Dot1Q in p for p in pkts) == 9  # QinQ TCP connection
    assert sum(Dot1Q in p and Dot1AD not in p for p in pkts) == 2
    assert sum(IPv6 in p and TCP in p for p in pkts) == 8
    assert sum(IPv6 in p and UDP in p for p in pkts) == 2
    frags = [p[IP] for p in pkts if IP in p and (p[IP].flags.MF or p[IP].frag)]
    assert [(f.frag, bool(f.flags.MF)) for f in frags] == [(0, True), (185, True), (370, False)]
    assert sum(GRE in p for p in pkts) == 4


def test_addresses_are_documentation_or_private() -> None:
    """No sample names a routable address outside the reserved ranges."""
    import ipaddress  # noqa: PLC0415

    allowed = [
        ipaddress.ip_network(n)
        for n in (
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "10.0.0.0/8",
            "2001:db8::/32",
        )
    ]
    for name in EXPECTED_PACKETS:
        for p in rdpcap(str(PCAPS / name)):
            for layer in (IP, IPv6):
                if layer in p:
                    for addr in (p[layer].src, p[layer].dst):
                        ip = ipaddress.ip_address(addr)
                        assert any(ip in n for n in allowed if n.version == ip.version), (
                            name,
                            addr,
                        )
