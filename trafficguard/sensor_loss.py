"""Sensor-loss windows: which records overlap a time when the sensor itself dropped packets.

DESIGN "Outputs": every figure says how much to trust it. The capture notes windows of
packet time in which the kernel dropped packets (``note``); each record emitted from then
on whose own time range overlaps one carries ``sensor_loss=True`` (``mark``). The windows
live next to the sinks (``tail.Tail``), in whichever process writes the records.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import msgspec

from trafficguard.config import NS_PER_S, Config

# Each record kind's own time range in packet time, as (start field, end field). A flow
# record's range is its own interval (``start_ns``, not ``first_seen_ns``): an interim
# record's counters cover only that interval. Kinds that are listed but have no
# ``sensor_loss`` field (yet) are left alone, like kinds not listed.
LOSS_SPAN_FIELDS: dict[str, tuple[str, str]] = {
    "flow": ("start_ns", "end_ns"),
    "call": ("invite_ns", "end_ns"),
    "registration": ("ts_ns", "end_ns"),
    "rtp_stream": ("first_ns", "last_ns"),
    "voip_interval": ("interval_start_ns", "interval_end_ns"),
    "dns_summary": ("interval_start_ns", "interval_end_ns"),
    "alert": ("first_seen_ns", "last_seen_ns"),
}
MAX_LOSS_WINDOWS = 1024  # beyond this the two oldest windows merge (flags more, never fewer)
_Span = tuple[Callable[[Any], int], Callable[[Any], int]] | tuple[None, None]
_NO_SPAN: _Span = (None, None)


def loss_horizon_ns(cfg: Config) -> int:
    """How long a loss window is kept: the longest span a record emitted later can reach back.

    A flow record spans at most the active timeout, and is emitted at most the longest idle
    timeout after its last packet; a call at most ringing + max call + linger (plus the
    INVITE and challenge timers). Ticks, the KPI grace and one minute are added as slack. A
    window ending earlier than ``last packet time - horizon`` can overlap no future record.
    """
    idle = cfg.flow.idle_timeout_s
    flow_s = cfg.flow.active_timeout_s + max(
        idle.tcp, idle.tcp_closing, idle.tcp_embryonic, idle.udp, idle.icmp, idle.other, idle.dns
    )
    t = cfg.voip.timeouts
    call_s = t.invite_s + t.challenge_s + t.ringing_s + t.max_call_s + t.linger_s + t.register_s
    slack_s = 2 * cfg.flow.tick_interval_s + cfg.voip.kpi_grace_s + 60.0
    return int((max(flow_s, call_s) + slack_s) * NS_PER_S)


class LossWindows:
    """Sorted, disjoint windows ``[start, end]`` (packet time, inclusive) of sensor loss.

    Empty until the first loss, and ``mark`` then does no work at all beyond one check.
    """

    def __init__(self, horizon_ns: int) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.noted = 0  # windows noted (metric), before merging
        self._horizon_ns = horizon_ns
        self._spans: dict[type, _Span] = {}

    def note(self, from_ns: int, to_ns: int, newest_ns: int) -> None:
        """The sensor dropped packets somewhere in ``[from_ns, to_ns]``; ``newest_ns`` is the
        newest packet time seen.

        Windows merge when they overlap or touch; those ending more than the horizon before
        the newest packet are forgotten (no record emitted later can reach back that far),
        and beyond ``MAX_LOSS_WINDOWS`` the two oldest merge into one.
        """
        if to_ns < from_ns:
            from_ns, to_ns = to_ns, from_ns
        self.noted += 1
        starts, ends = self.starts, self.ends
        if not ends or from_ns > ends[-1] + 1:  # the usual case: a new, later window
            starts.append(from_ns)
            ends.append(to_ns)
        else:
            windows = sorted([*zip(starts, ends, strict=True), (from_ns, to_ns)])
            starts.clear()
            ends.clear()
            for a, b in windows:
                if ends and a <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], b)
                else:
                    starts.append(a)
                    ends.append(b)
        while len(ends) > MAX_LOSS_WINDOWS:
            del starts[1], ends[0]
        self.forget(max(newest_ns, to_ns))

    def forget(self, now_ns: int) -> None:
        """Drop the windows no record emitted from ``now_ns`` on can overlap."""
        keep = bisect_left(self.ends, now_ns - self._horizon_ns)
        if keep:
            del self.starts[:keep], self.ends[:keep]

    def mark(self, records: Sequence[msgspec.Struct]) -> Sequence[msgspec.Struct]:
        """Set ``sensor_loss`` on the records whose time range overlaps a window."""
        starts, ends, spans = self.starts, self.ends, self._spans
        n = len(ends)
        if not n:
            return records
        out: list[msgspec.Struct] | None = None
        for i, rec in enumerate(records):
            cls = type(rec)
            span = spans.get(cls)
            if span is None:
                span = spans[cls] = _loss_span(cls)
            first, last = span
            if first is None or last is None:
                continue
            j = bisect_left(ends, first(rec))  # the first window ending at/after the start
            if j < n and starts[j] <= last(rec) and not rec.sensor_loss:  # type: ignore[attr-defined]
                if out is None:
                    out = list(records)
                out[i] = msgspec.structs.replace(rec, sensor_loss=True)
        return records if out is None else out


def _loss_span(cls: type) -> _Span:
    """The getters of a record type's time range, or ``(None, None)``: not flagged."""
    fields = LOSS_SPAN_FIELDS.get(getattr(cls, "kind", ""))
    if fields is None or "sensor_loss" not in getattr(cls, "__struct_fields__", ()):
        return _NO_SPAN
    return attrgetter(fields[0]), attrgetter(fields[1])
