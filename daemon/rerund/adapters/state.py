"""The ledger for a ``state`` setting: an SQLite file (``Ledger``, the embedded default) or a
PostgreSQL database several replicas share (``PostgresLedger``), chosen by the setting's form
(``rerund.core.stateurl.is_database_url``). Both implement the ``DaemonLedger`` port and every
read the commands use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from rerund.adapters.ledger import Ledger, Source
from rerund.core.stateurl import is_database_url

if TYPE_CHECKING:  # SQLAlchemy, psycopg and Alembic load only for a database URL (open_state)
    from rerund.adapters.sqlstate import PostgresLedger

__all__ = ["StateLedger", "open_state"]

StateLedger: TypeAlias = "Ledger | PostgresLedger"


def open_state(
    state: str | Path,
    *,
    password: str | None = None,
    source: Source = "daemon",
    create: bool = True,
    on_reopen: Callable[[], None] | None = None,
    max_bytes: int = 0,
) -> StateLedger:
    """The ledger at ``state``. ``password`` (a database's, from ``state_password_file``) and
    ``on_reopen``/``max_bytes`` (an SQLite file's) are ignored by the other backend. Raises
    ``LedgerError`` (``ConfigError`` for a URL that cannot be parsed)."""
    if is_database_url(state):
        from rerund.adapters.sqlstate import PostgresLedger

        return PostgresLedger(str(state), password=password, source=source, create=create)
    return Ledger(state, source=source, create=create, on_reopen=on_reopen, max_bytes=max_bytes)
