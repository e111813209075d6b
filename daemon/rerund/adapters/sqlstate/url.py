"""Where the shared state lives: a ``postgresql://`` URL, its password, and the form it is shown in.

The URL is libpq's (``postgresql://user@host:port/database?sslmode=verify-full&sslrootcert=...``):
its query parameters go to libpq as they are, so the TLS modes are libpq's own. The password
comes from ``state_password_file`` when given (read by the caller), else from the URL, else from
libpq's own ``PGPASSWORD``/``PGPASSFILE`` (libpq reads those itself). What is shown of the URL
is ``rerund.core.stateurl.shown``'s.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rerund.core.stateurl import is_database_url, shown
from rerund.errors import ConfigError

__all__ = ["DRIVER", "engine_url", "is_database_url", "shown"]

DRIVER = "postgresql+psycopg"


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


def engine_url(url: str, password: str | None = None) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver) for ``url``, with ``password`` when given (the
    content of ``state_password_file``). Raises ``ConfigError`` for a URL that cannot be parsed."""
    parsed = _parse(url)
    return parsed.set(password=password) if password is not None else parsed
