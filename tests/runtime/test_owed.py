"""The owed work (seen-cache, pending failures, watermarks) without a control plane: its
invariants, stated in ``rerund.runtime.reconcile.owed``, hold for any sequence of events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.model import ErrorInfo
from rerund.core.runs import FailureFacts, RunRef, RunSummary
from rerund.runtime.reconcile.owed import LateError, OwedWork, error_recheck_at

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SCOPE = "ml/production"


def facts(name: str, failed_at: datetime, project: str = "ml") -> FailureFacts:
    summary = RunSummary(RunRef(project, "production", name), "FAILED", ended_at=failed_at)
    return FailureFacts(summary, {}, "a0", "train.fit", ErrorInfo(), failed_at)


def owed(**kw) -> OwedWork:
    return OwedWork(lookback=timedelta(hours=1), overlap=timedelta(minutes=5), **kw)


def test_a_first_start_looks_back_the_lookback_then_the_watermark_minus_the_overlap():
    w = owed()
    assert w.since(SCOPE, T0) == T0 - timedelta(hours=1)
    assert w.advance(SCOPE, T0) == T0
    assert w.since(SCOPE, T0 + timedelta(minutes=1)) == T0 - timedelta(minutes=5)


def test_a_watermark_ahead_of_now_never_moves_the_listing_past_now():
    """A ledger watermark kept by a daemon whose clock ran ahead of the control plane's."""
    w = owed()
    w.restore(SCOPE, T0 + timedelta(minutes=30))
    assert w.since(SCOPE, T0) == T0 - timedelta(minutes=5)


def test_the_watermark_stays_behind_a_failure_still_owed_until_it_is_settled():
    w = owed()
    f = facts("abc123", T0 - timedelta(minutes=30))
    w.owe(f, T0 + timedelta(minutes=10))
    assert w.advance(SCOPE, T0) == T0 - timedelta(minutes=30)
    assert w.advance("etl/production", T0) == T0  # another scope is not held
    w.settle(f.summary.ref)
    assert w.advance(SCOPE, T0) == T0


def test_a_failure_waiting_for_a_fix_holds_only_the_watermark_kept_for_a_restart():
    w = owed()
    f = facts("report1", T0 - timedelta(days=3))
    w.owe(f, T0 + timedelta(days=27), (("ml", "production", "report.monthly"), "v1"))
    assert w.advance(SCOPE, T0) == T0
    assert w.since(SCOPE, T0 + timedelta(minutes=1)) == T0 - timedelta(minutes=5)
    assert w.durable(SCOPE, T0) == T0 - timedelta(days=3)
    w.settle(f.summary.ref)
    assert w.durable(SCOPE, T0) == T0


def test_pending_failures_are_due_at_their_time_or_at_the_next_pass_unless_busy():
    w = owed()
    later, now_, unread = facts("later", T0), facts("now", T0), facts("unread", T0)
    w.owe(later, T0 + timedelta(minutes=1))
    w.owe(now_, T0)
    w.owe_unread(unread.summary, T0)
    assert set(w.due(T0)) == {now_.summary.ref, unread.summary.ref}
    assert w.due(T0, busy={now_.summary.ref}) == [unread.summary.ref]
    assert len(w.due(T0 + timedelta(minutes=1))) == 3


def test_a_settled_failure_is_decided_until_its_marker_changes_even_across_a_reload():
    """Its decision was carried out (a rerun issued, given up, ignored) and is final: a reload
    does not make it again (issue 24)."""
    w = owed()
    f = facts("abc123", T0)
    ref, marker = f.summary.ref, ("FAILED", T0)
    assert not w.decided(ref, marker)
    w.remember(ref, marker, f, settled=False)
    w.settle(ref)
    assert w.decided(ref, marker)
    assert not w.decided(ref, ("FAILED", T0 + timedelta(seconds=1)))  # failed again
    w.policies_changed()
    assert w.decided(ref, marker)
    assert ref not in w.pending


def test_the_seen_cache_keeps_the_facts_only_of_failures_that_may_be_decided_again():
    """A failure settled for good is never decided again: its facts are dropped (memory, issue
    24); a pending one, and one whose rerun was refused, keep theirs for a new decision."""
    w = owed()
    settled, refused, deferred = facts("settled", T0), facts("refused", T0), facts("deferred", T0)
    for f in (settled, refused, deferred):
        w.remember(f.summary.ref, ("FAILED", T0), f, settled=False)
    w.settle(settled.summary.ref)
    w.settle(refused.summary.ref, final=False)
    w.owe(deferred, T0 + timedelta(minutes=10))

    assert w.cached_facts(settled.summary.ref, ("FAILED", T0)) is None
    assert w.decided(settled.summary.ref, ("FAILED", T0))
    assert w.cached_facts(refused.summary.ref, ("FAILED", T0)) == refused
    assert w.cached_facts(deferred.summary.ref, ("FAILED", T0)) == deferred


def test_a_reload_owes_a_new_decision_to_what_is_owed_and_to_refused_reruns_the_last_resync_listed():
    """A reload's work is what is owed, not the seen-cache (issue 24): a pending failure with
    its facts is due at the next pass; one still to be read keeps its time; a settled failure
    stays settled; one whose rerun was refused (settled until the policies change) is owed a
    new decision when the last listing found it, and stays settled when older, as after a
    restart."""
    w = owed()
    settled, refused, old_refused, deferred, unread = (
        facts("settled", T0),
        facts("refused", T0),
        facts("old-refused", T0 - timedelta(minutes=30)),
        facts("deferred", T0),
        facts("unread", T0),
    )
    for f in (settled, refused, old_refused, deferred):
        w.remember(f.summary.ref, ("FAILED", f.failed_at), f, settled=False)
    w.settle(settled.summary.ref)
    w.settle(refused.summary.ref, final=False)
    w.settle(old_refused.summary.ref, final=False)
    w.owe(deferred, T0 + timedelta(minutes=10))
    w.owe_unread(unread.summary, T0, T0 + timedelta(seconds=2))
    w.listed(SCOPE, T0 - timedelta(minutes=5))

    assert w.policies_changed() == 2

    assert w.due_times() == {
        refused.summary.ref: None,
        deferred.summary.ref: None,
        unread.summary.ref: T0 + timedelta(seconds=2),
    }
    assert w.decided(settled.summary.ref, ("FAILED", settled.failed_at))
    assert not w.decided(
        old_refused.summary.ref, ("FAILED", old_refused.failed_at)
    )  # seen again: decided anew


def test_a_failure_found_gone_is_never_read_again_even_after_a_reload():
    w = owed()
    ref, marker = RunRef("ml", "production", "gone"), ("FAILED", T0)
    w.remember(ref, marker, None, settled=True)
    w.policies_changed()
    assert w.decided(ref, marker)
    assert ref not in w.pending


def test_the_seen_cache_keeps_what_the_next_listing_returns_past_its_capacity():
    w = owed(seen_capacity=2)
    w.listed(SCOPE, T0)
    for i in range(4):  # all in the listing window
        w.remember(
            RunRef("ml", "production", f"r{i}"), ("FAILED", T0 + timedelta(seconds=i)), None, settled=True
        )
    assert len(w.seen) == 4
    w.remember(RunRef("ml", "production", "old"), ("FAILED", T0 - timedelta(hours=1)), None, settled=True)
    assert len(w.seen) == 5  # the oldest entry is in the window: nothing can be evicted
    w.listed(SCOPE, T0 + timedelta(seconds=3))  # the window moved on
    w.remember(RunRef("ml", "production", "new"), ("FAILED", T0 + timedelta(seconds=9)), None, settled=True)
    # least recently seen first, until one the next listing returns again
    assert [r.name for r in w.seen] == ["r3", "old", "new"]


events = st.lists(
    st.tuples(
        st.sampled_from(["owe", "settle", "advance"]),
        st.integers(0, 5),
        st.integers(-120, 120),
    ),
    max_size=40,
)


@given(events)
def test_the_watermark_never_passes_a_failure_still_owed(steps):
    w = owed()
    now = T0
    for kind, n, minutes in steps:
        now += timedelta(minutes=1)
        f = facts(f"r{n}", T0 + timedelta(minutes=minutes))
        if kind == "owe":
            w.owe(f, None)
        elif kind == "settle":
            w.settle(f.summary.ref)
        else:
            wm = w.advance(SCOPE, now)
            assert wm <= now
            assert all(wm <= p.failed_at for p in w.pending.values())
            assert all(w.since(SCOPE, now) <= p.failed_at for p in w.pending.values())


# -- error details that arrive late -----------------------------------------------------------

WAIT, RECHECK = timedelta(seconds=60), timedelta(seconds=2)


@pytest.mark.parametrize(
    ("waited", "again_in"),
    [(0, 2), (30, 2), (59, 1), (60, None), (600, None)],
    ids=["just-failed", "half-way", "last-second", "wait-over", "long-over"],
)
def test_late_error_details_are_read_again_every_recheck_until_the_wait_is_over(waited, again_in):
    now = T0 + timedelta(seconds=waited)
    due = error_recheck_at(T0, now, wait=WAIT, recheck=RECHECK)
    assert due == (None if again_in is None else now + timedelta(seconds=again_in))


@given(st.integers(min_value=0, max_value=200))
def test_a_late_error_is_never_read_again_after_the_wait(seconds):
    due = error_recheck_at(T0, T0 + timedelta(seconds=seconds), wait=WAIT, recheck=RECHECK)
    assert due is None or T0 < due <= T0 + WAIT


def test_a_failure_waiting_for_its_error_details_stays_owed_and_is_said_once():
    w = owed(error_wait=WAIT, error_recheck=RECHECK)
    f = facts("abc", T0)
    assert w.await_error(f.summary, T0, T0) == LateError(T0 + RECHECK, first=True)
    assert w.await_error(f.summary, T0, T0 + RECHECK) == LateError(T0 + 2 * RECHECK, first=False)
    assert w.due(T0 + 2 * RECHECK) == [f.summary.ref]
    assert w.advance(SCOPE, T0 + RECHECK) == T0  # the watermark holds it

    assert w.await_error(f.summary, T0, T0 + WAIT) is None  # decided without them
    w.error_arrived(f.summary.ref)
    assert w.await_error(f.summary, T0 + WAIT, T0 + WAIT) == LateError(T0 + WAIT + RECHECK, first=True)


def test_a_failure_waiting_for_a_version_is_owed_with_its_task_and_version():
    w = owed()
    f = facts("abc", T0)
    w.owe(f, T0 + timedelta(days=1), (("ml", "production", "train.fit"), "v1"))
    assert w.waiting() == {f.summary.ref: (("ml", "production", "train.fit"), "v1")}
    assert w.advance(SCOPE, T0 + timedelta(hours=1)) == T0 + timedelta(hours=1)  # tracked on its own
    assert w.durable(SCOPE, T0 + timedelta(hours=1)) == T0
    w.settle(f.summary.ref)
    assert w.waiting() == {}
