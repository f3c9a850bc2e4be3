"""DNS metadata analyzer: parsing, registered domains, features, intervals, privacy."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realdata import real_pcap

from trafficguard.analyzers import dns
from trafficguard.analyzers.dns import DnsAnalyzerStage, DnsSummarizer
from trafficguard.analyzers.dns_features import (
    byte_histogram,
    counts_entropy,
    histogram_entropy,
    name_features,
    split_name,
)
from trafficguard.analyzers.dns_message import DnsQuestion, parse_question, question
from trafficguard.analyzers.dns_records import DnsSummaryRecord
from trafficguard.config import Config, DnsAnalyzerConfig, parse_config
from trafficguard.pipeline import replay_records
from trafficguard.privacy.keys import SensorKeys
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.sqlite import SqliteSink, query_records

NS = 1_000_000_000
CFG = parse_config({"voip": {"enabled": False}})


def _name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def _message(flags: int, qname: bytes, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def _summaries(path: Path, keys: SensorKeys, cfg: Config = CFG) -> list[DnsSummaryRecord]:
    return [r for r in replay_records([path], cfg, keys=keys) if isinstance(r, DnsSummaryRecord)]


# -- parsing -----------------------------------------------------------------------------
def test_parse_query_and_response() -> None:
    msg = _message(0x0100, _name(b"www", b"example", b"com"), 16)
    q = parse_question(msg, 0, len(msg))
    assert q == DnsQuestion(False, 0, 16, [b"www", b"example", b"com"])
    resp = _message(0x8183, _name(b"nope", b"example", b"com"))
    r = parse_question(b"pad" + resp, 3, 3 + len(resp))
    assert r is not None and r.is_response and r.rcode == 3 and r.labels[0] == b"nope"


def test_parse_rejects_malformed() -> None:
    # a compression pointer to itself must not loop
    loop = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert parse_question(loop, 0, len(loop)) is None
    # a label running past the end, a short header, no question
    assert parse_question(_message(0, b"\x3fabc"), 0, 20) is None
    assert parse_question(b"\x00" * 11, 0, 11) is None
    empty = struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0)
    assert parse_question(empty, 0, len(empty)) is None


def test_parse_follows_bounded_pointer() -> None:
    # question name = "a" + pointer to "example.com" placed after the question
    msg = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x01a\xc0\x14" + b"\x00\x01\x00\x01"
    msg += _name(b"example", b"com")
    q = parse_question(msg, 0, len(msg))
    assert q is not None and q.labels == [b"a", b"example", b"com"] and q.qtype == 1


# -- features ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "registered", "below"),
    [
        ([b"a1", b"c3", b"example", b"co", b"uk"], "example.co.uk", [b"a1", b"c3"]),
        ([b"WWW", b"Example", b"COM"], "example.com", [b"WWW"]),
        ([b"x9", b"pirate", b"sea"], "pirate.sea", [b"x9"]),  # unknown suffix: last two
        ([b"co", b"uk"], "co.uk", []),
        ([b"localhost"], "localhost", []),
        ([b"a/b@c", b"ev:il", b"com"], "evxil.com", [b"a/b@c"]),  # no URL parsing tricks
        ([], "", []),
    ],
)
def test_registered_domain(labels: list[bytes], registered: str, below: list[bytes]) -> None:
    assert split_name(labels) == (registered, below)


def name_entropy(data: bytes) -> float:
    """A name's entropy as the analyzer computes it (bits per byte, 0.0 when empty)."""
    return counts_entropy(byte_histogram(data).values(), len(data))


def test_entropy() -> None:
    assert name_entropy(b"") == 0.0
    assert name_entropy(b"aaaa") == 0.0
    assert name_entropy(b"abab") == pytest.approx(1.0)
    assert name_entropy(bytes(range(32))) == pytest.approx(5.0)
    assert histogram_entropy([8, 8, 0]) == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | st.text("abc0123.-", max_size=80).map(str.encode))
def test_byte_histogram_is_counter_order_and_entropy_unchanged(data: bytes) -> None:
    # the summaries pool these counts into char_entropy: same keys, same order, same floats
    histogram = byte_histogram(data)
    assert list(histogram.items()) == list(Counter(data).items())
    assert name_entropy(data) == histogram_entropy(Counter(data).values())


class _Tokens:
    def token(self, value: str) -> str:
        return "t1." + str(len(value))

    def tokens(self, values: Sequence[str]) -> list[str]:
        return [self.token(value) for value in values]


def test_summarizer_intervals_bound_and_features() -> None:
    s = DnsSummarizer(DnsAnalyzerConfig(interval_s=10, max_pairs=16), _Tokens())
    q = DnsQuestion(False, 0, 10, [b"abcdefgh", b"tun", b"example", b"com"])
    s.observe(1 * NS, q, "10.0.0.1", "10.0.0.53", 60, False)
    s.observe(2 * NS, q, "10.0.0.1", "10.0.0.53", 60, True)  # same name again
    s.observe(3 * NS, DnsQuestion(True, 3, 10, q.labels), "10.0.0.1", "10.0.0.53", 200, False)
    s.close_due(9 * NS)
    assert s.take_records() == []  # interval [0, 10) still open
    s.close_due(10 * NS)
    (rec,) = s.take_records()
    assert (rec.queries, rec.responses, rec.queries_tcp) == (2, 1, 1)
    assert rec.distinct_subdomains == 1 and rec.subdomain_len_mean == len("abcdefgh.tun")
    assert rec.label_len_max == 8 and rec.txt_null_share == 1.0
    assert rec.qtypes == {"null": 2} and rec.rcodes == {"nxdomain": 1}
    assert rec.response_bytes_max == 200 and rec.query_bytes == 120
    assert (rec.interval_start_ns, rec.interval_end_ns) == (0, 10 * NS)
    for i in range(20):  # more pairs than max_pairs: counted, not held
        s.observe(11 * NS, q, f"10.0.1.{i}", "10.0.0.53", 60, False)
    assert s.open_pairs == 16 and s.pairs_dropped == 4
    s.flush()
    assert len(s.take_records()) == 16


def test_flush_in_chunks_gives_what_one_flush_gives() -> None:
    """The last interval in lists of at most 3 summaries: the records of ``flush``, in
    its order, and the pairs are gone once the chunks are taken."""
    got = {}
    for chunked in (False, True):
        s = DnsSummarizer(DnsAnalyzerConfig(interval_s=60), _Tokens())
        for i in range(8):
            q = DnsQuestion(False, 0, 1, [f"h{i}".encode(), b"example", b"com"])
            s.observe(i * NS, q, f"10.0.0.{i % 5}", "10.0.0.53", 40 + i, False)
        if chunked:
            chunks = list(s.flush_chunks(3))
            assert [len(c) for c in chunks] == [3, 2]  # five clients, one domain
            got[chunked] = [r for c in chunks for r in c]
        else:
            s.flush()
            got[chunked] = s.take_records()
        assert s.open_pairs == 0 and s.summaries == 5
    assert got[True] == got[False]


# -- real captures -----------------------------------------------------------------------
def test_iodine_capture_features_without_names(keys: SensorKeys) -> None:
    recs = _summaries(real_pcap("ndpi-dns-tunnel-iodine.pcap"), keys)
    main = max(recs, key=lambda r: r.queries)
    assert main.client_addr == "10.0.2.30"
    assert main.queries >= 200 and main.distinct_subdomains == main.queries
    assert main.qtypes == {"null": main.queries} and main.txt_null_share == 1.0
    assert main.char_entropy > 5.5 and main.subdomain_len_mean > 30
    pz = Pseudonymizer(keys.pseudonym_keys, [])
    assert {r.domain_token for r in recs} == {pz.token("pirate.sea")}
    text = b"".join(msgspec.json.encode(r) for r in recs).lower()
    assert b"pirate" not in text and b'sea"' not in text


def test_dns_over_tcp_and_benign_capture(keys: SensorKeys) -> None:
    (tcp,) = _summaries(real_pcap("tcpdump-dns-tcp.pcap"), keys)
    assert (tcp.queries, tcp.responses, tcp.queries_tcp) == (1, 1, 1)
    busy = _summaries(real_pcap("wireshark-aaa-sip-dns.pcap"), keys)
    assert len(busy) > 20
    assert max(r.char_entropy for r in busy) < 4.3


@pytest.mark.usefixtures("fast_core")
@pytest.mark.parametrize(
    "name",
    [
        "ndpi-dns-tunnel-iodine.pcap",
        "wireshark-aaa-sip-dns.pcap",
        "zeek-dns-edns-ecs.pcap",
        "zeek-ipv6-fragmented-dns.pcap",
        "tcpdump-dns-tcp.pcap",
    ],
)
def test_python_references_give_the_same_summaries(
    name: str, keys: SensorKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trafficguard.fast import _core  # noqa: PLC0415 - the compiled core (fixture)

    assert (dns.question, dns.name_features) == (_core.dns_question, _core.dns_name_features)
    native = _summaries(real_pcap(name), keys)
    monkeypatch.setattr(dns, "question", question)
    monkeypatch.setattr(dns, "name_features", name_features)
    assert native and _summaries(real_pcap(name), keys) == native


def test_stage_counts_and_disabled(keys: SensorKeys) -> None:
    off = parse_config({"voip": {"enabled": False}, "analyzers": {"dns": {"enabled": False}}})
    assert _summaries(real_pcap("tcpdump-dns-tcp.pcap"), keys, off) == []
    stage = DnsAnalyzerStage(DnsAnalyzerConfig(), Pseudonymizer(keys.pseudonym_keys, []))
    metrics = {m.name: m for m in stage.collect()}
    assert {"trafficguard_dns_messages", "trafficguard_dns_open_pairs"} <= set(metrics)


def test_summaries_are_pseudonymized_and_stored(keys: SensorKeys, tmp_path: Path) -> None:
    cfg = parse_config({"voip": {"enabled": False}, "home_networks": ["10.0.0.0/8"]})
    recs = _summaries(real_pcap("ndpi-dns-tunnel-iodine.pcap"), keys, cfg)
    assert recs and all(r.client_addr.startswith("a1.") for r in recs)
    db = tmp_path / "t.db"
    with SqliteSink(cfg.store.sqlite.model_copy(update={"path": db})) as sink:
        sink.write(recs)
    back = query_records(db, "dns_summary", order="interval_start_ns", limit=None)
    assert sorted(back, key=lambda r: r.summary_id) == sorted(recs, key=lambda r: r.summary_id)
