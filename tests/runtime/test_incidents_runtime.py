"""The breaker in the shell, one call at a time (real SQLite ledger, fresh registry): what it
saves, the gauges, the example message it keeps (redacted, control characters escaped), and
the incident it restores after a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.adapters.sqlstate.outbox import SqlOutbox, sqlite_engine
from rerund.adapters.webhook import WebhookNotifier
from rerund.core.decide import decide
from rerund.core.incidents import Held
from rerund.core.model import ErrorInfo, Failure, Rerun
from rerund.core.runs import RunRef, RunSummary
from rerund.policy import load_policies
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.incidents import Incidents
from rerund.runtime.reconcile.recorder import DecisionRecorder

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
HOSTILE = (
    "503 from https://user:pw@s3.example/bkt/key?sig=abc: password=hunter2 \x1b[2J\x1b]0;owned\x07 retry"
)
POLICY = """apiVersion: rerund/v1
incidents: {open: {failures: 2, within: 1m}, probe_every: 30s}
policies:
  - name: any
    retry: {max_attempts: 3}
"""


def _incidents(path: Path) -> tuple[Incidents, CollectorRegistry, Ledger]:
    registry = CollectorRegistry()
    ledger = Ledger(path)
    recorder = DecisionRecorder(
        metrics=Metrics(registry), log=logging.getLogger("test"), spawn=lambda c: c.close(), ledger=ledger
    )
    return Incidents(recorder, recorder_spawn, T0), registry, ledger


def recorder_spawn(coro: object) -> None:
    coro.close()  # type: ignore[attr-defined]


def _decided(tmp_path: Path, run: str) -> tuple[Failure, Rerun]:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    policies = load_policies([policy])
    failure = Failure(
        run=run, task="etl.load", error=ErrorInfo(kind="SYSTEM", code="S3", message=HOSTILE), failed_at=T0
    )
    decision = decide(failure, policies, T0)
    assert isinstance(decision, Rerun)
    return failure, decision


def test_an_incident_is_saved_with_a_redacted_escaped_example_and_counted_in_the_gauges(tmp_path) -> None:
    incidents, registry, ledger = _incidents(tmp_path / "r.db")
    incidents.configure(load_policies([_write(tmp_path)]).incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        out = incidents.gate(failure, decision, RunRef("p", "d", run), T0)
    assert isinstance(out, Held)
    [record] = ledger.incidents(since=T0)
    assert record.state == "open"
    assert (
        "hunter2" not in record.example
        and "user:pw" not in record.example
        and "sig=abc" not in record.example
    )
    assert "\x1b" not in record.example and "\x07" not in record.example
    assert record.example == ("503 from https://s3.example/... password=*** \\x1b[2J\\x1b]0;owned\\x07 retry")
    assert registry.get_sample_value("rerund_incidents_open") == 1
    assert registry.get_sample_value("rerund_incident_reruns_held") == 1


def test_an_open_incident_and_its_canary_come_back_after_a_restart_and_close(tmp_path) -> None:
    incidents, _, ledger = _incidents(tmp_path / "r.db")
    incidents.configure(load_policies([_write(tmp_path)]).incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        incidents.gate(failure, decision, RunRef("p", "d", run), T0)
    failure, decision = _decided(tmp_path, "r1")
    canary = incidents.gate(failure, decision, RunRef("p", "d", "r1"), T0 + timedelta(seconds=31))
    assert isinstance(canary, Rerun) and canary.labels["rerund-canaries"] == "1"
    ledger.close()  # a SIGKILL loses nothing the ledger holds: the canary was saved as it went out

    again, registry, _ = _incidents(tmp_path / "r.db")
    again.configure(load_policies([_write(tmp_path)]).incidents, T0 + timedelta(seconds=34))  # the first pass
    assert registry.get_sample_value("rerund_incidents_open") == 1
    assert again.canaries() == [RunRef("p", "d", "r1-retry-1")]
    failure, decision = _decided(tmp_path, "r2")  # relisted after the restart: held again
    assert isinstance(again.gate(failure, decision, RunRef("p", "d", "r2"), T0 + timedelta(seconds=35)), Held)
    ended = RunSummary(ref=RunRef("p", "d", "r1-retry-1"), phase="SUCCEEDED", task="etl.load", labels={})
    released = again.run_ended(ended, T0 + timedelta(seconds=40))
    assert released == [RunRef("p", "d", "r2")]  # r1's rerun was the canary; r2 was held
    assert registry.get_sample_value("rerund_incidents_open") == 0


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return path


def test_incidents_restored_under_policies_without_the_key_close_and_release(tmp_path) -> None:
    incidents, _, ledger = _incidents(tmp_path / "r.db")
    incidents.configure(load_policies([_write(tmp_path)]).incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        incidents.gate(failure, decision, RunRef("p", "d", run), T0)
    ledger.close()
    again, registry, ledger = _incidents(tmp_path / "r.db")
    assert again.configure(None, T0 + timedelta(minutes=1)) == []  # none held in this process yet
    assert registry.get_sample_value("rerund_incidents_open") == 0
    [closed] = ledger.incidents(since=T0)
    assert closed.state == "closed"


def test_a_restart_that_decides_the_same_failures_again_notifies_the_opening_once(tmp_path) -> None:
    # Killed after the incident opened in memory but before its row was saved: the restarted
    # daemon (its clock later) decides the same failures again and must name the incident as
    # before, so the outbox (one row per key) sends "opened" once.
    outbox = SqlOutbox(sqlite_engine(tmp_path / "state.db"))
    policies = load_policies([_write(tmp_path)])
    for attempt, now in enumerate((T0 + timedelta(seconds=5), T0 + timedelta(minutes=3))):
        recorder = DecisionRecorder(
            metrics=Metrics(CollectorRegistry()),
            log=logging.getLogger("test"),
            spawn=asyncio.run,
            ledger=Ledger(tmp_path / f"ledger-{attempt}.db"),  # the first save never happened
            notifier=WebhookNotifier("http://127.0.0.1:9/hook", timeout=1.0, retries=0),
            outbox=outbox,
        )
        incidents = Incidents(recorder, asyncio.run, now)
        incidents.configure(policies.incidents, now)
        for i, run in enumerate(("r1", "r2")):
            failure, decision = _decided(tmp_path, run)
            failure = failure.model_copy(update={"failed_at": T0 + timedelta(seconds=i)})
            incidents.gate(failure, decision, RunRef("p", "d", run), now)
    keys = [item.key for item in outbox.due(T0 + timedelta(hours=1))]
    print("outbox keys:", keys)
    assert len([k for k in keys if k.startswith("incident-open:")]) == 1, keys


def _with_outbox(tmp_path: Path, spawn: Callable[[Any], object]) -> tuple[Incidents, SqlOutbox]:
    outbox = SqlOutbox(sqlite_engine(tmp_path / "state.db"))
    recorder = DecisionRecorder(
        metrics=Metrics(CollectorRegistry()),
        log=logging.getLogger("test"),
        spawn=spawn,
        ledger=Ledger(tmp_path / "r.db"),
        notifier=WebhookNotifier("http://127.0.0.1:9/hook", timeout=1.0, retries=0),
        outbox=outbox,
    )
    return Incidents(recorder, spawn, T0), outbox


def test_a_notification_lost_between_the_save_and_the_put_is_put_after_the_restart(tmp_path) -> None:
    policies = load_policies([_write(tmp_path)])
    killed, outbox = _with_outbox(tmp_path, lambda c: c.close())  # dies before each put
    killed.configure(policies.incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        killed.gate(failure, decision, RunRef("p", "d", run), T0)
    assert outbox.due(T0 + timedelta(hours=1)) == []
    for _ in range(2):  # restarted twice: put again, sent once
        again, outbox = _with_outbox(tmp_path, asyncio.run)
        again.configure(policies.incidents, T0 + timedelta(seconds=10))
    keys = [item.key for item in outbox.due(T0 + timedelta(hours=1))]
    print("outbox keys:", keys)
    assert [k.split(":")[0] for k in keys] == ["incident-open"]
    closing, _ = _with_outbox(tmp_path, lambda c: c.close())
    closing.configure(None, T0 + timedelta(seconds=20))  # closes it; dies before the put
    again, outbox = _with_outbox(tmp_path, asyncio.run)
    again.configure(policies.incidents, T0 + timedelta(seconds=30))
    keys = [item.key for item in outbox.due(T0 + timedelta(hours=1))]
    assert sorted(k.split(":")[0] for k in keys) == ["incident-close", "incident-open"]


def test_a_follower_that_takes_over_resumes_the_incident_the_leader_saved_and_notifies_it_once(
    tmp_path,
) -> None:
    policies = load_policies([_write(tmp_path)])
    follower, outbox = _with_outbox(tmp_path, asyncio.run)  # built when it started, before the incident
    leader, _ = _with_outbox(tmp_path, lambda c: c.close())  # saves the incident, dies before the put
    leader.configure(policies.incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        leader.gate(failure, decision, RunRef("p", "d", run), T0)
    follower.configure(policies.incidents, T0 + timedelta(seconds=5))  # its first pass: it leads now
    failure, decision = _decided(tmp_path, "r2")  # relisted: held by the incident it resumed
    assert isinstance(
        follower.gate(failure, decision, RunRef("p", "d", "r2"), T0 + timedelta(seconds=5)), Held
    )
    keys = [item.key for item in outbox.due(T0 + timedelta(hours=1))]
    print("outbox keys:", keys)
    assert [k.split(":")[0] for k in keys] == ["incident-open"]


def test_a_restart_does_not_put_again_what_the_outbox_may_have_forgotten(tmp_path) -> None:
    # The outbox forgets delivered events after ledger_retention: an incident opened hours ago
    # was notified then, and is not put again (it would be sent twice).
    policies = load_policies([_write(tmp_path)])
    first, _ = _with_outbox(tmp_path, asyncio.run)
    first.configure(policies.incidents, T0)
    for run in ("r1", "r2"):
        failure, decision = _decided(tmp_path, run)
        first.gate(failure, decision, RunRef("p", "d", run), T0)
    (tmp_path / "state.db").unlink()  # delivered and pruned
    again, outbox = _with_outbox(tmp_path, asyncio.run)
    again.configure(policies.incidents, T0 + timedelta(hours=2))
    assert again.breaker.is_open(decision.fingerprint)
    assert outbox.due(T0 + timedelta(hours=3)) == []
