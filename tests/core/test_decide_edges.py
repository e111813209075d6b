"""Edges of the decision held exactly: budget defaults and ties, the default ``max_wait`` of
``task_version: newer``, and the whole ``explain`` trace of a rerun and of a defer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rerund.core.decide import decide, explain
from rerund.core.model import Defer, GiveUp, Rerun, WaitForVersion
from rerund.core.rules import DEFAULT_MAX_WAIT

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # as the make_failure fixture's failed_at

BUDGETED = """
budgets: {global: {max_reruns: 10, per: 1h}}
policies:
  - name: net
    retry: {budget: {max_reruns: 2, per: 10m}, backoff: {initial: 10s, factor: 2, max: 10m, jitter: 0}}
"""

NEWER = """
policies:
  - name: fix
    retry: {scope: relaunch, task_version: newer, backoff: {initial: 10s, factor: 1, max: 10s, jitter: 0}}
"""
BUG = {"kind": "USER", "code": "ValueError", "message": "ValueError: bad column"}


def _head(origin: str) -> list[str]:
    return [
        f"policy 'net' ({origin}) matches: phases: FAILED is in [FAILED, TIMED_OUT]",
        "attempt: lineage 'abc123' has 0 rerun(s) so far; the next would be attempt 1 of max_attempts=3",
        "backoff: base = min(10s * 2^0, 10m) = 10s; jitter ±0 -> delay 10s; due at 2026-11-24T10:00:10Z",
        "scope run",
        "name: <root>-retry-<attempt> of lineage 'abc123' -> 'abc123-retry-1'",
        "changes: none besides the lineage labels",
    ]


def test_the_trace_of_a_rerun_says_every_step_and_every_budget(policies, make_failure):
    ps = policies(BUDGETED)
    result = explain(make_failure(budget_used={"net": 1}), ps, T0)
    assert isinstance(result.decision, Rerun)
    assert result.trace == [
        *_head(str(ps.rules[0].origin)),
        "budget 'global': 0 of 10 reruns used per 1h: a slot is free",  # no count: none used
        "budget 'net': 1 of 2 reruns used per 10m: a slot is free",
        "rerun as 'abc123-retry-1' at 2026-11-24T10:00:10Z",
    ]


def test_when_two_budgets_free_a_slot_at_the_same_time_the_global_one_is_named(policies, make_failure):
    ps = policies(BUDGETED)
    failure = make_failure(
        budget_used={"global": 10, "net": 2},
        budget_oldest={"global": T0 - timedelta(minutes=50), "net": T0},
    )
    result = explain(failure, ps, T0)
    d = result.decision
    assert isinstance(d, Defer)
    assert (d.budget, d.not_before) == ("global", T0 + timedelta(minutes=10))
    assert d.reason == (
        "policy 'net' defers attempt 1 of run 'abc123': budget 'global' has used 10 of 10 reruns per 1h; "
        "a slot frees at 2026-11-24T10:10:00Z"
    )
    assert result.trace == [
        *_head(str(ps.rules[0].origin)),
        "budget 'global': 10 of 10 reruns used per 1h: exhausted, a slot frees at 2026-11-24T10:10:00Z",
        "budget 'net': 2 of 2 reruns used per 10m: exhausted, a slot frees at 2026-11-24T10:10:00Z",
        "defer until 2026-11-24T10:10:00Z",
    ]
    assert decide(failure, ps, T0) == d


def test_the_last_slot_of_a_budget_is_used_and_the_next_defers(policies, make_failure):
    ps = policies(BUDGETED)
    assert isinstance(decide(make_failure(budget_used={"global": 9, "net": 1}), ps, T0), Rerun)
    full = decide(make_failure(budget_used={"global": 9, "net": 2}), ps, T0)
    assert isinstance(full, Defer) and full.budget == "net"
    assert full.not_before == T0 + timedelta(minutes=10)  # no oldest known: a whole window from now


def test_newer_waits_one_day_by_default_then_gives_up(policies, make_failure):
    assert DEFAULT_MAX_WAIT == timedelta(days=1)
    ps = policies(NEWER)
    failure = make_failure(error=BUG, task_version="v1", latest_version="v1")
    waiting = decide(failure, ps, T0 + timedelta(hours=23, minutes=59))
    assert isinstance(waiting, WaitForVersion)
    assert waiting.not_before == T0 + timedelta(days=1)
    assert waiting.reason.endswith("at the latest until 2026-11-25T10:00:00Z (max_wait=1d), then gives up")
    over = decide(failure, ps, T0 + timedelta(days=1))
    assert isinstance(over, GiveUp)
    assert over.reason == (
        "policy 'fix' gives up on run 'abc123': no version of task 'train.fit' newer than 'v1' was "
        "deployed within max_wait=1d (until 2026-11-25T10:00:00Z)"
    )
