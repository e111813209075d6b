"""A lean ledger (issue 24): compact decision rows whose repeated reason is stored once, the same
records read back; retention by size that never prunes a lineage in flight; incremental vacuum
on a new file; an existing file opens, keeps its rows and gains the compact rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rerund.adapters.ledger import Ledger
from rerund.core.model import GiveUp, Ignore, Rerun, Scope
from rerund.core.records import RerunIssue
from rerund.core.redact import public_decision
from rerund.core.runs import RunRef
from rerund.runtime.metrics import Metrics

T0 = datetime(2026, 12, 1, tzinfo=UTC)
P, D = "bench", "development"


def _ignore(ledger: Ledger, run: str, at: datetime) -> None:
    ledger.record_failure(project=P, domain=D, run=run, failed_at=at, now=at)
    decision = Ignore(
        policy="ignore-bad-input",
        reason=f"policy 'ignore-bad-input' never reruns run {run!r} (retry: false)",
        source_run=run,
        root=run,
    )
    ledger.record_decision(
        project=P, domain=D, run=run, root=run, decision=public_decision(decision.to_json()), now=at
    )


def _file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def test_an_ignored_failure_costs_at_most_500_bytes_of_ledger(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    n = 4000
    for i in range(n):
        _ignore(ledger, f"r{i:06d}x{(i * 7919) % 100003:05d}abcdefgh", T0 + timedelta(seconds=i))
    ledger.close()

    per_failure = _file_bytes(path) / n
    print(f"ledger bytes per ignored failure: {per_failure:.0f}")
    assert per_failure <= 500  # 456 B measured here; 1,076 B before compaction


def _decisions() -> list[dict[str, Any]]:
    at = T0.isoformat()
    rerun = Rerun(
        policy="flaky",
        reason="policy 'flaky' reruns run 'b' as 'b-retry-1' (attempt 1 of 3)",
        source_run="b",
        root="b",
        attempt=1,
        scope=Scope.RUN,
        name="b-retry-1",
        env={"FLYTE_RETRY": "1"},
        labels={"rerund-root": "b"},
        not_before=T0,
    )
    return [
        Ignore(
            reason="no policy matches run 'a' (2 tried): it is not rerun", source_run="a", root="a"
        ).to_json(),
        rerun.to_json(),
        GiveUp(
            policy="flaky",
            reason="policy 'flaky' gives up on run 'c': attempt 4",
            source_run="c",
            root="b",
            attempt=4,
        ).to_json(),
        {"decision": "ignore", "policy": None, "reason": "has \x00 in it", "source_run": "d", "at_old": at},
    ]


def test_compact_rows_read_back_as_the_decisions_recorded(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "rerund.db")
    recorded = [public_decision(d) for d in _decisions()]
    for body in recorded:
        run = body["source_run"]
        ledger.record_decision(project=P, domain=D, run=run, root="b", decision=body, now=T0)

    read = {
        r["run"]: {
            k: v for k, v in r.items() if k not in ("at", "project", "domain", "run", "root", "source")
        }
        for r in ledger.history()
    }
    rows = ledger.lineage_rows(root="b")["decisions"]

    # history rows always name a fingerprint (null for a decision recorded without one)
    assert read == {b["source_run"]: {**b, "fingerprint": b.get("fingerprint")} for b in recorded}
    assert {r["run"]: r["reason"] for r in rows} == {b["source_run"]: b["reason"] for b in recorded}


def test_a_repeated_reason_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    for i in range(50):
        _ignore(ledger, f"run-{i}", T0)
    ledger.close()

    with sqlite3.connect(path) as db:
        texts = db.execute("SELECT text FROM texts").fetchall()
        reasons = {r[0] for r in db.execute("SELECT reason FROM decisions")}
        bodies = {r[0] for r in db.execute("SELECT body FROM decisions")}
    assert texts == [("policy 'ignore-bad-input' never reruns run '\x00' (retry: false)",)]
    assert reasons == {""} and bodies == {"{}"}


def test_retention_by_size_deletes_the_oldest_rows_but_never_a_lineage_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path, max_bytes=256 * 1024)
    ledger.record_issue(
        RerunIssue(RunRef(P, D, "flying"), "flying-retry-1", "flying", 1, "flaky", "run", "created"),
        now=T0 - timedelta(days=1),
    )
    ledger.record_decision(
        project=P,
        domain=D,
        run="flying",
        root="flying",
        decision=public_decision(_decisions()[1] | {"source_run": "flying"}),
        now=T0 - timedelta(days=1),
    )
    for i in range(3000):
        _ignore(ledger, f"run-{i:05d}", T0 + timedelta(seconds=i))

    deleted = ledger.prune(T0 - timedelta(days=30))

    used = ledger._used_bytes()
    runs = {r["run"] for r in ledger.history(limit=10_000)}
    assert deleted > 0 and used <= 256 * 1024, used
    assert "flying" in runs  # the oldest row, but its rerun has no outcome yet
    assert "run-02999" in runs and "run-00000" not in runs
    assert ledger.created_without_outcome()[0].target == "flying-retry-1"


def test_a_new_ledger_vacuums_incrementally_and_returns_pruned_pages(tmp_path: Path) -> None:
    path = tmp_path / "rerund.db"
    ledger = Ledger(path)
    for i in range(3000):
        _ignore(ledger, f"run-{i:05d}", T0)
    ledger.vacuum()
    full = path.stat().st_size

    ledger.prune(T0 + timedelta(seconds=1))

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert path.stat().st_size < full / 4, (full, path.stat().st_size)


def test_an_existing_ledger_keeps_its_rows_and_mode_and_gains_compact_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a ledger as rerund wrote it before (full body and reason)
        db.execute(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
            " run_key TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL,"
            " root TEXT NOT NULL, attempt INTEGER, policy TEXT NOT NULL, decision TEXT NOT NULL,"
            " reason TEXT NOT NULL, body TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'daemon',"
            " UNIQUE (run_key, decision, policy, attempt))"
        )
        old = public_decision(_decisions()[0])
        import json

        db.execute(
            "INSERT INTO decisions (at, run_key, project, domain, run, root, attempt, policy, decision,"
            " reason, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                T0.isoformat(),
                f"{P}/{D}/a",
                P,
                D,
                "a",
                "a",
                None,
                "",
                "ignore",
                old["reason"],
                json.dumps(old),
            ),
        )

    ledger = Ledger(path)
    _ignore(ledger, "new", T0)
    history = {r["run"]: r for r in ledger.history()}

    assert history["a"]["reason"] == old["reason"] and history["a"]["env"] == {}
    assert history["new"]["reason"] == "policy 'ignore-bad-input' never reruns run 'new' (retry: false)"
    assert ledger.vacuum() == 0  # auto_vacuum stays NONE: freed pages are reused, not returned
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0


@pytest.mark.parametrize("memory", [False, True], ids=["file", "in-memory"])
def test_the_ledger_size_is_a_metric(tmp_path: Path, memory: bool) -> None:
    ledger = Ledger(":memory:" if memory else tmp_path / "rerund.db")
    _ignore(ledger, "a", T0)
    ledger.flush()
    registry = CollectorRegistry()
    Metrics(registry).track_held_bytes(lambda: 0.0, ledger.size_bytes)

    size = registry.get_sample_value("rerund_ledger_bytes")

    assert (
        size
        == ledger.size_bytes()
        == (
            0
            if memory
            else (tmp_path / "rerund.db").stat().st_size + (tmp_path / "rerund.db-wal").stat().st_size
        )
    )
