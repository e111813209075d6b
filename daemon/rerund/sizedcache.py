"""``SizedCache``: the one cache rerund keeps for long, an LRU mapping bounded in bytes.

Every long-lived cache of the daemon (the adapter's labels and kept reads, the reruns index's
checked lineage claims, the seen-cache) is one of these: bounded by an estimate of the bytes its
entries hold, not by their count, so a cache of large entries holds fewer of them and memory does
not follow message size or history (issue 24). Each entry's size is estimated by the cache's
``size`` function when it is put (a fixed per-entry cost plus its strings' lengths; see
``ENTRY_BYTES`` and ``str_bytes``); ``held`` is their sum, exported as
``rerund_cache_bytes{cache=...}``.

Invariants (``tests/test_sizedcache.py``):

- ``held`` is the sum of the sizes of the entries held, always.
- After ``put``, ``held <= budget`` (and at most ``max_entries`` entries, when given)
  unless ``keep`` refused to let the oldest entry go (a cache whose entries a later step
  cannot do without), or a single entry is larger than the budget (then it is not kept).
- Entries leave oldest first (``put`` and ``touch`` make an entry the newest); ``on_evict``
  is called for each one evicted, never for one ``pop``-ped or replaced.

A leaf module: the standard library only, so the adapters and the shell share it.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["ENTRY_BYTES", "SizedCache", "str_bytes"]

K = TypeVar("K")
V = TypeVar("V")

# What one entry costs besides its own strings: the OrderedDict's slot and link node, the key
# object and a small value object (measured with tracemalloc, CPython 3.11: 150-250 bytes).
ENTRY_BYTES = 200


def str_bytes(*texts: str) -> int:
    """The bytes a few strings hold (``sys.getsizeof``: header plus characters)."""
    return sum(sys.getsizeof(t) for t in texts)


class SizedCache(Generic[K, V]):
    """An LRU mapping of at most ``budget`` estimated bytes (``size(key, value)`` per entry)."""

    def __init__(
        self,
        name: str,
        budget: int,
        size: Callable[[K, V], int],
        *,
        on_evict: Callable[[K, V], object] | None = None,
        keep: Callable[[K, V], bool] | None = None,
        max_entries: int | None = None,
    ) -> None:
        self.name = name
        self.budget = budget
        self.max_entries = max_entries  # a second bound, in entries (None: bytes only)
        self._size = size
        self._on_evict = on_evict
        self._keep = keep
        # The values alone: an entry's size is computed again when it leaves (a stored size
        # would cost ~90 bytes an entry), so a value changed in place must say so (``resized``).
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.held = 0  # estimated bytes of the entries held
        self.evicted = 0  # entries evicted for the budget, since start

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        """The keys, oldest first."""
        return iter(self._entries)

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` (without making it the newest), or ``default``."""
        return self._entries.get(key, default)

    def __getitem__(self, key: K) -> V:
        return self._entries[key]

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) of every entry, oldest first."""
        return iter(self._entries.items())

    def values(self) -> Iterator[V]:
        """The values, oldest first."""
        return iter(self._entries.values())

    def touch(self, key: K) -> None:
        """Make ``key`` the newest entry (it leaves last)."""
        if key in self._entries:
            self._entries.move_to_end(key)

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` for ``key`` as the newest entry, then evict the oldest while over budget."""
        self.pop(key)
        size = self._size(key, value)
        if size > self.budget:
            return
        self._entries[key] = value
        self.held += size
        self.shrink()

    def get_or_put(self, key: K, build: Callable[[], V]) -> V:
        """The value of ``key``, or ``build()`` held for it as the newest entry."""
        value = self._entries.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value

    def size_of(self, key: K) -> int:
        """The estimated bytes of the entry of ``key`` (0: none)."""
        return self._size(key, self._entries[key]) if key in self._entries else 0

    def resized(self, key: K, before: int) -> None:
        """The value of ``key`` changed in place; ``before`` is what ``size_of`` said before the
        change. Its place is kept."""
        if key in self._entries:
            self.held += self.size_of(key) - before
            self.shrink()

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` (no ``on_evict``); its value or ``default``."""
        if key not in self._entries:
            return default
        value = self._entries.pop(key)
        self.held -= self._size(key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.held = 0

    def over(self) -> bool:
        """Whether the cache holds more than its budget (or ``max_entries``)."""
        return self.held > self.budget or (
            self.max_entries is not None and len(self._entries) > self.max_entries
        )

    def shrink(self) -> None:
        """Evict the oldest entries while over budget, stopping at one ``keep`` holds on to."""
        while self._entries and self.over():
            key, value = next(iter(self._entries.items()))
            if self._keep is not None and self._keep(key, value):
                return
            del self._entries[key]
            self.held -= self._size(key, value)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict(key, value)
