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
