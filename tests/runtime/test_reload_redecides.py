"""What a hot reload decides again (issue 24): only failures still owed, and nothing when the
reloaded policies decide as before.

A failure whose decision was carried out — its rerun issued, given up, ignored — is settled:
that decision is recorded and final, and a reload does not make it again (a reload at 20,000
cached failures costs what is still owed, not what the cache holds). A failure still owed
(deferred by a budget or a backoff, waiting for a fix, held) is decided again under the new
policies at the next pass. Each test counts the calls of the decision function the
reconciler is given (the real ``rerund.core.decide.decide``, counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rerund.core.decide import decide
from rerund.core.model import Decision, ErrorInfo, Failure
from rerund.core.rules import PolicySet
from rerund.policy import load_policies

from .fake_control_plane import T0
from .test_reconcile import POLICIES, World
from .test_waiting_failures import BUG, TASK, RelaunchingControlPlane
from .test_waiting_failures import POLICIES as WAITING

USER = ErrorInfo(kind="USER", code="ValueError", message="bad")
# One rerun an hour for the transient policy: of three transient failures, one is rerun and
# two are deferred by the budget (owed); two USER failures are ignored (settled).
BUDGETED = POLICIES.replace(
    "      scope: failed_action\n",
    "      scope: failed_action\n      budget: {max_reruns: 1, per: 1h}\n",
)


class CountedDecide:
    """``rerund.core.decide.decide``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, failure: Failure, policies: PolicySet, now: datetime) -> Decision:
        self.calls += 1
        return decide(failure, policies, now)


def settled_and_owed(tmp_path: Path) -> tuple[World, CountedDecide]:
    """Five cached failures: one rerun and two ignored (settled), two deferred (owed)."""
    counted = CountedDecide()
    world = World(tmp_path, BUDGETED, decide=counted)
    for name in ("aaa", "bbb", "ccc"):
        world.cp.add_failed(name, at=T0)
    for name in ("user1", "user2"):
        world.cp.add_failed(name, error=USER, at=T0)
    world.clock.advance(60)
    world.sync()
    assert len(world.cp.reruns()) == 1
    assert len(world.rec.pending()) == 2
    assert world.rec.cached_failures() == 5
    return world, counted


def _reconcile_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The loop's own lines (``rerund.reconcile``): the decision lines of ``rerund.decisions``
    reach the capture too when an earlier test left that logger at INFO."""
    return [r.getMessage() for r in caplog.records if r.name == "rerund.reconcile"]


def test_a_reload_of_policies_that_decide_as_before_decides_nothing_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file changed (a comment, a policy moved down a line), the rules did not: nothing is
    decided again, what is owed keeps its time, and the stream is not held back until a pass."""
    world, counted = settled_and_owed(tmp_path)
    owed = world.rec.pending()
    before = counted.calls

    world.set_policies("# reloaded, same rules\n\n" + BUDGETED)
    with caplog.at_level(logging.INFO, logger="rerund.reconcile"):
        world.rec.policies_changed()
    world.clock.advance(5)
    world.sync()

    assert counted.calls - before == 0
    assert world.rec.pending() == owed
    assert _reconcile_lines(caplog) == [
        "the reloaded policies decide as those in force did: no failure is decided again"
    ]
    # A failure on the stream right after the reload is decided at once, not left to a pass.
    world.cp.add_failed("new", error=USER, at=world.clock())
    asyncio.run(world.rec.on_watch(world.cp.runs[world.cp.ref("new")].summary()))
    assert counted.calls - before == 1


def test_a_changed_reload_decides_again_exactly_the_failures_still_owed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Settled failures (a rerun issued, two ignored) are not decided again; the two deferred
    by the budget are, under the new budget, and rerun now."""
    world, counted = settled_and_owed(tmp_path)
    before = counted.calls

    world.set_policies(BUDGETED.replace("max_reruns: 1,", "max_reruns: 10,"))
    with caplog.at_level(logging.INFO, logger="rerund.reconcile"):
        world.rec.policies_changed()
    assert _reconcile_lines(caplog) == [
        "policies changed: 2 failure(s) still owed are decided again at the next pass"
    ]
    world.clock.advance(5)
    world.sync()

    assert counted.calls - before == 2
    assert sorted(r.ref.name for r in world.cp.reruns()) == ["aaa-retry-1", "bbb-retry-1", "ccc-retry-1"]
    assert world.rec.pending() == {}
    assert world.metric("rerund_decisions_total", policy="bad-input", decision="ignore") == 2


def test_a_reload_that_would_rerun_an_ignored_failure_leaves_it_ignored(tmp_path: Path) -> None:
    """An ignored failure's decision was carried out: a reload that would rerun it leaves it
    (a failure of that kind from now on is rerun)."""
    world, _ = settled_and_owed(tmp_path)

    world.set_policies(BUDGETED.replace("    retry: false\n", "    retry: {scope: run}\n"))
    world.rec.policies_changed()
    world.clock.advance(5)
    world.sync()
    world.cp.add_failed("user3", error=USER, at=world.clock())
    world.clock.advance(15)  # past the 10 s backoff
    world.sync()

    assert "user1-retry-1" not in {r.ref.name for r in world.cp.reruns()}
    assert "user3-retry-1" in {r.ref.name for r in world.cp.reruns()}


@pytest.mark.parametrize(
    ("changed", "alike"),
    [
        pytest.param(lambda t: "# a comment\n\n" + t, True, id="a-comment-and-moved-lines"),
        pytest.param(lambda t: t.replace("max_reruns: 1,", "max_reruns: 2,"), False, id="a-budget"),
        pytest.param(lambda t: t.replace("name: bad-input", "name: bad-input-2"), False, id="a-name"),
        pytest.param(lambda t: t.replace("initial: 10s", "initial: 20s"), False, id="a-default-backoff"),
        pytest.param(lambda t: t.replace("kinds: [USER]", "kinds: [USER, SYSTEM]"), False, id="a-match"),
    ],
)
def test_policies_decide_alike_only_when_their_rules_are_the_same(
    tmp_path: Path, changed: Callable[[str], str], alike: bool
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(BUDGETED)
    second.write_text(changed(BUDGETED))
    assert load_policies([first]).decides_like(load_policies([second])) is alike


def test_a_failure_decided_again_after_a_reload_is_not_decided_once_more_by_a_listing_or_the_stream(
    tmp_path: Path,
) -> None:
    """The two failures still deferred under the new budget are decided once each: a later
    listing of the whole overlap, and the stream reporting them again, cost no decision."""
    world, counted = settled_and_owed(tmp_path)
    before = counted.calls

    world.set_policies(BUDGETED.replace("per: 1h}", "per: 2h}"))
    world.rec.policies_changed()
    world.clock.advance(5)
    world.sync()
    assert counted.calls - before == 2
    assert len(world.rec.pending()) == 2  # still deferred by the budget

    world.clock.advance(61)  # this pass lists the whole overlap again
    world.sync()
    for name in ("bbb", "ccc"):
        asyncio.run(world.rec.on_watch(world.cp.runs[world.cp.ref(name)].summary()))

    assert counted.calls - before == 2


def test_a_changed_reload_decides_again_a_failure_waiting_for_a_fix_and_not_a_settled_one(
    tmp_path: Path,
) -> None:
    """A failure waiting for a newer version of its task is owed something: a changed reload
    decides it again (it keeps waiting); a failure already rerun is not decided again."""
    counted = CountedDecide()
    world = World(tmp_path, WAITING, decide=counted)
    cp = RelaunchingControlPlane(world.clock)
    world.cp = cp  # type: ignore[assignment]
    world.rec = world.new_reconciler()
    cp.add_failed("report-1", task=TASK, error=BUG, at=T0)
    cp.add_failed("etl-1", task="etl.load", at=T0)
    world.clock.advance(60)
    world.sync()
    assert list(world.rec.pending()) == ["ml/production/report-1"]
    assert [r.ref.name for r in cp.reruns()] == ["etl-1-retry-1"]
    before = counted.calls

    world.set_policies(WAITING.replace("max_wait: 30d", "max_wait: 20d"))
    world.rec.policies_changed()
    world.clock.advance(5)
    world.sync()

    assert counted.calls - before == 1
    assert list(world.rec.pending()) == ["ml/production/report-1"]
    assert world.rec.pending()["ml/production/report-1"] == T0 + timedelta(days=20)


def test_a_failure_the_stream_decided_while_a_reload_pass_worked_is_not_decided_again_by_that_pass(
    tmp_path: Path,
) -> None:
    """A reload pass decides again each owed failure in turn, yielding to the event loop
    between chunks; the stream (a reconnect's snapshot) reports the same failures meanwhile and
    decides those the pass has not reached. The pass then skips them: each of the owed failures
    is decided once under the new policies, not twice (issue 24: a reload at 20,000 owed)."""
    hourly = POLICIES.replace(
        "backoff: {initial: 10s, factor: 2, max: 1m, jitter: 0}",
        "backoff: {initial: 1h, factor: 1, max: 1h, jitter: 0}",
    )
    counted = CountedDecide()
    world = World(tmp_path, hourly, decide=counted)
    names = [f"run{i:04d}" for i in range(300)]
    for name in names:
        world.cp.add_failed(name, at=T0)
    world.clock.advance(60)
    world.sync()
    assert len(world.rec.pending()) == len(names)  # each deferred by its 1 h backoff
    due = dict(world.rec.pending())

    world.set_policies(hourly.replace("name: transient", "name: transient-renamed"))
    world.rec.policies_changed()
    world.clock.advance(5)
    before = counted.calls
    summaries = [world.cp.runs[world.cp.ref(name)].summary() for name in names]
    stream: list[asyncio.Task[None]] = []

    def decide_and_replay_the_stream_once(failure: Failure, policies: PolicySet, now: datetime) -> Decision:
        if not stream:  # the first decision of the pass: the stream reconnects and replays
            stream.extend(asyncio.get_running_loop().create_task(world.rec.on_watch(s)) for s in summaries)
        return counted(failure, policies, now)

    world.rec._decide = decide_and_replay_the_stream_once

    async def reload_pass() -> None:
        await world.rec.sync()
        await asyncio.gather(*stream)
        assert await world.rec.drain(timeout=10)

    asyncio.run(reload_pass())

    assert counted.calls - before == len(names)
    assert world.rec.pending() == due  # the same due times, now under the renamed policy
    assert world.metric("rerund_decisions_total", policy="transient-renamed", decision="rerun") == len(names)
