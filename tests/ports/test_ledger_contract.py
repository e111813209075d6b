"""The one ledger contract: every test here runs over both backends of the ``DaemonLedger`` port,
the SQLite file (``rerund.adapters.ledger.Ledger``, a real file in tmp_path) and PostgreSQL
(``rerund.adapters.sqlstate.PostgresLedger``, a real server: ``tests/postgres_support.py``).

"Reopening" is a second handle on the same file or database (a restart, or another replica).
What is about SQLite files only (WAL, replaced files, compact rows, old files gaining columns)
stays in tests/adapters/test_ledger_*.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rerund.adapters.ledger import Ledger
from rerund.adapters.sqlstate import PostgresLedger
from rerund.core.records import IssueResult, RerunIssue, RerunOutcome
from rerund.core.runs import RunRef
from rerund.errors import LedgerError

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DECISION = {"decision": "rerun", "policy": "p", "reason": "because", "attempt": 1}

Open = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    """``open_ledger(source="daemon")``: a new handle on this test's one ledger."""
    handles: list[Any] = []
    if request.param == "sqlite":
        where: Any = tmp_path / "rerund.db"

        def make(source: str = "daemon") -> Any:
            return Ledger(where, source=source)  # type: ignore[arg-type]
    else:
        where = request.getfixturevalue("pg_url")

        def make(source: str = "daemon") -> Any:
            return PostgresLedger(where, source=source)  # type: ignore[arg-type]

    def opened(source: str = "daemon") -> Any:
        handles.append(make(source))
        return handles[-1]

    yield opened
    for handle in handles:
        handle.close()


def _issue(ledger: Any, target: str, result: IssueResult = "created", at: datetime = T0) -> bool:
    return bool(
        ledger.record_issue(
            RerunIssue(RunRef("ml", "prod", "abc"), target, "abc", 1, "p", "run", result), now=at
        )
    )


def _decide(ledger: Any, run: str, *, root: str | None = None, at: datetime = T0, **changes: Any) -> bool:
    return bool(
        ledger.record_decision(
            project="ml", domain="prod", run=run, root=root or run, decision={**DECISION, **changes}, now=at
        )
    )


def _failure(ledger: Any, run: str) -> bool:
    return bool(ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0))


def _grouped(open_ledger: Open) -> tuple[Any, list[Callable[[], None]]]:
    ledger = open_ledger()
    scheduled: list[Callable[[], None]] = []
    ledger.group_commits(scheduled.append)
    return ledger, scheduled


# -- facts are recorded once -----------------------------------------------------------------


def test_each_fact_is_new_once_even_across_reopening(open_ledger: Open) -> None:
    ledger = open_ledger()
    first, again = _decide(ledger, "abc"), _decide(ledger, "abc")
    ledger.close()
    reopened = open_ledger()

    assert (first, again) == (True, False)
    assert not _decide(reopened, "abc")
    assert _failure(reopened, "abc")
    assert not _failure(reopened, "abc")


def test_a_decision_without_an_attempt_is_also_recorded_once(open_ledger: Open) -> None:
    ledger = open_ledger()
    ignore = {"decision": "ignore", "policy": "bad-input", "reason": "retry: false", "attempt": None}

    first = _decide(ledger, "abc", **ignore)
    again = _decide(ledger, "abc", **ignore)

    assert (first, again) == (True, False)
    assert ledger.counts()["decisions"] == 1


def test_the_same_decision_by_the_daemon_and_a_sweep_is_one_record(open_ledger: Open) -> None:
    daemon, sweep = open_ledger(), open_ledger("sweep")

    assert (_decide(daemon, "a"), _decide(sweep, "a")) == (True, False)


def test_replicas_recording_the_same_facts_at_once_write_each_row_once(open_ledger: Open) -> None:
    replicas = [open_ledger() for _ in range(3)]
    new: list[bool] = []
    lock = threading.Lock()

    def record(ledger: Any) -> None:
        for n in range(30):
            got = [_failure(ledger, f"r{n}"), _decide(ledger, f"r{n}"), _issue(ledger, f"r{n}-retry-1")]
            with lock:
                new.extend(got)

    threads = [threading.Thread(target=record, args=(r,)) for r in replicas]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert replicas[0].counts() == {"failures": 30, "decisions": 30, "issues": 30, "outcomes": 0}
    assert sum(new) == 90, "each fact is new for exactly one replica"


# -- what the daemon reads back ------------------------------------------------------------------


def test_created_reruns_without_an_outcome_are_remembered_until_their_outcome(open_ledger: Open) -> None:
    ledger = open_ledger()
    _issue(ledger, "abc-retry-1")
    _issue(ledger, "abc-retry-2", result="already_exists")

    [pending] = ledger.created_without_outcome()
    assert (pending.target, pending.attempt, pending.at) == ("abc-retry-1", 1, T0)
    assert ledger.issued_as("ml", "prod", "abc-retry-1") == ("abc", 1)
    assert ledger.issued_as("ml", "prod", "abc-retry-2") is None

    ledger.record_outcome(
        RerunOutcome(RunRef("ml", "prod", "abc-retry-1"), "p", "abc", 1, "SUCCEEDED"), now=T0
    )
    assert ledger.created_without_outcome() == []


def test_the_watermark_survives_a_restart_as_an_aware_utc_time(open_ledger: Open) -> None:
    ledger = open_ledger()
    ledger.set_watermark("ml/prod", T0)
    ledger.set_watermark("ml/prod", T0 + timedelta(minutes=1))
    ledger.close()

    assert open_ledger().watermark("ml/prod") == T0 + timedelta(minutes=1)
    assert open_ledger().watermark("ml/other") is None
    with pytest.raises(LedgerError, match=r"has no timezone; the ledger stores aware UTC times only"):
        open_ledger().set_watermark("ml/prod", datetime(2026, 1, 1))


def test_prune_keeps_the_ledger_within_the_retention(open_ledger: Open) -> None:
    ledger = open_ledger()
    for day in range(10):
        at = T0 + timedelta(days=day)
        _decide(ledger, f"r{day}", at=at)
        _issue(ledger, f"r{day}-retry-1", at=at)

    deleted = ledger.prune(T0 + timedelta(days=7))

    assert deleted == 14
    assert ledger.counts()["decisions"] == 3
    assert [r["run"] for r in ledger.history(limit=10)] == ["r9", "r8", "r7"]


def test_history_filters_by_run_or_root_and_policy(open_ledger: Open) -> None:
    ledger = open_ledger()
    _decide(ledger, "abc")
    _decide(ledger, "abc-retry-1", root="abc", attempt=2)
    _decide(ledger, "zzz", policy="q")

    assert [r["run"] for r in ledger.history(run="abc")] == ["abc-retry-1", "abc"]
    assert [r["run"] for r in ledger.history(policy="q")] == ["zzz"]
    assert ledger.history(limit=1)[0]["run"] == "zzz"
    assert ledger.policies_seen() == ["p", "q"]


def test_history_search_takes_percent_and_underscore_literally(open_ledger: Open) -> None:
    ledger = open_ledger()
    _decide(ledger, "a_b")
    _decide(ledger, "axb")
    _decide(ledger, "c%d")

    assert [r["run"] for r in ledger.history(contains="_")] == ["a_b"]
    assert [r["run"] for r in ledger.history(contains="%")] == ["c%d"]
    assert [r["run"] for r in ledger.history(contains="b")] == ["axb", "a_b"]


def test_history_rows_say_what_was_decided_when_and_by_whom(open_ledger: Open) -> None:
    ledger = open_ledger()
    _decide(ledger, "abc", fingerprint="f00d", reason="policy 'p' reruns run 'abc': flaky")

    [row] = ledger.history()

    assert row["at"] == "2026-11-24T10:00:00Z"
    assert (row["project"], row["domain"], row["run"], row["root"]) == ("ml", "prod", "abc", "abc")
    assert (row["decision"], row["policy"], row["attempt"], row["source"]) == ("rerun", "p", 1, "daemon")
    assert row["reason"] == "policy 'p' reruns run 'abc': flaky"
    assert row["fingerprint"] == "f00d"


def test_each_handle_records_its_source_and_history_filters_by_it(open_ledger: Open) -> None:
    daemon, sweep = open_ledger(), open_ledger("sweep")
    _decide(daemon, "a")
    _decide(sweep, "b")
    _issue(daemon, "a-retry-1")
    _issue(sweep, "b-retry-1")

    assert [(r["run"], r["source"]) for r in daemon.history()] == [("b", "sweep"), ("a", "daemon")]
    assert [r["run"] for r in daemon.history(source="sweep")] == ["b"]
    assert [r["run"] for r in sweep.history(source="daemon")] == ["a"]
    assert {(i["target"], i["source"]) for i in daemon.issues()} == {
        ("a-retry-1", "daemon"),
        ("b-retry-1", "sweep"),
    }


def test_lineage_rows_tell_a_lineage_oldest_first(open_ledger: Open) -> None:
    ledger = open_ledger()
    _decide(ledger, "abc", at=T0)
    _issue(ledger, "abc-retry-1", at=T0 + timedelta(seconds=1))
    _decide(ledger, "abc-retry-1", root="abc", attempt=2, at=T0 + timedelta(minutes=1))
    ledger.record_outcome(
        RerunOutcome(RunRef("ml", "prod", "abc-retry-1"), "p", "abc", 1, "FAILED"),
        now=T0 + timedelta(minutes=1),
    )
    _decide(ledger, "other", at=T0 + timedelta(minutes=2))

    rows = ledger.lineage_rows(root="abc")
    assert [(d["run"], d["attempt"], d["at"]) for d in rows["decisions"]] == [
        ("abc", 1, "2026-11-24T10:00:00Z"),
        ("abc-retry-1", 2, "2026-11-24T10:01:00Z"),
    ]
    [issue] = rows["issues"]
    assert (issue["target"], issue["result"], issue["root"], issue["at"]) == (
        "abc-retry-1",
        "created",
        "abc",
        "2026-11-24T10:00:01Z",
    )
    [outcome] = rows["outcomes"]
    assert (outcome["project"], outcome["domain"], outcome["target"], outcome["phase"]) == (
        "ml",
        "prod",
        "abc-retry-1",
        "FAILED",
    )
    since = ledger.lineage_rows(since=T0 + timedelta(minutes=1))
    assert [d["run"] for d in since["decisions"]] == ["abc-retry-1", "other"]
    assert [d["run"] for d in ledger.lineage_rows(limit=1)["decisions"]] == ["other"]
    assert ledger.root_of("abc-retry-1") == "abc"
    assert ledger.root_of("nobody") is None


def test_reproductions_are_recorded_once_and_read_back_newest_first(open_ledger: Open) -> None:
    ledger = open_ledger()

    def fired(at: datetime, result: str, *, manual: bool = False) -> dict[str, Any]:
        return {
            "check": "nightly",
            "scheduled_for": at.isoformat().replace("+00:00", "Z"),
            "manual": manual,
            "result": result,
            "reason": f"outputs {result}",
            "project": "ml",
            "domain": "prod",
            "reference": "ref1",
            "rerun": f"ref1-repro-{at:%H%M}",
            "diff": [{"output": "o0", "reference": 1, "rerun": 2}] if result == "mismatched" else [],
        }

    assert ledger.record_reproduction(fired(T0, "matched"), now=T0)
    assert not ledger.record_reproduction(fired(T0, "matched"), now=T0)
    assert ledger.record_reproduction(fired(T0 + timedelta(hours=1), "mismatched"), now=T0)
    assert ledger.record_reproduction(fired(T0 + timedelta(hours=2), "matched", manual=True), now=T0)

    assert ledger.last_reproduction("nightly") == T0 + timedelta(hours=1)  # manual firings do not count
    assert ledger.last_reproduction("other") is None
    assert ledger.reproduction_checks() == ["nightly"]
    assert [r["result"] for r in ledger.reproduction_history("nightly")] == [
        "matched",
        "mismatched",
        "matched",
    ]
    assert [r["result"] for r in ledger.reproduction_history("nightly", limit=1)] == ["matched"]
    [latest] = ledger.latest_reproductions()
    assert (latest["manual"], latest["recorded_at"]) == (True, "2026-11-24T10:00:00Z")
    assert ledger.reproduction_history("nightly")[1]["diff"] == [{"output": "o0", "reference": 1, "rerun": 2}]


# -- group commits -----------------------------------------------------------------------------


def test_grouped_rows_are_committed_together_by_the_scheduled_flush(open_ledger: Open) -> None:
    ledger, scheduled = _grouped(open_ledger)
    other = open_ledger()  # another process: it sees committed rows only
    assert _failure(ledger, "a") and _decide(ledger, "a")
    assert _failure(ledger, "b") and _decide(ledger, "b")
    assert len(scheduled) == 1  # one flush for the whole group
    assert not _failure(ledger, "a")  # already recorded (pending): not new again
    assert other.counts()["decisions"] == 0

    scheduled.pop()()  # the timer fires
    assert other.counts()["failures"] == 2
    assert other.counts()["decisions"] == 2
    assert not _failure(ledger, "b")  # written: still not new

    assert _failure(ledger, "c")  # the next row opens the next group
    assert len(scheduled) == 1


def test_a_watermark_and_close_commit_the_open_group_first(open_ledger: Open) -> None:
    ledger, scheduled = _grouped(open_ledger)
    other = open_ledger()
    assert _failure(ledger, "a")
    ledger.set_watermark("ml/prod", T0 + timedelta(minutes=1))
    # the watermark is never ahead of the rows it covers
    assert other.counts()["failures"] == 1
    assert _failure(ledger, "b")
    ledger.close()  # a graceful stop keeps the group
    assert other.counts()["failures"] == 2
    scheduled.pop()()  # the timer that would have flushed it fires after close: a no-op


def test_a_refused_row_does_not_lose_the_rows_grouped_with_it(open_ledger: Open) -> None:
    ledger, scheduled = _grouped(open_ledger)
    assert _failure(ledger, "a")  # one flush is scheduled for it
    with pytest.raises(LedgerError, match="write failed"):
        _decide(ledger, "a", policy=["unbindable"])
    scheduled.pop()()
    assert open_ledger().counts()["failures"] == 1


def test_without_group_commits_each_row_is_committed_at_once(open_ledger: Open) -> None:
    ledger = open_ledger()
    other = open_ledger()
    assert _failure(ledger, "a")
    assert other.counts()["failures"] == 1
    ledger.group_commits(lambda flush: None)
    assert _failure(ledger, "b")
    ledger.group_commits(None)  # turning grouping off commits what is open
    assert other.counts()["failures"] == 2
