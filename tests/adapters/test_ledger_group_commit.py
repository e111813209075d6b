"""Group commits in an SQLite file: another process writes the file while rows are pending (the
write lock is taken only for a flush). What every backend does with groups is in the ledger
contract (tests/ports/test_ledger_contract.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rerund.adapters.ledger import Ledger, has_fact

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


def test_a_group_of_decisions_sharing_a_reason_writes_its_text_once_and_each_row_reads_back_whole(
    tmp_path: Path,
) -> None:
    # A reload's (or a storm's) rows share a few reason texts: a group writes each text once,
    # and every row of the group (and of the next group) reads back its own reason.
    ledger, scheduled = _grouped(tmp_path / "l.db")
    reasons = {}
    for group in (("run-a", "run-b", "run-c"), ("run-d", "run-e")):
        for run in group:
            kind = "ignore" if run in ("run-b", "run-e") else "rerun"
            reasons[run] = f"policy 'p' {kind}s run {run!r} (shared text)"
            ledger.record_decision(
                project="ml",
                domain="prod",
                run=run,
                root=run,
                decision={"decision": kind, "policy": "p", "reason": reasons[run], "attempt": 1},
                now=T0,
            )
        texts_written = [args for sql, args in ledger._pending if "INTO texts" in sql]
        assert len(texts_written) == 2  # one per distinct text of this group, not one per row
        scheduled.pop()()
    assert {r["run"]: r["reason"] for r in ledger.history()} == reasons
    assert _committed(tmp_path / "l.db", "texts") == 2
    ledger.close()


def _decide(ledger: Ledger, run: str, policy: str) -> bool:
    return ledger.record_decision(
        project="ml",
        domain="prod",
        run=run,
        root=run,
        decision={
            "decision": "rerun",
            "policy": policy,
            "reason": f"policy {policy} reruns it",
            "attempt": 1,
        },
        now=T0,
    )


@pytest.mark.parametrize("owed", [50, 6_000], ids=["a-few", "six-thousand"])
def test_deciding_again_the_failures_this_process_recorded_reads_the_file_for_none_of_them(
    tmp_path: Path, owed: int
) -> None:
    # A reload decides every owed failure again (a renamed policy: a new decision each), oldest
    # first: the order the fresh runs leave in. Their failures were new to the file when this
    # process recorded them: whether each new decision is new is this process's to say, with no
    # read of the file per decision. When they do not all fit in the fresh runs' budget, every
    # one of them is forgotten just before its turn and read; each fact is kept as an 8-byte
    # digest, so 6,000 runs with a failure and two decisions fit in the 2 MiB budget (a tuple of
    # fact keys, ~690 bytes a run, left room for ~3,000).
    ledger, scheduled = _grouped(tmp_path / "l.db")
    fresh = ledger.caches[0]
    runs = [f"run-{i:05d}" for i in range(owed)]
    for run in runs:
        assert _failure(ledger, run) and _decide(ledger, run, "slow")
    scheduled.pop()()
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)

    assert all(_decide(ledger, run, "slow-renamed") for run in runs)
    per_run = fresh.size_of(f"ml/prod/{runs[-1]}")
    held, kept = fresh.held, len(fresh)
    assert not any(_decide(ledger, run, "slow-renamed") for run in runs)  # pending: once
    scheduled.pop()()
    assert not any(_decide(ledger, run, "slow-renamed") for run in runs)  # written: once
    assert not any(_decide(ledger, run, "slow") for run in runs)

    reads = [s for s in statements if s.startswith("SELECT")]
    assert reads == []  # before: one "SELECT 1 FROM decisions ..." per decision (50: 200 in all)
    assert kept == len(runs) and held <= fresh.budget
    assert per_run <= 340  # the entry, its run key and three 8-byte digests (before: ~690)
    assert len(ledger.history(policy="slow-renamed", limit=owed + 1)) == len(runs)
    ledger.close()


def test_a_run_whose_failure_another_process_recorded_is_read_from_the_file_and_a_replaced_file_again(
    tmp_path: Path,
) -> None:
    # ``rerund sweep`` recorded this failure and decision first: the daemon's ledger reads the
    # file to know the decision is not new. After the file is replaced, nothing this process
    # remembers counts: the new file is read, and the decision is new to it.
    sweep = Ledger(tmp_path / "l.db", source="sweep")
    assert _failure(sweep, "swept") and _decide(sweep, "swept", "slow")
    sweep.close()
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert not _failure(ledger, "swept") and not _decide(ledger, "swept", "slow")
    assert _failure(ledger, "mine") and _decide(ledger, "mine", "slow")
    scheduled.pop()()

    (tmp_path / "l.db").rename(tmp_path / "old.db")
    assert ledger.history() == []  # a read finds the file replaced: a new, empty one
    assert _decide(ledger, "mine", "slow")  # the new file has no row of it
    scheduled.pop()()
    assert [r["run"] for r in ledger.history()] == ["mine"]
    ledger.close()


def test_the_fresh_runs_stay_within_their_byte_budget_and_a_forgotten_run_is_read_not_counted_new_twice(
    tmp_path: Path,
) -> None:
    # What this process knows is new (``_fresh``) is bounded in bytes, as in the PostgreSQL
    # ledger: filled past its budget the oldest runs are forgotten, and a decision about one of
    # them recorded again is read from the file (one unique-key read), never counted new twice.
    ledger, scheduled = _grouped(tmp_path / "l.db")
    fresh = ledger.caches[0]
    assert fresh.name == "ledger_fresh"
    fresh.budget = 5_000  # room for about ten runs with a decision each
    runs = [f"run-{i:03d}" for i in range(50)]
    for run in runs:
        assert _failure(ledger, run) and _decide(ledger, run, "slow")
    held, kept = fresh.held, len(fresh)
    scheduled.pop()()
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)

    again = [_decide(ledger, run, "slow") for run in runs]
    ledger.close()
    assert 0 < held <= fresh.budget and 0 < kept < len(runs)  # the oldest runs were forgotten
    assert again == [False] * len(runs)  # ... and their decisions are not new a second time
    reads = [s for s in statements if s.startswith("SELECT")]
    assert len(reads) >= len(runs) - kept  # the forgotten ones cost a read each instead


def test_a_fresh_run_knows_its_facts_apart_and_forgets_them_with_the_file(tmp_path: Path) -> None:
    # What a fresh run keeps is a digest per fact, and a digest stands for one fact: decisions
    # differing only in policy, kind or attempt (or a missing attempt) are each new once.
    ledger, scheduled = _grouped(tmp_path / "l.db")
    assert _failure(ledger, "r")
    decisions = [
        {"decision": kind, "policy": policy, "reason": "x", "attempt": attempt}
        for kind in ("rerun", "defer")
        for policy in ("a", "b")
        for attempt in (1, 2, None)
    ]

    def record(decision: dict[str, object]) -> bool:
        return ledger.record_decision(
            project="ml", domain="prod", run="r", root="r", decision=decision, now=T0
        )

    assert [record(d) for d in decisions] == [True] * len(decisions)
    scheduled.pop()()
    assert [record(d) for d in decisions] == [False] * len(decisions)
    assert _committed(tmp_path / "l.db", "decisions") == len(decisions)
    ledger.close()


@settings(max_examples=300)
@example(digests=[b"aaaabbbb", b"ccccdddd"], wanted=b"bbbbcccc")  # straddles two
@example(digests=[b"xaaaaaaa", b"aaaaaaab"], wanted=b"aaaaaaaa")  # straddles, found again after
@given(st.lists(st.binary(min_size=8, max_size=8), max_size=6), st.binary(min_size=8, max_size=8))
def test_a_digest_is_found_among_a_runs_digests_only_where_one_of_them_is_it(
    digests: list[bytes], wanted: bytes
) -> None:
    # The digests sit end to end: one straddling two of them is not one of them.
    assert has_fact(b"".join(digests), wanted) == (wanted in digests)
    for i in range(len(digests)):
        assert has_fact(b"".join(digests), digests[i])
