"""``rerund state migrate``: copy an SQLite ledger file into a PostgreSQL state database.

The database is migrated to this binary's schema first (as the daemon does at start); the copy
is idempotent (run it twice, or while a daemon writes the database: nothing is copied twice),
prints its progress on standard error for large files and the counts per table at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rerund.cli.common import add_state_password_argument, say
from rerund.core.stateurl import is_database_url
from rerund.errors import ConfigError
from rerund.runtime.settings import read_secret_file

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``rerund state`` to the ``rerund`` parser."""
    state = sub.add_parser("state", help="the ledger's storage: copy a file ledger into PostgreSQL")
    commands = state.add_subparsers(dest="state_command", metavar="COMMAND")
    migrate = commands.add_parser(
        "migrate",
        help="copy an SQLite ledger into a postgresql:// state (idempotent)",
        description=(
            "Copy every row of an SQLite ledger file into a PostgreSQL state database, migrating its "
            "schema first. Safe to run twice: rows already there are kept, nothing is copied twice."
        ),
    )
    migrate.add_argument(
        "--from", dest="source", required=True, metavar="PATH", help="the SQLite ledger file"
    )
    migrate.add_argument("--to", dest="target", required=True, metavar="URL", help="postgresql:// URL")
    add_state_password_argument(migrate)
    migrate.set_defaults(func=_migrate)
    state.set_defaults(func=lambda args: _usage(state))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _migrate(args: argparse.Namespace) -> int:
    from rerund.adapters.sqlstate import PostgresLedger  # SQLAlchemy, psycopg, Alembic: only here
    from rerund.adapters.sqlstate.copy import copy_sqlite_ledger

    if not is_database_url(args.target):
        raise ConfigError(
            "--to is not a postgresql:// URL (its value is not shown: a URL can hold a password); "
            "write e.g. --to postgresql://rerund@db:5432/rerund"
        )
    password = (
        read_secret_file(Path(args.state_password_file), "state_password_file", what="the database password")
        if args.state_password_file
        else None
    )
    target = PostgresLedger(args.target, password=password)
    last: dict[str, int] = {}

    def progress(table: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done - last.get(table, 0) >= step:
            last[table] = done
            say(f"{table}: {done}/{total} rows", file=sys.stderr)

    try:
        copied = copy_sqlite_ledger(Path(args.source), target, progress=progress)
    finally:
        target.close()
    say(f"copied {args.source} into {target.path}:")
    for c in copied:
        say(f"  {c.table:<14}{c.read:>9} read {c.added:>9} new {c.total:>9} in the database")
    return 0
