"""A resync pass costs what changed, not what the budget window holds (issue 24).

The reruns index is listed in full once (at start, after a policy change widened the window,
and every ``FULL_RELISTING_EVERY``); every pass in between lists only the reruns of the
window that changed since the last listing, and the budget counts follow the reruns issued and
those leaving the window without being rebuilt. Failed runs likewise: the whole overlap every
``DEEP_LISTING_EVERY``, only those changed since the last listing in between. These tests
drive one pass at a time against the in-memory control plane and check that budgets stay
exact and nothing is missed while the listing shrinks.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rerund.runtime.reconcile.index import FULL_RELISTING_EVERY
from rerund.runtime.reconcile.loop import DEEP_LISTING_EVERY

from .fake_control_plane import T0, FakeRun
from .test_reconcile import POLICIES, World

BUDGET_OF_TWO = POLICIES.replace(
    "      scope: failed_action\n",
    "      scope: failed_action\n      budget: {max_reruns: 2, per: 1h}\n",
)


def _rerun_names(world: World) -> list[str]:
    return [r.ref.name for r in world.cp.reruns()]


def test_a_steady_pass_lists_only_the_reruns_that_changed_since_the_last_listing(tmp_path: Path) -> None:
    world = World(tmp_path, POLICIES + "budgets:\n  global: {max_reruns: 100, per: 1h}\n")
    for i in range(20):
        world.cp.add_failed(f"run{i:02d}", at=T0)
    world.clock.advance(60)
    world.sync()  # 20 reruns issued
    assert len(world.cp.reruns()) == 20
    world.clock.advance(120)

    first = world.sync()
    world.clock.advance(5)
    steady = world.sync()
    world.cp.fail("run00-retry-1", phase="SUCCEEDED")
    world.clock.advance(5)
    one_changed = world.sync()

    assert first.reruns_listed == 20
    assert steady.reruns_listed == 0
    assert one_changed.reruns_listed == 1


def test_budget_counts_stay_exact_while_reruns_leave_the_window(tmp_path: Path) -> None:
    world = World(tmp_path, BUDGET_OF_TWO)
    world.cp.add_failed("aaa", at=T0)
    world.cp.add_failed("bbb", at=T0)
    world.clock.advance(60)
    world.sync()  # two reruns at T0+60s: the budget is spent
    world.cp.add_failed("ccc")
    world.clock.advance(60)
    world.sync()
    assert _rerun_names(world) == ["aaa-retry-1", "bbb-retry-1"]

    # Passes every 10 minutes for the hour (incremental listings, a full one in between):
    # the budget stays spent until the two reruns leave the window.
    for _ in range(5):
        world.clock.advance(600)
        world.sync()
        assert _rerun_names(world) == ["aaa-retry-1", "bbb-retry-1"]
    world.clock.advance(541)  # T0+61m01s: the window no longer holds the reruns of T0+1m
    world.sync()
    assert _rerun_names(world) == ["aaa-retry-1", "bbb-retry-1", "ccc-retry-1"]

    # One slot left (ccc's rerun is in the window): one of the next two failures gets it.
    world.cp.add_failed("ddd")
    world.cp.add_failed("eee")
    world.clock.advance(15)  # past the policy's 10 s backoff
    world.sync()
    assert len(world.cp.reruns()) == 4
    assert world.metric("rerund_budget_deferrals_total", budget="transient") >= 2


def test_budget_counts_the_reruns_another_process_issued_between_two_passes(tmp_path: Path) -> None:
    world = World(tmp_path, BUDGET_OF_TWO)
    world.clock.advance(60)
    world.sync()
    world.clock.advance(FULL_RELISTING_EVERY.total_seconds() / 4)
    world.sync()  # an incremental pass: the index is listed already

    # Another replica reruns two failures of the same policy.
    for root in ("other1", "other2"):
        world.cp.add_failed(root, phase="SUCCEEDED")
        rerun = FakeRun(
            world.cp.ref(f"{root}-retry-1"),
            "RUNNING",
            labels={"rerund-root": root, "rerund-attempt": "1", "rerund-policy": "transient"},
            created_at=world.clock(),
            relation=world.cp.ref(root),
        )
        world.cp.runs[rerun.ref] = rerun
    world.clock.advance(5)
    world.cp.add_failed("mine")
    world.clock.advance(5)

    report = world.sync()

    assert report.reruns_listed == 2
    assert world.cp.calls_by_run[("create_rerun", "mine-retry-1")] == 0
    assert world.metric("rerund_budget_deferrals_total", budget="transient") == 1


def test_a_steady_pass_lists_only_the_failures_that_changed_since_the_last_listing(tmp_path: Path) -> None:
    world = World(tmp_path)
    for i in range(20):
        world.cp.add_failed(f"run{i:02d}", at=T0)
    world.clock.advance(60)
    first = world.sync()
    world.clock.advance(40)
    steady = world.sync()  # the failures are inside the overlap still, and listed already
    world.clock.advance(DEEP_LISTING_EVERY.total_seconds())
    deep = world.sync()

    assert (first.failed_runs, steady.failed_runs, deep.failed_runs) == (20, 0, 20)


def test_a_failure_shown_late_is_found_by_the_next_listing_of_the_whole_overlap(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.clock.advance(60)
    world.sync()
    world.clock.advance(5)
    world.sync()
    # A failure the control plane lists only now, two minutes after it ended (inside the overlap).
    world.cp.add_failed("late", at=world.clock() - timedelta(minutes=2))
    world.clock.advance(5)
    world.sync()
    for _ in range(int(DEEP_LISTING_EVERY.total_seconds() // 5) + 1):
        world.clock.advance(5)
        world.sync()

    assert _rerun_names(world) == ["late-retry-1"]
