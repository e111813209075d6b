"""Alembic migrations of the shared ledger (``rerund.adapters.sqlstate.schema``), shipped with
the package and run at start by ``rerund.adapters.sqlstate.migrate.upgrade``."""
