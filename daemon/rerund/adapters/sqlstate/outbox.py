"""The outbox: notifications kept in the state until delivered, one row per event key.

``put`` inserts ``ON CONFLICT DO NOTHING``: the same event put again — after a restart, by the
next leader after a failover, by a second replica that decided the same failure — finds its key
taken and is not sent again. The leader's sender takes the rows that are ``due`` (not delivered,
``next_at`` passed), ``claim``s each before sending it (``next_at`` moves a lease ahead, so no
other sender takes it meanwhile; the put and the claim are fenced on PostgreSQL, so a replica
that lost the lead can neither put nor claim), then marks it ``delivered`` or ``failed``
(``next_at`` = the retry time).

At most once, with one exception documented in docs/replicas.md: a leader killed between its
POST and marking the row delivered leaves the row claimed; the next leader sends it again when
the lease ends. Every send carries the key (``Idempotency-Key`` header, ``event_id`` field) so a
receiver can drop that rare second copy.

The table is the ledger's schema (``schema.outbox``): on PostgreSQL Alembic creates it
(revision 0002) when the ledger opens the database, before the runtime builds this. The same
table serves a SQLite file state (one replica; the ledger's file, which Alembic does not manage):
there it is created on first use (``CREATE TABLE IF NOT EXISTS``), so a restart does not page
twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, inspect, or_, select
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from rerund.adapters.sqlstate.schema import outbox as outbox_table
from rerund.core.outbox import OutboxItem
from rerund.core.times import iso
from rerund.errors import StateUnavailableError

__all__ = ["SqlOutbox", "outbox_table", "sqlite_engine"]

Fence = Callable[[Connection], None]


def sqlite_engine(path: Path) -> Engine:
    """An Engine on the SQLite file ``path`` (the file state's ledger): WAL, and a 10 s busy wait
    for the ledger's own writes."""
    engine = sa_create_engine(f"sqlite:///{path}", connect_args={"timeout": 10.0})

    @sa_event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


def _is_due(now: datetime) -> Any:
    """An event is due when it was never tried nor claimed (at once, whatever time its putter's
    clock said: a putter a second ahead of the sender must not wait for the next poll), or when
    its ``next_at`` (a retry time, a claim's lease end) has passed."""
    t = outbox_table
    fresh = and_(t.c.attempts == 0, t.c.claimed_by.is_(None))
    return or_(fresh, t.c.next_at <= iso(now))


class SqlOutbox:
    """``ports.Outbox`` over SQLAlchemy Core (PostgreSQL or SQLite). ``fence`` (the
    leadership's) is checked in the claim's transaction; ``identity`` and ``term`` say who
    claimed."""

    def __init__(
        self,
        engine: Engine,
        *,
        fence: Fence | None = None,
        identity: str = "",
        term: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._fence = fence
        self._identity = identity
        self._term = term
        self._created = False
        self._creating = threading.Lock()
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def _begin(self) -> Any:
        if not self._created:
            with self._creating:  # the sender's thread and a putter's may both come first
                if not self._created and self._engine.dialect.name == "sqlite":  # PostgreSQL: Alembic
                    try:
                        outbox_table.create(self._engine, checkfirst=True)
                    except SQLAlchemyError as exc:
                        # another process (a CLI reading the file) created it between the check
                        # and the create: what matters is that it exists
                        if not inspect(self._engine).has_table(outbox_table.name):
                            raise _unavailable("creating the outbox", exc) from exc
                self._created = True
        return self._engine.begin()

    def put(self, key: str, payload: Mapping[str, Any], *, now: datetime) -> bool:
        """Add event ``key`` unless its key is taken; True when added. Fenced like ``claim``:
        ``FencedError`` when another replica leads (only the leader decides what to notify)."""
        stmt = (
            self._insert(outbox_table)
            .values(
                key=key,
                payload=json.dumps(dict(payload), sort_keys=True, default=str),
                created_at=iso(now),
                next_at=iso(now),
                attempts=0,
                last_error="",
            )
            .on_conflict_do_nothing(index_elements=[outbox_table.c.key])
            .returning(outbox_table.c.key)
        )
        try:
            with self._begin() as conn:
                if self._fence is not None:
                    self._fence(conn)
                return conn.execute(stmt).first() is not None
        except SQLAlchemyError as exc:
            raise _unavailable(f"putting event {key!r} in the outbox", exc) from exc

    def due(self, now: datetime, *, limit: int = 100) -> list[OutboxItem]:
        t = outbox_table
        stmt = (
            select(t.c.key, t.c.payload, t.c.attempts)
            .where(t.c.delivered_at.is_(None), _is_due(now))
            .order_by(t.c.next_at, t.c.key)
            .limit(limit)
        )
        try:
            with self._begin() as conn:
                rows = conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise _unavailable("reading the outbox", exc) from exc
        return [OutboxItem(str(r.key), json.loads(r.payload), int(r.attempts)) for r in rows]

    def claim(self, key: str, *, now: datetime, until: datetime) -> bool:
        """Take ``key`` for a send until ``until``: True when it was still due (not delivered,
        not claimed by another sender since). Fenced: ``FencedError`` when another replica leads."""
        t = outbox_table
        stmt = (
            t.update()
            .where(t.c.key == key, t.c.delivered_at.is_(None), _is_due(now))
            .values(next_at=iso(until), claimed_by=self._identity, claimed_term=self._term())
            .returning(t.c.key)
        )
        try:
            with self._begin() as conn:
                if self._fence is not None:
                    self._fence(conn)
                return conn.execute(stmt).first() is not None
        except SQLAlchemyError as exc:
            raise _unavailable(f"claiming event {key!r}", exc) from exc

    def delivered(self, key: str, *, now: datetime) -> None:
        """Not fenced: the send happened, whoever leads now; recording it prevents a second one."""
        t = outbox_table
        try:
            with self._begin() as conn:
                conn.execute(t.update().where(t.c.key == key).values(delivered_at=iso(now), last_error=""))
        except SQLAlchemyError as exc:
            raise _unavailable(f"marking event {key!r} delivered", exc) from exc

    def failed(self, key: str, error: str, *, retry_at: datetime, now: datetime) -> None:
        t = outbox_table
        try:
            with self._begin() as conn:
                conn.execute(
                    t.update()
                    .where(t.c.key == key, t.c.delivered_at.is_(None))
                    .values(next_at=iso(retry_at), attempts=t.c.attempts + 1, last_error=error[:2000])
                )
        except SQLAlchemyError as exc:
            raise _unavailable(f"recording the failed send of event {key!r}", exc) from exc

    def pending(self) -> int:
        try:
            with self._begin() as conn:
                found = conn.execute(
                    select(func.count())
                    .select_from(outbox_table)
                    .where(outbox_table.c.delivered_at.is_(None))
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise _unavailable("counting the outbox", exc) from exc
        return int(found)

    def prune(self, older_than: datetime) -> int:
        """Forget events delivered before ``older_than`` (the ledger's retention); how many."""
        t = outbox_table
        try:
            with self._begin() as conn:
                done = conn.execute(
                    t.delete().where(t.c.delivered_at.is_not(None), t.c.delivered_at < iso(older_than))
                )
                return int(done.rowcount or 0)
        except SQLAlchemyError as exc:
            raise _unavailable("pruning the outbox", exc) from exc

    def rows(self) -> list[dict[str, Any]]:
        """Every row, oldest first (tests, ``rerund status``)."""
        with self._begin() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(select(outbox_table).order_by(outbox_table.c.created_at))
            ]

    def close(self) -> None:
        self._engine.dispose()


def _unavailable(what: str, exc: BaseException) -> StateUnavailableError:
    first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return StateUnavailableError(f"the state database failed {what}: {first}; the event is retried")
