"""The ledger's ``source`` column: who decided (the daemon or ``rerund sweep``, each with its own
handle on one file), shown and filtered by ``rerund history``, added in place to a ledger
written before it existed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from rerund.adapters.ledger import Ledger
from rerund.cli import main
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def _decision(run: str, kind: str = "rerun") -> dict[str, object]:
    return {
        "decision": kind,
        "policy": "p",
        "reason": f"{kind} {run}",
        "attempt": 1 if kind == "rerun" else None,
    }


def _record(ledger: Ledger, run: str, kind: str = "rerun") -> bool:
    return ledger.record_decision(
        project="ml", domain="prod", run=run, root=run, decision=_decision(run, kind), now=T0
    )


def _issue(ledger: Ledger, target: str) -> bool:
    return ledger.record_issue(
        RerunIssue(RunRef("ml", "prod", "a"), target, "a", 1, "p", "run", "created"), now=T0
    )


def test_an_old_ledger_gains_the_column_and_its_rows_count_as_the_daemons(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema before the column existed
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

    ledger = Ledger(path, source="sweep")
    Ledger(path).close()  # opening twice adds the column once

    assert [(r["run"], r["source"]) for r in ledger.history()] == [("old", "daemon")]
    assert _record(ledger, "new")
    assert [r["source"] for r in ledger.history()] == ["sweep", "daemon"]


def test_history_tags_the_sweeps_decisions(tmp_path: Path, capsys) -> None:
    _record(Ledger(tmp_path / "rerund.db"), "a")
    _record(Ledger(tmp_path / "rerund.db", source="sweep"), "b", "ignore")

    assert main(["history", "--state", str(tmp_path / "rerund.db")]) == 0
    out = capsys.readouterr().out.splitlines()

    assert out == [
        "2026-11-30T15:00:00Z  ignore   ml/prod/b  [sweep] ignore b",
        "2026-11-30T15:00:00Z  rerun    ml/prod/a  rerun a",
    ]
    assert (
        main(["history", "--state", str(tmp_path / "rerund.db"), "--source", "daemon", "--format", "json"])
        == 0
    )
    assert '"source": "daemon"' in capsys.readouterr().out
