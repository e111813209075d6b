"""Where each resync pass lists from (``rerund.runtime.reconcile.windows``), without a control
plane: the failed runs listing goes deep every ``DEEP_LISTING_EVERY`` and after a failed
listing, and the reruns listing reaches back to what is followed, by at most
``MAX_LISTING_REACH``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from rerund.core.model import ErrorInfo
from rerund.core.runs import FailureFacts, RunRef, RunSummary
from rerund.core.scopes import Coverage
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.index import CHANGE_MARGIN
from rerund.runtime.reconcile.owed import OwedWork
from rerund.runtime.reconcile.recorder import DecisionRecorder, Tracked
from rerund.runtime.reconcile.windows import DEEP_LISTING_EVERY, MAX_LISTING_REACH, ListingWindows

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SCOPE = "ml/prod"
LOOKBACK = timedelta(hours=1)


def windows() -> tuple[ListingWindows, OwedWork, DecisionRecorder]:
    owed = OwedWork(lookback=LOOKBACK, overlap=timedelta(minutes=5))
    recorder = DecisionRecorder(
        metrics=Metrics(CollectorRegistry()), log=logging.getLogger("test.windows"), spawn=lambda c: c.close()
    )
    return ListingWindows(Coverage((("ml", "prod"),)), owed, recorder), owed, recorder


@pytest.mark.parametrize(
    ("last_listed", "failed", "deep"),
    [
        pytest.param(None, False, True, id="first-listing-is-deep"),
        pytest.param(timedelta(seconds=20), False, False, id="next-pass-lists-changes"),
        pytest.param(DEEP_LISTING_EVERY, False, True, id="deep-again-after-a-minute"),
        pytest.param(timedelta(seconds=20), True, True, id="deep-after-a-failed-listing"),
    ],
)
def test_failed_runs_are_listed_deep_every_minute_and_after_a_failure(
    last_listed: timedelta | None, failed: bool, deep: bool
) -> None:
    w, _, _ = windows()
    since = T0 - timedelta(minutes=5)
    now = T0
    if last_listed is not None:
        start, was_deep = w.failed_start(SCOPE, since, now - last_listed)
        assert (start, was_deep) == (since, True)
        w.failed_listed(SCOPE, now - last_listed, deep=True)
        if failed:
            w.failed_listing_lost(SCOPE)
    start, was_deep = w.failed_start(SCOPE, since, now)
    assert was_deep is deep
    assert start == (since if deep else now - last_listed - CHANGE_MARGIN)  # type: ignore[operator]


def test_a_shallow_listing_keeps_the_time_of_the_last_deep_one() -> None:
    w, _, _ = windows()
    since = T0 - timedelta(minutes=5)
    w.failed_listed(SCOPE, T0, deep=True)
    w.failed_listed(SCOPE, T0 + timedelta(seconds=40), deep=False)
    assert w.failed_start(SCOPE, since, T0 + timedelta(seconds=50)) == (
        T0 + timedelta(seconds=40) - CHANGE_MARGIN,
        False,
    )
    assert w.failed_start(SCOPE, since, T0 + DEEP_LISTING_EVERY) == (since, True)


def test_the_reruns_listing_reaches_back_to_the_longest_budget_window() -> None:
    w, _, _ = windows()
    assert w.reruns_since(SCOPE, T0, {}) == T0 - LOOKBACK
    assert w.reruns_since(SCOPE, T0, {"global": timedelta(hours=6)}) == T0 - timedelta(hours=6)


@pytest.mark.parametrize(
    ("age", "reach"),
    [
        pytest.param(timedelta(minutes=30), timedelta(minutes=30), id="within-the-reach"),
        pytest.param(timedelta(hours=5), MAX_LISTING_REACH, id="capped-at-the-reach"),
    ],
)
def test_a_followed_rerun_pulls_the_reruns_listing_back_at_most_the_reach(
    age: timedelta, reach: timedelta
) -> None:
    w, _, recorder = windows()
    since = T0 - LOOKBACK
    recorder.track(Tracked(RunRef("ml", "prod", "r1"), "oom", "root", 1, since - age))
    assert w.reruns_since(SCOPE, T0, {}) == since - reach


def test_a_failure_still_owed_pulls_the_reruns_listing_back_too() -> None:
    w, owed, _ = windows()
    failed_at = T0 - LOOKBACK - timedelta(minutes=10)
    summary = RunSummary(RunRef("ml", "prod", "abc"), "FAILED", ended_at=failed_at)
    owed.owe(FailureFacts(summary, {}, "a0", "train.fit", ErrorInfo(), failed_at), None)
    assert w.reruns_since(SCOPE, T0, {}) == failed_at


def test_a_run_is_listed_under_the_scope_that_finds_it() -> None:
    w, _, _ = windows()
    assert w.key_of(RunRef("ml", "prod", "abc")) == SCOPE
    assert w.key_of(RunRef("etl", "prod", "abc")) == "etl/prod"
    assert w.covers(RunRef("ml", "prod", "abc"))
    assert not w.covers(RunRef("etl", "prod", "abc"))


def test_pattern_scopes_are_listed_once_org_wide() -> None:
    owed = OwedWork(lookback=LOOKBACK, overlap=timedelta(minutes=5))
    recorder = DecisionRecorder(
        metrics=Metrics(CollectorRegistry()), log=logging.getLogger("test.windows"), spawn=lambda c: c.close()
    )
    w = ListingWindows(Coverage((("ml", "*"), ("ml", "prod"))), owed, recorder)
    assert w.scopes == (("*", "*"),)  # ml/prod is covered by the org-wide listing of ml/*
    assert w.covers(RunRef("ml", "staging", "abc"))
    assert not w.covers(RunRef("web", "prod", "abc"))


def test_the_scope_that_finds_a_run_is_the_same_when_asked_again_for_other_runs_of_its_project() -> None:
    """``key_of`` remembers each (project, domain)'s listing (asked for every failed run the
    stream carries): a second run of the same pair, and of other pairs, get their own keys,
    with a pattern scope's org-wide listing kept apart from a concrete one."""
    coverage = Coverage((("ml", "*"), ("etl", "prod")))
    owed = OwedWork(lookback=LOOKBACK, overlap=timedelta(minutes=5), coverage=coverage)
    recorder = DecisionRecorder(
        metrics=Metrics(CollectorRegistry()), log=logging.getLogger("test.windows"), spawn=lambda c: c.close()
    )
    w = ListingWindows(coverage, owed, recorder)
    for name in ("abc", "def"):
        assert w.key_of(RunRef("ml", "prod", name)) == "*/*"
        assert w.key_of(RunRef("etl", "prod", name)) == "etl/prod"
        assert w.key_of(RunRef("etl", "dev", name)) == "etl/dev"  # covered by none: its own scope
