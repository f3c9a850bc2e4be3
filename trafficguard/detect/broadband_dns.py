"""DNS tunnelling and exfiltration, judged from ``dns_summary`` records.

A tunnel (iodine, dnscat2, DNSExfiltrator) must put its data into query names, so one
client's queries under one registered domain show many distinct, long names drawn from
a large alphabet (base32/64/128: pooled character entropy above the 4.0 bits a hex hash
can reach), often of types TXT/NULL that carry large answers. **Tunnel** = all of:
enough queries, enough distinct names, long names, high entropy. **Exfiltration** = a
volume of distinct high-entropy name characters in one interval, whatever the query
shape. Busy resolvers, CDN hash names (hex) and DNSBL lookups (digits) stay below.
"""

from __future__ import annotations

from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import DnsTunnelConfig
from trafficguard.detect.base import Detector, DetectorEnv, Evidence


class DnsTunnelDetector(Detector):
    """One alert per client and domain token whose summaries look like a tunnel."""

    name = "dns_tunnel"

    def __init__(self, env: DetectorEnv, cfg: DnsTunnelConfig) -> None:
        super().__init__(env)
        self.cfg = cfg

    def on_dns_summary(self, rec: DnsSummaryRecord) -> None:
        cfg = self.cfg
        if rec.char_entropy < cfg.min_char_entropy:
            return
        tunnel = (
            rec.queries >= cfg.min_queries
            and rec.distinct_subdomains >= cfg.min_distinct_subdomains
            and rec.subdomain_len_mean >= cfg.min_subdomain_len
        )
        exfil = rec.subdomain_chars_distinct >= cfg.exfil_min_chars
        if not (tunnel or exfil):
            return
        pattern = "tunnel" if tunnel else "exfiltration"
        interval_s = (rec.interval_end_ns - rec.interval_start_ns) / 1e9
        evidence: Evidence = {
            "pattern": pattern,
            "domain_token": rec.domain_token,
            "queries": rec.queries,
            "distinct_subdomains": rec.distinct_subdomains,
            "subdomain_len_mean": rec.subdomain_len_mean,
            "label_len_max": rec.label_len_max,
            "char_entropy": rec.char_entropy,
            "txt_null_share": rec.txt_null_share,
            "name_chars": rec.subdomain_chars_distinct,
            "response_bytes": rec.response_bytes,
            "interval_s": interval_s,
            "min_char_entropy": cfg.min_char_entropy,
        }
        if tunnel:
            rule = (
                f"{rec.queries} queries with {rec.distinct_subdomains} distinct names of "
                f"{rec.subdomain_len_mean:g} characters on average and {rec.char_entropy:g} "
                f"bits/char under one domain in {interval_s:g}s (thresholds "
                f"{cfg.min_queries}, {cfg.min_distinct_subdomains}, {cfg.min_subdomain_len:g}, "
                f"{cfg.min_char_entropy:g}): DNS tunnel"
            )
        else:
            rule = (
                f"{rec.subdomain_chars_distinct} distinct high-entropy name characters under "
                f"one domain in {interval_s:g}s (threshold {cfg.exfil_min_chars}): "
                "DNS exfiltration"
            )
        severe = (tunnel and exfil) or rec.txt_null_share >= 0.5
        self.report_span(
            f"{rec.client_addr}|{rec.domain_token}",
            rec,
            rule=rule,
            severity="high" if severe else "medium",
            source=rec.client_addr,
            target=rec.domain_token,
            evidence=evidence,
        )
