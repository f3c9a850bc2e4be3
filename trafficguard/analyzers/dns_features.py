"""What a DNS question name is reduced to: its registered domain and a few numbers.

``DomainSplitter`` finds the registered domain (public suffix + one label) with
``tldextract``'s bundled Public Suffix List snapshot — never a network fetch — so
``a1b2.c3.example.co.uk`` splits into ``example.co.uk`` and the labels below it. A name
under a suffix the list does not know (``x.pirate.sea``) keeps its last two labels, the
way an operator would read it. A name's entropy (``counts_entropy`` of its
``byte_histogram``) is the Shannon entropy per character: tunnels encode data in
base32/64/128, which looks far more random than host names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import tldextract

MAX_SUFFIX_LABELS: Final = 6  # longest public suffix (in labels) plus the domain label
SPLIT_CACHE_SIZE: Final = 65536  # remembered name splits (cleared when full)
_HOST_CHARS: Final = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
# Lower-case ASCII letters; every byte that is not a host-name character becomes "x", so
# the URL parser inside tldextract can never see "/", "@", ":" or "#" in a hostile label.
_TO_HOST: Final = bytes(
    (c + 32 if 65 <= c <= 90 else c) if bytes([c]).lower() in _HOST_CHARS else ord("x")
    for c in range(256)
)


def histogram_entropy(counts: Iterable[int]) -> float:
    """Shannon entropy in bits per symbol of a symbol histogram (0.0 when empty)."""
    values = [c for c in counts if c]
    return counts_entropy(values, sum(values))


def counts_entropy(counts: Iterable[int], n: int) -> float:
    """``histogram_entropy`` of non-zero ``counts`` that sum to ``n`` (known by the caller)."""
    if n == 0:
        return 0.0
    log2 = math.log2
    total = 0.0
    for c in counts:  # the same terms, in the same order, as sum() over c / n * log2(c / n)
        p = c / n
        total += p * log2(p)
    return max(0.0, -total)


def byte_histogram(data: bytes) -> dict[int, int]:
    """Byte -> count in first-occurrence order, as ``Counter(data)`` gives them (cheaper)."""
    return {b: data.count(b) for b in dict.fromkeys(data)}


class DomainSplitter:
    """Splits question labels into (registered domain, labels below it)."""

    __slots__ = ("_extract", "_labels")

    def __init__(self) -> None:
        # suffix_list_urls=() and no cache dir: the bundled snapshot, no fetch, no files.
        self._extract = tldextract.TLDExtract(
            suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False
        )
        # hash of the last labels -> labels in the registered domain. Keyed by the salted
        # bytes hash, as the distinct-subdomain sets are: no name is kept.
        self._labels: dict[int, int] = {}

    def split(self, labels: list[bytes]) -> tuple[str, list[bytes]]:
        """``("example.co.uk", [b"a1b2", b"c3"])``; ``("", [])`` for the root."""
        if not labels:
            return "", []
        last = labels[-MAX_SUFFIX_LABELS:]
        key = hash(tuple(last))  # the split depends on no more
        n = self._labels.get(key)
        if n is None:
            tail = [label.translate(_TO_HOST) for label in last]
            parts = self._extract(b".".join(tail).decode("ascii"))
            if parts.suffix and parts.domain:
                n = parts.suffix.count(".") + 2
            elif parts.suffix:
                n = parts.suffix.count(".") + 1  # the name is a public suffix itself
            else:
                n = 2  # not under a known suffix: keep the last two labels
            if len(self._labels) >= SPLIT_CACHE_SIZE:
                self._labels.clear()
            self._labels[key] = n
        n = min(n, len(labels))  # never more than the labels joined above
        to_host = _TO_HOST
        registered = b".".join([label.translate(to_host) for label in labels[-n:]])
        return registered.decode("ascii"), labels[:-n]
