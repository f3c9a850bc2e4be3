"""Bounded per-key state for detectors: LRU maps, distinct counters, top-k.

Every structure here has a hard size bound and counts what it drops, so a flood of
distinct sources costs at most ``capacity`` entries, never unbounded memory.

* :class:`LruMap` — per-key state with least-recently-used eviction (``evicted`` counts).
* :class:`DistinctCounter` — exact distinct counting up to ``exact_cap`` items, then a
  HyperLogLog sketch (Apache DataSketches ``hll_sketch``, ~1.6 % error at lg_k=12):
  small sets stay exact and cheap, large sets stay bounded.
* :class:`SpaceSaving` — top-k heavy hitters (Metwally et al. 2005): ``k`` counters, a new
  item replaces the current minimum and inherits its count as an overestimate
  (``evicted`` counts replacements).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:  # imported when a counter first outgrows its exact set (numpy: ~60 ms)
    import datasketches

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruMap(Generic[K, V]):
    """A dict bounded to ``capacity`` keys; the least recently used key goes first."""

    __slots__ = ("_data", "capacity", "evicted")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.evicted = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def setdefault(self, key: K, factory: Callable[[], V]) -> V:
        """The value of ``key`` (marked recently used), created by ``factory`` if absent."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
            return value
        value = factory()
        data[key] = value
        if len(data) > self.capacity:
            data.popitem(last=False)
            self.evicted += 1
        return value

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A snapshot (safe to pop while iterating over it)."""
        return list(self._data.items())

    def oldest(self) -> Iterator[tuple[K, V]]:
        """Least recently used first (do not mutate while iterating)."""
        return iter(self._data.items())

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class DistinctCounter:
    """Distinct items: exact up to ``exact_cap``, then a HyperLogLog estimate."""

    __slots__ = ("_exact", "_hll", "exact_cap", "lg_k")

    def __init__(self, exact_cap: int = 64, lg_k: int = 12) -> None:
        self.exact_cap = exact_cap
        self.lg_k = lg_k
        self._exact: set[str] | None = set()
        self._hll: datasketches.hll_sketch | None = None

    def add(self, item: str) -> None:
        exact = self._exact
        if exact is not None:
            exact.add(item)
            if len(exact) > self.exact_cap:
                import datasketches  # noqa: PLC0415 (see the TYPE_CHECKING import)

                hll = datasketches.hll_sketch(self.lg_k, datasketches.tgt_hll_type.HLL_8)
                for x in exact:
                    hll.update(x)
                self._hll = hll
                self._exact = None
        else:
            assert self._hll is not None
            self._hll.update(item)

    def __contains__(self, item: str) -> bool:
        """Exact membership while exact; once estimating, always False (new-looking)."""
        return self._exact is not None and item in self._exact

    @property
    def is_exact(self) -> bool:
        return self._exact is not None

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        assert self._hll is not None
        estimate: float = self._hll.get_estimate()
        return round(estimate)

    def clear(self) -> None:
        self._exact = set()
        self._hll = None


class SpaceSaving(Generic[K]):
    """Top-k heavy hitters with ``k`` counters (counts are upper bounds once evicting)."""

    __slots__ = ("_counts", "_errors", "evicted", "k", "total")

    def __init__(self, k: int = 8) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.evicted = 0
        self.total = 0
        self._counts: dict[K, int] = {}
        self._errors: dict[K, int] = {}  # overestimate inherited from the evicted item

    def add(self, item: K, weight: int = 1) -> None:
        counts = self._counts
        self.total += weight
        if item in counts:
            counts[item] += weight
        elif len(counts) < self.k:
            counts[item] = weight
        else:
            victim = min(counts, key=counts.__getitem__)
            floor = counts.pop(victim)
            self._errors.pop(victim, None)
            counts[item] = floor + weight
            self._errors[item] = floor
            self.evicted += 1

    def top(self, n: int = 1) -> list[tuple[K, int]]:
        """The ``n`` heaviest items, heaviest first (ties broken by insertion order)."""
        return sorted(self._counts.items(), key=lambda kv: -kv[1])[:n]

    def heaviest(self) -> tuple[K, int] | None:
        """``top(1)[0]`` (None when empty) without a sort: detectors ask it per report."""
        if not self._counts:
            return None
        return max(self._counts.items(), key=itemgetter(1))  # first of the ties, as top()

    def share(self, item: K) -> float:
        """Guaranteed fraction of the total weight that is ``item``'s (count minus the
        inherited overestimate; 0 if not tracked)."""
        if not self.total or item not in self._counts:
            return 0.0
        return (self._counts[item] - self._errors.get(item, 0)) / self.total

    def clear(self) -> None:
        self._counts.clear()
        self._errors.clear()
        self.total = 0
