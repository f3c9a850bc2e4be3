"""C2 beaconing: regular connections from one host to one destination, scored as RITA.

RITA (Active Countermeasures) scores a source/destination pair from its connection start
times and sizes: Bowley skewness of the intervals (symmetric = regular), their median
absolute deviation about the median (MADM, 0 = a metronome; 30 s or more scores 0), a
connection-count score (one connection per 90 s of the pair's span scores 1), and the same
skew and MADM (32 bytes) for the bytes sent plus a smallness score. The score is the mean
of the six; a pair scores once it has ``min_connections`` connections.

State is bounded twice: ``max_pairs`` pairs (LRU) and ``max_samples`` latest connections per
pair (ring buffers of ints).
"""

from __future__ import annotations

from array import array
from itertools import pairwise
from statistics import median

from trafficguard.config import NS_PER_S, BeaconingConfig
from trafficguard.decode.packet import PROTO_TCP, PROTO_UDP
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import LruMap
from trafficguard.flow.records import FlowRecord


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)
    n = len(s)
    return s[n // 4], s[n // 2], s[(3 * n) // 4]


def _bowley(values: list[float]) -> float:
    low, mid, high = _quartiles(values)
    den = high - low
    if den == 0 or mid in (low, high):
        return 0.0
    return (low + high - 2 * mid) / den


def _madm(values: list[float]) -> float:
    mid = median(values)
    return median(abs(v - mid) for v in values)


def beacon_score(starts_s: list[float], sizes: list[int]) -> dict[str, float]:
    """RITA's beacon scores for connection start times (s, sorted) and sizes (bytes)."""
    intervals = [b - a for a, b in pairwise(starts_s)]
    span = starts_s[-1] - starts_s[0]
    ts_skew = 1.0 - abs(_bowley(intervals))
    ts_madm = max(0.0, 1.0 - _madm(intervals) / 30.0)
    count = min(1.0, len(starts_s) / (span / 90.0)) if span > 0 else 0.0
    fsizes = [float(x) for x in sizes]
    ds_skew = 1.0 - abs(_bowley(fsizes))
    ds_madm = max(0.0, 1.0 - _madm(fsizes) / 32.0)
    mode = max(set(sizes), key=sizes.count)
    small = max(0.0, 1.0 - mode / 65535.0)
    ts = (ts_skew + ts_madm + count) / 3
    ds = (ds_skew + ds_madm + small) / 3
    return {
        "score": round((ts + ds) / 2, 3),
        "ts_score": round(ts, 3),
        "ds_score": round(ds, 3),
        "interval_median_s": round(median(intervals), 2),
        "interval_madm_s": round(_madm(intervals), 2),
        "size_mode_bytes": mode,
    }


class _Pair:
    """Latest connection starts and sizes of one pair (int arrays: ~8 bytes a sample)."""

    __slots__ = ("count", "sizes", "starts")

    def __init__(self) -> None:
        self.count = 0
        self.starts = array("q")
        self.sizes = array("q")

    def add(self, start_ns: int, size: int, samples: int) -> None:
        self.count += 1
        self.starts.append(start_ns)
        self.sizes.append(size)
        if len(self.starts) > samples:
            del self.starts[0]
            del self.sizes[0]


class BeaconDetector(Detector):
    """RITA-style beacon score per (source, destination) over connection starts and sizes."""

    name = "beaconing"
    flow_protos = frozenset({PROTO_TCP, PROTO_UDP})

    def __init__(self, env: DetectorEnv, cfg: BeaconingConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.ignore = self.flow_skip_dst_ports = frozenset(cfg.ignore_ports)
        self.pairs: LruMap[tuple[str, str], _Pair] = LruMap(min(cfg.max_pairs, env.max_keys))

    def on_flow(self, rec: FlowRecord) -> None:
        if rec.seq or rec.proto not in (PROTO_TCP, PROTO_UDP) or rec.dst_port in self.ignore:
            return
        key = (rec.src_addr, rec.dst_addr)
        pair = self.pairs.setdefault(key, _Pair)
        pair.add(rec.first_seen_ns, rec.bytes_fwd, self.cfg.max_samples)
        cfg = self.cfg
        if len(pair.starts) < cfg.min_connections or pair.count % 4:
            return
        starts = sorted(pair.starts)
        span_s = (starts[-1] - starts[0]) / NS_PER_S
        if span_s < cfg.min_duration_s:
            return
        scores = beacon_score([t / NS_PER_S for t in starts], list(pair.sizes))
        if scores["score"] < cfg.min_score:
            return
        self.alerts.report(
            self.name,
            f"{rec.src_addr}|{rec.dst_addr}",
            first_ns=starts[0],
            last_ns=max(starts[-1], rec.end_ns),
            rule=(
                f"{pair.count} connections from one host to one destination every "
                f"~{scores['interval_median_s']:g}s with similar sizes: beacon score "
                f"{scores['score']:.2f} >= {cfg.min_score:g} (RITA-style interval and size "
                f"regularity)"
            ),
            severity="medium" if scores["score"] >= 0.95 else "low",
            source=rec.src_addr,
            target=rec.dst_addr,
            evidence={
                "connections": pair.count,
                "span_s": round(span_s, 1),
                **scores,
                "threshold_score": cfg.min_score,
                "threshold_connections": cfg.min_connections,
            },
            # it reports every 4th connection: quiet only after 5 intervals without one
            quiet_ns=int(5 * float(scores["interval_median_s"]) * NS_PER_S),
        )

    def state_keys(self) -> int:
        return len(self.pairs)

    def evicted_keys(self) -> int:
        return self.pairs.evicted
