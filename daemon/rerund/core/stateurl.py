"""Where the ledger lives, as text: an SQLite file path or a ``postgresql://`` URL (pure).

``shown`` is the one form a database URL is shown in (logs, errors, ``/status``, ``rerund
history``): scheme, user, host, port and database, never the password or the query (libpq's
query can carry an ``sslpassword``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["DATABASE_SCHEMES", "is_database_url", "shown"]

DATABASE_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(state: str | Path) -> bool:
    """True when ``state`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(state, str) and state.lower().startswith(DATABASE_SCHEMES)


def shown(url: str) -> str:
    """``url`` as every output shows it: ``postgresql://user@host:port/database``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "postgresql://..."
    user = f"{unquote(parts.username)}@" if parts.username else ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{user}{host}{f':{port}' if port else ''}{parts.path or '/'}"
