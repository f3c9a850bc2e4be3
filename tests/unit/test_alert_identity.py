"""Alert identity: a stored alert row ((alert_id, seq)) is never written twice with
different content, whatever the order of ticks and records (fast path on or off)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.test_detect_framework import ClearSubjects, _flow
from trafficguard.config import NS_PER_S, DetectConfig, parse_config
from trafficguard.detect.alerts import AlertManager, AlertPolicy, AlertRecord, alert_id_of
from trafficguard.detect.base import Detector
from trafficguard.detect.stage import DetectStage, alerts_of
from trafficguard.flow.records import FlowRecord
from trafficguard.pipeline import replay_records
from trafficguard.privacy.keys import SensorKeys

S = NS_PER_S
BROADBAND = Path(__file__).resolve().parents[1] / "data" / "broadband"
LABELS: dict[str, Any] = json.loads((BROADBAND / "labels.json").read_text())


def _alerts(fast_path: str, batch_frames: int, keys: SensorKeys) -> list[AlertRecord]:
    data = json.loads(json.dumps(LABELS["config"]))
    data["voip"] = {"enabled": False}
    data.setdefault("capture", {}).update(fast_path=fast_path, batch_frames=batch_frames)
    # replay_records writes into a MemorySink: these are the rows a store would get
    records = replay_records([BROADBAND / "ssh-bruteforce.pcap"], parse_config(data), keys)
    return alerts_of(records)


def _assert_no_row_rewritten(alerts: list[AlertRecord]) -> None:
    rows: dict[tuple[str, int], AlertRecord] = {}
    for a in alerts:
        prev = rows.setdefault((a.alert_id, a.seq), a)
        assert prev == a, f"row {(a.alert_id, a.seq)} written twice: {prev} then {a}"
    assert len(rows) == len(alerts)  # not even an identical duplicate
    by_id: dict[str, list[int]] = {}
    for a in alerts:
        by_id.setdefault(a.alert_id, []).append(a.seq)
    for seqs in by_id.values():
        assert seqs == list(range(len(seqs)))  # each alert's seqs count up from 0


def test_ssh_bruteforce_replay_writes_each_alert_row_once(keys: SensorKeys) -> None:
    """The regression: the round's tick resolved the alert before the round's flow
    records arrived, which reopened it with the same id at seq 0 (INSERT OR REPLACE)."""
    runs = {
        (fast, batch): _alerts(fast, batch, keys) for fast in ("off", "on") for batch in (4096, 64)
    }
    reference = runs[("off", 4096)]
    for (fast, batch), alerts in runs.items():
        _assert_no_row_rewritten(alerts)
        assert alerts == runs[("off", batch)], (fast, batch)  # same rows, fast path on/off
        # other rounds move the tick-driven updates only: same alert, same end state
        assert {a.alert_id for a in alerts} == {a.alert_id for a in reference}
        assert alerts[-1] == reference[-1]
    # one continuing brute force (attempts every 7.6 s, then the long session) = one alert
    assert len({a.alert_id for a in reference}) == 1
    assert reference[0].status == "open" and reference[-1].status == "resolved"
    assert reference[-1].evidence["possible_success"] == 1
    assert reference[-1].severity == "high"


def _report(mgr: AlertManager, first_s: float, last_s: float, n: int) -> None:
    mgr.report(
        "test_detector", "k", first_ns=int(first_s * S), last_ns=int(last_s * S),
        rule="r", severity="medium", source="203.0.113.5", evidence={"n": n},
    )  # fmt: skip


def test_late_report_of_the_same_activity_continues_the_resolved_alert() -> None:
    mgr = AlertManager(ClearSubjects(), AlertPolicy(60 * S, 120 * S))
    _report(mgr, 0, 100, 1)
    mgr.tick(300 * S)  # nothing reported since 100 s: resolved as quiet
    _report(mgr, 0, 150, 2)  # a late record: activity at 150 s, within 120 s of 100 s
    mgr.finish()
    out = mgr.take()
    assert [(a.seq, a.status) for a in out] == [
        (0, "open"), (1, "resolved"), (2, "updated"), (3, "resolved")
    ]  # fmt: skip
    assert len({a.alert_id for a in out}) == 1
    assert out[2].evidence == {"n": 2} and out[2].last_seen_ns == 150 * S


def test_new_occurrence_after_a_quiet_period_gets_a_distinct_id() -> None:
    """A detector window may keep its first-seen time across a quiet period: the second
    alert must not repeat the first one's id (its rows would replace the first's)."""
    mgr = AlertManager(ClearSubjects(), AlertPolicy(60 * S, 120 * S))
    _report(mgr, 0, 100, 1)
    mgr.tick(300 * S)
    _report(mgr, 0, 400, 2)  # same window start, activity 300 s after the last one
    _report(mgr, 0, 410, 3)
    mgr.tick(900 * S)
    _report(mgr, 0, 1000, 4)
    mgr.finish()
    out = mgr.take()
    ids = list(dict.fromkeys(a.alert_id for a in out))
    assert len(ids) == 3
    assert ids[0] == alert_id_of("test_detector", "k", 0)
    assert ids[1] == alert_id_of("test_detector", "k", 0, 1)
    assert ids[2] == alert_id_of("test_detector", "k", 0, 2)
    _assert_no_row_rewritten(out)
    assert [a.status for a in out if a.alert_id == ids[1]] == ["open", "resolved"]


class EveryFlow(Detector):
    name = "every_flow"

    def on_flow(self, rec: FlowRecord) -> None:
        self.alerts.report(
            self.name, "k", first_ns=rec.start_ns, last_ns=rec.end_ns, rule="a flow",
            severity="low", source=rec.src_addr, evidence={},
        )  # fmt: skip


def test_stage_ticks_after_the_records_of_its_round() -> None:
    """The pipeline ticks stages before routing the round's flow records; the alert of
    those records' (earlier) activity must not be resolved by that tick."""
    stage = DetectStage(DetectConfig(), ClearSubjects(), lambda cfg, env: [EveryFlow(env)])
    stage.on_records([_flow(start_ns=0, end_ns=100 * S)])
    assert [a.status for a in alerts_of(stage.take_records())] == ["open"]
    # next round: the tick (quiet since 100 s), then the round's record of activity at 200 s
    stage.tick(250 * S)
    stage.on_records([_flow(start_ns=190 * S, end_ns=200 * S)])
    (update,) = alerts_of(stage.take_records())  # folded in, not resolved and reopened
    assert (update.seq, update.status, update.last_seen_ns) == (1, "updated", 200 * S)
    assert stage.alerts.active == 1
    stage.tick(320 * S)  # quiet since 200 s: resolved now
    stage.on_records([])
    assert [a.status for a in alerts_of(stage.take_records())] == ["resolved"]


def test_a_detector_can_lengthen_the_quiet_period_of_its_alert() -> None:
    """A beacon reported every 4th connection, 60 s apart: quiet only after 300 s."""
    mgr = AlertManager(ClearSubjects(), AlertPolicy(60 * S, 120 * S))
    for t in (0, 240, 480):
        mgr.report(
            "beaconing", "k", first_ns=0, last_ns=t * S, rule="r", severity="medium",
            source="203.0.113.5", evidence={}, quiet_ns=300 * S,
        )  # fmt: skip
        mgr.tick((t + 200) * S)  # 200 s quiet: more than the policy's, less than 300 s
    assert mgr.active == 1
    mgr.tick(780 * S)
    out = mgr.take()
    assert [a.status for a in out] == ["open", "updated", "updated", "resolved"]
    assert len({a.alert_id for a in out}) == 1
