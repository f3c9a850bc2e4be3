"""What a DNS question name is reduced to: its registered domain and a few numbers.

``split_name`` finds the registered domain (public suffix + one label) with the
bundled Public Suffix List snapshot (``public_suffix``: tldextract's splits, without
importing it; never a network fetch), so ``a1b2.c3.example.co.uk`` splits into
``example.co.uk`` and the labels below it. A name under a suffix the list does not know
(``x.pirate.sea``) keeps its last two labels, the way an operator would read it. A name's
entropy (``counts_entropy`` of its ``byte_histogram``) is the Shannon entropy per
character: tunnels encode data in base32/64/128, which looks far more random than host
names. The analyzer remembers each name tail's split together with its domain token, so
nothing here keeps a cache of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

from trafficguard.analyzers.public_suffix import bundled_list

MAX_SUFFIX_LABELS: Final = 6  # longest public suffix (in labels) plus the domain label
_HOST_CHARS: Final = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
# Lower-case ASCII letters; every byte that is not a host-name character becomes "x" (a
# hostile label cannot hold a rule's "*" or "!", nor the "/", "@", ":" or "#" that the URL
# parser of tldextract, the reference of these splits, would act on).
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


NameFeatures = tuple[int, int, float, int, dict[int, int]]
"""(longest label, length, entropy, hash, byte histogram) of a name below its domain."""


def name_features(labels: Sequence[bytes], count: int) -> NameFeatures:
    """What the analyzer keeps of the name ``labels[:count]`` (``1 <= count``).

    The longest label, the length of the lower-cased name joined with dots, the entropy
    of its bytes without the dots, its salted ``hash`` (distinct names are counted by
    hash: no name is kept) and that byte histogram. The reference of the C core's
    ``dns_name_features``, which the analyzer uses when built.
    """
    below = labels[:count]
    sub = b".".join(below).lower()
    data = sub.replace(b".", b"")
    histogram = byte_histogram(data)
    entropy = counts_entropy(histogram.values(), len(data))
    return max(map(len, below)), len(sub), entropy, hash(sub), histogram


def split_name(labels: Sequence[bytes]) -> tuple[str, list[bytes]]:
    """``("example.co.uk", [b"a1b2", b"c3"])``; ``("", [])`` for the root."""
    n = domain_label_count(labels)
    return registered_text(labels, n), list(labels[: len(labels) - n])


def domain_label_count(labels: Sequence[bytes]) -> int:
    """How many of the last ``labels`` make the registered domain (0 for the root).

    As tldextract counts them: it strips the root's trailing dots, then takes the suffix
    and, when there is one, the label before it; two labels under no rule. Only the last
    ``MAX_SUFFIX_LABELS`` labels can matter, and never more labels than the name has.
    """
    if not labels:
        return 0
    to_host = _TO_HOST
    last = labels[-MAX_SUFFIX_LABELS:]
    host = b".".join([label.translate(to_host) for label in last]).rstrip(b".")
    names = host.decode("ascii").split(".")
    i = bundled_list().suffix_index(names)  # parsed on first use
    if i is None:
        return min(2, len(labels))  # not under a known suffix: keep the last two labels
    return min(len(names) - i + (1 if i and names[i - 1] else 0), len(labels))  # suffix (+ domain)


def registered_text(labels: Sequence[bytes], n: int) -> str:
    """The last ``n`` labels as the registered domain's text (host characters only)."""
    if not n:
        return ""
    to_host = _TO_HOST
    return b".".join([label.translate(to_host) for label in labels[-n:]]).decode("ascii")
