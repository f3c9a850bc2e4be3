"""DNS metadata analyzer: per client and registered domain, features instead of names.

Every DNS message on port 53 (UDP, and TCP segments that carry whole length-prefixed
messages) is parsed transiently (``dns_message``), attributed to its client (the query's
sender, the response's receiver) and registered domain, and reduced at once to counts,
lengths and entropies; the domain itself is kept only as a keyed token. At the end of
each packet-time interval every client/domain pair becomes one ``DnsSummaryRecord`` —
what DNS tunnel and exfiltration detectors read. Per-message Python is acceptable here
because only port-53 payloads reach it: on the compiled fast path they come from its
payload tap (no flow events at all), on the Python table every other packet returns after
two int compares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from msgspec import Struct
from msgspec.structs import astuple

from trafficguard.analyzers.dns_features import (
    MAX_SUFFIX_LABELS,
    domain_label_count,
    histogram_entropy,
    registered_text,
)
from trafficguard.analyzers.dns_message import QTYPE_NAMES, RCODE_NAMES, DnsQuestion, Question
from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import NS_PER_S, DnsAnalyzerConfig
from trafficguard.decode.packet import PROTO_TCP, PROTO_UDP, Packet
from trafficguard.flow.hooks import HookHost
from trafficguard.flow.keys import addr_text
from trafficguard.flow.state import Flow

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

try:  # one C call per message for what the pure-Python references below compute
    from trafficguard.fast._core import dns_name_features as name_features
    from trafficguard.fast._core import dns_question as question
except ImportError:  # not built: the references themselves
    from trafficguard.analyzers.dns_features import name_features
    from trafficguard.analyzers.dns_message import question

DNS_PORT: Final = 53
MAX_SERVERS_PER_PAIR: Final = 16
TOKEN_CACHE_SIZE: Final = 65536  # remembered domain splits and tokens (cleared when full)
# remembered names (token and features; a histogram each, ~1 KiB): cleared when full
NAME_CACHE_SIZE: Final = 8192
ADDR_CACHE_SIZE: Final = 65536  # remembered address texts (cleared when full)
_TCP_LEN: Final = struct.Struct("!H")
_NameInfo = tuple[int, int, float, int, dict[int, int], float]
"""``dns_features.NameFeatures`` and the entropy rounded for records (``round`` is slow)."""
_NoName = tuple[int, int, float, None, None, float]
_NO_NAME: Final[_NoName] = (0, 0, 0.0, None, None, 0.0)  # what a pair keeps of "no name below"
_Name = tuple[str, _NameInfo | None]  # domain token; what is kept of the name below it
MESSAGE_RESULTS: Final = ("parsed", "malformed", "partial_tcp")


class DomainTokens(Protocol):
    """Keyed pseudonyms for opaque values (the privacy Pseudonymizer, passed by wiring)."""

    def token(self, value: str) -> str: ...

    def tokens(self, values: Sequence[str]) -> Sequence[str]:
        """``token`` of each of ``values``, in order."""
        ...


def _tally(counts: dict[str, int] | None, name: str) -> dict[str, int]:
    """``counts`` with one more ``name``; made on first use (response-only pairs have no
    query types, query-only pairs no rcodes)."""
    if counts is None:
        return {name: 1}
    counts[name] = counts.get(name, 0) + 1
    return counts


class _PairStats(Struct, gc=False):
    """Running features of one client under one registered domain in one interval.

    Most pairs see a message or two, and tens of thousands are open at once: an
    untracked struct (``gc=False``: it refers only to strings, numbers and flat
    containers, never to itself) made with its defaults in C, and containers made only
    when first needed (a response-only pair has no name sets; the first name's hash is
    kept as an int and its histogram is the pool; the first resolver is a string, the
    few others a tuple), so an interval adds almost nothing for the garbage collector
    to walk.
    """

    first_ns: int
    last_ns: int
    server: str  # the first resolver asked
    servers: tuple[str, ...] = ()  # other distinct ones, MAX_SERVERS_PER_PAIR in all
    queries: int = 0
    responses: int = 0
    queries_tcp: int = 0
    txt_null: int = 0
    label_sum: int = 0
    label_max: int = 0
    sub_sum: int = 0
    sub_max: int = 0
    sub_chars_distinct: int = 0
    entropy_sum: float = 0.0
    entropy_max: float = 0.0
    query_bytes: int = 0
    response_bytes: int = 0
    response_max: int = 0
    # hashes of the distinct names below: the first one's alone, then a set
    distinct: int | set[int] | None = None
    chars: dict[int, int] | None = None  # byte histogram of those names
    # the first name's entropy, rounded: the pool's while it is the only one
    name_entropy: float = 0.0
    qtypes: dict[str, int] | None = None
    rcodes: dict[str, int] | None = None

    def add_server(self, server: str) -> None:
        """Remember a resolver other than ``self.server`` (no more than 16 count)."""
        servers = self.servers
        if len(servers) < MAX_SERVERS_PER_PAIR - 1 and server not in servers:
            self.servers = (*servers, server)

    def add_response(self, rcode: int, size: int) -> None:
        self.responses += 1
        self.response_bytes += size
        if size > self.response_max:  # noqa: PLR1730 (per message: a compare is cheaper than max())
            self.response_max = size
        self.rcodes = _tally(self.rcodes, RCODE_NAMES.get(rcode, "other"))

    def add_query(self, qtype: int, size: int, tcp: bool) -> None:
        """Counts of a query; the name below the domain goes to ``add_name``."""
        self.queries += 1
        self.query_bytes += size
        if tcp:
            self.queries_tcp += 1
        self.qtypes = _tally(self.qtypes, QTYPE_NAMES.get(qtype, "other"))
        if qtype in {10, 16}:  # NULL, TXT
            self.txt_null += 1

    def add_name(self, features: _NameInfo, max_distinct: int) -> None:
        """Lengths and entropy of one more (non-empty) name below the registered domain.

        ``features`` are remembered per name and shared (``DnsSummarizer._name``): a
        pool that is still the first name's histogram is copied before others are pooled
        into it (in first-occurrence order, as ``Counter.update`` would insert the bytes).
        """
        longest, size, entropy, h, histogram, rounded = features
        self.label_sum += longest
        if longest > self.label_max:  # noqa: PLR1730 (per message: a compare is cheaper than max())
            self.label_max = longest
        self.sub_sum += size
        if size > self.sub_max:  # noqa: PLR1730 (per message: a compare is cheaper than max())
            self.sub_max = size
        self.entropy_sum += entropy
        if entropy > self.entropy_max:  # noqa: PLR1730 (per message: a compare is cheaper than max())
            self.entropy_max = entropy
        distinct = self.distinct
        if distinct is None:  # the first name: its histogram is the pool, shared until then
            self.distinct = h
            self.sub_chars_distinct = size
            self.chars = histogram
            self.name_entropy = rounded
            return
        if isinstance(distinct, int):
            if h == distinct:
                return
            distinct = self.distinct = {distinct}
            assert self.chars is not None  # made with ``distinct``
            self.chars = dict(self.chars)  # the pool's own copy from now on
        if len(distinct) >= max_distinct or h in distinct:
            return
        distinct.add(h)
        self.sub_chars_distinct += size
        chars = self.chars
        assert chars is not None  # made with ``distinct``
        for byte, n in histogram.items():
            chars[byte] = chars.get(byte, 0) + n


def _first_query(
    ts_ns: int, server: str, qtype: int, size: int, tcp: bool, features: _NameInfo | None
) -> _PairStats:
    """A pair opened by a query: ``add_query`` and ``add_name`` on a new pair, made in one
    positional call (the common case: most pairs see one query and nothing else)."""
    first: _NameInfo | _NoName = _NO_NAME if features is None else features
    longest, name_size, entropy, h, histogram, rounded = first
    return _PairStats(
        ts_ns, ts_ns, server, (), 1, 0, 1 if tcp else 0, 1 if qtype in {10, 16} else 0,
        longest, longest, name_size, name_size, name_size, entropy, entropy,
        size, 0, 0, h, histogram, rounded, {QTYPE_NAMES.get(qtype, "other"): 1},
    )  # fmt: skip


class DnsSummarizer:
    """Client/domain features per packet-time interval; bounded by ``cfg.max_pairs``."""

    def __init__(self, cfg: DnsAnalyzerConfig, tokens: DomainTokens) -> None:
        self.interval_ns = int(cfg.interval_s * NS_PER_S)
        self.max_pairs = cfg.max_pairs
        self.max_distinct = cfg.max_distinct_subdomains
        self._tokens = tokens
        # Keyed by salted hashes, as the distinct-subdomain sets are: no name is kept.
        # hash of a name's last labels -> (labels in its registered domain, domain token)
        self._domains: dict[int, tuple[int, str]] = {}
        self._token_cache: dict[int, str] = {}  # hash of a registered domain -> token
        self._names: dict[int, _Name] = {}  # hash of a name -> its token and features
        self._interval = -1  # index of the open interval
        self._interval_end = 0  # and where the next begins (one compare per message)
        self._pairs: dict[tuple[str, str], _PairStats] = {}
        self._out: list[DnsSummaryRecord] = []
        self.pairs_dropped = 0
        self.summaries = 0

    @property
    def open_pairs(self) -> int:
        return len(self._pairs)

    def _name(self, labels: tuple[bytes, ...], key: int) -> _Name:
        """Token and features of a name not seen lately (``key``: its hash)."""
        tail = hash(labels[-MAX_SUFFIX_LABELS:])  # the split depends on no more
        domain = self._domains.get(tail)
        n, token = self._domain(labels, tail) if domain is None else domain
        below = len(labels) - n
        features = name_features(labels, below) if below else None
        names = self._names
        if len(names) >= NAME_CACHE_SIZE:
            names.clear()
        name: _Name
        if features is None or not features[1]:  # no labels below, or only empty ones
            name = names[key] = (token, None)  # nothing to measure (all zeros)
        else:
            name = names[key] = (token, (*features, round(features[2], 3)))
        return name

    def _domain(self, labels: tuple[bytes, ...], key: int) -> tuple[int, str]:
        """Split and token of a name whose last labels were not seen lately (``key``)."""
        n = domain_label_count(labels)
        registered = registered_text(labels, n)
        cache = self._token_cache
        tok = cache.get(hash(registered))
        if tok is None:
            if len(cache) >= TOKEN_CACHE_SIZE:
                cache.clear()
            tok = cache[hash(registered)] = self._tokens.token(registered)
        if len(self._domains) >= TOKEN_CACHE_SIZE:
            self._domains.clear()
        domain = self._domains[key] = (n, tok)
        return domain

    def observe(
        self, ts_ns: int, q: DnsQuestion, client: str, server: str, size: int, tcp: bool
    ) -> None:
        """Account one parsed message of ``size`` bytes; the question is not kept."""
        self.account(
            ts_ns, (q.is_response, q.rcode, q.qtype, tuple(q.labels)), client, server, size, tcp
        )

    def account(
        self, ts_ns: int, q: Question, client: str, server: str, size: int, tcp: bool
    ) -> None:
        """``observe`` for the analyzer's own (is_response, rcode, qtype, labels) tuples."""
        if ts_ns >= self._interval_end:
            self.flush()
            self._interval = ts_ns // self.interval_ns
            self._interval_end = (self._interval + 1) * self.interval_ns
        is_response, rcode, qtype, labels = q
        key = hash(labels)
        name = self._names.get(key)
        token, features = self._name(labels, key) if name is None else name
        pairs = self._pairs
        pair = (client, token)  # one key tuple for the look-up and the insert
        st = pairs.get(pair)
        if st is None:
            if len(pairs) >= self.max_pairs:
                self.pairs_dropped += 1
            elif is_response:
                st = pairs[pair] = _PairStats(ts_ns, ts_ns, server)
                st.add_response(rcode, size)
            else:
                pairs[pair] = _first_query(ts_ns, server, qtype, size, tcp, features)
            return
        if ts_ns > st.last_ns:  # noqa: PLR1730 (per message: a compare is cheaper than max())
            st.last_ns = ts_ns
        if server != st.server:
            st.add_server(server)
        if is_response:
            st.add_response(rcode, size)
            return
        st.add_query(qtype, size, tcp)
        if features is not None:
            st.add_name(features, self.max_distinct)

    def close_due(self, now_ns: int) -> None:
        """Emit the open interval once packet time ``now_ns`` is past its end."""
        if now_ns // self.interval_ns > self._interval:
            self.flush()

    def flush(self) -> None:
        """Emit every pair of the open interval (end of interval or end of input)."""
        for records in self.flush_chunks(len(self._pairs) or 1):
            self._out.extend(records)

    def flush_chunks(self, size: int) -> Iterator[list[DnsSummaryRecord]]:
        """``flush`` as lists of at most ``size`` records, made as they are asked for (the
        caller passes each on before the next is made)."""
        pairs = self._pairs
        if not pairs:
            return
        self._pairs = {}
        self.summaries += len(pairs)
        start = self._interval * self.interval_ns
        end = start + self.interval_ns
        tokens = self._tokens.tokens
        max_distinct = self.max_distinct
        items = list(pairs.items())
        for i in range(0, len(items), size):
            chunk = items[i : i + size]
            ids = tokens(
                [f"dns_summary|{client}|{domain}|{start}" for (client, domain), _ in chunk]
            )
            yield [
                _to_record(summary_id, client, domain, start, end, st, max_distinct)
                for summary_id, ((client, domain), st) in zip(ids, chunk, strict=True)
            ]

    def take_records(self) -> list[DnsSummaryRecord]:
        out, self._out = self._out, []
        return out


def _sorted_counts(counts: dict[str, int] | None) -> dict[str, int]:
    """``counts`` by key for the record; the pair is dropped after, so the record may own it."""
    if counts is None:
        return {}
    if len(counts) == 1:
        return counts
    return dict(sorted(counts.items()))


def _to_record(
    summary_id: str,
    client: str,
    token: str,
    start: int,
    end: int,
    st: _PairStats,
    max_distinct: int,
) -> DnsSummaryRecord:
    """The pair's record. Most pairs hold one query within a second: then the means and
    the rate are integers as floats (x / 1), which ``round`` would return unchanged, and
    the entropy sum, the maximum and the pool's entropy are the one name's (or 0.0), whose
    rounded entropy the pair holds (``round`` is correctly rounded, no cheap call)."""
    (
        first_ns, last_ns, _, servers, q, responses, queries_tcp, txt_null,
        label_sum, label_max, sub_sum, sub_max, sub_chars_distinct, entropy_sum, entropy_max,
        query_bytes, response_bytes, response_max, names, chars, name_entropy, qtypes, rcodes,
    ) = astuple(st)  # fmt: skip
    if names is None:
        distinct, char_entropy = 0, 0.0
    elif isinstance(names, int):  # one name: the pool is its histogram
        distinct, char_entropy = 1, name_entropy
    else:
        assert chars is not None  # made with the first name
        distinct, char_entropy = len(names), round(histogram_entropy(chars.values()), 3)
    # one query with a name: the maximum is that name's entropy
    entropy_max_r = name_entropy if q == 1 and distinct else round(entropy_max, 3)
    span_ns = last_ns - first_ns
    rate = float(q) if span_ns <= NS_PER_S else round(q / (span_ns / NS_PER_S), 3)
    if q == 1:
        label_mean, sub_mean = float(label_sum), float(sub_sum)
        entropy_mean, txt_null_share = entropy_max_r, float(txt_null)
    elif q:
        label_mean, sub_mean = round(label_sum / q, 2), round(sub_sum / q, 2)
        entropy_mean, txt_null_share = round(entropy_sum / q, 3), round(txt_null / q, 3)
    else:
        label_mean = sub_mean = entropy_mean = txt_null_share = 0.0
    # by position, in field order: a 29-keyword call costs ~1.3 µs more per record
    return DnsSummaryRecord(
        summary_id, start, end, first_ns, last_ns, client, token,
        1 + len(servers), q, responses, queries_tcp, rate,
        distinct, distinct >= max_distinct, label_mean, label_max,
        sub_mean, sub_max, sub_chars_distinct,
        entropy_mean, entropy_max_r, char_entropy, txt_null_share,
        _sorted_counts(qtypes), _sorted_counts(rcodes),
        query_bytes, response_bytes,
        round(response_bytes / responses, 1) if responses else 0.0, response_max,
    )  # fmt: skip


class DnsAnalyzerStage:
    """The DNS analyzer as a pipeline stage (payload tap or flow hook + summaries per
    interval)."""

    name = "dns"

    def __init__(self, cfg: DnsAnalyzerConfig, tokens: DomainTokens) -> None:
        self.summarizer = DnsSummarizer(cfg, tokens)
        self.messages = dict.fromkeys(MESSAGE_RESULTS, 0)
        self._addr_texts: dict[bytes, str] = {}

    # -- FlowHook --------------------------------------------------------------------
    def wants_packets(self, pkt: Packet, flow: Flow) -> bool:
        """Only port-53 UDP/TCP flows come back to Python on the compiled fast path."""
        return DNS_PORT in (pkt.sport, pkt.dport) and pkt.proto in (PROTO_UDP, PROTO_TCP)

    def on_flow_start(self, pkt: Packet, flow: Flow) -> None:
        """Nothing to set up: ``on_packet`` filters on the port itself."""

    def on_packet(self, pkt: Packet, flow: Flow, direction: str) -> None:
        """The flow hook: ``on_payloads`` for one packet's payload (the Python table)."""
        if DNS_PORT not in (pkt.sport, pkt.dport) or not pkt.payload_len:
            return
        if pkt.proto in (PROTO_UDP, PROTO_TCP):
            off = pkt.payload_off
            payload = pkt.data[off : off + pkt.payload_len]
            self.on_payloads([(pkt.ts_ns, pkt.src, pkt.dst, pkt.proto, payload)])

    def on_payloads(self, taps: list[tuple[int, bytes, bytes, int, bytes]]) -> None:
        """The fast path's tap: port-53 payloads, with no flow events (the analyzer keeps
        no flow state, so DNS flows never come back to Python). One loop over every message
        (a UDP payload, or each whole one of a TCP segment): per message, no Python call
        but ``account``, and the counters are added once per batch."""
        account = self.summarizer.account
        texts = self._addr_texts
        parsed = malformed = 0
        for ts_ns, src_addr, dst_addr, proto, payload in taps:
            if proto == PROTO_UDP:
                spans: Iterable[tuple[int, int]] = ((0, len(payload)),)
            elif proto == PROTO_TCP:
                spans = self._tcp_messages(payload)
            else:
                continue
            for off, end in spans:
                q = question(payload, off, end)
                if q is None:
                    malformed += 1
                    continue
                parsed += 1
                src = texts.get(src_addr)
                if src is None:
                    src = self._addr_text(src_addr)
                dst = texts.get(dst_addr)
                if dst is None:
                    dst = self._addr_text(dst_addr)
                if q[0]:  # a response: the client is its receiver
                    account(ts_ns, q, dst, src, end - off, proto == PROTO_TCP)
                else:
                    account(ts_ns, q, src, dst, end - off, proto == PROTO_TCP)
        messages = self.messages
        messages["parsed"] += parsed
        messages["malformed"] += malformed

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        """Summaries are per interval, not per flow: nothing to do."""

    def _tcp_messages(self, data: bytes) -> list[tuple[int, int]]:
        """Spans of the whole length-prefixed messages in one segment; the rest is
        counted, not joined."""
        spans: list[tuple[int, int]] = []
        off, end = 0, len(data)
        while off + 2 <= end:
            (length,) = _TCP_LEN.unpack_from(data, off)
            if off + 2 + length > end or length == 0:
                self.messages["partial_tcp"] += 1
                return spans
            spans.append((off + 2, off + 2 + length))
            off += 2 + length
        if off != end:
            self.messages["partial_tcp"] += 1
        return spans

    def _addr_text(self, addr: bytes) -> str:
        """``addr_text``, remembered: a resolver or busy client is seen over and over."""
        texts = self._addr_texts
        if len(texts) >= ADDR_CACHE_SIZE:
            texts.clear()
        text = texts[addr] = addr_text(addr)
        return text

    # -- Stage -----------------------------------------------------------------------
    def attach(self, host: HookHost) -> None:
        """The fast path's payload tap when there is one, else a flow hook."""
        add_tap = getattr(host, "add_tap", None)
        if add_tap is not None:
            add_tap(frozenset({DNS_PORT}), self.on_payloads)
        else:
            host.add_hook(self)

    def on_records(self, records: Sequence[Struct]) -> None:
        """The analyzer reads packets, not records."""

    def tick(self, now_ns: int) -> None:
        self.summarizer.close_due(now_ns)

    def take_records(self) -> list[Struct]:
        return list(self.summarizer.take_records())

    def finish(self, now_ns: int) -> None:
        self.summarizer.flush()

    def finish_chunks(self, now_ns: int, size: int) -> Iterator[Sequence[Struct]]:
        """``finish`` + ``take_records`` in lists of at most ``size`` summaries."""
        held = self.take_records()
        if held:
            yield held
        yield from self.summarizer.flush_chunks(size)

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 (scrape only)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

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
