"""Pseudonyms for subscriber identities, keyed per epoch.

Forms (the epoch is carried so a stored pseudonym says which key made it)::

    u3.k5q2...   user: HMAC-SHA256 of the normalised number / SIP user, 22 base32 chars
    t3.x9a0...   token: HMAC-SHA256 of an opaque value (Call-ID, ...), 22 base32 chars
    a3.10.7.1.9  address: Crypto-PAn of a subscriber address (same family, prefix-preserving)

Each use gets its own sub-key derived from the epoch key (HKDF-SHA256 with a label), so a
user pseudonym and a token of the same string are unrelated. Addresses outside
``home_networks`` (external peers) stay in clear so analysts can block them.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NewType, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trafficguard.privacy.cryptopan import CryptoPAn
from trafficguard.privacy.keys import SensorKeys

Pseudonym = NewType("Pseudonym", str)

DIGEST_CHARS: Final = 22  # 110 bits
_B32_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower-cased
_B32_PAIRS: Final = tuple(a + b for a in _B32_ALPHABET for b in _B32_ALPHABET)
"""Two base32 characters per 10-bit value: 11 look-ups spell the 110-bit digest."""
_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(c ^ 0x36 for c in range(256))  # RFC 2104 pads, as translate tables
_OPAD: Final = bytes(c ^ 0x5C for c in range(256))
_PHONE_RE: Final = re.compile(r"^\+?[0-9()\s.\-/]+$")
_PHONE_SEPARATORS: Final = re.compile(r"[()\s.\-/]")
_PSEUDONYM_RE: Final = re.compile(r"^([uta])([1-9][0-9]*)\.(.+)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_user(value: str) -> str:
    """Reduce a number or SIP/tel URI to the user it names.

    ``sip:+1 (555) 010-9999@Example.net;user=phone`` and ``+15550109999`` both give
    ``+15550109999``: scheme, host and parameters are dropped; a phone number loses its
    visual separators; a SIP user name is kept as written (it is case-sensitive, RFC 3261).
    """
    v = value.strip()
    lower = v.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lower.startswith(scheme):
            v = v[len(scheme) :]
            break
    v = v.split("@", 1)[0].split(";", 1)[0].split("?", 1)[0].strip()
    if _PHONE_RE.match(v) and any(c.isdigit() for c in v):
        v = _PHONE_SEPARATORS.sub("", v)
    if not v:
        raise ValueError("empty user")
    return v


def normalize_sip_uri(value: str) -> str:
    """``sip:user@host`` with scheme and host lower-cased and parameters/port kept out."""
    v = value.strip()
    scheme, sep, rest = v.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips", "tel"):
        raise ValueError("not a sip:, sips: or tel: URI")
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, at, host = rest.rpartition("@")
    if not at:
        return f"{scheme.lower()}:{normalize_user(rest)}"
    host = host.split(":", 1)[0].lower() if not host.startswith("[") else host.lower()
    if not user or not host:
        raise ValueError("URI needs user@host")
    return f"{scheme.lower()}:{normalize_user(user)}@{host}"


def pseudonym_epoch(pseudonym: str) -> int:
    """The epoch a pseudonym was made under; ValueError if it is not one."""
    m = _PSEUDONYM_RE.match(pseudonym)
    if not m:
        raise ValueError("not a trafficguard pseudonym")
    return int(m.group(2))


def _canonical_address(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address in its canonical text form (``inet_ntop``'s, which
    is how records carry addresses); None for any other text, left to ``ipaddress``."""
    family, version = (socket.AF_INET6, 6) if ":" in text else (socket.AF_INET, 4)
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        return None
    if socket.inet_ntop(family, packed) != text:
        return None
    return version, int.from_bytes(packed, "big")


def _spell(mac: bytes) -> str:
    """The first 22 characters of the lower-case base32 of ``mac``.

    The same text as ``base64.b32encode(mac[:15])[:22].lower()``, spelled from the
    first 110 bits by table (``b32encode`` is a Python loop; this runs per record).
    """
    n = int.from_bytes(mac[:14], "big") >> 2  # the first 110 bits
    p = _B32_PAIRS
    return (
        p[n >> 100] + p[(n >> 90) & 1023] + p[(n >> 80) & 1023] + p[(n >> 70) & 1023]
        + p[(n >> 60) & 1023] + p[(n >> 50) & 1023] + p[(n >> 40) & 1023]
        + p[(n >> 30) & 1023] + p[(n >> 20) & 1023] + p[(n >> 10) & 1023] + p[n & 1023]
    )  # fmt: skip


try:  # the C core's _spell: one call, ~1 µs less per pseudonym (tens of thousands at once)
    from trafficguard.fast._core import b32_head as _spell_digest
except ImportError:  # not built: the reference itself
    _spell_digest = _spell


def _subkey(key: bytes, label: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=b"trafficguard/" + label).derive(key)


class _KeyedSha256:
    """HMAC-SHA256 under one key (RFC 2104) with both padded keys hashed once.

    Per value two ``hashlib`` copies and digests: the same bytes as ``hmac.digest``, ~1 µs
    less than copying a keyed ``hmac.HMAC`` (whose ``copy`` and ``digest`` are Python).
    """

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\0")
        self.inner = hashlib.sha256(block.translate(_IPAD))
        self.outer = hashlib.sha256(block.translate(_OPAD))


class _EpochKeys:
    __slots__ = ("cryptopan", "token", "token_mac", "user", "user_mac")

    def __init__(self, key: bytes) -> None:
        self.user = _subkey(key, b"user/v1")
        self.token = _subkey(key, b"token/v1")
        self.cryptopan = CryptoPAn(_subkey(key, b"cryptopan/v1"))
        # keyed once, copied per value: a copy costs less than keying hmac.digest anew
        self.user_mac = _KeyedSha256(self.user)
        self.token_mac = _KeyedSha256(self.token)


class _NetworkSet:
    """Merged, sorted address intervals per family; membership by bisect, O(log n)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            spans[net.version].append((int(net.network_address), int(net.broadcast_address)))
        for version, items in spans.items():
            for start, end in sorted(items):
                ends = self._ends[version]
                if ends and start <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], end)
                else:
                    self._starts[version].append(start)
                    ends.append(end)

    def contains(self, version: int, value: int) -> bool:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]


class Pseudonymizer:
    """Makes user, token and address pseudonyms with the current epoch's key.

    ``keys`` is ``SensorKeys`` or a map epoch → 32-byte key; the highest epoch
    is current. Address results are cached (bounded LRU; external addresses too, since
    parsing dominates their cost): a subscriber address costs 32 or 128 AES blocks
    (~25/80 µs) and is asked for once per flow endpoint. Not thread-safe: one instance
    per worker.
    """

    __slots__ = ("_cache", "_cache_size", "_epochs", "_home", "epoch")

    def __init__(
        self, keys: Mapping[int, bytes], home_networks: Iterable[str], *, cache_size: int = 65536
    ) -> None:
        by_epoch = keys.pseudonym_keys if isinstance(keys, SensorKeys) else keys
        if not by_epoch:
            raise ValueError("no pseudonym key")
        self._epochs = {epoch: _EpochKeys(k) for epoch, k in by_epoch.items()}
        self.epoch = max(by_epoch)
        self._home = _NetworkSet(ipaddress.ip_network(n, strict=False) for n in home_networks)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    @property
    def epochs(self) -> list[int]:
        """Every epoch a key is held for (old ones: to find stored pseudonyms)."""
        return sorted(self._epochs)

    def _keys(self, epoch: int | None) -> tuple[int, _EpochKeys]:
        e = self.epoch if epoch is None else epoch
        try:
            return e, self._epochs[e]
        except KeyError:
            raise ValueError(f"no pseudonym key for epoch {e}") from None

    @staticmethod
    def _keyed_digest(keyed: _KeyedSha256, data: str) -> str:
        """The first 22 characters of the lower-case base32 of the HMAC-SHA256 of ``data``
        under the key ``keyed`` holds (its hashed pads are copied, not keyed anew)."""
        inner = keyed.inner.copy()
        inner.update(data.encode("utf-8"))
        outer = keyed.outer.copy()
        outer.update(inner.digest())
        return _spell_digest(outer.digest())

    def user(self, value: str, epoch: int | None = None) -> Pseudonym:
        """Pseudonym of a phone number or SIP user (normalised first, see normalize_user)."""
        e, k = self._keys(epoch)
        return Pseudonym(f"u{e}." + self._keyed_digest(k.user_mac, normalize_user(value)))

    def token(self, value: str, epoch: int | None = None) -> Pseudonym:
        """Pseudonym of an opaque identifier such as a Call-ID; no normalisation."""
        e, k = self._keys(epoch)
        return Pseudonym(f"t{e}." + self._keyed_digest(k.token_mac, value))

    def tokens(self, values: Sequence[str]) -> list[Pseudonym]:
        """``token`` of each of ``values`` under the current epoch's key, for callers that
        make thousands at once (the DNS analyzer's summary ids): one key look-up."""
        e, k = self._keys(None)
        prefix = f"t{e}."
        keyed = k.token_mac
        digest = self._keyed_digest
        return cast("list[Pseudonym]", [prefix + digest(keyed, value) for value in values])

    def is_subscriber(self, ip: str | IPAddress) -> bool:
        """True if the address lies inside ``home_networks``."""
        if isinstance(ip, str):
            canonical = _canonical_address(ip)
            if canonical is not None:
                return self._home.contains(*canonical)
            addr = ipaddress.ip_address(ip)
        else:
            addr = ip
        return self._home.contains(addr.version, int(addr))

    def address(self, ip: str, epoch: int | None = None) -> str:
        """``a<epoch>.<Crypto-PAn address>`` for a subscriber; other addresses unchanged."""
        if epoch is None:
            cached = self._cache.get(ip)
            if cached is not None:
                self._cache.move_to_end(ip)
                return cached
        addr = ipaddress.ip_address(ip)
        if not self._home.contains(addr.version, int(addr)):
            out = ip
        else:
            e, k = self._keys(epoch)
            out = f"a{e}.{k.cryptopan.anonymize(addr)}"
        if epoch is None:
            self._cache[ip] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def address_prefix(self, network: str, epoch: int | None = None) -> str:
        """Pseudonym of a prefix: the addresses of a subscriber prefix share it.

        Only meaningful for prefixes inside ``home_networks``; other prefixes are returned
        unchanged (as their canonical network string).
        """
        net = ipaddress.ip_network(network, strict=False)
        if not self._home.contains(net.version, int(net.network_address)):
            return str(net)
        e, k = self._keys(epoch)
        anon = k.cryptopan.anonymize(net.network_address)
        anon_net = ipaddress.ip_network(f"{anon}/{net.prefixlen}", strict=False)
        return f"a{e}.{anon_net}"
