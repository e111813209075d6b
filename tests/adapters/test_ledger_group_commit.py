"""Group commits: the daemon's one-row ledger writes share one transaction, committed by a
scheduled flush. What another process reads, what a watermark covers, what close keeps, and that a
refused row does not lose the rows grouped with it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rerund.adapters.ledger import Ledger
from rerund.errors import LedgerError

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def _failure(ledger: Ledger, run: str) -> bool:
    return ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0)


def _decision(ledger: Ledger, run: str) -> bool:
    return ledger.record_decision(
        project="ml",
        domain="prod",
        run=run,
        root=run,
        decision={"decision": "rerun", "policy": "p", "reason": "flaky", "attempt": 1},
        now=T0,
    )


def _committed(path: Path, table: str) -> int:
    """Rows of ``table`` another process sees (its own connection: committed rows only)."""
    with sqlite3.connect(path) as other:
        return int(other.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _grouped(path: Path) -> tuple[Ledger, list[Callable[[], None]]]:
    ledger = Ledger(path)
    scheduled: list[Callable[[], None]] = []
    ledger.group_commits(scheduled.append)
    return ledger, scheduled


def test_grouped_rows_are_committed_together_by_the_scheduled_flush(tmp_path: Path) -> None:
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "a") and _decision(ledger, "a")
    assert _failure(ledger, "b") and _decision(ledger, "b")
    assert len(scheduled) == 1  # one flush for the whole group
    # The daemon's own handle sees its rows (and answers "already recorded") before the commit
    assert not _failure(ledger, "a")
    assert [r["run"] for r in ledger.history()] == ["b", "a"]
    assert _committed(tmp_path / "l.db", "decisions") == 0  # another process does not, yet

    scheduled.pop()()  # the timer fires
    assert _committed(tmp_path / "l.db", "failures") == 2
    assert _committed(tmp_path / "l.db", "decisions") == 2

    assert _failure(ledger, "c")  # the next row opens the next group
    assert len(scheduled) == 1
    ledger.close()


def test_a_watermark_and_close_commit_the_open_group_first(tmp_path: Path) -> None:
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "a")
    ledger.set_watermark("ml/prod", T0 + timedelta(minutes=1))
    # the watermark is never ahead of the rows it covers
    assert _committed(tmp_path / "l.db", "failures") == 1
    assert _failure(ledger, "b")
    ledger.close()  # a graceful stop keeps the group
    assert _committed(tmp_path / "l.db", "failures") == 2
    assert scheduled  # the timer that would have flushed it may fire after close: harmless


def test_a_refused_row_does_not_lose_the_rows_grouped_with_it(tmp_path: Path) -> None:
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "a")
    with pytest.raises(LedgerError, match="write failed"):
        ledger.record_decision(
            project="ml",
            domain="prod",
            run="a",
            root="a",
            decision={"decision": "rerun", "policy": ["unbindable"], "reason": "r", "attempt": 1},
            now=T0,
        )
    scheduled.pop()()
    assert _committed(tmp_path / "l.db", "failures") == 1


def test_without_group_commits_each_row_is_committed_at_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert _failure(ledger, "a")
    assert _committed(tmp_path / "l.db", "failures") == 1
    ledger.group_commits(lambda flush: None)
    assert _failure(ledger, "b")
    ledger.group_commits(None)  # turning grouping off commits what is open
    assert _committed(tmp_path / "l.db", "failures") == 2
    ledger.close()
