"""Where the shared state lives: a ``postgresql://`` URL, its password, and the form it is shown in.

The URL is libpq's (``postgresql://user@host:port/database?sslmode=verify-full&sslrootcert=...``):
its query parameters go to libpq as they are, so the TLS modes are libpq's own. The password
comes from ``state_password_file`` when given, else from the URL, else from libpq's own
``PGPASSWORD``/``PGPASSFILE`` (libpq reads those itself). Whatever is shown of the URL
(``shown``: logs, errors, ``/status``, ``rerund history``) is scheme, user, host, port and
database: never the password, never the query (an ``sslpassword`` can be in it).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rerund.errors import ConfigError

__all__ = ["DRIVER", "engine_url", "is_database_url", "shown"]

DRIVER = "postgresql+psycopg"
_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(state: str | Path) -> bool:
    """True when ``state`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(state, str) and state.lower().startswith(_SCHEMES)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Never echo the value: it can hold the password.
        raise ConfigError(
            "state: the postgresql:// URL cannot be parsed (its value is not shown: it can hold a "
            "password); write it as postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full "
            "with any special character of the user or password percent-encoded"
        ) from None
    return parsed.set(drivername=DRIVER)


def shown(url: str) -> str:
    """``url`` as every output shows it: ``postgresql://user@host:port/database``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "postgresql://..."
    user = f"{parsed.username}@" if parsed.username else ""
    host = parsed.host or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port else ""
    return f"postgresql://{user}{host}{port}/{parsed.database or ''}"


def read_password(path: Path) -> str:
    """The password in ``path`` (its first line, without the line break). Raises ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"state_password_file {str(path)!r} cannot be read ({exc.__class__.__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}); point state_password_file "
            "(--state-password-file, RERUND_STATE_PASSWORD_FILE) at a file rerund can read"
        ) from None
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        raise ConfigError(
            f"state_password_file {str(path)!r} is empty; write the database password in it (one line)"
        )
    return password


def engine_url(url: str, password_file: Path | None = None) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver) for ``url``, the password from ``password_file``
    when given. Raises ``ConfigError`` for a URL that cannot be parsed or a password file that
    cannot be read."""
    parsed = _parse(url)
    if password_file is not None:
        parsed = parsed.set(password=read_password(password_file))
    return parsed
