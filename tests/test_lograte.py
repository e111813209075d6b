"""One ERROR line a minute for an error that repeats (``rerund.lograte``), and the two places
that log a failing ledger through it: the recorder (every write of a daemon whose database is
down) and a ledger's group commit."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.lograte import EveryMinute
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.recorder import DecisionRecorder, Unanswered

log = logging.getLogger("test.lograte")


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_a_repeated_error_is_logged_once_a_minute_with_the_count_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    lines = EveryMinute(log, monotonic=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert lines.error("ledger down")
        for _ in range(250):
            now[0] += 0.1  # 25 s of failures, ten a second
            assert not lines.error("ledger down")
        now[0] += 36.0  # a minute after the first line
        assert lines.error("ledger still down")
        now[0] += 61.0
        assert lines.error("ledger down again")  # nothing held back in between

    assert _errors(caplog) == [
        "ledger down",
        "ledger still down (and 250 more errors like it in the last 61 s, not logged one by one)",
        "ledger down again",
    ]


def test_a_recorder_whose_ledger_keeps_failing_logs_one_error_not_one_per_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    rec = DecisionRecorder(
        metrics=Metrics(CollectorRegistry()), log=log, spawn=lambda c: c.close(), ledger=ledger
    )
    path.unlink()
    path.mkdir()  # the file is replaced by a directory: every use fails
    try:
        with caplog.at_level(logging.ERROR):
            answers = {rec.call(lambda lg: lg.watermark("ml/prod")) for _ in range(200)}
    finally:
        shutil.rmtree(path)

    assert answers == {Unanswered.FAILED}  # every write still answers failed
    # One line from the ledger (its file is gone) and one from the recorder (the write failed),
    # not one of each per write.
    errors = _errors(caplog)
    assert len(errors) == 2, errors
    assert "is no longer the file rerund opened" in errors[0] and "cannot be opened" in errors[1]


def test_after_a_reset_the_next_error_is_a_new_one_and_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The leader resets its line when the database answers again: the next outage's first
    error is logged at once, not held back by the last outage's minute."""
    now = [0.0]
    lines = EveryMinute(log, monotonic=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert lines.error("down")
        assert not lines.error("down")
        lines.reset()
        now[0] += 5.0
        assert lines.error("down again")

    assert _errors(caplog) == ["down", "down again"]
