"""The VoIP stage's Prometheus families, built at scrape time from plain ints.

Counters are updated per message (the tracker's dicts), per call, registration or
stream record (here), never with a Prometheus object on the packet path. Every label
value comes from a closed set: lower-case SIP method names (``sip.KNOWN_METHODS`` or
``other``), response classes, parse-error reasons, end reasons. No number, URI or
address is ever a label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from trafficguard.voip.dialogs import CallTracker
from trafficguard.voip.histogram import Histogram
from trafficguard.voip.kpi import VoipIntervalRecord, final_class
from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PDD_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0)
DURATION_BUCKETS_S: Final = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
MOS_BUCKETS: Final = (1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5)
JITTER_BUCKETS_S: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, series: dict[str, int]
) -> CounterMetricFamily | GaugeMetricFamily:
    for value, count in sorted(series.items()):
        family.add_metric([value], count)
    return family


class VoipMetrics:
    """Plain-int counters and histograms of the VoIP stage."""

    def __init__(self) -> None:
        self.parse_errors: dict[str, int] = {}
        self.transport_events: dict[str, int] = {}
        self.sip_tls_flows = 0
        self.rtp_active_flows = 0
        self.rtcp_packets = 0
        self.calls_ended: dict[str, int] = {}
        self.registrations: dict[str, int] = {}
        self.rtp_streams = 0
        self.rtp_packets = 0
        self.rtp_lost = 0
        self.kpi_late_records = 0
        self.last_interval: VoipIntervalRecord | None = None
        self.pdd = Histogram(PDD_BUCKETS_S)
        self.duration = Histogram(DURATION_BUCKETS_S)
        self.mos = Histogram(MOS_BUCKETS)
        self.jitter = Histogram(JITTER_BUCKETS_S)

    # -- per record --------------------------------------------------------------------------
    def call_record(self, rec: CallRecord) -> None:
        self.calls_ended[rec.end_reason] = self.calls_ended.get(rec.end_reason, 0) + 1
        if rec.pdd_ms is not None:
            self.pdd.observe(rec.pdd_ms / 1000.0)
        if rec.answer_ns is not None:
            self.duration.observe(rec.duration_ms / 1000.0)

    def registration_record(self, rec: RegistrationRecord) -> None:
        result = final_class(rec.result_code)
        self.registrations[result] = self.registrations.get(result, 0) + 1

    def stream_record(self, rec: RtpStreamRecord) -> None:
        self.rtp_streams += 1
        self.rtp_packets += rec.packets
        self.rtp_lost += rec.lost
        if rec.mos is not None:
            self.mos.observe(rec.mos)
        if rec.clock_rate:
            self.jitter.observe(rec.jitter_mean_ms / 1000.0)

    # -- scrape time -------------------------------------------------------------------------
    def families(self, tracker: CallTracker) -> Iterator[Metric]:
        """Every ``trafficguard_*`` family of the stage (called from the metrics thread)."""
        from prometheus_client.core import (  # noqa: PLC0415 (scrape only)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        requests = {m.lower(): n for m, n in dict(tracker.method_counts).items()}
        by_class: dict[str, int] = {}
        by_method_class: dict[tuple[str, str], int] = {}
        for (method, cls), n in dict(tracker.response_counts).items():
            by_class[cls] = by_class.get(cls, 0) + n
            key = (method.lower(), cls)
            by_method_class[key] = by_method_class.get(key, 0) + n
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_sip_requests",
                "SIP requests seen (retransmissions included), by method.",
                labels=["method"],
            ),
            requests,
        )
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_sip_responses",
                "SIP responses seen, by response class.",
                labels=["class"],
            ),
            by_class,
        )
        family = CounterMetricFamily(
            "trafficguard_sip_method_responses",
            "SIP responses seen, by the CSeq method they answer and response class.",
            labels=["method", "class"],
        )
        for (method, cls), n in sorted(by_method_class.items()):
            family.add_metric([method, cls], n)
        yield family
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_sip_parse_errors",
                "SIP (and RTCP) payloads that could not be parsed, by reason.",
                labels=["reason"],
            ),
            dict(self.parse_errors),
        )
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_sip_anomalies",
                "SIP messages that fit no tracked call or state, by kind.",
                labels=["anomaly"],
            ),
            dict(tracker.anomalies),
        )
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_sip_transport_events",
                "SIP stream events: TCP retransmissions/gaps, SCTP fragments/retransmissions.",
                labels=["event"],
            ),
            dict(self.transport_events),
        )
        yield CounterMetricFamily(
            "trafficguard_sip_tls_flows",
            "SIP-over-TLS flows seen (recorded as flows, content never read).",
            value=self.sip_tls_flows,
        )
        started = tracker.calls_started
        ended = dict(self.calls_ended)
        yield CounterMetricFamily(
            "trafficguard_voip_calls_started", "Call attempts (initial INVITEs).", value=started
        )
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_voip_calls_ended", "Call records, by end reason.", labels=["reason"]
            ),
            ended,
        )
        yield GaugeMetricFamily(
            "trafficguard_voip_active_calls",
            "Calls started and not yet ended.",
            value=max(0, started - sum(ended.values())),
        )
        yield _labelled(
            CounterMetricFamily(
                "trafficguard_voip_registrations",
                "Registration records, by final response class ('none' = no final response).",
                labels=["result"],
            ),
            dict(self.registrations),
        )
        yield GaugeMetricFamily(
            "trafficguard_rtp_active_flows",
            "UDP flows currently metered as RTP.",
            value=self.rtp_active_flows,
        )
        yield CounterMetricFamily(
            "trafficguard_rtp_streams", "RTP stream records emitted.", value=self.rtp_streams
        )
        yield CounterMetricFamily(
            "trafficguard_rtp_packets",
            "RTP packets of the streams that ended.",
            value=self.rtp_packets,
        )
        yield CounterMetricFamily(
            "trafficguard_rtp_lost_packets",
            "RTP packets lost (expected minus received) in the streams that ended.",
            value=self.rtp_lost,
        )
        yield CounterMetricFamily(
            "trafficguard_rtcp_packets", "RTCP packets with SR/RR reports.", value=self.rtcp_packets
        )
        yield self.pdd.family(
            "trafficguard_call_pdd_seconds", "Post-dial delay of call attempts (RFC 6076)."
        )
        yield self.duration.family(
            "trafficguard_call_duration_seconds", "Duration of answered calls."
        )
        yield self.mos.family("trafficguard_rtp_mos", "E-model MOS of RTP voice streams.")
        yield self.jitter.family(
            "trafficguard_rtp_jitter_seconds", "Mean RFC 3550 interarrival jitter of RTP streams."
        )
        yield CounterMetricFamily(
            "trafficguard_voip_kpi_late_records",
            "Records that arrived after their KPI interval was emitted.",
            value=self.kpi_late_records,
        )
        last = self.last_interval
        if last is not None:
            for name, doc, value in (
                ("asr_ratio", "Answer-seizure ratio of the last interval.", last.asr),
                ("ner_ratio", "Network effectiveness ratio of the last interval.", last.ner),
                ("scr_ratio", "Session completion ratio of the last interval.", last.scr),
                ("acd_seconds", "Average call duration of the last interval.", last.acd_s),
                (
                    "pdd_mean_seconds",
                    "Mean post-dial delay of the last interval.",
                    None if last.pdd_mean_ms is None else last.pdd_mean_ms / 1000.0,
                ),
                ("mos_mean", "Mean MOS of the last interval's streams.", last.mos_mean),
            ):
                if value is not None:
                    yield GaugeMetricFamily("trafficguard_voip_" + name, doc, value=value)
