"""Copy an SQLite ledger file into a PostgreSQL ledger (``rerund state migrate``).

The file is read as it is (compact decision rows get their reason back from ``texts``, old
files their added columns with ``Ledger(create=False)``), in batches, table by table, oldest
first (``id``/key order, so the database's ids keep the file's order): every table of
``schema.metadata`` but the target's own ``leadership`` row, the outbox and the incidents
included (``tests/state/test_state_cli.py`` derives the list from the schema). Every row is inserted
``ON CONFLICT DO NOTHING`` on the ledger's unique keys, so copying twice (or into a database a
daemon already writes) adds nothing twice; a watermark keeps the later of the two times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert

from rerund.adapters.ledger import _RUN, Ledger
from rerund.adapters.sqlstate import schema as t
from rerund.adapters.sqlstate.ledger import _DRIVER_ERRORS, PostgresLedger, _reason
from rerund.errors import LedgerError

__all__ = ["BATCH", "NOT_COPIED", "Copied", "copy_sqlite_ledger"]

BATCH = 2_000
# (table, the file's SELECT in copy order); decisions join their shared reason text.
_SOURCES: tuple[tuple[Table, str], ...] = (
    (t.failures, "SELECT * FROM failures ORDER BY run_key"),
    (
        t.decisions,
        "SELECT d.*, x.text AS reason_template FROM decisions d LEFT JOIN texts x ON x.id = d.reason_id"
        " ORDER BY d.id",
    ),
    (t.issues, "SELECT * FROM issues ORDER BY id"),
    (t.outcomes, "SELECT * FROM outcomes ORDER BY at, target_key"),
    (t.watermarks, "SELECT * FROM watermarks ORDER BY scope"),
    (t.reproductions, "SELECT * FROM reproductions ORDER BY id"),
    (t.reruns_seen, "SELECT * FROM reruns_seen ORDER BY at, target_key"),  # evidence of reruns by hand
    (t.incidents, "SELECT * FROM incidents ORDER BY opened_at, fingerprint"),
    # Notifications not delivered yet are sent by the database's leader; delivered ones keep
    # their key taken there, so a failover after the move does not page again.
    (t.outbox, "SELECT * FROM outbox ORDER BY created_at, key"),
    (t.incident_members, "SELECT * FROM incident_members ORDER BY at, fingerprint, kind, name"),
)
# Not copied: the target's own ``leadership`` row (who leads it), not a fact of the file's.
NOT_COPIED = frozenset({t.leadership.name})
# Times the file stores as text and the database as timestamptz (the outbox keeps text in both).
_TIMES = ("at", "failed_at", "seen_at", "scheduled_for", "opened_at")


@dataclass(frozen=True)
class Copied:
    """One table's copy: rows read from the file, rows new in the database, rows there after."""

    table: str
    read: int
    added: int
    total: int


def _row(table: Table, raw: sqlite3.Row) -> dict[str, Any]:
    """The database row for a file row: times parsed, a compact reason made whole."""
    data = dict(raw)
    if table is t.decisions:
        template = data.get("reason_template")
        if template is not None:
            data["reason"] = template.replace(_RUN, data["run"])
        data.setdefault("source", "daemon")
        data["fingerprint"] = data.get("fingerprint") or ""
    if table is t.reproductions:
        data["manual"] = bool(data["manual"])
    times = () if table is t.outbox else _TIMES
    for key in times:
        if key in data and isinstance(data[key], str):
            data[key] = datetime.fromisoformat(data[key].replace("Z", "+00:00"))
    keep = {c.name for c in table.columns if not (c.primary_key and c.identity is not None)}
    return {k: v for k, v in data.items() if k in keep}


def _batches(db: sqlite3.Connection, sql: str) -> Iterator[list[sqlite3.Row]]:
    cursor = db.execute(sql)
    while batch := cursor.fetchmany(BATCH):
        yield batch


def copy_sqlite_ledger(
    source: Path,
    target: PostgresLedger,
    *,
    progress: Callable[[str, int, int], None] = lambda table, done, total: None,
) -> list[Copied]:
    """Copy every row of the SQLite ledger at ``source`` into ``target`` (idempotent).
    ``progress(table, rows done, rows in the file's table)`` is called after each batch.
    Raises ``LedgerError`` for a file that is not a ledger or a database that fails."""
    if not source.is_file():
        raise LedgerError(f"no ledger file at {str(source)!r}: pass --from the SQLite file the daemon wrote")
    Ledger(source, create=False).close()  # refuses what is not a ledger; adds columns an old file lacks
    engine = target._engine

    def count(table: Table) -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    copied: list[Copied] = []
    try:
        db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        with db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table, sql in _SOURCES:
                if table.name not in tables:  # the outbox: created by the file's first notification
                    copied.append(Copied(table.name, 0, 0, count(table)))
                    continue
                total = int(db.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0])  # noqa: S608
                before = count(table)
                stmt: Any = insert(table)
                if table is t.watermarks:
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["scope"], set_={"at": func.greatest(table.c.at, stmt.excluded.at)}
                    )
                else:
                    stmt = stmt.on_conflict_do_nothing()
                done = 0
                for batch in _batches(db, sql):
                    with engine.begin() as conn:
                        conn.execute(stmt, [_row(table, r) for r in batch])
                    done += len(batch)
                    progress(table.name, done, total)
                after = count(table)
                copied.append(Copied(table.name, done, after - before, after))
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {str(source)!r} cannot be read: {exc}; nothing more was copied") from None
    except _DRIVER_ERRORS as exc:
        raise LedgerError(
            f"copying into {target.path} failed: {_reason(exc)}; the rows copied so far stay, run the "
            "same command again to copy the rest (nothing is copied twice)"
        ) from None
    return copied
