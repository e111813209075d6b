"""Shared state in a SQL database (PostgreSQL): the ledger several replicas share.

``schema`` describes the tables once (SQLAlchemy Core), ``migrations`` versions them (Alembic,
run at start by ``upgrade``), ``ledger`` implements the ledger port over them, ``url`` reads a
``postgresql://`` state URL and its password, ``copy`` copies an SQLite ledger into a database
(``rerund state migrate``).
"""

from rerund.adapters.sqlstate.ledger import PostgresLedger
from rerund.adapters.sqlstate.url import is_database_url, shown

__all__ = ["PostgresLedger", "is_database_url", "shown"]
