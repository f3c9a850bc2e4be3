"""DNS metadata analyzer: per client and registered domain, features instead of names.

Every DNS message on port 53 (UDP, and TCP segments that carry whole length-prefixed
messages) is parsed transiently (``dns_message``), attributed to its client (the query's
sender, the response's receiver) and registered domain, and reduced at once to counts,
lengths and entropies; the domain itself is kept only as a keyed token. At the end of
each packet-time interval every client/domain pair becomes one ``DnsSummaryRecord`` —
what DNS tunnel and exfiltration detectors read. Per-message Python is acceptable here
because only port-53 packets reach it: every other packet returns after two int compares.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from msgspec import Struct
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from trafficguard.analyzers.dns_features import DomainSplitter, histogram_entropy, name_entropy
from trafficguard.analyzers.dns_message import (
    QTYPE_NAMES,
    RCODE_NAMES,
    DnsQuestion,
    parse_question,
)
from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import NS_PER_S, DnsAnalyzerConfig
from trafficguard.decode.packet import PROTO_TCP, PROTO_UDP, Packet
from trafficguard.flow.hooks import HookHost
from trafficguard.flow.keys import addr_text
from trafficguard.flow.state import Flow

DNS_PORT: Final = 53
MAX_SERVERS_PER_PAIR: Final = 16
TOKEN_CACHE_SIZE: Final = 65536
_TCP_LEN: Final = struct.Struct("!H")
MESSAGE_RESULTS: Final = ("parsed", "malformed", "partial_tcp")


class DomainTokens(Protocol):
    """Keyed pseudonyms for opaque values (the privacy Pseudonymizer, passed by wiring)."""

    def token(self, value: str) -> str: ...


class _PairStats:
    """Running features of one client under one registered domain in one interval."""

    __slots__ = (
        "chars",
        "distinct",
        "entropy_max",
        "entropy_sum",
        "first_ns",
        "label_max",
        "label_sum",
        "last_ns",
        "qtypes",
        "queries",
        "queries_tcp",
        "query_bytes",
        "rcodes",
        "response_bytes",
        "response_max",
        "responses",
        "servers",
        "sub_chars_distinct",
        "sub_max",
        "sub_sum",
        "txt_null",
    )

    def __init__(self, ts_ns: int) -> None:
        self.first_ns = self.last_ns = ts_ns
        self.queries = self.responses = self.queries_tcp = self.txt_null = 0
        self.label_sum = self.label_max = self.sub_sum = self.sub_max = 0
        self.sub_chars_distinct = 0
        self.entropy_sum = self.entropy_max = 0.0
        self.query_bytes = self.response_bytes = self.response_max = 0
        self.distinct: set[int] = set()
        self.chars: Counter[int] = Counter()  # byte histogram of the distinct names below
        self.servers: set[str] = set()
        self.qtypes: dict[str, int] = {}
        self.rcodes: dict[str, int] = {}


class DnsSummarizer:
    """Client/domain features per packet-time interval; bounded by ``cfg.max_pairs``."""

    def __init__(self, cfg: DnsAnalyzerConfig, tokens: DomainTokens) -> None:
        self.interval_ns = int(cfg.interval_s * NS_PER_S)
        self.max_pairs = cfg.max_pairs
        self.max_distinct = cfg.max_distinct_subdomains
        self._tokens = tokens
        self._token_cache: dict[str, str] = {}
        self._splitter = DomainSplitter()
        self._interval = -1  # index of the open interval
        self._pairs: dict[tuple[str, str], _PairStats] = {}
        self._out: list[DnsSummaryRecord] = []
        self.pairs_dropped = 0
        self.summaries = 0

    @property
    def open_pairs(self) -> int:
        return len(self._pairs)

    def _token(self, registered: str) -> str:
        tok = self._token_cache.get(registered)
        if tok is None:
            if len(self._token_cache) >= TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            tok = self._token_cache[registered] = self._tokens.token(registered)
        return tok

    def observe(
        self, ts_ns: int, q: DnsQuestion, client: str, server: str, size: int, tcp: bool
    ) -> None:
        """Account one parsed message of ``size`` bytes; the question is not kept."""
        index = ts_ns // self.interval_ns
        if index > self._interval:
            self.flush()
            self._interval = index
        registered, below = self._splitter.split(q.labels)
        key = (client, self._token(registered))
        st = self._pairs.get(key)
        if st is None:
            if len(self._pairs) >= self.max_pairs:
                self.pairs_dropped += 1
                return
            st = self._pairs[key] = _PairStats(ts_ns)
        st.last_ns = max(st.last_ns, ts_ns)
        if len(st.servers) < MAX_SERVERS_PER_PAIR:
            st.servers.add(server)
        if q.is_response:
            st.responses += 1
            st.response_bytes += size
            st.response_max = max(st.response_max, size)
            rcode = RCODE_NAMES.get(q.rcode, "other")
            st.rcodes[rcode] = st.rcodes.get(rcode, 0) + 1
            return
        st.queries += 1
        st.query_bytes += size
        if tcp:
            st.queries_tcp += 1
        qtype = QTYPE_NAMES.get(q.qtype, "other")
        st.qtypes[qtype] = st.qtypes.get(qtype, 0) + 1
        if q.qtype in (10, 16):
            st.txt_null += 1
        sub = b".".join(below).lower()
        longest = max((len(label) for label in below), default=0)
        st.label_sum += longest
        st.label_max = max(st.label_max, longest)
        st.sub_sum += len(sub)
        st.sub_max = max(st.sub_max, len(sub))
        entropy = name_entropy(sub.replace(b".", b""))
        st.entropy_sum += entropy
        st.entropy_max = max(st.entropy_max, entropy)
        if sub and len(st.distinct) < self.max_distinct:
            h = hash(sub)
            if h not in st.distinct:
                st.distinct.add(h)
                st.sub_chars_distinct += len(sub)
                st.chars.update(sub.replace(b".", b""))

    def close_due(self, now_ns: int) -> None:
        """Emit the open interval once packet time ``now_ns`` is past its end."""
        if now_ns // self.interval_ns > self._interval:
            self.flush()

    def flush(self) -> None:
        """Emit every pair of the open interval (end of interval or end of input)."""
        if not self._pairs:
            return
        start = self._interval * self.interval_ns
        end = start + self.interval_ns
        for (client, token), st in self._pairs.items():
            summary_id = self._tokens.token(f"dns_summary|{client}|{token}|{start}")
            self._out.append(
                _to_record(summary_id, client, token, start, end, st, self.max_distinct)
            )
        self.summaries += len(self._pairs)
        self._pairs = {}

    def take_records(self) -> list[DnsSummaryRecord]:
        out, self._out = self._out, []
        return out


def _to_record(
    summary_id: str,
    client: str,
    token: str,
    start: int,
    end: int,
    st: _PairStats,
    max_distinct: int,
) -> DnsSummaryRecord:
    q = st.queries
    span_s = max((st.last_ns - st.first_ns) / NS_PER_S, 1.0)
    return DnsSummaryRecord(
        summary_id=summary_id,
        interval_start_ns=start,
        interval_end_ns=end,
        first_ns=st.first_ns,
        last_ns=st.last_ns,
        client_addr=client,
        domain_token=token,
        servers=len(st.servers),
        queries=q,
        responses=st.responses,
        queries_tcp=st.queries_tcp,
        query_rate_per_s=round(q / span_s, 3),
        distinct_subdomains=len(st.distinct),
        distinct_capped=len(st.distinct) >= max_distinct,
        label_len_mean=round(st.label_sum / q, 2) if q else 0.0,
        label_len_max=st.label_max,
        subdomain_len_mean=round(st.sub_sum / q, 2) if q else 0.0,
        subdomain_len_max=st.sub_max,
        subdomain_chars_distinct=st.sub_chars_distinct,
        entropy_mean=round(st.entropy_sum / q, 3) if q else 0.0,
        entropy_max=round(st.entropy_max, 3),
        char_entropy=round(histogram_entropy(st.chars.values()), 3),
        txt_null_share=round(st.txt_null / q, 3) if q else 0.0,
        qtypes=dict(sorted(st.qtypes.items())),
        rcodes=dict(sorted(st.rcodes.items())),
        query_bytes=st.query_bytes,
        response_bytes=st.response_bytes,
        response_bytes_mean=round(st.response_bytes / st.responses, 1) if st.responses else 0.0,
        response_bytes_max=st.response_max,
    )


class DnsAnalyzerStage:
    """The DNS analyzer as a pipeline stage (flow hook + summaries per interval)."""

    name = "dns"

    def __init__(self, cfg: DnsAnalyzerConfig, tokens: DomainTokens) -> None:
        self.summarizer = DnsSummarizer(cfg, tokens)
        self.messages = dict.fromkeys(MESSAGE_RESULTS, 0)

    # -- FlowHook --------------------------------------------------------------------
    def wants_packets(self, pkt: Packet, flow: Flow) -> bool:
        """Only port-53 UDP/TCP flows come back to Python on the compiled fast path."""
        return DNS_PORT in (pkt.sport, pkt.dport) and pkt.proto in (PROTO_UDP, PROTO_TCP)

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        """Nothing to set up: ``on_packet`` filters on the port itself."""

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        if DNS_PORT not in (pkt.sport, pkt.dport):
            return
        if not pkt.payload_len:
            return
        proto = pkt.proto
        if proto == PROTO_UDP:
            self._message(pkt, pkt.payload_off, pkt.payload_off + pkt.payload_len, False)
        elif proto == PROTO_TCP:
            self._tcp_segment(pkt)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        """Summaries are per interval, not per flow: nothing to do."""

    def _tcp_segment(self, pkt: Packet) -> None:
        """Whole length-prefixed messages in one segment; the rest is counted, not joined."""
        data = pkt.data
        off = pkt.payload_off
        end = off + pkt.payload_len
        while off + 2 <= end:
            (length,) = _TCP_LEN.unpack_from(data, off)
            if off + 2 + length > end or length == 0:
                self.messages["partial_tcp"] += 1
                return
            self._message(pkt, off + 2, off + 2 + length, True)
            off += 2 + length
        if off != end:
            self.messages["partial_tcp"] += 1

    def _message(self, pkt: Packet, off: int, end: int, tcp: bool) -> None:
        q = parse_question(pkt.data, off, end)
        if q is None:
            self.messages["malformed"] += 1
            return
        self.messages["parsed"] += 1
        src = addr_text(pkt.src)
        dst = addr_text(pkt.dst)
        client, server = (dst, src) if q.is_response else (src, dst)
        self.summarizer.observe(pkt.ts_ns, q, client, server, end - off, tcp)

    # -- Stage -----------------------------------------------------------------------
    def attach(self, host: HookHost) -> None:
        host.add_hook(self)

    def on_records(self, records: Sequence[Struct]) -> None:
        """The analyzer reads packets, not records."""

    def tick(self, now_ns: int) -> None:
        self.summarizer.close_due(now_ns)

    def take_records(self) -> list[Struct]:
        return list(self.summarizer.take_records())

    def finish(self, now_ns: int) -> None:
        self.summarizer.flush()

    def collect(self) -> Iterable[Metric]:
        msgs = CounterMetricFamily(
            "trafficguard_dns_messages",
            "DNS messages seen by the DNS analyzer, by parse result",
            labels=["result"],
        )
        for result, n in self.messages.items():
            msgs.add_metric([result], n)
        yield msgs
        yield CounterMetricFamily(
            "trafficguard_dns_summaries",
            "dns_summary records emitted",
            value=self.summarizer.summaries,
        )
        yield CounterMetricFamily(
            "trafficguard_dns_pairs_dropped",
            "DNS messages not summarised because max_pairs client/domain pairs were open",
            value=self.summarizer.pairs_dropped,
        )
        yield GaugeMetricFamily(
            "trafficguard_dns_open_pairs",
            "client/domain pairs in the open DNS summary interval",
            value=self.summarizer.open_pairs,
        )
