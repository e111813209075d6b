"""A slow ledger read does not stop the daemon: ``/status`` and the operator page read the
ledger in a worker thread, so while a read waits on the database (here: a table locked by
another session, a real PostgreSQL) the event loop answers ``/readyz``; and a reading thread
does not hold the ledger's writers back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rerund.adapters.sqlstate import PostgresLedger

from .support import follower, get, migrated

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@contextmanager
def _decisions_locked(pg_url: str) -> Iterator[Any]:
    """Another session holds the decisions table locked until the block ends: every read of it
    waits. Yields a function telling whether a read is waiting for that lock now."""
    with psycopg.connect(pg_url) as locker, psycopg.connect(pg_url, autocommit=True) as probe:
        locker.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")

        def waiting() -> bool:
            row = probe.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'decisions'::regclass"
            ).fetchone()
            return row is not None and row[0] > 0

        try:
            yield waiting
        finally:
            locker.rollback()


def _wait_for(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("path", ["/status", "/"])
def test_the_event_loop_answers_while_a_status_read_waits_on_the_database(
    tmp_path: Path, pg_url: str, path: str
) -> None:
    answers: dict[str, Any] = {}
    with follower(tmp_path, migrated(pg_url)) as (port, _other):
        with _decisions_locked(pg_url) as waiting:
            reader = threading.Thread(target=lambda: answers.setdefault(path, get(port, path)))
            reader.start()
            _wait_for(f"the {path} read to wait for the lock", waiting)
            answers["/readyz"] = get(port, "/readyz")  # 5 s socket timeout: None when the loop is stuck
            answers["still waiting"] = waiting()
        reader.join(30)
    ready = answers["/readyz"]
    assert ready is not None and ready[0] == 200 and "follower" in ready[1]
    assert answers["still waiting"] is True  # /readyz answered while the read was blocked
    assert answers[path] is not None and answers[path][0] == 200


def test_a_read_waiting_on_the_database_does_not_hold_back_a_write(pg_url: str) -> None:
    ledger = PostgresLedger(migrated(pg_url))
    try:
        with _decisions_locked(pg_url) as waiting:
            reader = threading.Thread(target=lambda: ledger.history(limit=10))
            reader.start()
            _wait_for("the history read to wait for the lock", waiting)
            wrote = threading.Thread(
                target=lambda: ledger.record_failure(
                    project="ml", domain="prod", run="r1", failed_at=T0, now=T0
                )
            )
            wrote.start()
            wrote.join(10)
            written_while_blocked = not wrote.is_alive() and waiting()
        reader.join(30)
        wrote.join(30)
        assert written_while_blocked
        assert ledger.counts()["failures"] == 1
    finally:
        ledger.close()
