"""The recorder passes whole values to the ledger and says why the ledger gave no answer."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef, RunSummary
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.recorder import DecisionRecorder, Tracked, Unanswered

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SOURCE = RunRef("ml", "prod", "abc")
TARGET = RunRef("ml", "prod", "abc-retry-1")
log = logging.getLogger("test.recorder")


def _recorder(ledger: Ledger | None) -> DecisionRecorder:
    return DecisionRecorder(
        metrics=Metrics(CollectorRegistry()), log=log, spawn=lambda c: c.close(), ledger=ledger
    )


def test_without_a_ledger_the_recorder_answers_no_ledger() -> None:
    rec = _recorder(None)
    assert rec.call(lambda lg: lg.watermark("ml/prod")) is Unanswered.NO_LEDGER
    assert rec.stored_watermark("ml/prod") is None
    assert rec.issued_as(TARGET) is None


def test_a_failing_ledger_is_answered_as_failed(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    rec = _recorder(ledger)
    path.unlink()
    path.mkdir()  # the file is replaced by a directory: reopening it fails
    try:
        assert rec.call(lambda lg: lg.watermark("ml/prod")) is Unanswered.FAILED
        assert rec.stored_watermark("ml/prod") is None
    finally:
        shutil.rmtree(path)


def test_an_issue_and_its_outcome_reach_the_ledger_as_whole_values(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "rerund.db")
    rec = _recorder(ledger)
    rec.issue(RerunIssue(SOURCE, TARGET.name, "abc", 1, "p", "run", "created"), T0)
    assert rec.issued_as(TARGET) == ("abc", 1)
    rec.track(Tracked(TARGET, "p", "abc", 1, T0))

    assert _recorder(ledger).tracks(TARGET)  # a new process follows it from the ledger
    rec.observe(RunSummary(TARGET, "SUCCEEDED"), T0)

    assert not rec.tracks(TARGET)
    assert ledger.created_without_outcome() == []
    assert not _recorder(ledger).tracks(TARGET)


def test_a_rerun_older_than_the_listing_is_asked_about_alone_at_most_every_interval() -> None:
    rec = _recorder(None)
    rec.track(Tracked(TARGET, "p", "abc", 1, T0))
    since, every = T0 + timedelta(hours=2), timedelta(minutes=5)
    assert rec.ask_alone("ml/prod", T0, since, every) == []  # the listing from T0 reaches it
    assert rec.ask_alone("other/prod", since, since, every) == []
    assert rec.ask_alone("ml/prod", since, since, every) == [TARGET]
    assert rec.ask_alone("ml/prod", since, since + timedelta(minutes=4), every) == []
    assert rec.ask_alone("ml/prod", since, since + every, every) == [TARGET]


def test_a_deleted_rerun_is_no_longer_followed() -> None:
    rec = _recorder(None)
    rec.track(Tracked(TARGET, "p", "abc", 1, T0))
    later = T0 + timedelta(hours=2)
    rec.untrack(TARGET)
    assert not rec.tracks(TARGET)
    assert rec.ask_alone("ml/prod", later, later, timedelta(minutes=5)) == []


def test_a_recorder_built_before_a_takeover_follows_the_reruns_the_previous_leader_created(
    tmp_path: Path,
) -> None:
    """A follower builds its loop (and recorder) when it starts and first uses it when it takes
    over: the reruns to follow to their outcome are those the ledger holds then, not at build."""
    ledger = Ledger(tmp_path / "rerund.db")
    follower = _recorder(ledger)  # built while another replica leads
    ledger.record_issue(
        RerunIssue(SOURCE, TARGET.name, "abc", 1, "p", "run", "created"), now=T0
    )  # the leader

    assert follower.tracks(TARGET)  # it took over: it follows the leader's rerun
    follower.observe(RunSummary(TARGET, "SUCCEEDED"), T0)
    assert not follower.tracks(TARGET)
    assert ledger.created_without_outcome() == []
    ledger.close()


def test_with_the_decision_log_off_a_decision_is_still_recorded_counted_and_listed(tmp_path: Path) -> None:
    # The log line's fields are built only when the line is logged; the rest is done all the same.
    from rerund.core.model import ErrorInfo, Failure, Ignore
    from rerund.core.runs import FailureFacts

    ledger = Ledger(tmp_path / "rerund.db")
    registry = CollectorRegistry()
    rec = DecisionRecorder(metrics=Metrics(registry), log=log, spawn=lambda c: c.close(), ledger=ledger)
    facts = FailureFacts(
        summary=RunSummary(SOURCE, "FAILED"),
        labels={},
        action="a0",
        action_task="t",
        error=ErrorInfo(kind="USER", message="bad"),
        failed_at=T0,
    )
    failure = Failure(run="abc", failed_at=T0)
    decision = Ignore(policy="p", reason="policy 'p' never reruns run 'abc'", source_run="abc", root="abc")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    decisions = logging.getLogger("rerund.decisions")
    level = decisions.level
    decisions.addHandler(handler)
    decisions.setLevel(logging.WARNING)
    try:
        assert rec.decision(facts, failure, decision, T0) is True
        assert rec.decision(facts, failure, decision, T0) is False  # once
        decisions.setLevel(logging.INFO)
        other = Ignore(policy="q", reason="policy 'q' never reruns run 'abc'", source_run="abc", root="abc")
        assert rec.decision(facts, failure, other, T0) is True
    finally:
        decisions.removeHandler(handler)
        decisions.setLevel(level)
    assert [r.getMessage() for r in seen] == ["ignore  ml/prod/abc: policy 'q' never reruns run 'abc'"]
    assert [d["policy"] for d in rec.recent] == ["p", "q"]
    assert [r["policy"] for r in ledger.history()] == ["q", "p"]
    counted = registry.get_sample_value("rerund_decisions_total", {"policy": "p", "decision": "ignore"})
    assert counted == 1.0
