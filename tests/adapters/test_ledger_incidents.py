"""The ledger's incidents table (real SQLite in tmp_path): an incident saved as it changes,
each state new once (what is notified once across restarts), closed final, read back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rerund.adapters.ledger import Ledger
from rerund.core.incidents import IncidentRecord

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
OPEN = IncidentRecord(fingerprint="3fa2c0ffee12", opened_at=T0, failures=10, held=4, example="503 SlowDown")


def test_each_state_of_an_incident_is_new_once_and_closed_is_final(tmp_path) -> None:
    ledger = Ledger(tmp_path / "r.db")
    assert ledger.record_incident(OPEN, now=T0) is True
    assert ledger.record_incident(replace(OPEN, held=9, canary="p/d/x-retry-1"), now=T0) is False
    closed = replace(OPEN, state="closed", closed_at=T0 + timedelta(minutes=2), held=0, canaries=3)
    assert ledger.record_incident(closed, now=T0 + timedelta(minutes=2)) is True
    assert ledger.record_incident(closed, now=T0 + timedelta(minutes=2)) is False
    assert ledger.record_incident(OPEN, now=T0 + timedelta(minutes=3)) is False  # a late write
    ledger.close()

    again = Ledger(tmp_path / "r.db", create=False)
    [read] = again.incidents(since=T0)
    assert read == closed
    assert again.incidents(since=T0 + timedelta(hours=1)) == []  # closed before the window


def test_an_open_incident_is_read_back_whatever_the_window(tmp_path) -> None:
    ledger = Ledger(tmp_path / "r.db")
    ledger.record_incident(replace(OPEN, canary="p/d/x-retry-1", canary_at=T0), now=T0)
    [read] = ledger.incidents(since=T0 + timedelta(days=30))
    assert (read.state, read.canary, read.held, read.example) == ("open", "p/d/x-retry-1", 4, "503 SlowDown")


def test_the_reruns_of_a_fingerprint_and_their_recoveries_are_counted_from_the_ledger(tmp_path) -> None:
    from rerund.core.records import RerunIssue, RerunOutcome
    from rerund.core.runs import RunRef

    ledger = Ledger(tmp_path / "r.db")
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
