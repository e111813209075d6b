"""Leader election and fencing through PostgreSQL: which replica of rerund acts.

The leader holds a session-level advisory lock (``pg_try_advisory_lock``) on a connection of
its own. PostgreSQL releases the lock the moment that session ends — the process was killed,
its connection terminated (``pg_terminate_backend``), the server restarted — so a follower
trying the lock every second takes over within about a second. Idle dead sessions are found by
TCP keepalives set on the lock's session on both ends (about 11 s when a network partition
leaves no FIN behind), and by the session's ``idle_session_timeout`` (15 s) when a proxy or
pooler in front of the database answers the keepalives for the partitioned replica.

Every acquisition raises the ``term`` of the one ``leadership`` row by one, in the same session
that holds the lock, and records who leads (``host:pid``) and since when: ``rerund status``
names the leader from it. Fencing: a write only the leader may make (claiming an outbox event
before its send, confirming the lead before a rerun is created) reads that row ``FOR SHARE`` in
its own transaction and is refused (``FencedError``) when the term is no longer the writer's.
``FOR SHARE`` makes the order total: a new leader's term bump waits for a write in flight to
commit, and a write after the bump sees the new term. So a replica that lost its lock and has
not noticed yet (its next ``held`` check is at most a second away) cannot claim or confirm
anything once the new leader is in office; the new leader reads the state after its bump.

A lost lead is never taken back by the same object: the runtime stops acting and exits
non-zero for its supervisor to restart it (controller-runtime's choice) — it comes back as a
follower.

The ``leadership`` table is the ledger's schema (``schema.py``, Alembic revision 0002), migrated
when the ledger opens the database (``open_state``) before the runtime builds this.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError

from rerund.adapters.sole import SoleLeader, local_identity
from rerund.adapters.sqlstate.schema import leadership as leadership_table
from rerund.adapters.sqlstate.url import engine_url
from rerund.core.times import iso
from rerund.errors import FencedError, StateUnavailableError

__all__ = [
    "LEADER_LOCK",
    "PostgresLeadership",
    "SoleLeader",
    "leadership_table",
    "local_identity",
    "postgres_engine",
    "read_leader",
]

log = logging.getLogger("rerund.leadership")

# The advisory lock's key: "reru" "nd" 0x0001 (one lock per database: one rerund per state).
LEADER_LOCK = 0x7265_7275_6E64_0001

# Server-side keepalives of the lock's session: PostgreSQL drops a client that stopped
# answering (a partition) after about idle + interval * count seconds, releasing its lock.
_SESSION_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET statement_timeout = '5s'",
)
# Keepalives cannot see a partition behind a proxy or pooler in front of the database
# (PgBouncer, a cloud SQL proxy): the proxy's socket answers them. The lock's session is never
# idle for long while its replica is connected (the leader checks it, a follower tries the lock,
# every second), so PostgreSQL ending it after this long idle frees a partitioned leader's lock
# whatever lies between. Longer than the leader's own check timeout (``Lead.keep``: 9 s), so a
# partitioned leader has stopped acting before its lock goes. PostgreSQL 14 and later.
IDLE_SESSION_TIMEOUT_S = 15
_IDLE_SESSION_TIMEOUT_SINCE = 140000  # server_version_num


def postgres_engine(url: str, password: str | None = None, **options: Any) -> Engine:
    """An Engine over psycopg 3 for a ``postgresql://`` URL (``engine_url``: the ledger's driver
    and parsing; ``password`` from ``state_password_file``, else the URL's or libpq's; libpq's TLS
    modes and environment variables apply), with client-side keepalives and a 5 s connect
    timeout: a database that went away is noticed in seconds, not at the kernel's TCP timeout."""
    connect_args = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "application_name": "rerund",
    }
    return sa_create_engine(
        engine_url(url, password), connect_args=connect_args, pool_pre_ping=True, **options
    )


def _unavailable(what: str, exc: BaseException) -> StateUnavailableError:
    reason = (
        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if str(exc).strip()
        else type(exc).__name__
    )
    return StateUnavailableError(
        f"the state database cannot be reached ({what}: {reason}); rerund keeps trying and acts "
        "only while it leads"
    )


def read_leader(conn: Connection) -> tuple[str, int] | None:
    """(holder, term) of the leadership row, None when no replica ever led."""
    row = conn.execute(select(leadership_table.c.holder, leadership_table.c.term)).first()
    return None if row is None else (str(row.holder), int(row.term))


class PostgresLeadership:
    """``ports.Leadership`` through a PostgreSQL advisory lock and the ``leadership`` row.

    Thread-safe (the runtime calls it from worker threads). ``fence(conn)`` is the check every
    leader-only write makes inside its own transaction."""

    def __init__(self, engine: Engine, *, identity: str | None = None) -> None:
        self._engine = engine
        self._identity = identity or local_identity()
        self._lock = threading.Lock()
        self._conn: Connection | None = None  # the session holding (or trying) the lock
        self._term: int | None = None
        self._lost = False

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def term(self) -> int | None:
        return self._term

    def _session(self) -> Connection:
        """The lock's own connection (autocommit, keepalives set), opened when needed: a
        follower keeps it warm by trying the lock through it."""
        if self._conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                for statement in _SESSION_KEEPALIVES:
                    conn.execute(text(statement))
                version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
                if version >= _IDLE_SESSION_TIMEOUT_SINCE:
                    conn.execute(text(f"SET idle_session_timeout = '{IDLE_SESSION_TIMEOUT_S}s'"))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_session(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                conn.invalidate()  # never back to the pool: its session may hold the lock
                conn.close()

    def acquire(self) -> bool:
        with self._lock:
            if self._lost:
                return False
            if self._term is not None:
                return self._check()
            try:
                conn = self._session()
                if not conn.execute(select(text(f"pg_try_advisory_lock({LEADER_LOCK})"))).scalar():
                    return False
                stmt = (
                    pg_insert(leadership_table)
                    .values(id=1, term=1, holder=self._identity, since=iso(datetime.now(UTC)))
                    .on_conflict_do_update(
                        index_elements=[leadership_table.c.id],
                        set_={
                            "term": leadership_table.c.term + 1,
                            "holder": self._identity,
                            "since": iso(datetime.now(UTC)),
                        },
                    )
                    .returning(leadership_table.c.term)
                )
                term = int(conn.execute(stmt).scalar_one())
            except SQLAlchemyError as exc:
                self._drop_session()
                raise _unavailable("trying the leader lock", exc) from exc
            self._term = term
            log.info("this replica (%s) leads now (term %d)", self._identity, term)
            return True

    def _check(self) -> bool:
        """Still leading: the lock's session answers and the row still names our term."""
        if self._conn is None or self._term is None:
            return False
        try:
            found = read_leader(self._conn)
        except SQLAlchemyError as exc:
            log.error(
                "this replica (%s) lost the state database while leading (term %d): %s",
                self._identity,
                self._term,
                str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else exc,
            )
            self._step_down()
            return False
        if found is None or found[1] != self._term:
            log.error(
                "this replica (%s) no longer leads: the state names %s (term %s)",
                self._identity,
                found[0] if found else "no one",
                found[1] if found else "-",
            )
            self._step_down()
            return False
        return True

    def _step_down(self) -> None:
        self._lost = True
        self._term = None
        self._drop_session()

    def held(self) -> bool:
        with self._lock:
            return self._check()

    def leader(self) -> tuple[str, int] | None:
        try:
            with self._engine.connect() as conn:
                return read_leader(conn)
        except SQLAlchemyError as exc:
            if "leadership" in str(exc) and "does not exist" in str(exc):
                return None
            raise _unavailable("reading the leader", exc) from exc

    def fence(self, conn: Connection) -> None:
        """Inside the caller's transaction: refuse (``FencedError``) unless this replica leads
        in the term the state records. Holds the row ``FOR SHARE`` until that transaction ends."""
        term = self._term
        row = conn.execute(
            select(leadership_table.c.term, leadership_table.c.holder)
            .where(leadership_table.c.id == 1)
            .with_for_update(read=True)
        ).first()
        if term is None or row is None or int(row.term) != term:
            now = f"term {row.term} of {row.holder}" if row is not None else "no leader"
            raise FencedError(
                f"replica {self._identity} may not write as the leader: it "
                + (f"led in term {term}" if term is not None else "does not lead")
                + f", the state records {now}; the write is refused and this replica stops acting"
            )

    def confirm(self) -> None:
        """Fence in a transaction of its own: raises ``FencedError`` unless this replica leads
        (what the runtime checks before creating a rerun), ``StateUnavailableError``."""
        try:
            with self._engine.begin() as conn:
                self.fence(conn)
        except SQLAlchemyError as exc:
            raise _unavailable("confirming the lead", exc) from exc

    def release(self) -> None:
        with self._lock:
            if self._conn is not None and self._term is not None:
                with contextlib.suppress(SQLAlchemyError):
                    self._conn.execute(select(text(f"pg_advisory_unlock({LEADER_LOCK})")))
            self._term = None
            self._lost = True
            self._drop_session()

    def close(self) -> None:
        self.release()
        self._engine.dispose()
