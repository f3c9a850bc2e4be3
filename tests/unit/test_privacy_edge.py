"""The privacy edge rewrites subscriber addresses in every record kind before the sinks."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from trafficguard.config import Config
from trafficguard.pipeline import Pipeline
from trafficguard.privacy.edge import PrivacyEdge
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.sinks.memory import MemorySink

KEYS = {1: bytes(range(32)), 2: bytes(range(1, 33))}
HOME = ["10.0.0.0/8", "2001:db8:1::/48"]


class Alertish(msgspec.Struct, frozen=True):
    kind: ClassVar[str] = "alert"
    source: str
    target: str
    media: tuple[str, ...] = ()


class Plain(msgspec.Struct, frozen=True):
    kind: ClassVar[str] = "plain"
    value: int


def test_subscriber_addresses_rewritten_external_kept() -> None:
    pz = Pseudonymizer(KEYS, HOME)
    edge = PrivacyEdge(pz)
    rec = Alertish(
        source="10.1.2.3",
        target="198.51.100.7",
        media=("10.1.2.3:4000", "[2001:db8:1::5]:5004", "203.0.113.9:6000"),
    )
    plain = Plain(5)
    out = edge([rec, plain])
    a = out[0]
    assert isinstance(a, Alertish)
    assert a.source == pz.address("10.1.2.3") and a.source.startswith("a2.")
    assert a.target == "198.51.100.7"
    assert a.media[0] == pz.address("10.1.2.3") + ":4000"
    assert a.media[1] == "[" + pz.address("2001:db8:1::5") + "]:5004"
    assert a.media[2] == "203.0.113.9:6000"
    assert out[1] is plain
    assert edge.rewritten == 3
    # idempotent: a pseudonym is not an IP literal and stays as it is
    assert edge(out)[0] == a


def test_pipeline_emits_only_pseudonymized_records() -> None:
    pz = Pseudonymizer(KEYS, HOME)
    sink = MemorySink()
    p = Pipeline(Config(home_networks=tuple(HOME)), [("m", sink)], record_transform=PrivacyEdge(pz))
    p.tail.emit([Alertish(source="10.9.9.9", target="10.8.8.8")])
    (rec,) = sink.records
    assert isinstance(rec, Alertish)
    assert "10.9.9.9" not in msgspec.json.encode(rec).decode()
    assert rec.target == pz.address("10.8.8.8")
