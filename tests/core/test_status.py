"""``rerund.core.status``: where each lineage stands, from ledger rows and listed reruns (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.rules import Budget
from rerund.core.status import (
    ListedRerun,
    compute_status,
    explanation_lines,
    lineage_lines,
    lineage_story,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat()


def decision(
    run: str, kind: str, attempt: int | None, minutes: float, *, root: str = "r", **extra: Any
) -> dict:
    return {
        "at": at(minutes),
        "project": "p",
        "domain": "d",
        "run": run,
        "root": root,
        "decision": kind,
        "policy": extra.pop("policy", "pol"),
        "attempt": attempt,
        "reason": extra.pop("reason", f"{kind} {run} attempt {attempt}"),
        **extra,
    }


def _rerun_row(target: str, attempt: int, minutes: float, root: str, **fields: Any) -> dict:
    """A ledger row about rerun ``target`` (an issue or an outcome) of policy 'pol' in p/d."""
    return {
        "at": at(minutes),
        "project": "p",
        "domain": "d",
        "target": target,
        "root": root,
        "attempt": attempt,
        "policy": "pol",
        **fields,
    }


def issue(target: str, attempt: int, minutes: float, result: str = "created", root: str = "r") -> dict:
    return _rerun_row(target, attempt, minutes, root, scope="run", result=result, message="")


def outcome(target: str, attempt: int, minutes: float, phase: str, root: str = "r") -> dict:
    return _rerun_row(target, attempt, minutes, root, phase=phase)


def listed(name: str, attempt: int, phase: str, minutes: float = -1, root: str = "r", policy: str = "pol"):
    return ListedRerun("p", "d", name, root, attempt, policy, phase, NOW + timedelta(minutes=minutes))


CASES = [
    pytest.param(
        {"decisions": [decision("r", "rerun", 1, -5, not_before=at(30))]},
        ("due", 1, "rerun r attempt 1", NOW + timedelta(minutes=30)),
        id="a-rerun-not-created-yet-is-due-at-its-not-before",
    ),
    pytest.param(
        {"decisions": [decision("r", "defer", 1, -5, not_before=at(20), reason="budget 'b' is full")]},
        ("deferred", 1, "budget 'b' is full", NOW + timedelta(minutes=20)),
        id="a-defer-is-deferred-until-the-slot-frees",
    ),
    pytest.param(
        {
            "decisions": [decision("r", "rerun", 1, -5)],
            "issues": [issue("r-retry-1", 1, -4)],
            "reruns": [listed("r-retry-1", 1, "RUNNING")],
        },
        ("running", 1, "rerun 'r-retry-1' (attempt 1) is RUNNING", None),
        id="a-created-rerun-still-running",
    ),
    pytest.param(
        {
            "decisions": [decision("r", "rerun", 1, -5)],
            "issues": [issue("r-retry-1", 1, -4)],
            "outcomes": [outcome("r-retry-1", 1, -2, "SUCCEEDED")],
        },
        ("recovered", 1, "rerun 'r-retry-1' succeeded: lineage 'r' recovered at attempt 1", None),
        id="a-succeeded-rerun-recovers-the-lineage",
    ),
    pytest.param(
        {
            "decisions": [
                decision("r", "rerun", 1, -5),
                decision("r-retry-1", "give_up", 2, -1, reason="policy 'pol' gives up"),
            ],
            "issues": [issue("r-retry-1", 1, -4)],
            "outcomes": [outcome("r-retry-1", 1, -2, "FAILED")],
        },
        ("exhausted", 1, "policy 'pol' gives up", None),
        id="a-give-up-exhausts-the-lineage",
    ),
    pytest.param(
        {
            "decisions": [decision("r", "rerun", 1, -5)],
            "issues": [issue("r-retry-1", 1, -4)],
            "outcomes": [outcome("r-retry-1", 1, -2, "FAILED")],
        },
        (
            "awaiting decision",
            1,
            "rerun 'r-retry-1' (attempt 1) ended FAILED; the next pass decides about it",
            None,
        ),
        id="a-failed-rerun-without-a-decision-awaits-one",
    ),
    pytest.param(
        {"decisions": [decision("r", "ignore", None, -5, reason="no policy matches")]},
        ("ignored", 0, "no policy matches", None),
        id="an-ignored-failure-is-not-in-flight",
    ),
    pytest.param(
        {"reruns": [listed("r-retry-1", 1, "FAILED"), listed("r-retry-2", 2, "SUCCEEDED")]},
        ("recovered", 2, "rerun 'r-retry-2' succeeded: lineage 'r' recovered at attempt 2", None),
        id="the-control-plane-alone-shows-a-recovery-without-a-ledger",
    ),
]


@pytest.mark.parametrize(("facts", "expected"), CASES)
def test_each_lineage_state_is_derived_from_the_recorded_facts(facts: dict, expected: tuple) -> None:
    status = compute_status(now=NOW, **facts)
    states = [*status.in_flight, *status.recovered, *status.exhausted]
    state, attempt, why, due = expected
    if state == "ignored":
        assert states == [] and status.ignored == 1
        return
    [lineage] = states
    assert (lineage.state, lineage.attempt, lineage.why, lineage.due) == (state, attempt, why, due)


def test_the_daemons_pending_due_time_wins_over_the_recorded_one() -> None:
    status = compute_status(
        now=NOW,
        decisions=[decision("r", "rerun", 1, -5, not_before=at(30))],
        pending={"p/d/r": NOW + timedelta(minutes=31)},
    )
    assert status.in_flight[0].due == NOW + timedelta(minutes=31)


def test_budgets_count_listed_reruns_in_their_window_and_say_when_a_slot_frees() -> None:
    reruns = [
        listed("a-retry-1", 1, "SUCCEEDED", -30, root="a", policy="pol"),
        listed("b-retry-1", 1, "RUNNING", -10, root="b", policy="other"),
        listed("c-retry-1", 1, "FAILED", -90, root="c", policy="pol"),  # outside the 1h window
    ]
    status = compute_status(
        now=NOW,
        decisions=[],
        reruns=reruns,
        budgets={"global": Budget(10, timedelta(hours=1)), "pol": Budget(1, timedelta(hours=1))},
    )
    assert [b.to_json() for b in status.budgets] == [
        {
            "budget": "global",
            "used": 2,
            "max_reruns": 10,
            "per": "1h",
            "full": False,
            "frees_at": "2026-11-30T12:30:00Z",
        },
        {
            "budget": "pol",
            "used": 1,
            "max_reruns": 1,
            "per": "1h",
            "full": True,
            "frees_at": "2026-11-30T12:30:00Z",
        },
    ]


def test_the_latest_reproduction_result_of_each_check_is_kept_with_its_diff() -> None:
    rows = [
        {"check": "c", "result": "match", "reason": "same", "scheduled_for": "2026-11-30T10:00:00Z"},
        {
            "check": "c",
            "result": "mismatch",
            "reason": "1 output differs",
            "scheduled_for": "2026-11-30T11:00:00Z",
            "rerun": "rp-c",
            "diff": [{"path": "outputs.loss", "message": "0.1 != 0.2"}],
        },
    ]
    [repro] = compute_status(now=NOW, decisions=[], reproductions=rows).reproductions
    assert repro.to_json() == {
        "check": "c",
        "result": "mismatch",
        "reason": "1 output differs",
        "scheduled_for": "2026-11-30T11:00:00Z",
        "rerun": "rp-c",
        "diff": [{"path": "outputs.loss", "message": "0.1 != 0.2"}],
    }


def test_a_lineage_story_reads_decision_create_outcome_in_order() -> None:
    story = lineage_story(
        [decision("r", "rerun", 1, -5), decision("r-retry-1", "give_up", 2, -1, reason="gives up")],
        [issue("r-retry-1", 1, -5)],
        [outcome("r-retry-1", 1, -2, "FAILED")],
    )
    assert [(s.event, s.text) for s in story] == [
        ("rerun", "rerun r attempt 1"),
        ("created", "rerun 'r-retry-1' created (attempt 1, scope run)"),
        ("outcome", "rerun 'r-retry-1' ended FAILED"),
        ("give_up", "gives up"),
    ]


def test_a_live_explanation_of_an_already_retried_run_names_its_reruns_and_state() -> None:
    status = compute_status(
        now=NOW,
        decisions=[decision("r", "rerun", 1, -5), decision("r-retry-1", "give_up", 2, -1, reason="gives up")],
        reruns=[listed("r-retry-1", 1, "FAILED")],
    )
    lines = lineage_lines("r", 0, [listed("r-retry-1", 1, "FAILED")], status.exhausted[0])
    assert lines == [
        "reruns:     1 rerun(s) of lineage 'r' exist: r-retry-1 (attempt 1, FAILED)",
        "note:       this run is attempt 0 of its lineage; the decision below was carried out already: "
        "attempt 1 exists as 'r-retry-1'",
        "state:      lineage exhausted: gives up",
    ]
    text = explanation_lines(
        "p/d/r",
        {"root": "r", "attempt": 0, "phase": "FAILED", "task": "t", "error": {"kind": "SYSTEM"}},
        {"decision": "rerun", "reason": "because"},
        ["step"],
        lines,
    )
    assert text[1] == "lineage:    root 'r', attempt 0 (0 rerun(s) issued before this run)"
    assert text[2:5] == lines and text[-2:] == ["trace:", "  1. step"]


KINDS = st.sampled_from(["rerun", "defer", "give_up", "ignore"])


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), KINDS, st.integers(1, 3), st.integers(-60, 0)),
        max_size=12,
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 3),
            st.sampled_from(["RUNNING", "FAILED", "SUCCEEDED", "QUEUED"]),
        ),
        max_size=6,
    ),
)
def test_every_lineage_is_in_exactly_one_place(decisions: list, reruns: list) -> None:
    rows = [decision(root, kind, n, m, root=root) for root, kind, n, m in decisions]
    listing = [listed(f"{root}-retry-{n}", n, phase, root=root) for root, n, phase in reruns]
    status = compute_status(now=NOW, decisions=rows, reruns=listing, recent=100)
    roots = [s.root for s in (*status.in_flight, *status.recovered, *status.exhausted)]
    assert len(roots) == len(set(roots))
    assert len(roots) + status.ignored == len({r for r, *_ in decisions} | {r for r, *_ in reruns})
    dues = [s.due for s in status.in_flight if s.due is not None]
    assert dues == sorted(dues)


def test_a_recovered_lineage_is_shown_at_its_recovery_not_at_a_restart_after_it() -> None:
    """Issue 28.8: a daemon restarted at minute -1 decides again about the run in its lookback
    and finds the rerun issued; the lineage recovered at minute -20 and stays shown there."""
    status = compute_status(
        now=NOW,
        decisions=[decision("r", "rerun", 1, -30), decision("r", "rerun", 1, -1)],
        issues=[issue("r-retry-1", 1, -29), issue("r-retry-1", 1, -1, result="already_exists")],
        outcomes=[outcome("r-retry-1", 1, -20, "SUCCEEDED")],
    )

    [recovered] = status.recovered
    assert recovered.at == NOW - timedelta(minutes=20)


def test_an_exhausted_lineage_is_shown_at_its_first_give_up_not_at_a_restart_after_it() -> None:
    status = compute_status(
        now=NOW,
        decisions=[
            decision("r", "rerun", 1, -30),
            decision("r-retry-1", "give_up", 2, -10),
            decision("r-retry-1", "give_up", 2, -1),
        ],
        issues=[issue("r-retry-1", 1, -29)],
        outcomes=[outcome("r-retry-1", 1, -12, "FAILED")],
    )

    [exhausted] = status.exhausted
    assert exhausted.at == NOW - timedelta(minutes=10)
