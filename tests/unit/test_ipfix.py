"""IPFIX exporter: messages decoded back by an independent RFC 7011 reader written here."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trafficguard.cli import EXIT_USAGE, main
from trafficguard.config import Config, IpfixConfig
from trafficguard.flow.records import FlowRecord
from trafficguard.pipeline import Pipeline, ReplayDriver
from trafficguard.privacy.keys import init_keys
from trafficguard.sinks.ipfix import IpfixExporter, export_address
from trafficguard.sinks.metrics import build_registry
from trafficguard.voip.records import CallRecord, RtpStreamRecord
from trafficguard.wiring import (
    SinkOverrides,
    build_context,
    build_sinks,
    build_stages,
)

PEN = 32473
REV = 29305

# (enterprise, element) -> name, for the elements the exporter documents.
NAMES = {
    (0, 8): "src4",
    (0, 12): "dst4",
    (0, 27): "src6",
    (0, 28): "dst6",
    (0, 7): "sport",
    (0, 11): "dport",
    (0, 4): "proto",
    (0, 60): "ipver",
    (0, 58): "vlan",
    (0, 6): "flags",
    (REV, 6): "rflags",
    (0, 152): "start_ms",
    (0, 153): "end_ms",
    (0, 136): "end_reason",
    (0, 2): "packets",
    (0, 1): "octets",
    (REV, 2): "rpackets",
    (REV, 1): "roctets",
    (0, 352): "l2octets",
    (REV, 352): "rl2octets",
    (0, 148): "flow_id",
    (PEN, 1): "app",
    (PEN, 2): "src_epoch",
    (PEN, 3): "dst_epoch",
    (PEN, 4): "sensor_loss",
    (PEN, 10): "ssrc",
    (PEN, 11): "rtp_packets",
    (PEN, 12): "rtp_expected",
    (PEN, 13): "rtp_lost",
    (PEN, 14): "jitter_mean_us",
    (PEN, 15): "jitter_max_us",
    (PEN, 16): "mos_x100",
    (PEN, 17): "payload_type",
    (PEN, 18): "codec",
}
ADDRESS_FIELDS = {"src4", "dst4", "src6", "dst6"}
STRING_FIELDS = {"app", "codec"}


@dataclass
class Message:
    length: int
    export_s: int
    sequence: int
    domain: int
    templates: list[int] = field(default_factory=list)
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


class Collector:
    """A minimal RFC 7011 collector: keeps templates per domain, decodes data sets."""

    def __init__(self) -> None:
        self.templates: dict[tuple[int, int], list[tuple[int, int, int]]] = {}

    def parse(self, data: bytes) -> Message:
        version, length, export_s, seq, domain = struct.unpack_from("!HHIII", data)
        assert version == 10
        assert length == len(data)
        msg = Message(length, export_s, seq, domain)
        off = 16
        while off < length:
            set_id, set_len = struct.unpack_from("!HH", data, off)
            assert set_len >= 4 and off + set_len <= length
            body = data[off + 4 : off + set_len]
            if set_id == 2:
                self._templates(body, domain, msg)
            else:
                assert set_id >= 256
                self._data(body, self.templates[(domain, set_id)], set_id, msg)
            off += set_len
        assert off == length
        return msg

    def _templates(self, body: bytes, domain: int, msg: Message) -> None:
        off = 0
        while off + 4 <= len(body):
            tid, count = struct.unpack_from("!HH", body, off)
            off += 4
            specs = []
            for _ in range(count):
                element, flen = struct.unpack_from("!HH", body, off)
                off += 4
                pen = 0
                if element & 0x8000:
                    (pen,) = struct.unpack_from("!I", body, off)
                    off += 4
                    element &= 0x7FFF
                specs.append((pen, element, flen))
            self.templates[(domain, tid)] = specs
            msg.templates.append(tid)

    def _data(self, body: bytes, specs: list[tuple[int, int, int]], tid: int, msg: Message) -> None:
        off = 0
        while off < len(body):
            rec: dict[str, Any] = {}
            for pen, element, spec_len in specs:
                name = NAMES[(pen, element)]
                flen = spec_len
                if spec_len == 0xFFFF:  # variable length: one length byte (< 255)
                    flen = body[off]
                    off += 1
                raw = body[off : off + flen]
                assert len(raw) == flen, "record runs past its set"
                off += flen
                if name in ADDRESS_FIELDS:
                    rec[name] = str(ipaddress.ip_address(raw))
                elif name in STRING_FIELDS:
                    rec[name] = raw.decode()
                else:
                    rec[name] = int.from_bytes(raw, "big")
            msg.records.append((tid, rec))


def flow(**kw: Any) -> FlowRecord:
    base: dict[str, Any] = {
        "flow_id": "3f2a9c0d11e4b7a8",
        "seq": 0,
        "first_seen_ns": 1_700_000_000_123_456_789,
        "start_ns": 1_700_000_000_123_456_789,
        "end_ns": 1_700_000_004_250_000_000,
        "vlan": 10,
        "ip_version": 4,
        "proto": 6,
        "src_addr": "10.1.0.7",
        "src_port": 49152,
        "dst_addr": "203.0.113.9",
        "dst_port": 443,
        "packets_fwd": 12,
        "packets_rev": 9,
        "bytes_fwd": 2100,
        "bytes_rev": 9320,
        "ip_bytes_fwd": 1932,
        "ip_bytes_rev": 9194,
        "payload_bytes_fwd": 1500,
        "payload_bytes_rev": 8900,
        "tcp_flags_fwd": 0x1B,
        "tcp_flags_rev": 0x12,
        "tcp_state": "closed",
        "app": "tls",
        "app_source": "signature",
        "encap": "",
        "end_reason": "tcp_fin",
    }
    base.update(kw)
    return FlowRecord(**base)


def rtp(**kw: Any) -> RtpStreamRecord:
    base: dict[str, Any] = {
        "ssrc": 0xDEADBEEF,
        "src_addr": "a2.10.9.8.7",
        "src_port": 40000,
        "dst_addr": "203.0.113.20",
        "dst_port": 50000,
        "first_ns": 1_700_000_002_000_000_000,
        "last_ns": 1_700_000_005_000_000_000,
        "payload_type": 0,
        "codec": "pcmu",
        "clock_rate": 8000,
        "packets": 150,
        "expected": 152,
        "lost": 2,
        "duplicates": 0,
        "reordered": 1,
        "seq_resets": 0,
        "jitter_mean_ms": 1.2346,
        "jitter_max_ms": 7.5,
        "max_delta_ms": 40.0,
        "mos": 4.21,
    }
    base.update(kw)
    return RtpStreamRecord(**base)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exporter(**cfg: Any) -> tuple[IpfixExporter, list[bytes], FakeClock]:
    sent: list[bytes] = []
    clock = FakeClock()
    exp = IpfixExporter(IpfixConfig(**cfg), clock=clock, send=sent.append)
    return exp, sent, clock


def decode_all(sent: list[bytes]) -> tuple[list[Message], list[tuple[int, dict[str, Any]]]]:
    coll = Collector()
    msgs = [coll.parse(m) for m in sent]
    return msgs, [r for m in msgs for r in m.records]


def test_ipv4_flow_round_trip_every_field() -> None:
    exp, sent, clock = exporter(observation_domain_id=42)
    exp.write([flow()])
    exp.flush()
    msgs, records = decode_all(sent)
    assert [m.domain for m in msgs] == [42, 42]
    assert msgs[0].templates == [256, 257, 258, 259] and msgs[0].records == []
    assert all(m.export_s == int(clock.now) for m in msgs)
    assert records == [
        (
            256,
            {
                "src4": "10.1.0.7",
                "dst4": "203.0.113.9",
                "sport": 49152,
                "dport": 443,
                "proto": 6,
                "ipver": 4,
                "vlan": 10,
                "flags": 0x1B,
                "rflags": 0x12,
                "start_ms": 1_700_000_000_123,
                "end_ms": 1_700_000_004_250,
                "end_reason": 3,
                "packets": 12,
                "octets": 1932,
                "rpackets": 9,
                "roctets": 9194,
                "l2octets": 2100,
                "rl2octets": 9320,
                "flow_id": 0x3F2A9C0D11E4B7A8,
                "src_epoch": 0,
                "dst_epoch": 0,
                "sensor_loss": 0,
                "app": "tls",
            },
        )
    ]


def test_ipv6_flow_uses_the_ipv6_template() -> None:
    exp, sent, _ = exporter()
    exp.write(
        [
            flow(
                ip_version=6,
                proto=17,
                src_addr="2001:db8:1::10",
                dst_addr="2001:db8:2::80",
                end_reason="idle",
                sensor_loss=True,
            )
        ]
    )
    exp.close()
    _, records = decode_all(sent)
    ((tid, rec),) = records
    assert tid == 257
    assert (rec["src6"], rec["dst6"]) == ("2001:db8:1::10", "2001:db8:2::80")
    assert "src4" not in rec
    assert (rec["ipver"], rec["proto"], rec["end_reason"], rec["sensor_loss"]) == (6, 17, 1, 1)


@pytest.mark.parametrize(
    ("reason", "code"),
    [("idle", 1), ("active", 2), ("tcp_fin", 3), ("tcp_rst", 3), ("flush", 4), ("evicted", 5)],
)
def test_flow_end_reason_codes(reason: str, code: int) -> None:
    exp, sent, _ = exporter()
    exp.write([flow(end_reason=reason)])
    exp.flush()
    assert decode_all(sent)[1][0][1]["end_reason"] == code


def test_pseudonymized_addresses_export_the_cryptopan_address_and_the_epoch() -> None:
    assert export_address("a3.10.7.1.9") == (4, bytes([10, 7, 1, 9]), 3)
    assert export_address("a12.2001:db8::5")[::2] == (6, 12)
    assert export_address("abcd::1") == (6, ipaddress.ip_address("abcd::1").packed, 0)
    with pytest.raises(ValueError, match="not an IP"):
        export_address("u3.k5q2abc")
    exp, sent, _ = exporter()
    exp.write(
        [
            flow(src_addr="a3.10.7.1.9", dst_addr="198.51.100.1"),
            flow(ip_version=6, src_addr="2001:db8::1", dst_addr="a7.2001:db8:99::42"),
            flow(src_addr="not-an-address"),
        ]
    )
    exp.flush()
    _, records = decode_all(sent)
    assert [(r["src4"], r["src_epoch"], r["dst_epoch"]) for t, r in records if t == 256] == [
        ("10.7.1.9", 3, 0)
    ]
    assert [(r["dst6"], r["src_epoch"], r["dst_epoch"]) for t, r in records if t == 257] == [
        ("2001:db8:99::42", 0, 7)
    ]
    assert exp.records_exported == {"flow": 2}
    assert exp.records_skipped == {"flow": 1}


def test_rtp_stream_record_carries_quality_in_enterprise_elements() -> None:
    exp, sent, _ = exporter()
    exp.write([rtp(), rtp(mos=None, src_addr="2001:db8::7", dst_addr="2001:db8::8")])
    exp.flush()
    _, records = decode_all(sent)
    (t4, r4), (t6, r6) = records
    assert (t4, t6) == (258, 259)
    assert r4 == {
        "src4": "10.9.8.7",
        "dst4": "203.0.113.20",
        "sport": 40000,
        "dport": 50000,
        "proto": 17,
        "ipver": 4,
        "start_ms": 1_700_000_002_000,
        "end_ms": 1_700_000_005_000,
        "ssrc": 0xDEADBEEF,
        "rtp_packets": 150,
        "rtp_expected": 152,
        "rtp_lost": 2,
        "jitter_mean_us": 1235,
        "jitter_max_us": 7500,
        "mos_x100": 421,
        "payload_type": 0,
        "src_epoch": 2,
        "dst_epoch": 0,
        "sensor_loss": 0,
        "codec": "pcmu",
    }
    assert r6["mos_x100"] == 0 and r6["src6"] == "2001:db8::7"
    # No standard packet/octet counters: a collector summing volumes must not count RTP twice.
    assert "packets" not in r4 and "octets" not in r4


def test_rtp_streams_can_be_turned_off_and_other_kinds_are_skipped() -> None:
    call = CallRecord(
        call_id_hash="t1.abc",
        caller="u1.x",
        caller_class="e164",
        callee="u1.y",
        callee_class="e164",
        src_addr="10.0.0.1",
        src_port=5060,
        dst_addr="10.0.0.2",
        dst_port=5060,
        transport="udp",
        invite_ns=1,
        first_provisional_ns=None,
        answer_ns=None,
        end_ns=2,
        pdd_ms=None,
        duration_ms=0.0,
        final_code=486,
        release="rejected",
        end_reason="busy",
        attempts=1,
        auth_challenges=0,
        forked=0,
        codecs=(),
        media=(),
        reinvites=0,
        held=False,
    )
    exp, sent, _ = exporter(rtp_streams=False)
    exp.write([call, rtp(), flow()])
    exp.close()
    _, records = decode_all(sent)
    assert [t for t, _ in records] == [256]
    assert exp.records_skipped == {"call": 1, "rtp_stream": 1}
    assert b"u1.x" not in b"".join(sent) and b"t1.abc" not in b"".join(sent)


def test_sequence_number_counts_data_records_sent_before_the_message() -> None:
    exp, sent, _ = exporter(mtu=576)
    batches = [[flow(flow_id=f"{i:016x}") for i in range(n)] for n in (3, 20, 1)]
    for batch in batches:
        exp.write(batch)
        exp.flush()
    msgs, records = decode_all(sent)
    assert len(records) == 24
    seen = 0
    for m in msgs:
        assert m.sequence == seen
        seen += len(m.records)
    assert [r["flow_id"] for _, r in records] == list(range(3)) + list(range(20)) + [0]
    # template-only messages carry the current count
    assert {m.sequence for m in msgs if m.templates} == {0}
    assert [Collector().parse(m).sequence for m in exp.builder.templates()] == [24]


def test_messages_are_split_to_fit_the_mtu() -> None:
    mtu = 600
    exp, sent, _ = exporter(mtu=mtu)
    exp.write([flow(flow_id=f"{i:016x}", app="x" * (i % 40)) for i in range(200)])
    exp.flush()
    msgs, records = decode_all(sent)
    assert all(len(m) <= mtu - 28 for m in sent)  # IPv4 + UDP headers
    assert len(msgs) > 10
    assert [r["flow_id"] for _, r in records] == list(range(200))
    assert [r["app"] for _, r in records] == ["x" * (i % 40) for i in range(200)]
    full = [len(m) for m in sent[1:-1]]  # every message but the last was filled up
    assert min(full) > mtu - 28 - 120


def test_ipv6_collector_leaves_room_for_the_ipv6_header() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx:
        rx.bind(("::1", 0))
        rx.settimeout(5)
        port = rx.getsockname()[1]
        exp = IpfixExporter(IpfixConfig(collector=f"[::1]:{port}", mtu=576))
        assert exp.builder.max_message_bytes == 576 - 48
        exp.write([flow(src_addr="2001:db8::1", dst_addr="2001:db8::2", ip_version=6)])
        exp.close()
        coll = Collector()
        msgs = [coll.parse(rx.recv(65535)) for _ in range(3)]
    # the four templates do not fit one 528-byte message: two template messages, then data
    assert [m.templates for m in msgs] == [[256, 257, 258], [259], []]
    assert [t for t, _ in msgs[2].records] == [257]
    assert max(m.length for m in msgs) <= 528


def test_template_refresh_by_message_count() -> None:
    exp, sent, _ = exporter(mtu=576, template_refresh_messages=3, template_refresh_s=3600)
    exp.write([flow(flow_id=f"{i:016x}") for i in range(100)])
    exp.flush()
    msgs, records = decode_all(sent)
    assert len(records) == 100
    kinds = "".join("T" if m.templates else "D" for m in msgs)
    assert kinds.startswith("TDDTDDTDD")
    assert len(msgs) > 20 and "DDD" not in kinds


def test_template_refresh_by_time() -> None:
    exp, sent, clock = exporter(template_refresh_messages=10**6, template_refresh_s=30)
    for step in range(7):
        clock.now += 10
        exp.write([flow(flow_id=f"{step:016x}")])
        exp.flush()
    msgs, _ = decode_all(sent)
    # templates at t=0, then before the first data message 30 s or more later: t=30, t=60
    kinds = "".join("T" if m.templates else "D" for m in msgs)
    assert kinds == "TDDTDDDTDD"
    assert all(not (m.templates and m.records) for m in msgs)


def test_exports_over_udp_to_a_loopback_collector() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        port = rx.getsockname()[1]
        exp = IpfixExporter(IpfixConfig(collector=f"127.0.0.1:{port}", observation_domain_id=7))
        exp.write([flow(), rtp()])
        exp.close()
        exp.close()  # idempotent
        coll = Collector()
        first, second = coll.parse(rx.recv(65535)), coll.parse(rx.recv(65535))
    assert first.records == [] and first.templates
    assert [t for t, _ in second.records] == [256, 258]
    assert second.domain == 7 and exp.messages_sent == 2 and exp.send_errors == 0


def test_send_failures_are_counted_not_raised() -> None:
    def refuse(_data: bytes) -> None:
        raise ConnectionRefusedError

    exp = IpfixExporter(IpfixConfig(), send=refuse)
    exp.write([flow()])
    exp.close()
    assert exp.send_errors == 2 and exp.messages_sent == 0


def test_a_record_larger_than_the_mtu_is_refused() -> None:
    with pytest.raises(ValueError, match="MTU"):
        IpfixExporter(IpfixConfig(mtu=576), send=lambda _d: None, clock=FakeClock()).builder.add(
            256, b"x" * 600
        )


def test_replay_rejects_a_bad_ipfix_collector(
    repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = str(repo_root / "pcaps" / "dns.pcap")
    rc = main(["replay", "--no-store", "--no-metrics", "--ipfix", "nowhere", pcap])
    assert rc == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--ipfix" in err and "HOST:PORT" in err


def test_ipfix_counters_are_on_the_metrics_registry_after_a_replay(
    repo_root: Path, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.settimeout(0.5)
        cfg = Config()
        sinks = build_sinks(
            cfg, SinkOverrides(no_store=True, ipfix=f"127.0.0.1:{rx.getsockname()[1]}")
        )
        ctx = build_context(cfg, init_keys(tmp_path / "keys"))
        pipeline = Pipeline(cfg, sinks, stages=build_stages(ctx))
        pcaps = repo_root / "pcaps"
        ReplayDriver(pipeline).run([pcaps / "sip-call-rtp.pcap", pcaps / "dns.pcap"])
        pipeline.close()
        registry = build_registry(pipeline.snapshot, pipeline.collectors())
        scraped = generate_latest(registry).decode()
        coll, datagrams, data_records = Collector(), 0, 0
        while True:
            try:
                msg = coll.parse(rx.recv(65535))
            except TimeoutError:
                break
            datagrams += 1
            data_records += len(msg.records)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(scraped)
        for s in fam.samples
    }
    assert values[("trafficguard_ipfix_messages_total", ())] == datagrams >= 2
    assert values[("trafficguard_ipfix_send_errors_total", ())] == 0
    exported = {
        dict(labels)["kind"]: v
        for (name, labels), v in values.items()
        if name == "trafficguard_ipfix_records_total"
    }
    assert exported["flow"] == pipeline.records_written[("ipfix", "flow")] > 0
    assert exported["rtp_stream"] >= 1
    assert sum(exported.values()) == data_records
    skipped = {
        dict(labels)["kind"]: v
        for (name, labels), v in values.items()
        if name == "trafficguard_ipfix_records_skipped_total"
    }
    assert skipped["call"] == pipeline.records_written[("ipfix", "call")] >= 1
