"""The ledger's incidents, over both backends (a real SQLite file in tmp_path, a real PostgreSQL
database): an incident saved as it changes, each state new once (what is notified once across
restarts and replicas), closed final, read back; the recoveries of a fingerprint's reruns."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rerund.core.incidents import IncidentRecord

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


OPEN = IncidentRecord(fingerprint="3fa2c0ffee12", opened_at=T0, failures=10, held=4, example="503 SlowDown")


def test_each_state_of_an_incident_is_new_once_and_closed_is_final(open_ledger) -> None:
    ledger = open_ledger()
    assert ledger.record_incident(OPEN, now=T0) is True
    assert ledger.record_incident(replace(OPEN, held=9, canary="p/d/x-retry-1"), now=T0) is False
    closed = replace(OPEN, state="closed", closed_at=T0 + timedelta(minutes=2), held=0, canaries=3)
    assert ledger.record_incident(closed, now=T0 + timedelta(minutes=2)) is True
    assert ledger.record_incident(closed, now=T0 + timedelta(minutes=2)) is False
    assert ledger.record_incident(OPEN, now=T0 + timedelta(minutes=3)) is False  # a late write
    ledger.close()

    again = open_ledger()
    [read] = again.incidents(since=T0)
    assert read == closed
    assert again.incidents(since=T0 + timedelta(hours=1)) == []  # closed before the window


def test_an_open_incident_is_read_back_whatever_the_window(open_ledger) -> None:
    ledger = open_ledger()
    ledger.record_incident(replace(OPEN, canary="p/d/x-retry-1", canary_at=T0), now=T0)
    [read] = ledger.incidents(since=T0 + timedelta(days=30))
    assert (read.state, read.canary, read.held, read.example) == ("open", "p/d/x-retry-1", 4, "503 SlowDown")


def test_the_reruns_of_a_fingerprint_and_their_recoveries_are_counted_from_the_ledger(open_ledger) -> None:
    from rerund.core.records import RerunIssue, RerunOutcome
    from rerund.core.runs import RunRef

    ledger = open_ledger()
    outcomes = ["FAILED", "FAILED", "SUCCEEDED", None]  # the last rerun has not ended yet
    for i, phase in enumerate(outcomes):
        run, target = f"r{i}", f"r{i}-retry-1"
        body = {"decision": "rerun", "policy": "p", "attempt": 1, "name": target, "reason": "x"}
        body |= {"fingerprint": "3fa2c0ffee12", "source_run": run, "scope": "run"}
        ledger.record_decision(project="ml", domain="prod", run=run, root=run, decision=body, now=T0)
        ledger.record_issue(
            RerunIssue(RunRef("ml", "prod", run), target, run, 1, "p", "run", "created", ""), now=T0
        )
        if phase is not None:
            ledger.record_outcome(RerunOutcome(RunRef("ml", "prod", target), "p", run, 1, phase), now=T0)
    other = {"decision": "rerun", "policy": "p", "attempt": 1, "name": "x-retry-1", "reason": "x"}
    other |= {"fingerprint": "000000000000", "source_run": "x", "scope": "run"}
    ledger.record_decision(project="ml", domain="prod", run="x", root="x", decision=other, now=T0)

    week = T0 - timedelta(days=7)
    assert ledger.fingerprint_recoveries(since=week, fingerprint="3fa2c0ffee12") == {"3fa2c0ffee12": (3, 1)}
    assert ledger.fingerprint_recoveries(since=T0 + timedelta(seconds=1), fingerprint="3fa2c0ffee12") == {}
    assert ledger.fingerprint_recoveries(since=week, fingerprint="ffffffffffff") == {}
    assert ledger.fingerprint_recoveries(since=week) == {"3fa2c0ffee12": (3, 1)}  # x had no rerun issued


def test_what_the_breaker_counts_is_replaced_per_fingerprint_read_back_and_windows_forgotten_after_a_day(
    open_ledger,
) -> None:
    from rerund.core.incidents import Members

    ledger = open_ledger()
    a = Members(window=(("p/d/r1", T0), ("p/d/r2", T0 + timedelta(seconds=5))))
    b = Members(window=(("p/d/x", T0),))
    ledger.save_incident_members({"aaaaaaaaaaaa": a, "bbbbbbbbbbbb": b}, now=T0)
    opened = Members(runs=("p/d/x", "p/d/y"), lineages=("x", "y"))  # b's incident opened
    ledger.save_incident_members({"bbbbbbbbbbbb": opened}, now=T0 + timedelta(seconds=6))
    assert open_ledger().incident_members() == {"aaaaaaaaaaaa": a, "bbbbbbbbbbbb": opened}

    later = Members(window=(("p/d/r3", T0 + timedelta(hours=2)),))
    ledger.save_incident_members({"cccccccccccc": later}, now=T0 + timedelta(days=1, hours=2))
    # a's window was saved over a day ago; an open incident's members stay as long as it is open
    assert open_ledger().incident_members() == {"bbbbbbbbbbbb": opened, "cccccccccccc": later}
    ledger.save_incident_members({"bbbbbbbbbbbb": Members()}, now=T0 + timedelta(days=1, hours=3))  # closed
    assert open_ledger().incident_members() == {"cccccccccccc": later}


def test_reruns_made_by_hand_count_as_evidence_for_the_fingerprint_of_the_run_they_rerun(open_ledger) -> None:
    """Issue 27: give_up_below weighs the reruns of a fingerprint "from the ledger and the control
    plane": a run the control plane says reruns a decided run (its relation), which rerund did
    not create, counts when it ended; one rerund created is counted once (as its own rerun)."""
    from rerund.core.records import RerunIssue, RerunOutcome
    from rerund.core.runs import RunRef

    ledger = open_ledger()
    for run in ("a", "b"):
        body = {
            "decision": "give_up",
            "policy": "p",
            "attempt": 1,
            "reason": "x",
            "fingerprint": "3fa2c0ffee12",
        }
        ledger.record_decision(project="ml", domain="prod", run=run, root=run, decision=body, now=T0)
    ours = {"decision": "rerun", "policy": "p", "attempt": 1, "name": "c-retry-1", "reason": "x"}
    ours |= {"fingerprint": "3fa2c0ffee12", "source_run": "c", "scope": "run"}
    ledger.record_decision(project="ml", domain="prod", run="c", root="c", decision=ours, now=T0)
    ledger.record_issue(
        RerunIssue(RunRef("ml", "prod", "c"), "c-retry-1", "c", 1, "p", "run", "created", ""), now=T0
    )
    ledger.record_outcome(RerunOutcome(RunRef("ml", "prod", "c-retry-1"), "p", "c", 1, "FAILED"), now=T0)

    def seen(target: str, source: str, phase: str) -> bool:
        return ledger.record_rerun_seen(
            RunRef("ml", "prod", target), RunRef("ml", "prod", source), phase, now=T0
        )

    assert seen("a-by-hand", "a", "SUCCEEDED") is True
    assert seen("a-by-hand", "a", "SUCCEEDED") is False  # seen again (a listing, the stream)
    assert seen("b-by-hand", "b", "FAILED") is True
    assert seen("c-retry-1", "c", "FAILED") is True  # rerund's own: counted once, as its rerun
    assert seen("z-by-hand", "z", "SUCCEEDED") is True  # a run rerund never decided: no fingerprint

    week = T0 - timedelta(days=7)
    assert open_ledger().fingerprint_recoveries(since=week, fingerprint="3fa2c0ffee12") == {
        "3fa2c0ffee12": (3, 1)
    }
    assert open_ledger().fingerprint_recoveries(since=week) == {"3fa2c0ffee12": (3, 1)}
    assert ledger.fingerprint_recoveries(since=T0 + timedelta(seconds=1)) == {}  # decided before the window
