"""VoIP KPIs per interval of packet time: ASR, NER, SCR, ACD, PDD, MOS (``voip_interval``).

Every call, registration and RTP stream record counts in the interval that holds its end
(``end_ns``; ``last_ns`` for a stream). An interval is emitted once packet time has passed
its end by ``grace_ns``, because records arrive late by design (an RTP stream ends only
after the flow's idle timeout, a call ended by a timer fires at the next tick). A record
for an interval already emitted counts in the oldest open one and in ``late_records``,
so no record is ever dropped from the figures. Intervals without any record are not
emitted. Definitions (per interval, over call attempts that ended in it):

* ASR (answer-seizure ratio) = answered / attempts.
* NER (network effectiveness ratio, ITU-T E.425) = attempts that the network completed
  as the user side decided — answered, busy, no answer, cancelled by the caller,
  redirected, or rejected with a 4xx/6xx other than the network-side ``NETWORK_CODES``
  — / attempts. Calls that got no response, a 5xx or a network-side 4xx count against it.
* SCR (session completion ratio, RFC 6076 §4.9) = answered calls released by a BYE /
  attempts.
* ACD (average call duration) = mean duration of the answered calls, in seconds.
* PDD (post-dial delay, RFC 6076 §4.1): mean and nearest-rank 95th percentile.
* MOS: mean of the E-model MOS of the RTP streams that ended in the interval.
"""

# No `from __future__ import annotations`: the store reads these Structs' annotations at
# start-up (msgspec.structs.fields), and each string one costs a typing.ForwardRef compile.
import math
from typing import ClassVar, Final

import msgspec

from trafficguard.voip.records import CallRecord, RegistrationRecord, RtpStreamRecord

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000

# 4xx responses that say the network (not the called user) failed the attempt.
NETWORK_CODES: Final = frozenset({408, 500, 502, 503, 504, 505, 513})
_USER_SIDE_REASONS: Final = frozenset({"busy", "no_answer", "cancelled", "redirected"})
FINAL_CLASSES: Final = ("none", "2xx", "3xx", "4xx", "5xx", "6xx")


class VoipIntervalRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """KPIs of one interval of packet time (calls that ended in it)."""

    kind: ClassVar[str] = "voip_interval"

    interval_start_ns: int
    interval_end_ns: int  # exclusive
    attempts: int  # call records that ended in the interval
    answered: int
    asr: float | None  # None when there was no attempt
    ner: float | None
    scr: float | None
    acd_s: float | None  # None when nothing was answered
    pdd_mean_ms: float | None
    pdd_p95_ms: float | None
    final_none: int  # no final response seen (timeouts, flush)
    final_2xx: int
    final_3xx: int
    final_4xx: int
    final_5xx: int
    final_6xx: int
    registrations: int  # registration attempts that ended in the interval
    registrations_ok: int  # of which ended with a 2xx
    rtp_streams: int  # RTP stream records that ended in the interval
    mos_mean: float | None  # over the streams with a MOS
    late_records: int  # records that belonged to an interval already emitted


def network_effective(rec: CallRecord) -> bool:
    """Did the network do its part (E.425): answered or a user-side outcome."""
    if rec.answer_ns is not None or rec.end_reason in _USER_SIDE_REASONS:
        return True
    code = rec.final_code
    return (400 <= code < 500 or 600 <= code < 700) and code not in NETWORK_CODES


def final_class(code: int) -> str:
    """One of FINAL_CLASSES for a final response code (0 = none seen)."""
    if 200 <= code < 700:
        return FINAL_CLASSES[code // 100 - 1]
    return "none"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class _Bucket:
    """Counters of one interval; values only, no identities."""

    __slots__ = (
        "answered",
        "attempts",
        "completed",
        "durations_ms",
        "effective",
        "finals",
        "late",
        "mos",
        "pdds_ms",
        "regs",
        "regs_ok",
        "streams",
    )

    def __init__(self) -> None:
        self.attempts = 0
        self.answered = 0
        self.effective = 0
        self.completed = 0
        self.durations_ms: list[float] = []
        self.pdds_ms: list[float] = []
        self.finals = dict.fromkeys(FINAL_CLASSES, 0)
        self.regs = 0
        self.regs_ok = 0
        self.streams = 0
        self.mos: list[float] = []
        self.late = 0


class KpiAggregator:
    """Sorts records into intervals and emits ``VoipIntervalRecord`` when they are due."""

    def __init__(self, interval_ns: int, grace_ns: int) -> None:
        if interval_ns <= 0:
            raise ValueError("interval must be positive")
        self.interval_ns = interval_ns
        self.grace_ns = grace_ns
        self._buckets: dict[int, _Bucket] = {}
        self._closed_below = -1  # intervals with a lower index were emitted
        self.late_records = 0

    def _bucket(self, ts_ns: int) -> _Bucket:
        index = ts_ns // self.interval_ns
        late = index < self._closed_below
        if late:
            index = self._closed_below
            self.late_records += 1
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if late:
            bucket.late += 1
        return bucket

    def add_call(self, rec: CallRecord) -> None:
        b = self._bucket(rec.end_ns)
        b.attempts += 1
        b.finals[final_class(rec.final_code)] += 1
        if rec.answer_ns is not None:
            b.answered += 1
            b.durations_ms.append(rec.duration_ms)
            if rec.end_reason == "bye":
                b.completed += 1
        if network_effective(rec):
            b.effective += 1
        if rec.pdd_ms is not None:
            b.pdds_ms.append(rec.pdd_ms)

    def add_registration(self, rec: RegistrationRecord) -> None:
        b = self._bucket(rec.end_ns)
        b.regs += 1
        if 200 <= rec.result_code < 300:
            b.regs_ok += 1

    def add_stream(self, rec: RtpStreamRecord) -> None:
        b = self._bucket(rec.last_ns)
        b.streams += 1
        if rec.mos is not None:
            b.mos.append(rec.mos)

    def close_due(self, now_ns: int) -> list[VoipIntervalRecord]:
        """Emit every interval whose end is at least ``grace_ns`` before ``now_ns``."""
        limit = (now_ns - self.grace_ns) // self.interval_ns  # intervals below end early enough
        if limit <= self._closed_below:
            return []
        self._closed_below = limit
        due = sorted(i for i in self._buckets if i < limit)
        return [self._emit(i) for i in due]

    def close_all(self) -> list[VoipIntervalRecord]:
        """Emit every open interval (end of input, shutdown)."""
        indices = sorted(self._buckets)
        if indices:
            self._closed_below = max(self._closed_below, indices[-1] + 1)
        return [self._emit(i) for i in indices]

    def _emit(self, index: int) -> VoipIntervalRecord:
        b = self._buckets.pop(index)
        n = b.attempts
        start = index * self.interval_ns
        return VoipIntervalRecord(
            interval_start_ns=start,
            interval_end_ns=start + self.interval_ns,
            attempts=n,
            answered=b.answered,
            asr=b.answered / n if n else None,
            ner=b.effective / n if n else None,
            scr=b.completed / n if n else None,
            acd_s=sum(b.durations_ms) / len(b.durations_ms) / 1000.0 if b.durations_ms else None,
            pdd_mean_ms=sum(b.pdds_ms) / len(b.pdds_ms) if b.pdds_ms else None,
            pdd_p95_ms=percentile(b.pdds_ms, 95.0) if b.pdds_ms else None,
            final_none=b.finals["none"],
            final_2xx=b.finals["2xx"],
            final_3xx=b.finals["3xx"],
            final_4xx=b.finals["4xx"],
            final_5xx=b.finals["5xx"],
            final_6xx=b.finals["6xx"],
            registrations=b.regs,
            registrations_ok=b.regs_ok,
            rtp_streams=b.streams,
            mos_mean=sum(b.mos) / len(b.mos) if b.mos else None,
            late_records=b.late,
        )
