"""The alert model, the bounded sketches and the detection stage plumbing."""

from __future__ import annotations

import logging
import random
from itertools import pairwise
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from trafficguard.config import NS_PER_S, DetectConfig
from trafficguard.detect.alerts import (
    AlertManager,
    AlertPolicy,
    AlertRecord,
    PrefixSet,
    alert_id_of,
)
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import DistinctCounter, LruMap, SpaceSaving
from trafficguard.detect.stage import DetectStage, alerts_of
from trafficguard.flow.records import FlowRecord
from trafficguard.privacy.keys import init_keys
from trafficguard.privacy.pseudonym import Pseudonymizer

S = NS_PER_S


class ClearSubjects:
    """Pseudonymizer stand-in with no home networks: every address stays as it is."""

    def address(self, ip: str) -> str:
        return ip

    def is_subscriber(self, ip: str) -> bool:
        return False


def _report(
    mgr: AlertManager, t_s: float, key: str = "k", severity: str = "medium", **kw: str
) -> None:
    mgr.report(
        "test_detector",
        key,
        first_ns=int(t_s * S),
        last_ns=int(t_s * S),
        rule="a rule",
        severity=severity,
        source=kw.get("source", "203.0.113.5"),
        target=kw.get("target", "10.1.0.1"),
        evidence={"count": int(t_s)},
    )


def test_alert_opens_updates_at_most_every_interval_and_resolves_when_quiet() -> None:
    policy = AlertPolicy(update_interval_ns=60 * S, quiet_period_ns=120 * S)
    mgr = AlertManager(ClearSubjects(), policy)
    for t in range(0, 200, 5):  # a report every 5 s for 200 s
        _report(mgr, 1000 + t)
        mgr.tick(int((1000 + t) * S))
    out = mgr.take()
    assert [r.status for r in out] == ["open", "updated", "updated", "updated"]
    assert [r.seq for r in out] == [0, 1, 2, 3]
    assert len({r.alert_id for r in out}) == 1
    gaps = [(b.last_seen_ns - a.last_seen_ns) / S for a, b in pairwise(out)]
    assert all(g >= 60 for g in gaps)
    mgr.tick(int((1195 + 119) * S))  # not quiet long enough: only the pending update
    (pending,) = mgr.take()
    assert pending.status == "updated" and pending.last_seen_ns == 1195 * S
    mgr.tick(int((1195 + 120) * S))
    (resolved,) = mgr.take()
    assert resolved.status == "resolved" and resolved.close_reason == "quiet"
    assert resolved.first_seen_ns == 1000 * S and resolved.last_seen_ns == 1195 * S
    assert mgr.active == 0


def test_deferred_details_are_made_only_for_emitted_records() -> None:
    mgr = AlertManager(ClearSubjects(), AlertPolicy(update_interval_ns=60 * S))
    made: list[int] = []

    def details(n: int) -> tuple[str, dict[str, int | float | str]]:
        made.append(n)
        return f"rule {n}", {"n": n}

    for n in range(10):  # opens at 0 s, then folds in without an update due
        mgr.report_deferred(
            "d", "k", details=lambda n=n: details(n), first_ns=n * S, last_ns=n * S,
            severity="low",
        )  # fmt: skip
    assert made == [0]  # the open record needs them at once
    mgr.finish()
    assert made == [0, 9]  # the resolved record carries the latest report's
    opened, resolved = mgr.take()
    assert (opened.rule, opened.evidence) == ("rule 0", {"n": 0})
    assert (resolved.rule, resolved.evidence, resolved.seq) == ("rule 9", {"n": 9}, 1)


def test_alert_id_is_deterministic_and_key_is_not_stored() -> None:
    mgr = AlertManager(ClearSubjects())
    _report(mgr, 5, key="secret-key-203.0.113.5")
    (rec,) = mgr.take()
    assert rec.alert_id == alert_id_of("test_detector", "secret-key-203.0.113.5", 5 * S)
    assert "secret-key" not in repr(rec)


def test_severity_only_rises_and_finish_resolves_with_flush() -> None:
    mgr = AlertManager(ClearSubjects(), AlertPolicy(update_interval_ns=1))
    _report(mgr, 1, severity="low")
    _report(mgr, 2, severity="high")
    _report(mgr, 3, severity="low")
    mgr.finish()
    out = mgr.take()
    assert [r.severity for r in out] == ["low", "high", "high", "high"]
    assert out[-1].status == "resolved" and out[-1].close_reason == "flush"
    assert mgr.opened == {("test_detector", "low"): 1}


def test_allowlisted_source_is_suppressed_and_counted() -> None:
    mgr = AlertManager(ClearSubjects(), allowlist=PrefixSet(["203.0.113.0/24"]))
    _report(mgr, 1)
    _report(mgr, 2, source="198.51.100.1", key="other")
    out = mgr.take()
    assert [r.source for r in out] == ["198.51.100.1"]
    assert mgr.suppressed == {"test_detector": 1}


def test_subscriber_addresses_are_pseudonymized_external_stay_clear(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys")
    pz = Pseudonymizer(keys.pseudonym_keys, ["10.1.0.0/16"])
    mgr = AlertManager(pz)
    _report(mgr, 1, source="203.0.113.5", target="10.1.0.1")
    _report(mgr, 1, key="b", source="10.1.0.2", target="u1.abcdef")
    a, b = mgr.take()
    assert a.source == "203.0.113.5"
    assert a.target.startswith("a") and "10.1.0.1" not in a.target
    assert b.source.startswith("a") and b.target == "u1.abcdef"


def test_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="severity"):
        _report(AlertManager(ClearSubjects()), 1, severity="urgent")


def test_log_events_carry_only_ids_and_closed_sets() -> None:
    mgr = AlertManager(ClearSubjects(), AlertPolicy(update_interval_ns=1, quiet_period_ns=S))
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as logs:
            _report(mgr, 1)
            _report(mgr, 2)
            mgr.tick(10 * S)
    finally:
        structlog.configure(**saved)
    assert [e["event"] for e in logs] == ["alert.opened", "alert.updated", "alert.resolved"]
    for e in logs:
        assert set(e) <= {"event", "log_level", "detector", "severity", "alert_id", "reason"}
        assert "203.0.113.5" not in repr(e) and "10.1.0.1" not in repr(e)


def test_lru_map_is_bounded_and_counts_evictions() -> None:
    m: LruMap[int, list[int]] = LruMap(3)
    for i in range(10):
        m.setdefault(i, list)
    m.get(7)
    m.setdefault(10, list)
    assert len(m) == 3 and m.evicted == 8
    assert 7 in m and 8 not in m


def test_distinct_counter_exact_then_hll_within_error() -> None:
    dc = DistinctCounter(exact_cap=64, lg_k=12)
    for i in range(64):
        dc.add(f"10.0.{i}.1")
        dc.add(f"10.0.{i}.1")
    assert dc.is_exact and dc.count() == 64
    for i in range(20_000):
        dc.add(f"h{i}")
    assert not dc.is_exact
    assert abs(dc.count() - 20_064) / 20_064 < 0.05


def test_space_saving_finds_heavy_hitter_and_bounds_share() -> None:
    rng = random.Random(1)
    ss: SpaceSaving[str] = SpaceSaving(4)
    for _ in range(3000):
        ss.add("heavy")
        ss.add(f"noise{rng.randrange(10_000)}")
    assert ss.top(1)[0][0] == "heavy"
    assert 0.45 <= ss.share("heavy") <= 0.5
    assert ss.evicted > 1000
    assert all(ss.share(k) < 0.05 for k, _ in ss.top(4) if k != "heavy")


def _flow(**kw: object) -> FlowRecord:
    base: dict[str, object] = dict(
        flow_id="0" * 16, seq=0, first_seen_ns=S, start_ns=S, end_ns=2 * S, vlan=0,
        ip_version=4, proto=6, src_addr="203.0.113.9", src_port=40000, dst_addr="10.1.0.9",
        dst_port=80, packets_fwd=1, packets_rev=0, bytes_fwd=60, bytes_rev=0, ip_bytes_fwd=40,
        ip_bytes_rev=0, payload_bytes_fwd=0, payload_bytes_rev=0, tcp_flags_fwd=2,
        tcp_flags_rev=0, tcp_state="syn_sent", app="unknown", app_source="none", encap="",
        end_reason="idle",
    )  # fmt: skip
    base.update(kw)
    return FlowRecord(**base)  # type: ignore[arg-type]


class CountingDetector(Detector):
    name = "counting"

    def __init__(self, env: DetectorEnv) -> None:
        super().__init__(env)
        self.flows = 0
        self.starts = 0

    def on_flow(self, rec: FlowRecord) -> None:
        self.flows += 1
        if self.flows == 3:
            self.alerts.report(
                self.name, "k", first_ns=rec.start_ns, last_ns=rec.end_ns, rule="3 flows",
                severity="low", source=rec.src_addr, target=rec.dst_addr, evidence={"flows": 3},
            )  # fmt: skip


class FakeHost:
    def __init__(self) -> None:
        self.hooks: list[object] = []

    def add_hook(self, hook: object) -> None:
        self.hooks.append(hook)


def test_stage_dispatches_by_record_type_and_emits_metrics() -> None:
    stage = DetectStage(DetectConfig(), ClearSubjects(), lambda cfg, env: [CountingDetector(env)])
    host = FakeHost()
    stage.attach(host)  # type: ignore[arg-type]
    assert host.hooks == []  # no detector wants first packets: no per-packet hook
    stage.on_records([_flow(), _flow(), object(), _flow()])  # type: ignore[list-item]
    (rec,) = alerts_of(stage.take_records())
    assert isinstance(rec, AlertRecord) and rec.detector == "counting"
    metrics = {m.name: m for m in stage.collect()}
    total = metrics["trafficguard_alerts"].samples
    assert [(s.labels, s.value) for s in total if s.name.endswith("_total")] == [
        ({"detector": "counting", "severity": "low"}, 1.0)
    ]
    active = metrics["trafficguard_alerts_active"].samples
    assert [(s.labels, s.value) for s in active] == [({"detector": "counting"}, 1.0)]
    stage.finish(10 * S)
    (resolved,) = alerts_of(stage.take_records())
    assert resolved.status == "resolved"


def test_without_home_networks_no_address_is_parsed_for_subscribers() -> None:
    """No home_networks: nobody is a subscriber, and the detectors' membership question
    is answered without asking the subjects (no address text parsed per record)."""

    class Asked(ClearSubjects):
        def __init__(self) -> None:
            self.asked = 0

        def is_subscriber(self, ip: str) -> bool:
            self.asked += 1
            return False

    answers: dict[bool, list[bool]] = {}
    for known in (True, False):
        subjects = Asked()
        stage = DetectStage(
            DetectConfig(), subjects, lambda cfg, env: [], home_networks_known=known
        )
        is_subscriber = stage.detectors_env.is_subscriber
        answers[known] = [is_subscriber("10.1.0.9"), is_subscriber("203.0.113.9")]
        assert subjects.asked == (2 if known else 0)
    assert answers[False] == answers[True] == [False, False]


def test_stage_registers_first_packet_hook_only_when_wanted() -> None:
    class StartDetector(Detector):
        name = "starts"

        def on_flow_start(self, pkt: object, flow: object) -> None:  # type: ignore[override]
            pass

    stage = DetectStage(DetectConfig(), ClearSubjects(), lambda cfg, env: [StartDetector(env)])
    host = FakeHost()
    stage.attach(host)  # type: ignore[arg-type]
    assert len(host.hooks) == 1


def test_default_detectors_have_unique_closed_set_names() -> None:
    stage = DetectStage(DetectConfig(), ClearSubjects())
    names = [d.name for d in stage.detectors]
    assert len(names) == len(set(names)) >= 15
    assert all(n.replace("_", "").isalpha() and n.islower() for n in names)


def test_space_saving_heaviest_is_top_one() -> None:
    rng = random.Random(7)
    for _ in range(200):
        ss: SpaceSaving[str] = SpaceSaving(4)
        assert ss.heaviest() is None
        for _ in range(rng.randrange(1, 30)):
            ss.add(f"k{rng.randrange(8)}", rng.randrange(1, 4))  # many ties
        assert ss.heaviest() == ss.top(1)[0]


class HomeSubjects(ClearSubjects):
    """10.0.0.0/8 is the subscribers' range (so inbound and volume detectors engage)."""

    def is_subscriber(self, ip: str) -> bool:
        return ip.startswith("10.")


def _random_flow(
    rng: random.Random, i: int, ports: list[int], payloads: list[int], **fixed: object
) -> FlowRecord:
    """The ``i``-th of a run of flows with random ends, counters and TCP flags (``fixed``
    sets the fields a test chooses itself, such as the protocol or the destination port)."""
    flags = [0, 0x02, 0x12, 0x14, 0x18, 0x1A, 0x3F]
    fields: dict[str, object] = dict(
        seq=rng.choice([0, 0, 1]), src_port=rng.choice(ports),
        src_addr=rng.choice(["10.2.0.5", "203.0.113.9", "198.51.100.7"]),
        dst_addr=rng.choice(["10.1.0.9", f"10.1.{i % 250}.1", "192.0.2.1"]),
        packets_fwd=rng.randrange(0, 5000), packets_rev=rng.randrange(0, 50),
        bytes_fwd=rng.randrange(0, 10**7), bytes_rev=rng.randrange(0, 10**6),
        payload_bytes_fwd=rng.choice(payloads), payload_bytes_rev=rng.choice(payloads),
        tcp_flags_fwd=rng.choice(flags), tcp_flags_rev=rng.choice(flags),
        start_ns=i * S // 10, end_ns=i * S // 10 + S, first_seen_ns=i * S // 10,
    )  # fmt: skip
    fields.update(fixed)
    return _flow(**fields)


def test_flow_protos_promise_holds_for_default_detectors() -> None:
    # A detector with flow_protos must do nothing with a flow of any other protocol: the
    # stage skips those calls, so calling it directly must leave no state and no alert.
    rng = random.Random(3)
    residential = {"residential_networks": ["10.2.0.0/16"]}
    cfg = DetectConfig.model_validate({"broadband": {"residential_smtp": residential}})
    stage = DetectStage(cfg, HomeSubjects())
    filtered = [d for d in stage.detectors if d.flow_protos is not None]
    assert {d.name for d in filtered} >= {"syn_flood", "udp_flood", "icmp_flood", "port_scan"}
    ports = [0, 19, 21, 22, 25, 53, 80, 110, 123, 143, 443, 1900, 3128, 5060, 8080, 11211]
    payloads = [0, 0, 40, 400, 5000, 10**6]
    for d in filtered:
        others = [p for p in (1, 6, 17, 47, 58, 132) if p not in (d.flow_protos or ())]
        for i in range(3000):
            rec = _random_flow(
                rng, i, ports, payloads, proto=rng.choice(others), dst_port=rng.choice(ports)
            )
            d.on_flow(rec)
        assert d.state_keys() == 0 and d.evicted_keys() == 0, d.name
    stage.finish(400 * S)
    assert alerts_of(stage.take_records()) == []


def test_dst_port_promises_hold_for_default_detectors() -> None:
    # flow_dst_ports / flow_skip_dst_ports: a flow to any other (resp. a skipped) port
    # must leave no state and no alert, since the stage never makes those calls.
    rng = random.Random(4)
    residential = {"residential_networks": ["10.2.0.0/16"]}
    cfg = DetectConfig.model_validate({"broadband": {"residential_smtp": residential}})
    stage = DetectStage(cfg, HomeSubjects())
    filtered = [d for d in stage.detectors if d.flow_dst_ports or d.flow_skip_dst_ports]
    assert {d.name for d in filtered} >= {"beaconing", "login_bruteforce", "smtp_spam"}
    ports = [*range(1100), 1900, 3128, 5060, 5353, 8080, 11211, 40000]
    for d in filtered:
        wanted = d.flow_dst_ports
        skipped = [p for p in ports if (wanted is not None and p not in wanted)]
        skipped += sorted(d.flow_skip_dst_ports)
        for i in range(3000):
            rec = _random_flow(
                rng, i, ports, [0, 40, 400],
                proto=rng.choice(sorted(d.flow_protos or {1, 6, 17})),
                dst_port=rng.choice(skipped), end_reason=rng.choice(["idle", "active"]),
            )  # fmt: skip
            d.on_flow(rec)
        assert d.state_keys() == 0 and d.evicted_keys() == 0, d.name
    stage.finish(400 * S)
    assert alerts_of(stage.take_records()) == []


def test_stage_skips_flow_records_by_destination_port() -> None:
    class SshOnly(CountingDetector):
        name = "ssh_only"
        flow_protos = frozenset({6})
        flow_dst_ports = frozenset({22})

    class NotDns(CountingDetector):
        name = "not_dns"
        flow_skip_dst_ports = frozenset({53})

    stage = DetectStage(
        DetectConfig(), ClearSubjects(), lambda cfg, env: [SshOnly(env), NotDns(env)]
    )
    ssh, not_dns = stage.detectors
    assert isinstance(ssh, SshOnly) and isinstance(not_dns, NotDns)
    recs = [_flow(proto=6, dst_port=22), _flow(proto=17, dst_port=22), _flow(dst_port=80)]
    recs += [_flow(proto=17, dst_port=53), _flow(proto=6, dst_port=53), _flow(proto=47)]
    stage.on_records(recs)
    assert ssh.flows == 1
    # not TCP to port 53; UDP, a protocol no detector names, is looked up by protocol
    # only: the call comes (a filtered detector must still check for itself)
    assert not_dns.flows == 5


def test_takes_flows_promise_holds_without_subscribers() -> None:
    # Without home_networks (and an empty blocklist) the subscriber-only detectors say
    # they take no flows: the stage leaves them out, so calling them directly with any
    # flow must leave no state and no alert.
    rng = random.Random(5)
    stage = DetectStage(DetectConfig(), ClearSubjects(), home_networks_known=False)
    idle = [d for d in stage.detectors if not d.takes_flows()]
    assert {d.name for d in idle} == {
        "blocklist", "open_resolver", "open_proxy", "residential_smtp", "server_hosting",
        "volume_anomaly",
    }  # fmt: skip
    taken = {h.__self__ for hs in stage._flow_by_proto.values() for h in hs}  # type: ignore[attr-defined]
    assert not taken & set(idle)
    ports = [0, 22, 25, 53, 80, 443, 587, 3128, 8080]
    for d in idle:
        for i in range(2000):
            rec = _random_flow(
                rng, i, ports, [0, 40, 400], proto=rng.choice([1, 6, 17]),
                dst_port=rng.choice(ports),
            )  # fmt: skip
            d.on_flow(rec)
        assert d.state_keys() == 0 and d.evicted_keys() == 0, d.name
    stage.finish(3000 * S)
    assert alerts_of(stage.take_records()) == []
    # with subscribers every detector takes flows again (the blocklist still has no file)
    homed = DetectStage(DetectConfig(), HomeSubjects())
    assert [d.name for d in homed.detectors if not d.takes_flows()] == ["blocklist"]


def test_stage_skips_flow_records_of_other_protocols() -> None:
    class UdpOnly(CountingDetector):
        name = "udp_only"
        flow_protos = frozenset({17})

    stage = DetectStage(
        DetectConfig(), ClearSubjects(), lambda cfg, env: [UdpOnly(env), CountingDetector(env)]
    )
    udp_only, counting = stage.detectors
    assert isinstance(udp_only, UdpOnly) and isinstance(counting, CountingDetector)
    stage.on_records([_flow(proto=6), _flow(proto=17), _flow(proto=1), _flow(proto=17)])
    assert udp_only.flows == 2
    assert counting.flows == 4
    assert stage.records_seen == 4
