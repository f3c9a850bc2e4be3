"""Pseudonyms: stable per key/epoch, distinct across keys/epochs, no raw value inside;
Crypto-PAn matches the reference sample trace and preserves prefixes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.privacy.cryptopan import CryptoPAn
from trafficguard.privacy.pseudonym import (
    Pseudonymizer,
    _KeyedSha256,
    _spell,
    normalize_sip_uri,
    normalize_user,
    pseudonym_epoch,
)

# Key of the Crypto-PAn reference sample (sample.cpp), as used by yacryptopan's tests.
REF_KEY = bytes([21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16,
                 216, 152, 143, 131, 121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2])

# Pairs from sample_trace_raw.dat / sample_trace_sanitized.dat.
IPV4_VECTORS = [
    ("128.11.68.132", "135.242.180.132"), ("129.118.74.4", "134.136.186.123"),
    ("130.132.252.244", "133.68.164.234"), ("141.223.7.43", "141.167.8.160"),
    ("141.233.145.108", "141.129.237.235"), ("192.102.249.13", "252.138.62.131"),
    ("192.215.32.125", "252.43.47.189"), ("192.233.80.103", "252.25.108.8"),
    ("192.41.57.43", "252.222.221.184"), ("193.150.244.223", "253.169.52.216"),
    ("195.205.63.100", "255.186.223.5"), ("198.200.171.101", "249.199.68.213"),
    ("198.26.132.101", "249.36.123.202"), ("198.36.213.5", "249.7.21.132"),
    ("198.51.77.238", "249.18.186.254"), ("199.217.79.101", "248.38.184.213"),
    ("202.49.198.20", "245.206.7.234"), ("203.12.160.252", "244.248.163.4"),
    ("204.184.162.189", "243.192.77.90"), ("204.202.136.230", "243.178.4.198"),
    ("204.29.20.4", "243.33.20.123"), ("205.178.38.67", "242.108.198.51"),
    ("205.188.147.153", "242.96.16.101"), ("205.188.248.25", "242.96.88.27"),
    ("205.245.121.43", "242.21.121.163"), ("207.105.49.5", "241.118.205.138"),
    ("207.135.65.238", "241.202.129.222"), ("207.155.9.214", "241.220.250.22"),
    ("207.188.7.45", "241.255.249.220"), ("207.25.71.27", "241.33.119.156"),
    ("207.33.151.131", "241.1.233.131"), ("208.147.89.59", "227.237.98.191"),
    ("208.234.120.210", "227.154.67.17"), ("208.28.185.184", "227.39.94.90"),
    ("208.52.56.122", "227.8.63.165"), ("209.12.231.7", "226.243.167.8"),
    ("209.238.72.3", "226.6.119.243"), ("209.246.74.109", "226.22.124.76"),
    ("209.68.60.238", "226.184.220.233"), ("209.85.249.6", "226.170.70.6"),
    ("212.120.124.31", "228.135.163.231"), ("212.146.8.236", "228.19.4.234"),
    ("212.186.227.154", "228.59.98.98"), ("212.204.172.118", "228.71.195.169"),
]
# IPv6 vectors with the same key (yacryptopan's test suite).
IPV6_VECTORS = [
    ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
    ("::2", "78ff:f001:9fc0:20df:8380:b1f1:704:ef"),
    ("::ffff", "78ff:f001:9fc0:20df:8380:b1f1:704:f838"),
    ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
    ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
]

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
HOME = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]


@pytest.mark.parametrize(("raw", "anon"), IPV4_VECTORS + IPV6_VECTORS)
def test_cryptopan_reference_vectors(raw: str, anon: str) -> None:
    assert str(CryptoPAn(REF_KEY).anonymize(ipaddress.ip_address(raw))) == anon


def test_cryptopan_key_length() -> None:
    with pytest.raises(ValueError):
        CryptoPAn(b"short")


def _common_prefix(a: int, b: int, bits: int) -> int:
    x = a ^ b
    return bits if x == 0 else bits - x.bit_length()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_cryptopan_prefix_preserving_ipv4(a: int, b: int) -> None:
    c = CryptoPAn(KEY_A)
    assert _common_prefix(c.anonymize_int(a, 32), c.anonymize_int(b, 32), 32) == \
        _common_prefix(a, b, 32)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(0, 2**128 - 1))
def test_cryptopan_prefix_preserving_ipv6(a: int, keep: int, noise: int) -> None:
    # b shares exactly `keep` leading bits with a (or all of them)
    mask = ((1 << keep) - 1) << (128 - keep) if keep else 0
    b = (a & mask) | (noise & ~mask & (2**128 - 1))
    c = CryptoPAn(KEY_A)
    assert _common_prefix(c.anonymize_int(a, 128), c.anonymize_int(b, 128), 128) == \
        _common_prefix(a, b, 128)


def test_user_pseudonym_form_and_stability() -> None:
    p = Pseudonymizer({1: KEY_A}, HOME)
    u = p.user("+1 (555) 010-9999")
    assert re.fullmatch(r"u1\.[a-z2-7]{22}", u)
    assert u == p.user("+15550109999") == p.user("sip:+1-555-010-9999@Example.net;user=phone")
    assert u == Pseudonymizer({1: KEY_A}, HOME).user("+15550109999")
    assert "5550109999" not in u
    assert pseudonym_epoch(u) == 1


def test_pseudonyms_differ_across_keys_and_epochs() -> None:
    one = Pseudonymizer({1: KEY_A}, HOME)
    other_key = Pseudonymizer({1: KEY_B}, HOME)
    rotated = Pseudonymizer({1: KEY_A, 2: KEY_B}, HOME)
    assert rotated.epoch == 2
    v = "+15550109999"
    assert one.user(v) != other_key.user(v)
    assert rotated.user(v).startswith("u2.")
    assert rotated.user(v, epoch=1) == one.user(v)
    assert rotated.user(v)[3:] != one.user(v)[3:]
    assert one.address("10.1.2.3") != other_key.address("10.1.2.3")
    with pytest.raises(ValueError):
        one.user(v, epoch=7)


def test_token_and_user_are_unrelated() -> None:
    p = Pseudonymizer({1: KEY_A}, HOME)
    assert p.token("alice")[3:] != p.user("alice")[3:]
    assert p.token("abc@host").startswith("t1.")
    assert p.token("ABC@host") != p.token("abc@host")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.text(max_size=40))
def test_digest_is_the_base32_head_of_the_hmac(key: bytes, value: str) -> None:
    # the table-driven spelling must give exactly the text of the original base32 form
    mac = hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()
    expected = base64.b32encode(mac[:15])[:22].lower().decode("ascii")
    assert Pseudonymizer._keyed_digest(_KeyedSha256(key), value) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.text(max_size=40))
def test_keyed_digest_is_the_digest(key: bytes, value: str) -> None:
    # token()/user() copy SHA-256 states of the padded key hashed once per epoch instead of
    # keying an HMAC per value: the text of the one-shot HMAC (keys longer than a block
    # included), and the same again on the next use of the keyed state
    one_shot = _spell(hmac.digest(key, value.encode("utf-8"), "sha256"))
    keyed = _KeyedSha256(key)
    assert Pseudonymizer._keyed_digest(keyed, value) == one_shot
    assert Pseudonymizer._keyed_digest(keyed, value) == one_shot


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_tokens_are_token_of_each(values: list[str]) -> None:
    p = Pseudonymizer({1: KEY_A, 4: KEY_B}, HOME)
    assert p.tokens(values) == [p.token(value) for value in values]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=6, max_size=30))
def test_no_raw_value_inside(value: str) -> None:
    p = Pseudonymizer({3: KEY_A}, HOME)
    for out in (p.user(value), p.token(value)):
        assert value not in out


def test_address_home_and_external() -> None:
    p = Pseudonymizer({1: KEY_A}, HOME)
    a = p.address("10.20.30.40")
    assert a.startswith("a1.")
    assert a != "a1.10.20.30.40"
    ipaddress.ip_address(a[3:])
    assert p.address("198.51.100.7") == "198.51.100.7"  # external peer stays in clear
    assert p.address("2a00:1450::1") == "2a00:1450::1"
    assert p.address("2001:db8::5").startswith("a1.")
    assert p.address("10.20.30.40") == a  # cached path gives the same answer


def test_address_prefix_consistent_with_addresses() -> None:
    p = Pseudonymizer({1: KEY_A}, HOME)
    net = ipaddress.ip_network(p.address_prefix("10.9.0.0/16")[3:])
    for host in ("10.9.0.1", "10.9.200.7", "10.9.255.255"):
        assert ipaddress.ip_address(p.address(host)[3:]) in net
    assert ipaddress.ip_address(p.address("10.10.0.1")[3:]) not in net


def test_is_subscriber_merged_intervals() -> None:
    p = Pseudonymizer({1: KEY_A}, ["10.0.0.0/9", "10.128.0.0/9", "10.0.5.0/24", "192.0.2.0/24"])
    assert p.is_subscriber("10.255.255.255")
    assert p.is_subscriber("10.0.0.0")
    assert not p.is_subscriber("11.0.0.0")
    assert not p.is_subscriber("9.255.255.255")
    assert p.is_subscriber(ipaddress.ip_address("192.0.2.9"))
    assert not p.is_subscriber("::1")


def test_lru_cache_bounded() -> None:
    p = Pseudonymizer({1: KEY_A}, HOME, cache_size=4)
    for i in range(10):
        p.address(f"10.0.0.{i}")
    assert len(p._cache) == 4


def test_normalisers() -> None:
    assert normalize_user("tel:+44 20 7946 0000") == "+442079460000"
    assert normalize_user("sip:Alice@example.com") == "Alice"
    assert normalize_sip_uri("SIP:Alice@Example.COM:5060;transport=udp") == "sip:Alice@example.com"
    with pytest.raises(ValueError):
        normalize_sip_uri("mailto:a@b")
    with pytest.raises(ValueError):
        normalize_user("sip:@host")
