"""Registered-domain splits without tldextract equal the splits made with it.

The registered-domain split (``dns_features.split_name``) used ``tldextract.TLDExtract``
(bundled snapshot, ICANN section); it now walks ``public_suffix.PublicSuffixList``
itself. tldextract stays the reference: the same rules are read from the same snapshot,
and names under every rule (plain, wildcard ``*.ck``, exception ``!www.ck``, punycode
``xn--`` labels of the IDN rules) and hostile label lists split the same way.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Sequence
from functools import cache

import tldextract
from hypothesis import given, settings
from hypothesis import strategies as st
from tldextract.suffix_list import extract_tlds_from_suffix_list

from trafficguard.analyzers.dns_features import _TO_HOST, MAX_SUFFIX_LABELS, split_name
from trafficguard.analyzers.public_suffix import LIST_PATH, icann_rules


@cache
def _extract() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False
    )


def reference_split(labels: Sequence[bytes]) -> tuple[str, list[bytes]]:
    """The splitter as it was, on tldextract (the reference)."""
    if not labels:
        return "", []
    last = labels[-MAX_SUFFIX_LABELS:]
    parts = _extract()(b".".join(label.translate(_TO_HOST) for label in last).decode("ascii"))
    if parts.suffix and parts.domain:
        n = parts.suffix.count(".") + 2
    elif parts.suffix:
        n = parts.suffix.count(".") + 1
    else:
        n = 2
    n = min(n, len(labels))
    registered = b".".join([label.translate(_TO_HOST) for label in labels[-n:]])
    return registered.decode("ascii"), list(labels[:-n])


def _wire(label: str) -> bytes:
    """A rule's label as it appears in a DNS name (IDN labels in punycode)."""
    if label.isascii():
        return label.encode("ascii")
    return b"xn--" + label.encode("punycode")


RULES = icann_rules(LIST_PATH.read_text(encoding="utf-8"))


def test_same_rules_as_tldextracts_snapshot() -> None:
    # public_suffix_list.dat is a copy of tldextract's snapshot: refresh it with tldextract
    snapshot = pkgutil.get_data("tldextract", ".tld_set_snapshot")
    assert snapshot is not None
    assert extract_tlds_from_suffix_list(snapshot.decode("utf-8"))[0] == RULES
    assert any(r.startswith("*.") for r in RULES) and any(r.startswith("!") for r in RULES)


def test_every_rule_splits_as_tldextract_does() -> None:
    for rule in RULES:
        labels = [_wire(label.lstrip("!")) for label in rule.split(".")]
        labels = [b"wild" if label == b"*" else label for label in labels]
        for name in (labels, [b"example", *labels], [b"a", b"B-1", b"example", *labels]):
            assert split_name(name) == reference_split(name), rule
        assert split_name(labels[1:]) == reference_split(labels[1:]), rule


ODD_LABELS = [
    b"", b".", b"*", b"!www", b"www", b"ck", b"co", b"uk", b"COM", b"jp", b"kawasaki", b"city",
    b"xn--p1ai", b"XN--P1AI", b"xn--", b"xn--zz-", b"xn--a", b"xn--90a3ac", b"1", b"192",
    b"168", b"a:b", b"a/b", b"a@b", b"#", b" ", b"\xff", b"\xd1\x80\xd1\x84",
]  # fmt: skip
LABELS = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(ODD_LABELS),
    st.sampled_from(RULES).map(lambda r: _wire(r.split(".")[0].lstrip("!*") or "x")),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(LABELS, max_size=9))
def test_hostile_names_split_as_tldextract_does(labels: list[bytes]) -> None:
    assert split_name(labels) == reference_split(labels)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(RULES), st.lists(LABELS, max_size=3))
def test_names_under_rules_split_as_tldextract_does(rule: str, below: list[bytes]) -> None:
    labels = [b"x" if label == "*" else _wire(label.lstrip("!")) for label in rule.split(".")]
    name = below + labels
    assert split_name(name) == reference_split(name)
