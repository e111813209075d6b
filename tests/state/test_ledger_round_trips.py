"""What a storm costs the PostgreSQL ledger in statements (issue 25: its rate against SQLite's):
with group commits, a new failure's facts — the failure, its decision, the rerun's issue result,
the rerun's outcome — cost their share of one multi-row write per group and no synchronous read
(a failure later than every one the ledger held is new; the facts of a run new to the ledger
are new unless this process recorded them), not one read per row. Counted on
a real server through SQLAlchemy's cursor events (every statement the ledger sends)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from rerund.adapters.sqlstate import PostgresLedger
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.runs import RunRef

from .support import migrated

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
N = 50


def _storm(ledger: PostgresLedger, runs: range) -> list[bool]:
    """What the daemon records for each failed run it reruns, and for the rerun's outcome."""
    new = []
    for n in runs:
        run, target = f"r{n}", f"r{n}-retry-1"
        new.append(ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0))
        decision = {"decision": "rerun", "policy": "p", "reason": "transient", "attempt": 1}
        new.append(
            ledger.record_decision(project="ml", domain="prod", run=run, root=run, decision=decision, now=T0)
        )
        issue = RerunIssue(RunRef("ml", "prod", run), target, run, 1, "p", "run", "created")
        new.append(ledger.record_issue(issue, now=T0))
        outcome = RerunOutcome(RunRef("ml", "prod", target), "p", run, 1, "SUCCEEDED")
        new.append(ledger.record_outcome(outcome, now=T0))
    return new


def _counting(ledger: PostgresLedger) -> Counter[str]:
    seen: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        seen[statement.split()[0].upper()] += 1

    event.listen(ledger._engine, "before_cursor_execute", count)
    return seen


def test_a_storm_costs_one_read_per_new_run_and_one_write_per_table_and_group(pg_url: str) -> None:
    ledger = PostgresLedger(migrated(pg_url))
    flushes: list[Callable[[], None]] = []
    ledger.group_commits(flushes.append)
    statements = _counting(ledger)
    try:
        new = _storm(ledger, range(N))
        assert len(flushes) == 1
        flushes.pop()()
        again = _storm(ledger, range(N))  # the same facts again (a resync): nothing is new
        for flush in flushes:
            flush()
    finally:
        ledger.close()
    assert new == [True] * (4 * N)
    assert again == [False] * (4 * N)
    # one read in all (the newest failure time the ledger holds: none), then none for the
    # failures that failed after it nor for the facts of a run this process found new and
    # recorded itself, the second time included
    assert statements["SELECT"] == 1, statements
    assert statements["INSERT"] == 4, statements  # one per table of the one group


def test_a_restarted_process_finds_the_facts_recorded_before_it_not_new(pg_url: str) -> None:
    """Freshness is this process's own: after a restart (or a failover) every run the ledger
    already has is read, and none of its facts counts as new again."""
    first = PostgresLedger(migrated(pg_url))
    first.group_commits(lambda flush: None)
    assert _storm(first, range(N)) == [True] * (4 * N)
    first.close()  # writes the group
    restarted = PostgresLedger(pg_url)
    restarted.group_commits(lambda flush: None)
    statements = _counting(restarted)
    try:
        assert _storm(restarted, range(N + 1)) == [False] * (4 * N) + [True] * 4
        reads = statements["SELECT"]
        later = restarted.record_failure(
            project="ml", domain="prod", run="r-later", failed_at=T0 + timedelta(seconds=1), now=T0
        )
        assert (later, statements["SELECT"] - reads) == (True, 0)  # later than every failure: new
    finally:
        restarted.close()


def test_the_fresh_runs_stay_within_their_byte_budget_and_a_forgotten_run_is_read_not_counted_new_twice(
    pg_url: str,
) -> None:
    """The runs this process knows are new (``_fresh``) are bounded in bytes: filled past the
    budget, the oldest are forgotten, and their facts recorded again are read (one unique-key
    read each), never counted new a second time."""
    ledger = PostgresLedger(migrated(pg_url))
    flushes: list[Callable[[], None]] = []
    ledger.group_commits(flushes.append)
    fresh: Any = ledger._fresh
    fresh.budget = 10_000  # room for about ten runs (~1,000 bytes each with their facts)
    statements = _counting(ledger)
    try:
        new = _storm(ledger, range(N))
        held, kept = fresh.held, len(fresh)
        for flush in flushes:
            flush()
        reads = statements["SELECT"]
        again = _storm(ledger, range(N))  # the same facts again: the forgotten runs are read
        for flush in flushes[1:]:
            flush()
    finally:
        ledger.close()
    assert new == [True] * (4 * N)
    assert 0 < held <= fresh.budget and kept < N  # the oldest runs were forgotten
    assert again == [False] * (4 * N)  # ... and their facts are not new a second time
    assert statements["SELECT"] > reads  # they cost reads instead


def test_a_reload_over_more_fresh_runs_than_a_fact_tuple_per_key_left_room_for_reads_none(
    pg_url: str,
) -> None:
    """A hot reload decides every owed failure again, oldest first (the order the fresh runs
    leave in): when they do not all fit in the budget each is forgotten just before its turn
    and read. A fact is kept as an 8-byte digest (as in the SQLite ledger), so 6,000 runs with
    a failure and two decisions (more than the ~2,400 a set of fact keys left room for in the
    2 MiB budget) fit, and their new decisions cost no read."""
    ledger = PostgresLedger(migrated(pg_url))
    flushes: list[Callable[[], None]] = []
    ledger.group_commits(flushes.append)
    fresh: Any = ledger._fresh
    runs = [f"run-{i:05d}" for i in range(6_000)]

    def decide(run: str, policy: str) -> bool:
        decision = {"decision": "defer", "policy": policy, "reason": "later", "attempt": 1}
        return ledger.record_decision(
            project="ml", domain="prod", run=run, root=run, decision=decision, now=T0
        )

    try:
        for run in runs:
            assert ledger.record_failure(project="ml", domain="prod", run=run, failed_at=T0, now=T0)
            assert decide(run, "slow")
        flushes[-1]()
        statements = _counting(ledger)
        again = [decide(run, "slow-renamed") for run in runs]
        per_run = fresh.size_of(f"ml/prod/{runs[-1]}")
        kept = len(fresh)
        flushes[-1]()
    finally:
        ledger.close()
    print(f"reads={statements['SELECT']} kept={kept} per_run={per_run}")
    assert again == [True] * len(runs)
    assert statements["SELECT"] == 0  # before: one unique-key read per decision, ~1,100 or more
    assert kept == len(runs)
    assert per_run <= 340  # the entry, its run key and three 8-byte digests (before: ~880)
