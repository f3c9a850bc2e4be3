"""Sudden traffic volume of a subscriber against its own baseline (EWMA, packet time).

Each subscriber's wire bytes (both directions, from flow records; a record counts in the
bucket of its end) are summed per ``bucket_s``. When a bucket closes it is compared with
the subscriber's exponentially weighted mean and variance of earlier buckets (Welford's
update with weight ``alpha``; empty buckets count as zero), then folded in. A bucket is
anomalous only when it is large in absolute terms, many times the mean, and many standard
deviations above it, after a warm-up — so a heavy but steady user never fires.

Granularity follows the flow records: a flow's bytes arrive when it ends or at each active
timeout, so a single flow longer than a bucket lands in the bucket of its record.
"""

from __future__ import annotations

import math
from typing import Final

from trafficguard.config import NS_PER_S, VolumeAnomalyConfig
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.sketch import LruMap
from trafficguard.flow.records import FlowRecord

MAX_GAP_UPDATES: Final = 64  # empty buckets folded in one by one; beyond, mean/var ~ 0


class _Baseline:
    """One subscriber's open bucket and its EWMA baseline of closed ones."""

    __slots__ = (
        "bucket",
        "buckets",
        "bytes_down",
        "bytes_up",
        "first_ns",
        "last_ns",
        "mean",
        "var",
    )

    def __init__(self, bucket: int) -> None:
        self.bucket = bucket
        self.bytes_up = self.bytes_down = 0
        self.first_ns = self.last_ns = 0
        self.mean = self.var = 0.0
        self.buckets = 0  # closed buckets folded into the baseline

    def fold(self, value: float, alpha: float) -> None:
        diff = value - self.mean
        incr = alpha * diff
        self.mean += incr
        self.var = (1.0 - alpha) * (self.var + diff * incr)
        self.buckets += 1


class VolumeAnomalyDetector(Detector):
    """Per-subscriber volume spikes against an EWMA baseline of its own buckets."""

    name = "volume_anomaly"

    def __init__(self, env: DetectorEnv, cfg: VolumeAnomalyConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.bucket_ns = int(cfg.bucket_s * NS_PER_S)
        self._subs: LruMap[str, _Baseline] = LruMap(env.max_keys)
        self._bucket = -1  # latest bucket seen (packet time)

    def takes_flows(self) -> bool:
        """Only subscribers have a baseline."""
        return not self.env.no_subscribers

    def on_flow(self, rec: FlowRecord) -> None:
        sub = self.env.is_subscriber
        src_sub = sub(rec.src_addr)
        dst_sub = sub(rec.dst_addr)
        if not (src_sub or dst_sub):
            return
        bucket = rec.end_ns // self.bucket_ns
        if src_sub:
            self._add(rec.src_addr, bucket, rec, rec.bytes_fwd, rec.bytes_rev)
        if dst_sub:
            self._add(rec.dst_addr, bucket, rec, rec.bytes_rev, rec.bytes_fwd)

    def _add(self, addr: str, bucket: int, rec: FlowRecord, up: int, down: int) -> None:
        st = self._subs.setdefault(addr, lambda: _Baseline(bucket))
        if bucket > st.bucket:
            self._close(addr, st, bucket)
        if st.bytes_up == 0 and st.bytes_down == 0:
            st.first_ns = rec.start_ns
        st.bytes_up += up
        st.bytes_down += down
        st.first_ns = min(st.first_ns, rec.start_ns)
        st.last_ns = max(st.last_ns, rec.end_ns)

    def _close(self, addr: str, st: _Baseline, next_bucket: int) -> None:
        """Judge the open bucket, fold it and the empty ones up to ``next_bucket``."""
        cfg = self.cfg
        value = st.bytes_up + st.bytes_down
        if st.buckets >= cfg.warmup_buckets and value >= cfg.min_bytes:
            std = max(math.sqrt(st.var), 0.05 * st.mean, 1.0)
            ratio = value / st.mean if st.mean > 0 else math.inf
            z = (value - st.mean) / std
            if ratio >= cfg.min_ratio and z >= cfg.min_zscore:
                self._report(addr, st, value, ratio, z)
        st.fold(value, cfg.alpha)
        for _ in range(min(next_bucket - st.bucket - 1, MAX_GAP_UPDATES)):
            st.fold(0.0, cfg.alpha)
        st.bucket = next_bucket
        st.bytes_up = st.bytes_down = 0

    def _report(self, addr: str, st: _Baseline, value: int, ratio: float, z: float) -> None:
        cfg = self.cfg
        ratio_text = f"{ratio:.1f}" if math.isfinite(ratio) else "inf"
        self.report_span(
            addr,
            st,
            rule=(
                f"a subscriber moved {value} bytes in {cfg.bucket_s:g}s, {ratio_text}x its "
                f"baseline mean and {z:.1f} standard deviations above it (thresholds "
                f"{cfg.min_bytes} bytes, {cfg.min_ratio:g}x, {cfg.min_zscore:g} sd)"
            ),
            severity="medium" if st.bytes_up >= st.bytes_down else "low",
            source=addr,
            evidence={
                "bytes": value,
                "bytes_up": st.bytes_up,
                "bytes_down": st.bytes_down,
                "baseline_mean_bytes": round(st.mean),
                "baseline_sd_bytes": round(math.sqrt(st.var)),
                "ratio": round(ratio, 2) if math.isfinite(ratio) else -1.0,
                "zscore": round(z, 2),
                "baseline_buckets": st.buckets,
                "bucket_s": cfg.bucket_s,
            },
        )

    def tick(self, now_ns: int) -> None:
        """When packet time enters a new bucket, close every subscriber's older bucket."""
        bucket = now_ns // self.bucket_ns
        if bucket <= self._bucket:
            return
        self._bucket = bucket
        for addr, st in self._subs.items():
            if st.bucket < bucket:
                self._close(addr, st, bucket)

    def state_keys(self) -> int:
        return len(self._subs)

    def evicted_keys(self) -> int:
        return self._subs.evicted
