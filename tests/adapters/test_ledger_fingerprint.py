"""The ledger's ``fingerprint`` column: every decision is recorded with its failure's
fingerprint (``rerund.core.fingerprints``), indexed so the incidents that build on it can count
failures of one cause; a ledger written before the column existed gains it on open."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from rerund.adapters.ledger import Ledger
from rerund.cli import main
from rerund.core.decide import decide
from rerund.core.model import ErrorInfo, Failure
from rerund.core.redact import public_decision
from rerund.core.rules import PolicySet

T0 = datetime(2026, 12, 5, 5, 0, tzinfo=UTC)
POLICIES = "policies: [{name: s3, match: {error: {patterns: ['SlowDown']}}, retry: {max_attempts: 3}}]\n"


def _failure(run: str, request_id: str) -> Failure:
    message = f"SlowDown: Please reduce your request rate. RequestId: {request_id}"
    return Failure(
        run=run,
        task="etl.load",
        error=ErrorInfo(kind="SYSTEM", code="SlowDown", message=message),
        failed_at=T0,
    )


def _record(ledger: Ledger, failure: Failure, policies: PolicySet) -> str:
    decision = decide(failure, policies, T0)
    ledger.record_decision(
        project="ml",
        domain="prod",
        run=failure.run,
        root=failure.root,
        decision=public_decision(decision.to_json()),
        now=T0,
    )
    return decision.fingerprint


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute("PRAGMA table_info(decisions)")}


def test_a_decision_is_recorded_with_its_fingerprint_in_a_column(tmp_path: Path, policies) -> None:
    ledger = Ledger(tmp_path / "rerund.db")
    first = _record(ledger, _failure("rone0000001", "4442587FB7D0A2F9"), policies(POLICIES))
    second = _record(ledger, _failure("rtwo0000002", "0F1E2D3C4B5A6978"), policies(POLICIES))
    ledger.close()

    assert first == second and len(first) == 12  # two runs, other request ids: one cause
    with sqlite3.connect(tmp_path / "rerund.db") as db:
        rows = db.execute("SELECT run, fingerprint FROM decisions ORDER BY id").fetchall()
        plan = " ".join(
            str(r)
            for r in db.execute("EXPLAIN QUERY PLAN SELECT * FROM decisions WHERE fingerprint = ?", (first,))
        )
    assert rows == [("rone0000001", first), ("rtwo0000002", first)]
    assert "decisions_fingerprint" in plan  # the breaker's lookups are indexed
    assert [r["fingerprint"] for r in Ledger(tmp_path / "rerund.db").history()] == [first, first]


def test_history_json_shows_each_decisions_fingerprint(tmp_path: Path, capsys, policies) -> None:
    fp = _record(
        Ledger(tmp_path / "rerund.db"), _failure("rone0000001", "4442587FB7D0A2F9"), policies(POLICIES)
    )

    assert main(["history", "--state", str(tmp_path / "rerund.db"), "--format", "json"]) == 0

    rows = json.loads(capsys.readouterr().out)
    assert [r["fingerprint"] for r in rows] == [fp]


def test_an_old_ledger_gains_the_fingerprint_column_and_its_rows_have_none(tmp_path: Path, policies) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema before the column existed (and before source)
        db.execute(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
            " run_key TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL,"
            " root TEXT NOT NULL, attempt INTEGER, policy TEXT NOT NULL, decision TEXT NOT NULL,"
            " reason TEXT NOT NULL, body TEXT NOT NULL, UNIQUE (run_key, decision, policy, attempt))"
        )
        db.execute(
            "INSERT INTO decisions (at, run_key, project, domain, run, root, attempt, policy, decision,"
            " reason, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                T0.isoformat(),
                "ml/prod/old",
                "ml",
                "prod",
                "old",
                "old",
                None,
                "",
                "ignore",
                "no policy",
                "{}",
            ),
        )
    assert "fingerprint" not in _columns(path)

    ledger = Ledger(path)
    Ledger(path).close()  # opening twice adds the column and its index once
    fp = _record(ledger, _failure("rnew0000001", "4442587FB7D0A2F9"), policies(POLICIES))

    assert "fingerprint" in _columns(path)
    assert [(r["run"], r["fingerprint"]) for r in ledger.history()] == [("rnew0000001", fp), ("old", None)]
