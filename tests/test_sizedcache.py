"""``SizedCache``, the one long-lived cache of the daemon: bounded in bytes, oldest out first,
never evicting an entry ``keep`` holds on to, and ``held`` always the sum of what it holds."""

from __future__ import annotations

from rerund.sizedcache import ENTRY_BYTES, SizedCache, str_bytes


def _size(key: str, value: str) -> int:
    return ENTRY_BYTES + str_bytes(key, value)


def test_filled_past_its_budget_it_holds_at_most_the_budget_and_says_what_it_holds() -> None:
    evicted: list[str] = []
    cache: SizedCache[str, str] = SizedCache("t", 10_000, _size, on_evict=lambda k, v: evicted.append(k))

    for i in range(1000):
        cache.put(f"run-{i:04d}", "x" * (i % 50))

    assert cache.held == sum(_size(k, v) for k, v in cache.items()) <= cache.budget
    assert list(cache)[-1] == "run-0999" and "run-0000" not in cache  # the oldest left first
    assert evicted[:2] == ["run-0000", "run-0001"] and len(evicted) + len(cache) == 1000


def test_a_touched_entry_leaves_last_and_a_replaced_or_popped_one_is_not_evicted() -> None:
    evicted: list[str] = []
    budget = 3 * _size("a", "1")
    cache: SizedCache[str, str] = SizedCache("t", budget, _size, on_evict=lambda k, v: evicted.append(k))
    for k in "abc":
        cache.put(k, "1")
    cache.touch("a")
    cache.put("b", "2")  # replaced: not evicted
    assert cache.pop("c") == "1"

    cache.put("d", "1")
    cache.put("e", "1")

    assert list(cache) == ["b", "d", "e"] and evicted == ["a"]
    assert cache.held == 3 * _size("a", "1")


def test_eviction_stops_at_an_entry_keep_holds_on_to_and_an_entry_over_the_budget_is_not_kept() -> None:
    cache: SizedCache[str, str] = SizedCache("t", 2 * _size("a", "1"), _size, keep=lambda k, v: v == "keep")
    cache.put("a", "keep")
    cache.put("b", "1")
    cache.put("c", "1")  # over the budget, but the oldest is kept
    cache.put("big", "x" * 10_000)

    assert list(cache) == ["a", "b", "c"] and "big" not in cache
    assert cache.held == sum(_size(k, v) for k, v in cache.items())


def test_a_value_changed_in_place_is_counted_again_and_held_stays_the_sum() -> None:
    cache: SizedCache[str, list[str]] = SizedCache("t", 10_000, lambda k, v: ENTRY_BYTES + 100 * len(v))
    cache.put("a", ["x"])
    cache.put("b", [])
    before = cache.size_of("a")
    cache["a"].extend(["y", "z"])
    cache.resized("a", before)

    assert cache.held == 2 * ENTRY_BYTES + 300 == sum(ENTRY_BYTES + 100 * len(v) for v in cache.values())
    assert list(cache) == ["a", "b"]  # its place is kept
    cache.pop("a")
    assert cache.held == ENTRY_BYTES


def test_get_or_put_builds_a_missing_value_once_and_holds_it_within_the_budget() -> None:
    cache: SizedCache[str, str] = SizedCache("t", 2 * (ENTRY_BYTES + str_bytes("k0", "v0")), _size)
    built: list[str] = []

    def build(key: str) -> str:
        built.append(key)
        return "v" + key[1:]

    assert [cache.get_or_put(k, lambda k=k: build(k)) for k in ("k0", "k0", "k1", "k2")] == [
        "v0",
        "v0",
        "v1",
        "v2",
    ]
    assert built == ["k0", "k1", "k2"]  # k0 was built once
    assert "k0" not in cache and cache.held <= cache.budget  # the oldest left for k2
