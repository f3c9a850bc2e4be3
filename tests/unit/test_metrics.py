"""Metrics: scrape a real server, check values, names, HELP, promtool, and the label guard."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from trafficguard import __version__
from trafficguard.sinks.metrics import (
    MetricsServer,
    PipelineSnapshot,
    build_registry,
    safe_label_value,
    start_metrics_server,
)

IP4 = "198.51.100.23"
IP6 = "2001:db8::17"
PHONE = "+4915112345678"
PHONE_DIGITS = "4915112345678"
URI = "sip:alice@example.com"
HOST = "evil.example.com"
LEAKS = (IP4, IP6, PHONE, PHONE_DIGITS, URI, HOST, "alice", "example")


def snapshot() -> PipelineSnapshot:
    return PipelineSnapshot(
        capture_packets=1234,
        capture_bytes=567890,
        capture_drops=7,
        decode_errors={"truncated_ip": 3, "bad_ip_version": 1, IP4: 2},
        decode_skipped={"non_ip": 11, PHONE_DIGITS: 1},
        fragments_held=4,
        app_packets={("sip", "fwd"): 10, ("sip", "rev"): 8, (URI, "fwd"): 5, (IP6, "rev"): 1},
        app_bytes={("sip", "fwd"): 1000, ("rtp", "rev"): 2000, (PHONE, "fwd"): 50},
        flows_started=42,
        flows_ended={"idle": 30, "tcp_fin": 5, HOST: 1},
        flows_evicted=2,
        flow_table_flows=12,
        flow_table_capacity=1_000_000,
        records_written={("sqlite", "flow"): 36, ("jsonl", "flow"): 36},
        store_errors=1,
        sensor_loss_windows=3,
        last_packet_ts_s=1_700_000_000.25,
        processing_lag_s=0.5,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    srv = start_metrics_server("127.0.0.1", 0, build_registry(snapshot))
    yield srv
    srv.close()


def scrape(srv: MetricsServer, path: str = "/metrics") -> str:
    url = f"http://127.0.0.1:{srv.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_values_from_the_snapshot_appear_under_their_names(server: MetricsServer) -> None:
    assert server.port > 0
    got = samples(scrape(server))
    expect = {
        ("trafficguard_capture_packets_total", ()): 1234,
        ("trafficguard_capture_bytes_total", ()): 567890,
        ("trafficguard_capture_drops_total", ()): 7,
        ("trafficguard_decode_errors_total", (("reason", "truncated_ip"),)): 3,
        ("trafficguard_decode_errors_total", (("reason", "other"),)): 2,
        ("trafficguard_packets_skipped_total", (("reason", "non_ip"),)): 11,
        ("trafficguard_fragments_held", ()): 4,
        ("trafficguard_packets_total", (("app", "sip"), ("direction", "fwd"))): 10,
        ("trafficguard_packets_total", (("app", "other"), ("direction", "fwd"))): 5,
        ("trafficguard_bytes_total", (("app", "rtp"), ("direction", "rev"))): 2000,
        ("trafficguard_flows_started_total", ()): 42,
        ("trafficguard_flows_ended_total", (("reason", "idle"),)): 30,
        ("trafficguard_flows_ended_total", (("reason", "other"),)): 1,
        ("trafficguard_flows_evicted_total", ()): 2,
        ("trafficguard_flow_table_flows", ()): 12,
        ("trafficguard_flow_table_capacity_flows", ()): 1_000_000,
        ("trafficguard_records_written_total", (("kind", "flow"), ("sink", "sqlite"))): 36,
        ("trafficguard_store_errors_total", ()): 1,
        ("trafficguard_sensor_loss_windows_total", ()): 3,
        ("trafficguard_last_packet_timestamp_seconds", ()): 1_700_000_000.25,
        ("trafficguard_processing_lag_seconds", ()): 0.5,
        ("trafficguard_build_info", (("version", __version__),)): 1,
    }
    for key, value in expect.items():
        assert got.get(key) == value, key
    assert any(name.startswith("process_") for name, _ in got)


def test_every_family_has_help_and_type(server: MetricsServer) -> None:
    text = scrape(server)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {
        line.split()[2]: line.split(maxsplit=3)[3]
        for line in text.splitlines()
        if line.startswith("# HELP")
    }
    ours = {n for n in names if n.startswith("trafficguard_")}
    assert len(ours) == 19
    for name in names:
        assert helps.get(name, "").strip(), name


def test_no_address_number_or_uri_in_the_exposition(server: MetricsServer) -> None:
    text = scrape(server)
    for leak in LEAKS:
        assert leak not in text, leak
    # merged into "other", never dropped: totals still add up
    got = samples(text)
    fwd_other = ("trafficguard_bytes_total", (("app", "other"), ("direction", "fwd")))
    assert got[fwd_other] == 50


def test_promtool_accepts_the_scrape(server: MetricsServer) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        subprocess.run(["apt-get", "install", "-y", "prometheus"], check=True, timeout=600)
        promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing"
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(server).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.strip() == b"" and done.stderr.strip() == b""


def test_healthz_and_404(server: MetricsServer) -> None:
    assert scrape(server, "/healthz") == "ok"
    with pytest.raises(urllib.error.HTTPError) as err:
        scrape(server, "/secret")
    assert err.value.code == 404


def test_values_are_read_at_scrape_time() -> None:
    state = {"n": 0}

    def snap() -> PipelineSnapshot:
        return PipelineSnapshot(capture_packets=state["n"])

    with start_metrics_server("127.0.0.1", 0, build_registry(snap)) as srv:
        key = ("trafficguard_capture_packets_total", ())
        assert samples(scrape(srv))[key] == 0
        state["n"] = 99
        assert samples(scrape(srv))[key] == 99


def test_close_releases_the_port() -> None:
    srv = start_metrics_server("127.0.0.1", 0, build_registry(PipelineSnapshot))
    port = srv.port
    srv.close()
    srv.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_registry_is_fresh_not_global() -> None:
    reg = build_registry(PipelineSnapshot)
    assert reg is not REGISTRY
    global_names = {m.name for m in REGISTRY.collect()}
    assert not any(n.startswith("trafficguard_") for n in global_names)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sip", "sip"),
        ("tcp_fin", "tcp_fin"),
        ("0.1.0", "0.1.0"),
        ("rtp-v2", "rtp-v2"),
        (IP4, "other"),
        ("10.0.0.1", "other"),
        ("::1", "other"),
        (IP6, "other"),
        (PHONE, "other"),
        (PHONE_DIGITS, "other"),
        (URI, "other"),
        (HOST, "other"),
        ("http://x/y", "other"),
        ("SIP", "other"),
        ("", "other"),
        ("a" * 41, "other"),
        ("a b", "other"),
    ],
)
def test_label_guard(value: str, expected: str) -> None:
    assert safe_label_value(value) == expected
