"""The ledger file deleted or replaced while the daemon holds it open (issue 22.17).

SQLite keeps writing to the inode it opened: rows recorded after ``rm rerund.db`` (or after a
restore moved another file over it) went into a file nobody can read, and nothing said so. The
ledger checks, before each write and read, that its path still names the file it opened; when
not, it logs an ERROR, reopens the path (creating the schema) and counts it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.runtime.metrics import Metrics

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def _decide(ledger: Ledger, run: str) -> bool:
    return ledger.record_decision(
        project="ml",
        domain="prod",
        run=run,
        root=run,
        decision={"decision": "rerun", "policy": "p", "reason": "flaky", "attempt": 1},
        now=T0,
    )


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _replace_with_another_ledger(path: Path) -> None:
    other = path.with_name("restored.db")
    Ledger(other).close()
    os.replace(other, path)


CHANGES: dict[str, Callable[[Path], None]] = {
    "deleted": _delete,
    "replaced by another ledger (mv)": _replace_with_another_ledger,
}


@pytest.mark.parametrize("grouped", [True, False], ids=["group commits", "one commit per row"])
@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_a_ledger_file_deleted_or_replaced_while_open_is_reopened_and_keeps_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: Callable[[Path], None], grouped: bool
) -> None:
    path = tmp_path / "rerund.db"
    metrics = Metrics(CollectorRegistry())
    ledger = Ledger(path, on_reopen=metrics.ledger_reopened.inc)
    scheduled: list[Callable[[], None]] = []
    if grouped:
        ledger.group_commits(scheduled.append)
    assert _decide(ledger, "before")
    ledger.flush()

    change(path)
    with caplog.at_level(logging.ERROR, logger="rerund.ledger"):
        assert _decide(ledger, "after")
        ledger.flush()

    reader = Ledger(path, create=False)  # what `rerund history` reads now
    assert [row["run"] for row in reader.history()] == ["after"]
    reader.close()
    assert metrics.registry.get_sample_value("rerund_ledger_reopened_total") == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith(
        f"ledger {str(path)!r} is no longer the file rerund opened (deleted or replaced); "
        "reopening it (a new file gets a fresh schema); the audit rows written to the old file "
        "since then are not in it"
    )
    ledger.close()


def test_a_ledger_left_alone_is_never_reopened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reopened: list[int] = []
    ledger = Ledger(tmp_path / "rerund.db", on_reopen=lambda: reopened.append(1))
    for i in range(5):
        assert _decide(ledger, f"r{i}")
        ledger.flush()
    assert len(ledger.history()) == 5
    ledger.close()
    assert reopened == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
