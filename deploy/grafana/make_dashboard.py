"""Writes trafficguard.json, the Grafana dashboard, from the panel table below.

Why generate: panel ids, grid positions and the datasource reference are repetitive and
easy to get wrong by hand; the queries are the part worth reviewing. Run after editing:

    python deploy/grafana/make_dashboard.py        # rewrites deploy/grafana/trafficguard.json

tests/unit/test_prometheus_rules.py checks the file is up to date and every query parses;
tests/e2e/test_prometheus_scrape.py evaluates every query against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("trafficguard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
RI = "[$__rate_interval]"

# (row title, [(panel type, title, unit, [(expr, legend)], width)])
Target = tuple[str, str]
Panel = tuple[str, str, str, list[Target], int]
ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Capture health",
        [
            (
                "stat",
                "Sensors up",
                "none",
                [(f'sum(up{{job="trafficguard", {SEL}}})', "up")],
                4,
            ),
            (
                "timeseries",
                "Captured and dropped packets/s",
                "pps",
                [
                    (
                        "sum by (instance) "
                        f"(rate(trafficguard_capture_packets_total{{{SEL}}}{RI}))",
                        "captured {{instance}}",
                    ),
                    (
                        f"sum by (instance) (rate(trafficguard_capture_drops_total{{{SEL}}}{RI}))",
                        "dropped {{instance}}",
                    ),
                ],
                10,
            ),
            (
                "timeseries",
                "Decode errors/s by reason",
                "pps",
                [
                    (
                        f"sum by (reason) (rate(trafficguard_decode_errors_total{{{SEL}}}{RI}))",
                        "{{reason}}",
                    )
                ],
                10,
            ),
            (
                "timeseries",
                "Flow table fill and evictions/s",
                "percentunit",
                [
                    (
                        f"trafficguard_flow_table_flows{{{SEL}}}"
                        f" / trafficguard_flow_table_capacity_flows{{{SEL}}}",
                        "fill {{instance}}",
                    ),
                    (
                        f"rate(trafficguard_flows_evicted_total{{{SEL}}}{RI})",
                        "evicted/s {{instance}}",
                    ),
                ],
                8,
            ),
            (
                "timeseries",
                "Processing lag",
                "s",
                [(f"trafficguard_processing_lag_seconds{{{SEL}}}", "{{instance}}")],
                8,
            ),
            (
                "timeseries",
                "Records written/s by sink and kind, store errors",
                "ops",
                [
                    (
                        "sum by (sink, kind) "
                        f"(rate(trafficguard_records_written_total{{{SEL}}}{RI}))",
                        "{{sink}} {{kind}}",
                    ),
                    (
                        f"sum(rate(trafficguard_store_errors_total{{{SEL}}}{RI}))",
                        "store errors",
                    ),
                ],
                8,
            ),
        ],
    ),
    (
        "Traffic by application",
        [
            (
                "timeseries",
                "Bits/s by application",
                "bps",
                [
                    (
                        f"sum by (app) (rate(trafficguard_bytes_total{{{SEL}}}{RI})) * 8",
                        "{{app}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "Packets/s by application",
                "pps",
                [
                    (
                        f"sum by (app) (rate(trafficguard_packets_total{{{SEL}}}{RI}))",
                        "{{app}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "Flows started and ended/s",
                "ops",
                [
                    (f"sum(rate(trafficguard_flows_started_total{{{SEL}}}{RI}))", "started"),
                    (
                        f"sum by (reason) (rate(trafficguard_flows_ended_total{{{SEL}}}{RI}))",
                        "ended: {{reason}}",
                    ),
                ],
                12,
            ),
            (
                "timeseries",
                "Flows in the table",
                "none",
                [(f"sum by (instance) (trafficguard_flow_table_flows{{{SEL}}})", "{{instance}}")],
                12,
            ),
        ],
    ),
    (
        "VoIP quality and KPIs",
        [
            (
                "stat",
                "ASR",
                "percentunit",
                [(f"avg(trafficguard_voip_asr_ratio{{{SEL}}})", "ASR")],
                4,
            ),
            (
                "stat",
                "NER",
                "percentunit",
                [(f"avg(trafficguard_voip_ner_ratio{{{SEL}}})", "NER")],
                4,
            ),
            (
                "stat",
                "SCR",
                "percentunit",
                [(f"avg(trafficguard_voip_scr_ratio{{{SEL}}})", "SCR")],
                4,
            ),
            ("stat", "Mean MOS", "none", [(f"avg(trafficguard_voip_mos_mean{{{SEL}}})", "MOS")], 4),
            ("stat", "ACD", "s", [(f"avg(trafficguard_voip_acd_seconds{{{SEL}}})", "ACD")], 4),
            (
                "stat",
                "Active calls",
                "none",
                [(f"sum(trafficguard_voip_active_calls{{{SEL}}})", "calls")],
                4,
            ),
            (
                "timeseries",
                "SIP requests/s by method",
                "ops",
                [
                    (
                        f"sum by (method) (rate(trafficguard_sip_requests_total{{{SEL}}}{RI}))",
                        "{{method}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "SIP responses/s by class",
                "ops",
                [
                    (
                        f"sum by (class) (rate(trafficguard_sip_responses_total{{{SEL}}}{RI}))",
                        "{{class}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "Post-dial delay (p50, p90)",
                "s",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(trafficguard_call_pdd_seconds_bucket{{{SEL}}}{RI})))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.9, sum by (le) "
                        f"(rate(trafficguard_call_pdd_seconds_bucket{{{SEL}}}{RI})))",
                        "p90",
                    ),
                ],
                8,
            ),
            (
                "timeseries",
                "MOS: 10th percentile and share of streams below 3.5",
                "none",
                [
                    (
                        "histogram_quantile(0.1, sum by (le) "
                        f"(rate(trafficguard_rtp_mos_bucket{{{SEL}}}{RI})))",
                        "p10 MOS",
                    ),
                    (
                        f'sum(rate(trafficguard_rtp_mos_bucket{{{SEL}, le="3.5"}}{RI}))'
                        f" / sum(rate(trafficguard_rtp_mos_count{{{SEL}}}{RI}))",
                        "share below 3.5",
                    ),
                ],
                8,
            ),
            (
                "timeseries",
                "RTP jitter p90 and loss",
                "s",
                [
                    (
                        "histogram_quantile(0.9, sum by (le) "
                        f"(rate(trafficguard_rtp_jitter_seconds_bucket{{{SEL}}}{RI})))",
                        "jitter p90",
                    ),
                    (
                        f"sum(rate(trafficguard_rtp_lost_packets_total{{{SEL}}}{RI}))"
                        f" / (sum(rate(trafficguard_rtp_packets_total{{{SEL}}}{RI}))"
                        f" + sum(rate(trafficguard_rtp_lost_packets_total{{{SEL}}}{RI})))",
                        "loss ratio",
                    ),
                ],
                8,
            ),
        ],
    ),
    (
        "Security alerts",
        [
            (
                "timeseries",
                "Open alerts by detector",
                "none",
                [
                    (
                        f"sum by (detector) (trafficguard_alerts_active{{{SEL}}})",
                        "{{detector}}",
                    )
                ],
                12,
            ),
            (
                "bargauge",
                "Alerts opened in the time range",
                "none",
                [
                    (
                        "sum by (detector, severity) "
                        f"(increase(trafficguard_alerts_total{{{SEL}}}[$__range]))",
                        "{{detector}} {{severity}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "Alert reports suppressed by the allowlist/s",
                "ops",
                [
                    (
                        "sum by (detector) "
                        f"(rate(trafficguard_alerts_suppressed_total{{{SEL}}}{RI}))",
                        "{{detector}}",
                    )
                ],
                12,
            ),
            (
                "timeseries",
                "Detector state keys",
                "none",
                [
                    (
                        f"sum by (detector) (trafficguard_detect_state_keys{{{SEL}}})",
                        "{{detector}}",
                    )
                ],
                12,
            ),
        ],
    ),
    (
        "Privacy escalations",
        [
            (
                "stat",
                "Open escalations",
                "none",
                [(f"sum(trafficguard_escalations_open{{{SEL}}})", "open")],
                6,
            ),
            (
                "stat",
                "Audit write failures in the time range",
                "none",
                [
                    (
                        f"sum(increase(trafficguard_audit_write_failures_total{{{SEL}}}[$__range]))",
                        "failures",
                    )
                ],
                6,
            ),
            (
                "timeseries",
                "Flows matched to an escalation/s",
                "ops",
                [
                    (
                        f"sum(rate(trafficguard_escalation_flows_matched_total{{{SEL}}}{RI}))",
                        "flows",
                    )
                ],
                6,
            ),
            (
                "timeseries",
                "Evidence written",
                "Bps",
                [
                    (
                        f"sum(rate(trafficguard_evidence_bytes_total{{{SEL}}}{RI}))",
                        "bytes/s",
                    )
                ],
                6,
            ),
        ],
    ),
]


def _panel(
    pid: int, kind: str, title: str, unit: str, targets: list[Target], x: int, y: int, w: int
) -> dict[str, Any]:
    height = 4 if kind == "stat" else 8
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": height, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def build() -> dict[str, Any]:
    """The dashboard JSON model (Grafana 10 schema)."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x, line_h = pid + 1, y + 1, 0, 0
        for kind, title, unit, targets, w in row_panels:
            if x + w > 24:
                x, y, line_h = 0, y + line_h, 0
            panel = _panel(pid, kind, title, unit, targets, x, y, w)
            panels.append(panel)
            line_h = max(line_h, panel["gridPos"]["h"])
            pid, x = pid + 1, x + w
        y += line_h
    return {
        "uid": "trafficguard",
        "title": "trafficguard",
        "description": "Capture health, traffic by application, VoIP quality, security alerts "
        "and privacy escalations of trafficguard sensors. No label carries a subscriber.",
        "tags": ["trafficguard", "voip", "network"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                },
                {
                    "name": "instance",
                    "label": "Sensor",
                    "type": "query",
                    "datasource": DS,
                    "definition": "label_values(trafficguard_build_info, instance)",
                    "query": {
                        "query": "label_values(trafficguard_build_info, instance)",
                        "refId": "instances",
                    },
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "sort": 1,
                    "options": [],
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
