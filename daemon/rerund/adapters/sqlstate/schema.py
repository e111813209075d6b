"""The shared ledger's tables, described once (SQLAlchemy Core ``MetaData``).

The same logical tables as the SQLite ledger (``rerund.adapters.ledger``): ``failures``,
``decisions``, ``issues``, ``outcomes``, ``watermarks`` and ``reproductions``, with the same
unique keys, which are what make every ``record_*`` idempotent across replicas (an insert is
``ON CONFLICT DO NOTHING``). Times are ``timestamptz`` (the SQLite file stores ISO-8601 text);
a decision keeps its reason whole (the SQLite file's ``texts`` table is a size optimisation for
one file, not a fact). Bodies are the JSON text the SQLite ledger stores, so both read back
through the same code.

A new table or column goes here *and* into a new Alembic revision under ``migrations/versions``
(``tests/state/test_migrations.py`` checks that the migrated database matches this metadata).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal,
)

__all__ = [
    "decisions",
    "failures",
    "incident_members",
    "incidents",
    "issues",
    "leadership",
    "metadata",
    "outbox",
    "outcomes",
    "reproductions",
    "reruns_seen",
    "watermarks",
]

metadata = MetaData(
    naming_convention={
        "ix": "%(table_name)s_%(column_0_N_name)s",
        "uq": "%(table_name)s_%(column_0_N_name)s_key",
        "pk": "%(table_name)s_pkey",
    }
)


def _at() -> Column[object]:
    return Column("at", DateTime(timezone=True), nullable=False)


failures = Table(
    "failures",
    metadata,
    Column("run_key", Text, primary_key=True),
    Column("project", Text, nullable=False),
    Column("domain", Text, nullable=False),
    Column("run", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _at(),
    Column("run_key", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("domain", Text, nullable=False),
    Column("run", Text, nullable=False),
    Column("root", Text, nullable=False),
    Column("attempt", Integer, nullable=True),
    Column("policy", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("source", Text, nullable=False, server_default="daemon"),
    Column("fingerprint", Text, nullable=False, server_default=""),
)
# "The same decision about the same run" is one row whatever the attempt (NULL for an ignore).
Index(
    "decisions_once",
    decisions.c.run_key,
    decisions.c.decision,
    decisions.c.policy,
    func.coalesce(decisions.c.attempt, literal(-1, Integer)),
    unique=True,
)
Index("decisions_run", decisions.c.run)
Index("decisions_root", decisions.c.root)
Index("decisions_at", decisions.c.at)
Index("decisions_fingerprint", decisions.c.fingerprint)

issues = Table(
    "issues",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _at(),
    Column("source_key", Text, nullable=False),
    Column("target_key", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("domain", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("root", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("policy", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("source", Text, nullable=False, server_default="daemon"),
    UniqueConstraint("target_key", "result"),
)
Index("issues_root", issues.c.root)
Index("issues_at", issues.c.at)

outcomes = Table(
    "outcomes",
    metadata,
    Column("target_key", Text, primary_key=True),
    _at(),
    Column("policy", Text, nullable=False),
    Column("root", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("phase", Text, nullable=False),
)
Index("outcomes_at", outcomes.c.at)

watermarks = Table(
    "watermarks",
    metadata,
    Column("scope", Text),
    _at(),
    PrimaryKeyConstraint("scope"),
)

reproductions = Table(
    "reproductions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _at(),
    Column("check_name", Text, nullable=False),
    Column("scheduled_for", DateTime(timezone=True), nullable=False),
    Column("manual", Boolean, nullable=False),
    Column("result", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("domain", Text, nullable=False),
    Column("reference", Text, nullable=True),
    Column("rerun", Text, nullable=True),
    Column("diff", Text, nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("check_name", "scheduled_for", "manual"),
)
Index("reproductions_check", reproductions.c.check_name, reproductions.c.scheduled_for)

# Incidents of the outage breaker (rerund.core.incidents): one row per fingerprint and opening,
# the incident's whole record in ``body`` (revision 0003).
incidents = Table(
    "incidents",
    metadata,
    Column("fingerprint", Text, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("state", Text, nullable=False),
    _at(),
    Column("body", Text, nullable=False),
    PrimaryKeyConstraint("fingerprint", "opened_at"),
)
Index("incidents_state", incidents.c.state, incidents.c.at)
# Runs that rerun a run (their RunSpec relation) seen ended, by hand or by rerund
# (``record_rerun_seen``): the reruns by hand are evidence for ``fingerprint_recoveries``; revision 0005.
reruns_seen = Table(
    "reruns_seen",
    metadata,
    Column("target_key", Text, primary_key=True),
    Column("source_key", Text, nullable=False),
    Column("phase", Text, nullable=False),
    _at(),
)
Index("reruns_seen_source", reruns_seen.c.source_key)
# What the outage breaker counts per fingerprint (``rerund.core.incidents.Members``), saved with
# each pass (``at``): kind 'window' (a failed run toward opening, ``failed_at`` its failure time),
# 'run' and 'lineage' (the failed runs and lineages of its open incident); revision 0004.
incident_members = Table(
    "incident_members",
    metadata,
    Column("fingerprint", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=True),
    _at(),
    PrimaryKeyConstraint("fingerprint", "kind", "name"),
)
# Which replica leads (``rerund.adapters.sqlstate.leadership``): one row (id 1) whose term rises
# on each takeover; revision 0002.
leadership = Table(
    "leadership",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row
    Column("term", BigInteger, nullable=False),
    Column("holder", Text, nullable=False),  # host:pid of the leader
    Column("since", Text, nullable=False),  # aware UTC ISO-8601
)

# Notifications kept until delivered, one row per event key (``rerund.adapters.sqlstate.outbox``);
# revision 0002. Times are aware UTC ISO-8601 text: the same table serves a file state's SQLite
# file, where the outbox compares them as text.
outbox = Table(
    "outbox",
    metadata,
    Column("key", Text, primary_key=True),  # the event's unique key (rerund.core.outbox)
    Column("payload", Text, nullable=False),  # JSON
    Column("created_at", Text, nullable=False),
    Column("next_at", Text, nullable=False),  # due at (a claim's lease end, a retry time)
    Column("attempts", Integer, nullable=False),  # sends that failed
    Column("last_error", Text, nullable=False),
    Column("delivered_at", Text, nullable=True),
    Column("claimed_by", Text, nullable=True),  # host:pid of the last sender
    Column("claimed_term", BigInteger, nullable=True),
)
Index("outbox_next_at", outbox.c.next_at)
