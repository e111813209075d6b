"""The reconcile loop's long-lived caches (the seen-cache, the reruns index's checked lineage
claims) are bounded in bytes: filled past their budgets with real failures and reruns they
hold at most their budget, ``rerund_cache_bytes{cache=...}`` says what they hold, and a
smaller cache costs only reads: never a failure read twice inside the resync window, never a
rerun issued twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from rerund.core.model import ErrorInfo
from rerund.runtime.reconcile.owed import OwedWork
from rerund.sizedcache import SizedCache

from .fake_control_plane import T0, Clock, FakeControlPlane
from .test_reconcile import World


def _caches(world: World) -> dict[str, SizedCache[Any, Any]]:
    rec: Any = world.rec
    return {c.name: c for c in (rec._owed.seen, *rec._index.caches, *rec._recorder.caches)}


def test_settled_failures_past_the_seen_budget_are_evicted_and_the_metric_says_what_it_holds(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, seen_bytes=8192, overlap=timedelta(minutes=1))
    for wave in range(6):
        for i in range(10):
            world.cp.add_failed(f"w{wave}-{i:02d}", at=world.clock())
        world.clock.advance(10)
        world.sync()
        world.clock.advance(600)  # the wave leaves the resync window (after the next listing)

    seen = _caches(world)["seen"]
    assert 0 < seen.held <= 8192 and len(seen) < 60  # the oldest waves were evicted
    assert len(world.cp.reruns()) == 60  # ... each failure rerun once
    assert world.cp.calls["read_failure"] == 60
    for name, cache in _caches(world).items():
        assert world.metric("rerund_cache_bytes", cache=name) == cache.held


def test_a_failure_settled_for_good_is_counted_as_its_marker_once_its_facts_are_dropped() -> None:
    clock = Clock(T0)
    cp = FakeControlPlane(clock)
    run = cp.add_failed("abc", at=T0, error=ErrorInfo(kind="SYSTEM", message="x" * 2000))
    facts = asyncio.run(cp.read_failure(run.summary()))
    owed = OwedWork(lookback=timedelta(hours=1), overlap=timedelta(minutes=5), seen_bytes=1 << 20)
    owed.remember(run.ref, ("FAILED", T0), facts, settled=False)
    with_facts = owed.seen.held

    owed.settle(run.ref)

    assert with_facts > 2000 + owed.seen.held  # the message and the facts were counted ...
    assert 200 < owed.seen.held < 600  # ... and are no longer held: a marker and the run's name


def test_facts_found_new_while_no_ledger_answers_are_remembered_within_a_byte_budget() -> None:
    # Without a ledger that answers, the recorder remembers which facts it found new; a ledger
    # down for hours must not grow that memory without a bound (it was a plain set).
    import logging

    from prometheus_client import CollectorRegistry

    from rerund.runtime.metrics import Metrics
    from rerund.runtime.reconcile.recorder import Recorder

    recorder: Recorder[Any] = Recorder(metrics=Metrics(CollectorRegistry()), log=logging.getLogger("t"))
    fallback = next(c for c in recorder.caches if c.name == "novel_fallback")
    fallback.budget = 10_000
    found = [recorder.novel("decision", ("run", i), lambda lg: True) for i in range(1_000)]
    assert found == [True] * 1_000
    assert 0 < fallback.held <= fallback.budget and len(fallback) < 1_000
    assert recorder.novel("decision", ("run", 999), lambda lg: True) is False  # the newest: once


def test_no_budget_counts_are_kept_until_a_budget_comes_into_force_and_then_they_count_every_rerun(
    tmp_path: Path,
) -> None:
    # Budget counts cost ~500 bytes a rerun of the window; with no budget in force nothing reads
    # them. A reload that brings a budget in counts every rerun the index holds, at once.
    from .test_reconcile import POLICIES

    world = World(tmp_path)
    for name in ("aaa", "bbb"):
        world.cp.add_failed(name, at=T0)
    world.clock.advance(60)
    world.sync()
    assert len(world.cp.reruns()) == 2
    assert world.rec._index.counting is False

    world.set_policies(
        POLICIES.replace(
            "      scope: failed_action\n",
            "      scope: failed_action\n      budget: {max_reruns: 3, per: 1h}\n",
        )
    )
    world.rec.policies_changed()
    for name in ("ccc", "ddd"):
        world.cp.add_failed(name, at=world.clock())
    world.clock.advance(60)
    world.sync()

    assert world.rec._index.counting is True
    assert len(world.cp.reruns()) == 3  # the two reruns from before the budget count: one slot left
    assert world.metric("rerund_budget_deferrals_total", budget="transient") == 1


def test_checked_lineage_claims_follow_the_reruns_window_not_the_history(tmp_path: Path) -> None:
    # A new process checks the lineage claim of every rerun its first listing finds; a full
    # listing later forgets the claims of reruns that left the window (they are listed no more).
    world = World(tmp_path, overlap=timedelta(minutes=1))
    for i in range(20):
        world.cp.add_failed(f"old-{i:02d}", at=world.clock())
    world.clock.advance(60)
    world.sync()
    assert len(world.cp.reruns()) == 20

    world.rec = world.new_reconciler()  # a restart: the reruns are listed, their claims checked
    world.clock.advance(60)
    world.sync()
    claims = _caches(world)["lineage_claims"]
    assert len(claims) >= 20
    for rerun in world.cp.reruns():  # each rerun ends: no outcome left to follow
        world.cp.fail(rerun.ref.name, phase="SUCCEEDED")
    world.sync()

    for _ in range(3):  # past the resync window and a full relisting
        world.clock.advance(700)
        world.sync()

    assert len(claims) == 0 and claims.held == 0
    assert len(world.cp.reruns()) == 20  # nothing issued again
    assert world.metric("rerund_cache_bytes", cache="lineage_claims") == 0


def test_the_seen_cache_holds_the_window_and_a_stream_snapshot_not_an_hour_of_failures(
    tmp_path: Path,
) -> None:
    # What asks the seen-cache about a settled failure: the next resync (its window is kept past
    # the bounds) and a reconnected watch stream, whose snapshot is each scope's latest 100 runs.
    world = World(tmp_path, overlap=timedelta(minutes=1))
    waves, per_wave = 6, 1_000
    for wave in range(waves):
        for i in range(per_wave):
            world.cp.add_failed(f"w{wave}-{i:04d}", at=world.clock())
        world.clock.advance(10)
        world.sync()
        world.clock.advance(600)  # the wave leaves the resync window (after the next listing)
    world.sync()

    assert len(world.cp.reruns()) == waves * per_wave  # each failure rerun once
    assert world.cp.calls["read_failure"] == waves * per_wave  # ... and read once
    seen = _caches(world)["seen"]
    assert len(seen) <= 2_000  # the window and a snapshot's worth, not the history (6,000)

    latest = sorted((r for r in world.cp.runs.values() if r.request is None), key=lambda r: r.changed_at)[
        -100:
    ]

    async def replay() -> None:  # a reconnect: the snapshot of the latest runs again
        for run in latest:
            await world.rec.on_watch(run.summary())
        assert await world.rec.drain(timeout=10)

    asyncio.run(replay())
    assert world.cp.calls["read_failure"] == waves * per_wave  # no failure read again
    assert len(world.cp.reruns()) == waves * per_wave
