"""The outage breaker as a state machine, without I/O: opening, holding, one canary at a time,
closing and releasing, and canaries not counted against max_attempts."""

from __future__ import annotations

import functools
import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerund.core.decide import decide
from rerund.core.incidents import Breaker, Held, IncidentRecord, IncidentRule, Members, canaries_of
from rerund.core.model import ErrorInfo, Failure, GiveUp, Ignore, Rerun
from rerund.core.rules import PolicySet
from rerund.core.runs import LABEL_ATTEMPT, LABEL_CANARIES, LABEL_ROOT
from rerund.policy import load_policies

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
RULE = IncidentRule(failures=3, within=timedelta(minutes=1), probe_every=timedelta(seconds=30))
POLICY = """
policies:
  - name: any
    retry: {max_attempts: 3, backoff: {initial: 1s, factor: 1, max: 1s, jitter: 0}}
"""


@functools.cache
def loads_policies(body: str) -> PolicySet:
    """A PolicySet loaded from a real file (cached: Hypothesis calls this thousands of times)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text("apiVersion: rerund/v1\n" + body)
        return load_policies([path])


def failure(run: str, at: datetime = T0, attempt: int = 0, canaries: int = 0) -> Failure:
    labels = {LABEL_ROOT: run.split("-retry-")[0], LABEL_ATTEMPT: str(attempt)} if attempt else {}
    if canaries:
        labels[LABEL_CANARIES] = str(canaries)
    return Failure(
        run=run,
        root=run.split("-retry-")[0],
        attempt=attempt,
        task="etl.load",
        labels=labels,
        error=ErrorInfo(kind="SYSTEM", code="S3Error", message="503 Slow Down (request id 4F2A)"),
        failed_at=at,
    )


def rerun_of(f: Failure, now: datetime) -> Rerun:
    decision = decide(f, loads_policies(POLICY), now)
    assert isinstance(decision, Rerun)
    return decision


def opened(breaker: Breaker, n: int = 3) -> str:
    fp = rerun_of(failure("r0"), T0).fingerprint
    for i in range(n):
        breaker.failed(fp, f"p/d/r{i}", T0 + timedelta(seconds=i), T0 + timedelta(seconds=i))
    return fp


def test_failures_of_one_fingerprint_within_the_window_open_an_incident() -> None:
    breaker = Breaker(RULE)
    assert breaker.failed("aa", "p/d/r0", T0, T0) is None
    assert breaker.failed("aa", "p/d/r0", T0, T0) is None  # the same run counts once
    assert breaker.failed("aa", "p/d/r1", T0 + timedelta(seconds=10), T0) is None
    record = breaker.failed("aa", "p/d/r2", T0 + timedelta(seconds=20), T0 + timedelta(seconds=20))
    assert record is not None
    assert (record.fingerprint, record.state, record.failures) == ("aa", "open", 3)
    assert breaker.is_open("aa")


def test_failures_spread_wider_than_the_window_open_nothing() -> None:
    breaker = Breaker(RULE)
    for i in range(10):
        at = T0 + timedelta(seconds=40 * i)
        assert breaker.failed("aa", f"p/d/r{i}", at, at) is None
    assert not breaker.is_open("aa")


def test_the_breaker_off_opens_nothing_and_changes_no_decision() -> None:
    breaker = Breaker(None)
    decision = rerun_of(failure("r0"), T0)
    for i in range(50):
        assert breaker.failed(decision.fingerprint, f"p/d/r{i}", T0, T0) is None
    assert breaker.gate(decision, "p/d/r0", "p/d/x", T0) is decision


def test_a_rerun_of_an_open_incident_is_held_with_the_incident_in_the_reason() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    held = breaker.gate(rerun_of(failure("r0"), T0), "p/d/r0", "p/d/r0-retry-1", T0 + timedelta(seconds=5))
    assert isinstance(held, Held)
    assert held.incident == fp
    assert held.reason.startswith(f"incident {fp} open since 2026-12-05T08:00:02Z: holding 1 reruns")
    assert "next canary at 2026-12-05T08:00:32Z" in held.reason
    assert held.not_before == T0 + timedelta(seconds=32)
    assert held.to_json()["decision"] == "defer"
    assert held.to_json()["incident"] == fp
    assert breaker.held_total() == 1


def test_one_canary_goes_out_per_probe_and_is_counted_in_its_labels() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    probe = T0 + timedelta(seconds=40)
    decisions = [
        breaker.gate(rerun_of(failure(f"r{i}"), T0), f"p/d/r{i}", f"p/d/r{i}-retry-1", probe)
        for i in range(3)
    ]
    canaries = [d for d in decisions if not isinstance(d, Held)]
    assert len(canaries) == 1
    canary = canaries[0]
    assert isinstance(canary, Rerun)
    assert canary.labels[LABEL_CANARIES] == "1"
    assert canary.reason.startswith(f"incident {fp} open since")
    assert "not counted against max_attempts" in canary.reason
    assert breaker.canary_runs() == {"p/d/r0-retry-1": fp}
    assert "canary 'r0-retry-1' out since 2026-12-05T08:00:40Z" in decisions[1].reason


def test_a_failed_canary_waits_probe_every_before_the_next() -> None:
    breaker = Breaker(RULE)
    opened(breaker)
    first = T0 + timedelta(seconds=40)
    breaker.gate(rerun_of(failure("r0"), T0), "p/d/r0", "p/d/r0-retry-1", first)
    assert (
        breaker.canary_finished("p/d/r0-retry-1", succeeded=False, now=first + timedelta(seconds=5)) is None
    )
    early = breaker.gate(
        rerun_of(failure("r1"), T0), "p/d/r1", "p/d/r1-retry-1", first + timedelta(seconds=10)
    )
    assert isinstance(early, Held)
    later = breaker.gate(
        rerun_of(failure("r1"), T0), "p/d/r1", "p/d/r1-retry-1", first + timedelta(seconds=30)
    )
    assert not isinstance(later, Held)


def test_a_successful_canary_closes_the_incident_and_releases_the_held_reruns() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    now = T0 + timedelta(seconds=40)
    for i in range(4):
        breaker.gate(rerun_of(failure(f"r{i}"), T0), f"p/d/r{i}", f"p/d/r{i}-retry-1", now)
    closed = breaker.canary_finished("p/d/r0-retry-1", succeeded=True, now=now + timedelta(seconds=9))
    assert closed is not None
    assert sorted(closed.released) == ["p/d/r1", "p/d/r2", "p/d/r3"]
    assert (closed.record.state, closed.record.held, closed.record.canaries) == ("closed", 0, 1)
    assert not breaker.is_open(fp)
    after = rerun_of(failure("r1"), T0)
    assert breaker.gate(after, "p/d/r1", "p/d/r1-retry-1", now) is after
    assert breaker.held_total() == 0


def test_canary_reruns_are_not_counted_against_max_attempts() -> None:
    # Attempt 3 of a lineage whose 3 reruns include 1 canary: 2 counted, so it reruns (as
    # attempt 4, a unique name) instead of giving up; without the canary it would give up.
    policies = loads_policies(POLICY)
    counted = decide(failure("r0-retry-3", attempt=3, canaries=1), policies, T0)
    assert isinstance(counted, Rerun)
    assert counted.name == "r0-retry-4"
    assert counted.labels[LABEL_CANARIES] == "1"
    assert "attempt 3 of max_attempts=3 (1 canary rerun(s) of an incident not counted)" in counted.reason
    exhausted = decide(failure("r0-retry-3", attempt=3), policies, T0)
    assert isinstance(exhausted, GiveUp)


@pytest.mark.parametrize(
    ("label", "attempt", "expected"),
    [("2", 3, 2), ("9", 3, 3), ("", 3, 0), ("-1", 3, 0), ("x", 3, 0), ("99999", 3, 0)],
    ids=["counted", "never-more-than-attempts", "empty", "negative", "not-a-number", "too-long"],
)
def test_the_canaries_label_is_read_defensively(label: str, attempt: int, expected: int) -> None:
    assert canaries_of({LABEL_CANARIES: label}, attempt) == expected


def test_an_open_incident_survives_a_restart_through_its_record() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    breaker.gate(rerun_of(failure("r0"), T0), "p/d/r0", "p/d/r0-retry-1", T0 + timedelta(seconds=40))
    saved = [IncidentRecord.from_json(r.to_json()) for r in breaker.take_dirty()]
    assert [r.canary for r in saved] == ["p/d/r0-retry-1"]
    again = Breaker(RULE)
    again.restore(saved)
    assert again.is_open(fp)
    assert again.canary_runs() == {"p/d/r0-retry-1": fp}
    closed = again.canary_finished("p/d/r0-retry-1", succeeded=True, now=T0 + timedelta(minutes=1))
    assert closed is not None and closed.record.canaries == 1


def test_an_incident_is_named_by_its_failures_not_by_when_it_was_decided() -> None:
    # A daemon killed before it saved the incident decides the same failures again after the
    # restart, later by its clock: the incident it opens has the same key (notifications use it),
    # and its first canary is still ``probe_every`` after this opening.
    fp = rerun_of(failure("r0"), T0).fingerprint
    keys = []
    for now in (T0 + timedelta(seconds=5), T0 + timedelta(minutes=7)):
        breaker = Breaker(RULE)
        records = [breaker.failed(fp, f"p/d/r{i}", T0 + timedelta(seconds=i), now) for i in range(3)]
        assert records[-1] is not None
        keys.append(records[-1].key)
        early = breaker.gate(rerun_of(failure("r0"), now), "p/d/r0", "p/d/r0-retry-1", now)
        assert isinstance(early, Held)
        due = breaker.gate(rerun_of(failure("r0"), now), "p/d/r0", "p/d/r0-retry-1", now + RULE.probe_every)
        assert isinstance(due, Rerun) and due.labels[LABEL_CANARIES] == "1"
    print("incident keys:", keys)
    assert keys[0] == keys[1] == f"{fp}:2026-12-05T08:00:02Z"


def test_decisions_other_than_reruns_pass_the_breaker_unchanged() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker)
    ignore = Ignore(reason="x", source_run="r9", fingerprint=fp)
    assert breaker.gate(ignore, "p/d/r9", "", T0) is ignore


def test_removing_the_rule_closes_every_incident_and_releases_its_reruns() -> None:
    breaker = Breaker(RULE)
    opened(breaker)
    breaker.gate(rerun_of(failure("r0"), T0), "p/d/r0", "p/d/r0-retry-1", T0 + timedelta(seconds=5))
    closed = breaker.configure(None, T0 + timedelta(seconds=6))
    assert [c.released for c in closed] == [("p/d/r0",)]
    assert breaker.open_incidents() == []


# --- invariants ------------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["fail", "gate", "canary_ok", "canary_failed"]),
        st.integers(min_value=0, max_value=7),  # which run
        st.integers(min_value=0, max_value=20),  # seconds since the previous event
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_breaker_invariants_hold_for_any_sequence_of_events(events: list[tuple[str, int, int]]) -> None:
    """At most one canary out per incident; canaries of one incident at least probe_every
    apart; a closed incident holds nothing; nothing of an open fingerprint passes unchanged."""
    breaker = Breaker(RULE)
    fp = rerun_of(failure("r0"), T0).fingerprint
    now = T0
    canary_times: list[datetime] = []
    for kind, i, step in events:
        now += timedelta(seconds=step)
        if kind == "fail":
            breaker.failed(fp, f"p/d/r{i}", now, now)
        elif kind == "gate":
            decision = rerun_of(failure(f"r{i}", at=now - timedelta(seconds=5)), now)
            was_open = breaker.is_open(fp)
            out = breaker.gate(decision, f"p/d/r{i}", f"p/d/r{i}-retry-1", now)
            if was_open:
                assert out is not decision
                if not isinstance(out, Held):
                    canary_times.append(now)
        else:
            canaries = breaker.canary_runs()
            for target in list(canaries):
                closed = breaker.canary_finished(target, succeeded=kind == "canary_ok", now=now)
                if closed is not None:
                    assert closed.record.held == 0
                    assert not breaker.is_open(fp)
                    canary_times = []
        assert len(breaker.canary_runs()) <= 1
        assert all(b - a >= RULE.probe_every for a, b in itertools.pairwise(canary_times))
        if not breaker.is_open(fp):
            assert breaker.held_total() == 0


def test_held_failures_decided_again_on_release_do_not_reopen_the_incident() -> None:
    breaker = Breaker(RULE)
    fp = opened(breaker, n=5)
    now = T0 + timedelta(seconds=40)
    breaker.gate(rerun_of(failure("r0"), T0), "p/d/r0", "p/d/r0-retry-1", now)
    assert breaker.canary_finished("p/d/r0-retry-1", succeeded=True, now=now) is not None
    for i in range(5):  # the released failures, decided again
        assert breaker.failed(fp, f"p/d/r{i}", T0 + timedelta(seconds=i), now) is None
    assert not breaker.is_open(fp)
    later = now + timedelta(seconds=1)
    for i in range(3):  # new failures after the close open a new incident
        opened_again = breaker.failed(fp, f"p/d/n{i}", later, later)
    assert opened_again is not None and opened_again.opened_at == later


FAILURES = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=40)),
    min_size=1,
    max_size=25,
)  # (which run, seconds since the previous failure)


@settings(max_examples=200, deadline=None)
@given(FAILURES, st.integers(min_value=0, max_value=25))
def test_a_restart_anywhere_opens_the_incident_at_the_same_failure_with_the_same_count(
    failures: list[tuple[int, int]], cut: int
) -> None:
    """Issue 27: what the breaker counts (``Members``) and its incidents, saved and restored
    across a restart at any point, give the same openings and counts as no restart."""

    def replay(restart_at: int | None) -> list[tuple[bool, int]]:
        breaker, at, out = Breaker(RULE), T0, []
        saved: dict = {}  # the ledger's members, saved after every failure (a pass)
        for i, (run, gap) in enumerate(failures):
            if i == restart_at:
                records = breaker.recent()
                breaker = Breaker(RULE)
                breaker.restore(records)
                breaker.restore_members({fp: m for fp, m in saved.items() if m != Members()})
            at += timedelta(seconds=gap)
            opened = breaker.failed("aa", f"p/d/r{run}", at, at, lineage=f"r{run}")
            saved.update(breaker.take_members())
            open_now = breaker.open_incidents()
            out.append((opened is not None, open_now[0].failures if open_now else 0))
        return out

    assert replay(cut) == replay(None)
