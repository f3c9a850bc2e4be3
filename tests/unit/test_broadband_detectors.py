"""Broadband detectors on labelled generated captures and on real ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from realdata import DATA_DIR, all_real_pcaps, real_pcap

from trafficguard.config import Config, parse_config
from trafficguard.detect.alerts import AlertRecord
from trafficguard.detect.stage import alerts_of
from trafficguard.pipeline import replay_records
from trafficguard.privacy.keys import SensorKeys
from trafficguard.privacy.pseudonym import Pseudonymizer

BROADBAND_DIR = DATA_DIR / "broadband"
LABELS: dict[str, Any] = json.loads((BROADBAND_DIR / "labels.json").read_text())
REPO = Path(__file__).resolve().parents[2]
OURS = frozenset(
    {
        "login_bruteforce",
        "dns_tunnel",
        "open_resolver",
        "open_proxy",
        "residential_smtp",
        "server_hosting",
        "volume_anomaly",
    }
)
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


def _config(extra: dict[str, Any] | None = None) -> Config:
    data = json.loads(json.dumps(LABELS["config"]))
    data["voip"] = {"enabled": False}
    for key, value in (extra or {}).items():
        data[key] = value
    return parse_config(data)


def _ours(path: Path, cfg: Config, keys: SensorKeys) -> list[AlertRecord]:
    return [a for a in alerts_of(replay_records([path], cfg, keys=keys)) if a.detector in OURS]


@pytest.mark.parametrize("name", sorted(LABELS["files"]))
def test_labelled_capture(name: str, keys: SensorKeys) -> None:
    """Each capture raises exactly its labelled alerts; benign twins stay silent."""
    cfg = _config()
    pz = Pseudonymizer(keys.pseudonym_keys, cfg.home_networks)
    alerts = _ours(BROADBAND_DIR / name, cfg, keys)
    expected = LABELS["files"][name]["alerts"]
    want = {(e["detector"], pz.address(e["source"])) for e in expected}
    assert {(a.detector, a.source) for a in alerts} == want
    for e in expected:
        mine = [a for a in alerts if a.detector == e["detector"]]
        if "pattern" in e:
            assert {a.evidence["pattern"] for a in mine} == {e["pattern"]}
        if "possible_success" in e:
            assert max(a.evidence["possible_success"] for a in mine) == e["possible_success"]
            assert any(a.severity == "high" for a in mine)
        for a in mine:
            assert a.rule and "threshold" in a.rule
            assert all(isinstance(v, int | float | str) for v in a.evidence.values())


def test_real_ftp_bruteforce_source(keys: SensorKeys) -> None:
    alerts = _ours(real_pcap("zeek-ftp-bruteforce.pcap"), _config({"home_networks": []}), keys)
    assert {(a.detector, a.source, a.target) for a in alerts} == {
        ("login_bruteforce", "192.168.56.1", "192.168.56.101")
    }
    last = max(alerts, key=lambda a: (a.last_seen_ns, a.seq))
    assert last.evidence["service"] == "ftp" and last.evidence["sessions"] == 30
    assert last.evidence["teardown_fin"] == 30 and last.evidence["possible_success"] == 0


def test_real_iodine_tunnel(keys: SensorKeys) -> None:
    alerts = _ours(real_pcap("ndpi-dns-tunnel-iodine.pcap"), _config({"home_networks": []}), keys)
    assert {(a.detector, a.source) for a in alerts} == {("dns_tunnel", "10.0.2.30")}
    pz = Pseudonymizer(keys.pseudonym_keys, [])
    assert {a.target for a in alerts} == {pz.token("pirate.sea")}
    assert all(a.evidence["pattern"] == "tunnel" and a.severity == "high" for a in alerts)


BENIGN_REAL = [
    p.name
    for p in all_real_pcaps()
    if p.name not in ("zeek-ftp-bruteforce.pcap", "ndpi-dns-tunnel-iodine.pcap")
]


@pytest.mark.parametrize("name", BENIGN_REAL)
def test_benign_real_captures_stay_silent(name: str, keys: SensorKeys) -> None:
    """With every private range as subscribers, no broadband detector fires."""
    cfg = _config({"home_networks": PRIVATE})
    assert _ours(real_pcap(name), cfg, keys) == []


@pytest.mark.parametrize(
    ("name", "detector"),
    [
        ("open-resolver.pcap", "open_resolver"),
        ("dns-tunnel.pcap", "dns_tunnel"),
        ("ftp-bruteforce.pcap", "login_bruteforce"),
        ("volume.pcap", "volume_anomaly"),
    ],
)
def test_each_detector_can_be_switched_off(name: str, detector: str, keys: SensorKeys) -> None:
    cfg = _config()
    data = cfg.model_dump(mode="json")
    data["detect"]["broadband"][detector]["enabled"] = False
    assert _ours(BROADBAND_DIR / name, parse_config(data), keys) == []


def test_thresholds_are_what_decides(keys: SensorKeys) -> None:
    """The benign twin fires once the threshold is lowered below what it does."""
    cfg = _config()
    data = cfg.model_dump(mode="json")
    data["detect"]["broadband"]["login_bruteforce"]["min_sessions"] = 4
    data["detect"]["broadband"]["login_bruteforce"]["success_min_attempts"] = 4
    alerts = _ours(BROADBAND_DIR / "ftp-few-failures.pcap", parse_config(data), keys)
    assert [a.evidence["pattern"] for a in alerts if a.seq == 0] == ["guessing"]
    assert max(a.evidence["possible_success"] for a in alerts) == 1


def test_generator_is_deterministic(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_broadband_pcaps.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for path in sorted(BROADBAND_DIR.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
