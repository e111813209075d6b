"""Alembic's environment for the shared ledger: always online, on the connection (and inside the
transaction) ``rerund.adapters.sqlstate.migrate`` hands over in ``config.attributes``; the
version is kept in ``rerund_alembic_version`` (a database shared with another Alembic project
keeps its own ``alembic_version``)."""

from __future__ import annotations

from alembic import context

from rerund.adapters.sqlstate.schema import metadata

VERSION_TABLE = "rerund_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
