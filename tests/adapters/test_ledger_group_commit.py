"""Group commits: the daemon's one-row ledger writes are decided new at once and written together
by a scheduled flush, in one short transaction. What another process reads, that it can write
meanwhile, what a watermark covers, what close keeps, and that a refused row loses only itself."""

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
    assert not _failure(ledger, "a")  # already recorded (pending): not new again
    assert _committed(tmp_path / "l.db", "decisions") == 0  # another process does not see them yet

    scheduled.pop()()  # the timer fires
    assert _committed(tmp_path / "l.db", "failures") == 2
    assert _committed(tmp_path / "l.db", "decisions") == 2
    assert not _failure(ledger, "b")  # written: still not new

    assert _failure(ledger, "c")  # the next row opens the next group
    assert len(scheduled) == 1
    ledger.close()


def test_another_process_writes_while_rows_are_pending_and_reads_here_see_them(tmp_path: Path) -> None:
    # `rerund sweep` writes the same file while the daemon records: the write lock is taken only
    # for the moment of a flush, never held between them.
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "a") and _decision(ledger, "a")
    sweep = Ledger(tmp_path / "l.db", source="sweep")
    with sqlite3.connect(tmp_path / "l.db", timeout=0) as other:  # no waiting for a lock at all
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO watermarks VALUES ('x/y', '2026-11-30T15:00:00+00:00')")
        other.execute("COMMIT")
    assert _failure(sweep, "s")
    assert [r["run"] for r in ledger.history()] == ["a"]  # a read here writes what is pending first
    assert _committed(tmp_path / "l.db", "failures") == 2
    scheduled.pop()()  # nothing left to write: harmless
    sweep.close()
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
    scheduled.pop()()  # the timer that would have flushed it fires after close: a no-op


def test_a_refused_row_does_not_lose_the_rows_grouped_with_it(tmp_path: Path) -> None:
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "a")  # one flush is scheduled for it
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
