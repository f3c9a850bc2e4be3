"""Live capture end to end: ``trafficguard run`` on one end of a veth pair in a private
namespace, tcpreplay of sample captures onto the other end, SIGTERM, then the store.

What must agree with ``trafficguard replay`` of the same files: the flows' endpoints,
ports, protocol, packets and bytes per direction, and the application label. What
legitimately differs: timestamps (kernel receive time, not the pcap's), ``flow_id``
(derived from the first-seen time) and ``end_reason`` (a replay ends with ``flush`` at
the end of the file; the daemon with ``flush`` at SIGTERM, or ``idle``/``tcp_fin`` when
the wall clock passed a timeout first). The captures are chosen so that no flow depends
on the pcap's own gaps (http.pcap reuses a port after 30 s; tcpreplay at a fixed rate
would merge those two flows).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from livenet import DaemonProc, Veth, replay_onto, veth_netns, wait_metric, write_config

from trafficguard.sinks.sqlite import query_records

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PCAPS = [
    Path(__file__).resolve().parents[2] / "pcaps" / n
    for n in ("sip-call-rtp.pcap", "dns.pcap", "tls.pcap")
]
FIELDS = (
    "src_addr",
    "src_port",
    "dst_addr",
    "dst_port",
    "proto",
    "packets_fwd",
    "packets_rev",
    "bytes_fwd",
    "bytes_rev",
    "app",
)


def _flows(store: Path) -> Counter[tuple[object, ...]]:
    return Counter(tuple(getattr(r, f) for f in FIELDS) for r in query_records(store, "flow"))


@pytest.fixture
def veth() -> Veth:
    with veth_netns() as v:
        yield v


@pytest.fixture
def replayed(tmp_path: Path, run_cli) -> Counter[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "replay.yaml", tmp_path / "replay")
    store = tmp_path / "replay.db"
    proc = run_cli("--config", config, "replay", "--no-metrics", "-q", "--store", store, *PCAPS)
    assert proc.returncode == 0, proc.stderr
    flows = _flows(store)
    assert sum(flows.values()) == 9  # 3 SIP/RTP/RTCP + 5 DNS + 1 TLS (pcaps/README.md)
    return flows


def _capture(
    veth: Veth, tmp: Path, workers: int
) -> tuple[Counter[tuple[object, ...]], dict[str, float], int]:
    store_dir = tmp / f"live{workers}"
    config = write_config(tmp / f"live{workers}.yaml", store_dir)
    daemon = DaemonProc(veth, config, tmp / f"live{workers}.log", "--workers", str(workers))
    try:
        daemon.wait_event("capture.started")
        sent = replay_onto(veth, PCAPS, pps=2000)
        m = wait_metric(veth, "trafficguard_capture_packets_total", sent)
        rc, _ = daemon.stop()
        assert rc == 0, daemon.log.read_text()
    finally:
        daemon.close()
    return _flows(store_dir / "store.db"), m, sent


def test_live_records_equal_replay(
    veth: Veth, tmp_path: Path, replayed: Counter[tuple[object, ...]]
) -> None:
    live, m, sent = _capture(veth, tmp_path, workers=1)
    assert sent == 313 + 17 + 22
    assert live == replayed
    assert m["trafficguard_capture_packets_total"] == sent
    assert m["trafficguard_capture_kernel_packets_total"] == sent
    assert m["trafficguard_capture_drops_total"] == 0
    assert m["trafficguard_capture_workers"] == 1


def test_two_workers_union_equals_single_worker(
    veth: Veth, tmp_path: Path, replayed: Counter[tuple[object, ...]]
) -> None:
    live, m, sent = _capture(veth, tmp_path, workers=2)
    assert live == replayed
    assert m["trafficguard_capture_workers"] == 2
    assert m["trafficguard_capture_kernel_packets_total"] == sent
    assert m["trafficguard_capture_drops_total"] == 0
