"""The breaker's failure window survives a restart (issue 27): the failures of a fingerprint
counted before the restart, plus those after it, open the incident at the same threshold as
without the restart — saved with the pass (``Incidents.save``) in the ledger, SQLite file or
PostgreSQL, and read back by the first pass of the next process. Before, a restart forgot
them and the incident opened only after ``failures`` more."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rerund.core.decide import decide
from rerund.core.incidents import Held
from rerund.core.model import ErrorInfo, Failure, Rerun
from rerund.core.rules import PolicySet
from rerund.core.runs import RunRef
from rerund.policy import load_policies
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.incidents import Incidents
from rerund.runtime.reconcile.recorder import DecisionRecorder

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
POLICY = """apiVersion: rerund/v1
incidents: {open: {failures: 4, within: 1m}, probe_every: 30s}
policies:
  - name: any
    retry: {max_attempts: 3}
"""


@pytest.fixture
def policies(tmp_path: Path) -> PolicySet:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return load_policies([path])


def _process(ledger: Any, policies: PolicySet, now: datetime) -> tuple[Incidents, CollectorRegistry]:
    """The breaker of a daemon that starts at ``now`` on ``ledger``, after its first pass's
    ``configure``."""
    registry = CollectorRegistry()
    recorder = DecisionRecorder(
        metrics=Metrics(registry), log=logging.getLogger("test"), spawn=lambda c: c.close(), ledger=ledger
    )
    incidents = Incidents(recorder, lambda c: c.close(), now)
    incidents.configure(policies.incidents, now)
    return incidents, registry


def _fail(incidents: Incidents, policies: PolicySet, run: str, seconds: int) -> object:
    """Run ``run`` failed ``seconds`` after T0 and is decided at once (one pass: then saved)."""
    at = T0 + timedelta(seconds=seconds)
    failure = Failure(
        run=run,
        task="etl.load",
        error=ErrorInfo(kind="SYSTEM", code="SlowDown", message="503 SlowDown (request id 4F2A)"),
        failed_at=at,
    )
    decision = decide(failure, policies, at)
    assert isinstance(decision, Rerun)
    out = incidents.gate(failure, decision, RunRef("p", "d", run), at)
    incidents.save(at)  # the end of the pass
    return out


def test_without_a_restart_the_fourth_failure_opens_the_incident(open_ledger, policies) -> None:
    incidents, registry = _process(open_ledger(), policies, T0)
    outs = [_fail(incidents, policies, f"r{i}", i) for i in range(1, 5)]
    assert [isinstance(o, Held) for o in outs] == [False, False, False, True]
    assert registry.get_sample_value("rerund_incidents_open") == 1


@pytest.mark.parametrize("before", [1, 2, 3], ids=["1-before", "2-before", "3-before"])
def test_failures_before_and_after_a_restart_open_the_incident_at_the_same_threshold(
    open_ledger, policies, before: int
) -> None:
    first, _ = _process(open_ledger(), policies, T0)
    for i in range(1, before + 1):
        assert not isinstance(_fail(first, policies, f"r{i}", i), Held)

    again, registry = _process(open_ledger(), policies, T0 + timedelta(seconds=before))  # restarted
    outs = [_fail(again, policies, f"r{i}", i) for i in range(before + 1, 5)]

    assert [isinstance(o, Held) for o in outs] == [False] * (3 - before) + [True]
    assert registry.get_sample_value("rerund_incidents_open") == 1
    [record] = open_ledger().incidents(since=T0)
    assert (record.state, record.failures) == ("open", 4)
    assert record.first_seen == T0 + timedelta(seconds=1)


def test_failures_saved_before_a_restart_still_age_out_of_the_window(open_ledger, policies) -> None:
    first, _ = _process(open_ledger(), policies, T0)
    for i in range(1, 4):
        _fail(first, policies, f"r{i}", i)

    again, registry = _process(open_ledger(), policies, T0 + timedelta(minutes=5))
    assert not isinstance(_fail(again, policies, "late", 300), Held)  # 3 + 1, but minutes apart
    assert registry.get_sample_value("rerund_incidents_open") == 0


def test_a_fingerprint_whose_incident_closed_does_not_count_its_failures_again(open_ledger, policies) -> None:
    from rerund.core.runs import RunSummary

    first, _ = _process(open_ledger(), policies, T0)
    for i in range(1, 5):
        _fail(first, policies, f"r{i}", i)
    canary = _fail(first, policies, "r1", 40)  # the probe is due: r1's rerun is the canary
    assert isinstance(canary, Rerun) and "canary" in canary.reason
    ended = RunSummary(ref=RunRef("p", "d", canary.name), phase="SUCCEEDED", task="etl.load", labels={})
    assert first.run_ended(ended, T0 + timedelta(seconds=45)) != []  # closed, released
    first.save(T0 + timedelta(seconds=45))

    again, registry = _process(open_ledger(), policies, T0 + timedelta(seconds=46))
    assert not isinstance(_fail(again, policies, "r9", 47), Held)  # one failure after the close
    assert registry.get_sample_value("rerund_incidents_open") == 0


def test_the_held_failures_decided_again_after_a_restart_are_not_counted_twice(open_ledger, policies) -> None:
    """The sibling of the window: an open incident's failed runs and lineages are kept too, so
    the failures relisted after a restart (the held ones) leave its counts as they were."""
    first, _ = _process(open_ledger(), policies, T0)
    for i in range(1, 6):
        _fail(first, policies, f"r{i}", i)  # r4 opens it; r4 and r5 are held
    [before] = open_ledger().incidents(since=T0)
    assert (before.failures, before.held, before.lineages) == (5, 2, 2)

    again, _ = _process(open_ledger(), policies, T0 + timedelta(seconds=10))
    _fail(again, policies, "r6", 11)  # a new failure counts, and adds a lineage to those held
    [new] = open_ledger().incidents(since=T0)
    assert (new.failures, new.lineages) == (6, 3)
    for i in (4, 5):  # relisted after the restart: held again, counted once
        assert isinstance(_fail(again, policies, f"r{i}", i), Held)

    [after] = open_ledger().incidents(since=T0)
    assert (after.failures, after.held, after.lineages) == (6, 3, 3)
