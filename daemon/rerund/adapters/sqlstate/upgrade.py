"""The shared ledger's schema, brought to this binary's revision at start (Alembic, programmatic).

Every replica runs ``upgrade`` when it opens the database. Two replicas starting at once do not
race: the upgrade runs in one transaction that first takes a PostgreSQL advisory lock
(``pg_advisory_xact_lock``); the second waits for it, then finds the schema at head and does
nothing. PostgreSQL's DDL is transactional, so a failed upgrade leaves the schema as it was.

A database whose revision this binary does not know (a newer rerund migrated it) is refused
before anything is written: the newer schema may mean something this binary would write wrong.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text

from rerund.errors import LedgerError

__all__ = ["ADVISORY_LOCK", "VERSION_TABLE", "check_revision", "current_revision", "head", "upgrade"]

VERSION_TABLE = "rerund_alembic_version"  # as in migrations/env.py
# pg_advisory_xact_lock key of the schema upgrade: "rerund" in ASCII, so another program's
# advisory locks do not collide with it by chance.
ADVISORY_LOCK = 0x726572756E64
_SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest schema revision this binary knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None  # the package ships at least one revision
    return revision


def current_revision(connection: Connection) -> str | None:
    """The database's schema revision; None when rerund never migrated it."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def check_revision(connection: Connection, where: str) -> str | None:
    """The database's revision, when this binary knows it (None: no rerund schema yet). Raises
    ``LedgerError`` for a revision written by a newer rerund."""
    revision = current_revision(connection)
    if revision is None:
        return None
    try:
        known = ScriptDirectory.from_config(_config()).get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise LedgerError(
            f"the state database {where} has schema revision {revision!r}, newer than this rerund "
            f"knows (its newest is {head()!r}): a newer rerund migrated it; run that version (or "
            "newer) of rerund on this database, or point --state at another database; nothing was "
            "written"
        )
    return revision


def upgrade(connection: Connection, where: str) -> None:
    """Bring the schema to ``head`` inside the caller's transaction, under the advisory lock.
    Raises ``LedgerError`` for a newer schema (``check_revision``)."""
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    if check_revision(connection, where) == head():
        return
    command.upgrade(_config(connection), "head")
