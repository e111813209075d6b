"""The shared ledger's schema is versioned (Alembic, shipped in the package) and migrated at start:
the migrated database is what ``schema.py`` describes, replicas starting at once migrate it once,
and a database migrated by a newer rerund is refused before anything is written."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from rerund.adapters.sqlstate import PostgresLedger
from rerund.adapters.sqlstate.schema import metadata
from rerund.adapters.sqlstate.upgrade import VERSION_TABLE, _config, head
from rerund.adapters.sqlstate.url import engine_url
from rerund.errors import LedgerError


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(engine_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_the_migrated_database_is_what_the_schema_describes(pg_url: str) -> None:
    PostgresLedger(pg_url).close()
    engine = create_engine(engine_url(pg_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()

    assert differences == []
    assert _sql(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]


def test_the_leadership_and_outbox_tables_are_migrated_with_the_ledger(pg_url: str) -> None:
    """Revisions 0002 (leadership, outbox) and 0003 (incidents) create them: nothing creates
    tables outside the migrations (the runtime's
    leadership and outbox only use them)."""
    PostgresLedger(pg_url).close()

    tables = {r[0] for r in _sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"leadership", "outbox", "incidents"} <= tables
    assert _sql(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]


def test_a_database_at_revision_0001_is_upgraded_to_the_leadership_and_outbox_at_start(pg_url: str) -> None:
    """A database the first PostgreSQL release migrated (0001: the ledger alone) gets the new
    tables at the next start, and then matches the schema."""
    engine = create_engine(engine_url(pg_url))
    try:
        with engine.begin() as conn:
            cfg = _config(conn)
            command.upgrade(cfg, "0001")
    finally:
        engine.dispose()
    assert "leadership" not in {r[0] for r in _sql(pg_url, "SELECT tablename FROM pg_tables")}

    PostgresLedger(pg_url).close()

    assert _sql(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]
    engine = create_engine(engine_url(pg_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_replicas_starting_at_once_migrate_the_database_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[PostgresLedger] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            ledger = PostgresLedger(pg_url)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            opened.append(ledger)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for ledger in opened:
        ledger.close()

    assert errors == []
    assert len(opened) == 5
    assert _sql(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]


def test_a_database_migrated_by_a_newer_rerund_is_refused_and_left_as_it_is(pg_url: str) -> None:
    PostgresLedger(pg_url).close()
    _sql(pg_url, f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")

    for create in (True, False):
        with pytest.raises(
            LedgerError,
            match=r"has schema revision '9999_from_the_future', newer than this rerund knows \(its newest "
            rf"is '{head()}'\): a newer rerund migrated it; run that version \(or newer\) of rerund on this "
            r"database, or point --state at another database; nothing was written",
        ):
            PostgresLedger(pg_url, create=create)
    assert _sql(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [("9999_from_the_future",)]


def test_a_reading_command_refuses_a_database_without_a_ledger_and_creates_nothing(pg_url: str) -> None:
    with pytest.raises(
        LedgerError, match=r"has no rerund ledger yet: point --state at the database the daemon"
    ):
        PostgresLedger(pg_url, create=False)
    assert _sql(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
