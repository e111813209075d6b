"""The audit ledger in PostgreSQL: the ``DaemonLedger`` port over a database several replicas share.

It answers every method the SQLite ledger (``rerund.adapters.ledger.Ledger``) answers, with the
same rows (the one contract suite, ``tests/ports/test_ledger_contract.py``, runs over both).
What differs is where the rows live and who else writes them:

- **Several writers.** Every insert is ``ON CONFLICT DO NOTHING`` on the row's unique key (the
  same keys as the SQLite file), so two replicas recording the same fact write one row.
- **Group commits** as in the SQLite ledger: a one-row write is decided new at once and
  written with the others of its group by one ``flush``, in one transaction (one
  ``executemany`` per table, pipelined by psycopg). Deciding "new" costs one unique-key read
  per *run*, not per row: a run whose failure the ledger did not have is *fresh* to this
  process, and the later facts about it (its decision, its rerun's issue result, that rerun's
  outcome and failure) are new unless this process recorded them itself (kept in memory for
  the runs seen last, within ``FRESH_BYTES``: a ``SizedCache``). The failure's own read is
  skipped too when it failed after the newest failure the ledger held when this process
  first recorded one (read once): a storm after a start or a takeover costs no read per run
  at all. That holds because the daemon records a run's failure before anything else about
  it and, with a shared state, only the leader writes (fenced: the previous leader's writes
  ended with its term);
  the exception is ``rerund sweep`` (another process, no group commits) run while a daemon
  runs: a failure the sweep recorded first is counted again by the daemon (its metrics and
  decision log line; the rows are still written once). A flush that fails forgets the fresh
  runs and the newest failure time: they are read again.
- **The database can go away.** Every method raises ``LedgerError`` (never a driver error);
  the connection pool drops connections the server closed, so the next call after the server
  is back connects again (the daemon's recorder already carries on when a write fails). A
  connection attempt waits at most ``CONNECT_TIMEOUT_S``; after an attempt that failed slowly
  (a host that does not answer) calls fail at once for a backoff (1 s, doubling to
  ``MAX_BACKOFF_S``), so such a host costs the caller's thread (the daemon's event loop) one
  wait per backoff, not one per row. A server that refuses at once is tried again at once.
- **Fenced writes.** In the daemon every write is the leader's: ``fence_writes`` installs the
  leadership's check (``PostgresLeadership.fence``: the ``leadership`` row read ``FOR SHARE``),
  and every write transaction — a group's flush, a one-row write — makes it first, so a leader
  whose term another replica took over has its writes refused (``LedgerError``, and
  ``on_fenced``) even before it noticed; a new leader's term bump waits for a write in flight.
  One round trip per transaction, not per row. Commands (``sweep``, ``state migrate``) install
  none.
- **The schema** is migrated at open (``upgrade``: Alembic under an advisory lock); a
  reading command (``create=False``) migrates nothing and refuses a database without a ledger.

Decisions keep the compact body of the SQLite ledger (``_compact_body``) and their reason whole;
they read back through the same ``_full_body``. Sizes: ``size_bytes`` is 0 (this process holds
none of it) and ``ledger_max_bytes`` does not apply (retention by age does).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from rerund.adapters.ledger import (
    GroupCommits,
    IssueRecord,
    Source,
    _compact_body,
    _full_body,
    _member_rows,
    _members_of,
    fact_digest,
    fresh_bytes,
    freshen,
    has_fact,
)
from rerund.adapters.sqlstate import schema as t
from rerund.adapters.sqlstate.upgrade import check_revision, upgrade
from rerund.adapters.sqlstate.url import engine_url, shown
from rerund.core.incidents import MAX_INCIDENT_WINDOW, IncidentRecord, Members
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.redact import public_decision
from rerund.core.runs import RunRef
from rerund.errors import FencedError, LedgerError
from rerund.sizedcache import SizedCache

__all__ = ["CONNECT_TIMEOUT_S", "PostgresLedger"]

log = logging.getLogger("rerund.ledger")

CONNECT_TIMEOUT_S = 5
# Runs new to the ledger whose facts this process remembers (``_record``), bounded in bytes
# (~320 bytes a run with a digest of each of its facts: ``rerund.adapters.ledger.fact_digest``):
# 2 MiB hold ~6,500 runs: the facts that follow a failure within minutes, and a reload's owed
# failures (as the SQLite ledger's ``FRESH_BYTES``). A run forgotten costs one unique-key read
# per fact.
FRESH_BYTES = 2 * 1024 * 1024
_UNREAD = object()  # ``_newest_failure`` before its read
MAX_BACKOFF_S = 30.0  # the longest an unanswering database is left alone before the next attempt
SLOW_FAILURE_S = 1.0  # a connection failure that took this long starts the backoff
_DRIVER_ERRORS = (SQLAlchemyError, psycopg.Error)
# The tables ``prune`` trims by age, with their time column.
_PRUNED = (
    (t.decisions, "at"),
    (t.issues, "at"),
    (t.outcomes, "at"),
    (t.failures, "seen_at"),
    (t.reproductions, "at"),
    (t.reruns_seen, "at"),
)


# The unique-key reads of ``_record``, built once (a storm runs them for every new row).
_FAILURE_EXISTS: Select[Any] = select(literal_column("1")).where(t.failures.c.run_key == bindparam("key"))
_DECISION_EXISTS: Select[Any] = select(literal_column("1")).where(
    t.decisions.c.run_key == bindparam("key"),
    t.decisions.c.decision == bindparam("kind"),
    t.decisions.c.policy == bindparam("policy"),
    func.coalesce(t.decisions.c.attempt, -1) == bindparam("attempt", type_=Integer),
)
_ISSUE_EXISTS: Select[Any] = select(literal_column("1")).where(
    t.issues.c.target_key == bindparam("key"), t.issues.c.result == bindparam("result")
)
_OUTCOME_EXISTS: Select[Any] = select(literal_column("1")).where(t.outcomes.c.target_key == bindparam("key"))


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise LedgerError(f"timestamp {ts!r} has no timezone; the ledger stores aware UTC times only")
    return ts.astimezone(UTC)


def _text(ts: datetime) -> str:
    """A stored time as rerund shows every time (and the SQLite ledger returns it): ISO-8601, ``Z``."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _reason(exc: BaseException) -> str:
    """The driver's own first line (``connection refused``, ``relation ... does not exist``):
    never SQLAlchemy's wrapper with its statement and parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    return lines[0] if lines else orig.__class__.__name__


def _connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (not that it refused a statement)."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError)


def _inserted(conn: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its unique key is taken; True when it was inserted (``RETURNING``:
    the driver's rowcount is not reliable here)."""
    stmt: Any = insert(table).values(row).on_conflict_do_nothing().returning(literal_column("1"))
    return conn.execute(stmt).first() is not None


def connect_advice(exc: BaseException) -> str:
    """What to fix when the database refuses or cannot be reached, from the driver's message."""
    reason = _reason(exc).lower()
    if "password" in reason or "authentication" in reason:
        return (
            "check the user and password: state_password_file (--state-password-file), the URL's "
            "password, or libpq's PGPASSWORD/PGPASSFILE"
        )
    if "database" in reason and "does not exist" in reason:
        return "create the database (CREATE DATABASE ...) or fix the database name in the --state URL"
    if "ssl" in reason or "certificate" in reason:
        return "check sslmode and sslrootcert in the --state URL's query (libpq's names)"
    return "check the host and port in the --state URL and that PostgreSQL is up and reachable from here"


class PostgresLedger(GroupCommits):
    """The ledger in a PostgreSQL database. Every method raises ``LedgerError``.

    ``source`` (``daemon`` or ``sweep``) is written with every decision and issue result
    recorded through this handle; ``path`` is the database as outputs show it (no password)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        source: Source = "daemon",
        create: bool = True,
    ) -> None:
        """Connect to ``url`` (``password``: from ``state_password_file``, else the URL's or
        libpq's) and (``create``) bring its schema to this binary's revision.

        ``create=False`` is for the commands that only read (``history``, ``status``,
        ``explain``): nothing is migrated, and a database without a rerund ledger is refused.
        Raises ``LedgerError`` (``ConfigError`` for a URL that cannot be parsed) with what to
        fix; a refused connection costs no retry."""
        self.path = shown(url)
        self.source = source
        self.max_bytes = 0
        self._lock = threading.Lock()
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        # Pending rows of the open group: per table, the rows to insert (in order).
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._pending_keys: set[tuple[Any, ...]] = set()
        # Runs new to the ledger when this process recorded their failure (or created them):
        # run key -> the digests of the facts about it this process recorded since (``_record``,
        # ``fact_digest``).
        self._fresh: SizedCache[str, bytes] = SizedCache(
            "ledger_fresh", FRESH_BYTES, fresh_bytes, on_evict=self._forgot_fresh
        )
        # The newest failure time the ledger held when this process first recorded a failure
        # (read once; ``_UNREAD`` again after a failed flush or a forgotten fresh run): a failure
        # that failed later is new unless this process recorded it (``_record``).
        self._newest_failure: object = _UNREAD  # datetime | None once read
        self._flush_handle: object = None
        self._closed = False
        self._reader: Connection | None = None  # see ``_read``
        self._fence: Callable[[Connection], None] | None = None  # see ``fence_writes``
        self._on_fenced: Callable[[FencedError], object] = lambda exc: None
        # After a lost connection: calls fail at once until ``_down_until`` (``_guard``).
        self._monotonic = time.monotonic
        self._backoff, self._down_until, self._down_reason = 0.0, 0.0, ""
        self._attempt_started = 0.0
        self._engine: Engine = create_engine(
            engine_url(url, password),
            pool_size=2,
            max_overflow=4,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "application_name": f"rerund-{source}",
                "options": "-c timezone=UTC",
            },
        )
        try:
            with self._engine.begin() as conn:
                if create:
                    upgrade(conn, self.path)
                elif check_revision(conn, self.path) is None:
                    raise LedgerError(
                        f"the state database {self.path} has no rerund ledger yet: point --state at the "
                        "database the daemon writes (it creates the ledger at start), or copy a file "
                        "ledger into it with `rerund state migrate`"
                    )
        except LedgerError:
            self._engine.dispose()
            raise
        except _DRIVER_ERRORS as exc:
            self._engine.dispose()
            raise LedgerError(
                f"cannot open the state database {self.path}: {_reason(exc)}; {connect_advice(exc)}"
            ) from None

    # -- connections and transactions -------------------------------------------------------

    def fence_writes(
        self,
        fence: Callable[[Connection], None] | None,
        *,
        on_fenced: Callable[[FencedError], object] = lambda exc: None,
    ) -> None:
        """Make every write transaction call ``fence(conn)`` first (the leadership's check:
        raises ``FencedError`` unless this replica leads in the term the state records). A
        refused write raises ``LedgerError`` (a group's flush logs it) after ``on_fenced(exc)``,
        which may run on any thread that writes or reads. ``None``: no check."""
        self._fence = fence
        self._on_fenced = on_fenced

    def _fenced(self, conn: Connection) -> None:
        if self._fence is not None:
            self._fence(conn)

    def _refused(self, exc: FencedError, lost: str) -> LedgerError:
        self._on_fenced(exc)
        return LedgerError(f"ledger {self.path}: {exc}{lost}")

    def _failed(self, what: str, exc: BaseException, lost: str) -> LedgerError:
        """The ``LedgerError`` for a driver error. A connection that failed slowly (the host does
        not answer: the attempt waited ``SLOW_FAILURE_S`` or more) starts or doubles the backoff
        during which calls fail at once (``_guard``); one refused at once (the server is down,
        its host up) does not: the next call simply tries again."""
        if _connection_error(exc) and self._monotonic() - self._attempt_started >= SLOW_FAILURE_S:
            self._backoff = min(MAX_BACKOFF_S, max(1.0, 2 * self._backoff))
            self._down_until = self._monotonic() + self._backoff
            self._down_reason = _reason(exc)
            lost += f"; rerund connects again in {self._backoff:.0f}s"
        return LedgerError(f"ledger {self.path} {what} failed: {_reason(exc)}{lost}")

    def _guard(self, lost: str) -> None:
        """Fail at once while the database is in its backoff after a lost connection (lock
        held): a write on an unreachable host would otherwise wait ``CONNECT_TIMEOUT_S`` each,
        on the caller's thread (the daemon's event loop)."""
        self._attempt_started = self._monotonic()
        left = self._down_until - self._attempt_started
        if left > 0:
            raise LedgerError(
                f"ledger {self.path} is unreachable ({self._down_reason}); rerund connects again in "
                f"{max(1, round(left))}s{lost}"
            )

    def _reachable(self) -> None:
        self._backoff, self._down_until = 0.0, 0.0

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One transaction (the pending rows written first). Lock held."""
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self.path} is closed; the record is lost")
            self._write_pending_or_log()
            self._guard("; the record is lost")
            try:
                with self._engine.begin() as conn:
                    self._fenced(conn)
                    yield conn
            except FencedError as exc:
                raise self._refused(exc, "") from None
            except _DRIVER_ERRORS as exc:
                raise self._failed("write", exc, "; the record is lost") from None
            self._reachable()

    def _read(self, stmt: Any, args: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of ``stmt`` on the reading connection (lock held): one connection kept open in
        autocommit (a read is one round trip: no pool checkout, no BEGIN/ROLLBACK around it),
        dropped on a driver error and made again by the next read."""
        try:
            if self._reader is None:
                self._reader = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            rows = [dict(r._mapping) for r in self._reader.execute(stmt, args or {})]
        except _DRIVER_ERRORS:
            self._drop_reader()
            raise
        self._reachable()
        return rows

    def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with suppress(*_DRIVER_ERRORS):
                reader.invalidate()
                reader.close()

    def _query(self, stmt: Any, args: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a public read (``history``, ``lineage_rows`` …) on a connection of the pool,
        outside the lock: a read that waits on the database (a large table, a lock) in a worker
        thread holds back neither the writes nor the other reads (the lock is held only to write
        the pending rows first, so what this process recorded is read back)."""
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self.path} is closed")
            self._write_pending_or_log()
            self._guard("")
        try:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                rows = [dict(r._mapping) for r in conn.execute(stmt, args or {})]
        except _DRIVER_ERRORS as exc:
            with self._lock:
                raise self._failed("read", exc, "") from None
        self._reachable()
        return rows

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._write_pending_or_log()
            finally:
                self._cancel_flush()
                self._closed = True
                self._drop_reader()
                self._engine.dispose()

    # -- group commits ----------------------------------------------------------------------

    def _write_pending(self) -> None:
        """Write the pending rows (lock held), one ``executemany`` per table in one transaction.
        When the database refuses the group for a row's sake (not for a lost connection), the
        rows are written one by one and only the refused row is lost (logged)."""
        pending, self._pending = self._pending, {}
        self._pending_keys.clear()
        count = sum(len(rows) for rows in pending.values())
        if not count:
            return
        try:
            self._write_group(pending, count)
        except BaseException:
            self._forget_fresh()  # some rows are not written: what is new is read again
            raise

    def _write_group(self, pending: dict[str, list[dict[str, Any]]], count: int) -> None:
        self._guard(f"; the {count} rows recorded since the last write are lost")
        try:
            with self._engine.begin() as conn:
                self._fenced(conn)
                for name, rows in pending.items():
                    conn.execute(insert(t.metadata.tables[name]).on_conflict_do_nothing(), rows)
            self._reachable()
            return
        except FencedError as exc:
            raise self._refused(
                exc, f" (the {count} rows recorded since the last write are not written)"
            ) from None
        except DBAPIError as exc:
            if _connection_error(exc):
                raise self._failed(
                    "write", exc, f"; the {count} rows recorded since the last write are lost"
                ) from None
        except _DRIVER_ERRORS as exc:
            raise self._failed(
                "write", exc, f"; the {count} rows recorded since the last write are lost"
            ) from None
        for name, rows in pending.items():  # one by one: lose only the refused row
            for row in rows:
                try:
                    with self._engine.begin() as conn:
                        self._fenced(conn)
                        conn.execute(insert(t.metadata.tables[name]).on_conflict_do_nothing(), row)
                except FencedError as exc:
                    raise self._refused(
                        exc, " (the rows not written yet of this group are not written)"
                    ) from None
                except _DRIVER_ERRORS as exc:
                    log.error("ledger %s refused a row (%s); that row is lost", self.path, _reason(exc))
                    self._forget_fresh()

    def _record(
        self,
        key: tuple[Any, ...],
        exists: tuple[Select[Any], dict[str, Any]],
        table: Table,
        row: dict[str, Any],
        *,
        run: str,
        creates: str | None = None,
    ) -> bool:
        """Record one row (``ON CONFLICT DO NOTHING``) about run ``run`` (its ``project/domain/
        name``); True when it was not recorded before. ``creates``: a run this fact says this
        process created (fresh from now on).

        With group commits on, whether it is new is decided now and the row joins the pending
        ones: by this process's memory when ``run`` is fresh (see the module docstring), else
        by a read of its unique key (``exists``); a failure found new makes its run fresh.
        Without, it is written at once."""
        if self._schedule is None:
            with self._tx() as conn:
                return _inserted(conn, table, row)
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self.path} is closed; the record is lost")
            if key in self._pending_keys:
                return False
            fact = fact_digest(key)
            known = self._fresh.get(run)
            if known is not None:
                if has_fact(known, fact):
                    return False
            else:
                self._guard("; the record is lost")
                try:
                    if not self._later_than_every_failure(table, row) and self._read(*exists):
                        return False
                except _DRIVER_ERRORS as exc:
                    raise self._failed("write", exc, "; the record is lost") from None
                if table is t.failures:
                    known = freshen(self._fresh, run)  # forgotten beyond the budget: ``_forgot_fresh``
            if known is not None:
                self._fresh.put(run, known + fact)  # the newest entry, one put
            if creates is not None:
                freshen(self._fresh, creates)
            if not self._pending:  # the first row of a group: its flush
                self._flush_handle = self._schedule(self.flush)
            self._pending_keys.add(key)
            self._pending.setdefault(table.name, []).append(row)
            return True

    def _later_than_every_failure(self, table: Table, row: dict[str, Any]) -> bool:
        """Whether ``row`` is a failure that failed after every failure the ledger held when
        this process first asked (lock held; one read per process, or after a failed flush):
        then no one recorded it before — with a shared state only the leader writes, and the
        leader before this one wrote nothing after its term ended (fenced) — and it is new
        unless this process recorded it (``_fresh``, asked first)."""
        if table is not t.failures:
            return False
        if self._newest_failure is _UNREAD:
            found = self._read(select(func.max(t.failures.c.failed_at).label("at")))
            self._newest_failure = found[0]["at"] if found else None
        newest = self._newest_failure
        return newest is None or (isinstance(newest, datetime) and row["failed_at"] > newest)

    def _forget_fresh(self) -> None:
        """Forget what this process knows is new (lock held): it is read again."""
        self._fresh.clear()
        self._newest_failure = _UNREAD

    @property
    def caches(self) -> tuple[SizedCache[str, bytes]]:
        """The ledger's long-lived caches (``rerund_cache_bytes``)."""
        return (self._fresh,)

    def _forgot_fresh(self, run: str, known: bytes) -> None:
        self._newest_failure = _UNREAD  # the forgotten run's failure is the ledger's to say

    # -- writes -----------------------------------------------------------------------------

    def record_failure(
        self, *, project: str, domain: str, run: str, failed_at: datetime, now: datetime
    ) -> bool:
        """Remember a failed run; True when it was not recorded before."""
        key = f"{project}/{domain}/{run}"
        row = {
            "run_key": key,
            "project": project,
            "domain": domain,
            "run": run,
            "failed_at": _aware(failed_at),
            "seen_at": _aware(now),
        }
        return self._record(("failure", key), (_FAILURE_EXISTS, {"key": key}), t.failures, row, run=key)

    def record_decision(
        self,
        *,
        project: str,
        domain: str,
        run: str,
        root: str,
        decision: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Record a decision (its ``Decision.to_json()``) with this handle's ``source``; True
        when this (run, kind, policy, attempt) was not recorded before (by any replica or source)."""
        key = f"{project}/{domain}/{run}"
        attempt, policy, kind = decision.get("attempt"), decision.get("policy") or "", decision["decision"]
        fingerprint = str(decision.get("fingerprint") or "")
        if not isinstance(policy, str) or not (attempt is None or isinstance(attempt, int)):
            raise LedgerError(
                f"ledger {self.path} write failed: policy {policy!r} or attempt {attempt!r} of the "
                f"decision about run {run!r} cannot be stored (text and a whole number); the record is lost"
            )
        body = _compact_body(
            decision, kind=kind, policy=policy, attempt=attempt, run=run, fingerprint=fingerprint
        )
        exists = (
            _DECISION_EXISTS,
            {"key": key, "kind": kind, "policy": policy, "attempt": -1 if attempt is None else attempt},
        )
        row = {
            "at": _aware(now),
            "run_key": key,
            "project": project,
            "domain": domain,
            "run": run,
            "root": root,
            "attempt": attempt,
            "policy": policy,
            "decision": kind,
            "reason": str(decision["reason"]),
            "body": body,
            "source": self.source,
            "fingerprint": fingerprint,
        }
        return self._record(
            ("decision", key, kind, policy, -1 if attempt is None else attempt),
            exists,
            t.decisions,
            row,
            run=key,
        )

    def record_issue(self, issue: RerunIssue, *, now: datetime) -> bool:
        """Record the result of issuing a rerun with this handle's ``source``."""
        src = issue.source
        key = f"{src.project}/{src.domain}/{issue.target}"
        row = {
            "at": _aware(now),
            "source_key": str(src),
            "target_key": key,
            "project": src.project,
            "domain": src.domain,
            "target": issue.target,
            "root": issue.root,
            "attempt": issue.attempt,
            "policy": issue.policy,
            "scope": issue.scope,
            "result": issue.result,
            "message": issue.message,
            "source": self.source,
        }
        exists = (_ISSUE_EXISTS, {"key": key, "result": issue.result})
        return self._record(
            ("issue", key, issue.result),
            exists,
            t.issues,
            row,
            run=str(src),
            creates=key if issue.result == "created" else None,
        )

    def record_outcome(self, outcome: RerunOutcome, *, now: datetime) -> bool:
        """Record the terminal phase of a rerun; True when not recorded before."""
        key = str(outcome.target)
        row = {
            "target_key": key,
            "at": _aware(now),
            "policy": outcome.policy,
            "root": outcome.root,
            "attempt": outcome.attempt,
            "phase": outcome.phase,
        }
        return self._record(("outcome", key), (_OUTCOME_EXISTS, {"key": key}), t.outcomes, row, run=key)

    def record_reproduction(self, result: dict[str, Any], *, now: datetime) -> bool:
        """Record a finished reproduction firing; True when this (check, scheduled time, manual)
        was not recorded before."""
        scheduled = datetime.fromisoformat(str(result["scheduled_for"]).replace("Z", "+00:00"))
        row = {
            "at": _aware(now),
            "check_name": result["check"],
            "scheduled_for": _aware(scheduled),
            "manual": bool(result.get("manual")),
            "result": result["result"],
            "reason": result["reason"],
            "project": result.get("project") or "",
            "domain": result.get("domain") or "",
            "reference": result.get("reference"),
            "rerun": result.get("rerun"),
            "diff": json.dumps(result.get("diff") or []),
            "body": json.dumps(result, sort_keys=True, default=str),
        }
        with self._tx() as conn:
            return _inserted(conn, t.reproductions, row)

    def record_incident(self, record: IncidentRecord, *, now: datetime) -> bool:
        """Save ``record`` (replacing the row of its fingerprint and opening time); True when
        its state was not recorded before. Closed is final: a late write of the open state does
        not reopen it (the row is locked while it is compared)."""
        opened = _aware(record.opened_at)
        key = (t.incidents.c.fingerprint == record.fingerprint) & (t.incidents.c.opened_at == opened)
        body = json.dumps(record.to_json())
        with self._tx() as conn:
            row = conn.execute(select(t.incidents.c.state).where(key).with_for_update()).first()
            if row is not None and row[0] == "closed":
                return False
            stmt = insert(t.incidents).values(
                fingerprint=record.fingerprint,
                opened_at=opened,
                state=record.state,
                at=_aware(now),
                body=body,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["fingerprint", "opened_at"],
                set_={"state": stmt.excluded.state, "at": stmt.excluded.at, "body": stmt.excluded.body},
            )
            conn.execute(stmt)
            return row is None or row[0] != record.state

    def fingerprint_recoveries(
        self, *, since: datetime, fingerprint: str | None = None
    ) -> dict[str, tuple[int, int]]:
        """Fingerprint -> (reruns decided since ``since`` for its failures whose outcome is
        recorded, how many succeeded); only ``fingerprint`` when given."""
        d, i, o = t.decisions, t.issues, t.outcomes
        succeeded = func.coalesce(func.sum(case((o.c.phase == "SUCCEEDED", 1), else_=0)), 0).label("ok")
        stmt = (
            select(d.c.fingerprint, func.count().label("n"), succeeded)
            .select_from(
                d.join(
                    i,
                    (i.c.source_key == d.c.project + "/" + d.c.domain + "/" + d.c.run)
                    & (i.c.attempt == d.c.attempt)
                    & (i.c.result == "created"),
                ).join(o, o.c.target_key == i.c.target_key)
            )
            .where(d.c.decision == "rerun", d.c.at >= _aware(since))
            .where(d.c.fingerprint != "" if fingerprint is None else d.c.fingerprint == fingerprint)
            .group_by(d.c.fingerprint)
        )
        out = {str(r["fingerprint"]): (int(r["n"]), int(r["ok"])) for r in self._query(stmt)}
        # The reruns by hand: runs seen rerunning a decided run that rerund did not create.
        m = t.reruns_seen
        decided = (
            select(d.c.project, d.c.domain, d.c.run, d.c.fingerprint)
            .where(d.c.at >= _aware(since))
            .where(d.c.fingerprint != "" if fingerprint is None else d.c.fingerprint == fingerprint)
            .distinct()
            .subquery()
        )
        seen_ok = func.coalesce(func.sum(case((m.c.phase == "SUCCEEDED", 1), else_=0)), 0).label("ok")
        by_hand = (
            select(decided.c.fingerprint, func.count().label("n"), seen_ok)
            .select_from(
                decided.join(
                    m, m.c.source_key == decided.c.project + "/" + decided.c.domain + "/" + decided.c.run
                )
            )
            .where(m.c.target_key.not_in(select(i.c.target_key)))
            .group_by(decided.c.fingerprint)
        )
        for r in self._query(by_hand):
            n, ok = out.get(str(r["fingerprint"]), (0, 0))
            out[str(r["fingerprint"])] = (n + int(r["n"]), ok + int(r["ok"]))
        return out

    def record_rerun_seen(self, target: RunRef, source: RunRef, phase: str, *, now: datetime) -> bool:
        """Run ``target``, a rerun of ``source`` (its relation), ended in ``phase``; True when
        not recorded before."""
        row = {"target_key": str(target), "source_key": str(source), "phase": phase, "at": _aware(now)}
        with self._tx() as conn:
            return _inserted(conn, t.reruns_seen, row)

    def incidents(self, *, since: datetime) -> list[IncidentRecord]:
        """The open incidents and those closed (or saved) at or after ``since``, newest first."""
        c = t.incidents.c
        rows = self._query(
            select(c.body).where((c.state == "open") | (c.at >= _aware(since))).order_by(c.opened_at.desc())
        )
        return [IncidentRecord.from_json(json.loads(r["body"])) for r in rows]

    def save_incident_members(self, members: Mapping[str, Members], *, now: datetime) -> None:
        """Replace each fingerprint's saved members; forget the windows saved over a day ago
        (``rerund.ports.DecisionLedger.save_incident_members``). One transaction."""
        m = t.incident_members
        with self._tx() as conn:
            for fingerprint, saved in members.items():
                conn.execute(m.delete().where(m.c.fingerprint == fingerprint))
                rows = [
                    {
                        "fingerprint": fingerprint,
                        "kind": kind,
                        "name": name,
                        "failed_at": None if failed_at is None else datetime.fromisoformat(failed_at),
                        "at": _aware(now),
                    }
                    for kind, name, failed_at in _member_rows(saved)
                ]
                if rows:
                    conn.execute(insert(m).on_conflict_do_nothing(), rows)
            conn.execute(
                m.delete().where((m.c.kind == "window") & (m.c.at < _aware(now - MAX_INCIDENT_WINDOW)))
            )

    def incident_members(self) -> dict[str, Members]:
        """The saved members per fingerprint (windows oldest first)."""
        c = t.incident_members.c
        rows = self._query(select(c.fingerprint, c.kind, c.name, c.failed_at).order_by(c.fingerprint, c.name))
        return _members_of(
            (str(r["fingerprint"]), str(r["kind"]), str(r["name"]), r["failed_at"]) for r in rows
        )

    def set_watermark(self, scope: str, at: datetime) -> None:
        """Set the watermark of ``scope`` (as in the SQLite ledger: the value given)."""
        stmt = insert(t.watermarks).values(scope=scope, at=_aware(at))
        stmt = stmt.on_conflict_do_update(index_elements=["scope"], set_={"at": stmt.excluded.at})
        with self._tx() as conn:
            conn.execute(stmt)

    def prune(self, older_than: datetime) -> int:
        """Delete records older than ``older_than``; returns the number of rows deleted."""
        cutoff = _aware(older_than)
        deleted = 0
        with self._tx() as conn:
            for table, column in _PRUNED:
                deleted += conn.execute(table.delete().where(table.c[column] < cutoff)).rowcount
        return deleted

    def vacuum(self, pages: int = 0) -> int:
        """Nothing to do: PostgreSQL's autovacuum returns the space. Returns 0."""
        return 0

    # -- reads ------------------------------------------------------------------------------

    def watermark(self, scope: str) -> datetime | None:
        rows = self._query(select(t.watermarks.c.at).where(t.watermarks.c.scope == scope))
        return rows[0]["at"].astimezone(UTC) if rows else None

    def created_without_outcome(self) -> list[IssueRecord]:
        """Reruns created (by any replica) whose terminal phase is not recorded yet."""
        i, o = t.issues, t.outcomes
        stmt = (
            select(i)
            .outerjoin(o, o.c.target_key == i.c.target_key)
            .where(i.c.result == "created", o.c.target_key.is_(None))
            .order_by(i.c.id)
        )
        return [
            IssueRecord(
                project=r["project"],
                domain=r["domain"],
                target=r["target"],
                root=r["root"],
                attempt=r["attempt"],
                policy=r["policy"],
                scope=r["scope"],
                at=r["at"].astimezone(UTC),
            )
            for r in self._query(stmt)
        ]

    def issued_as(self, project: str, domain: str, target: str) -> tuple[str, int] | None:
        """(root, attempt) of run ``target`` when the ledger recorded creating it."""
        i = t.issues.c
        rows = self._query(
            select(i.root, i.attempt).where(
                i.target_key == f"{project}/{domain}/{target}", i.result == "created"
            )
        )
        return (str(rows[0]["root"]), int(rows[0]["attempt"])) if rows else None

    def history(
        self,
        *,
        run: str | None = None,
        policy: str | None = None,
        source: str | None = None,
        limit: int = 50,
        contains: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recent decisions, newest first (as ``Ledger.history``)."""
        d = t.decisions.c
        stmt = select(t.decisions)
        if source:
            stmt = stmt.where(d.source == source)
        if run:
            stmt = stmt.where(or_(d.run == run, d.root == run))
        if contains:
            stmt = stmt.where(
                or_(d.run.contains(contains, autoescape=True), d.root.contains(contains, autoescape=True))
            )
        if policy:
            stmt = stmt.where(d.policy == policy)
        stmt = stmt.order_by(d.id.desc()).limit(max(0, limit))
        return [
            {
                "at": _text(r["at"]),
                "project": r["project"],
                "domain": r["domain"],
                "run": r["run"],
                "root": r["root"],
                "source": r["source"],
                **public_decision(_full_body(r)),  # type: ignore[arg-type]
                "fingerprint": r["fingerprint"] or None,
            }
            for r in self._query(stmt)
        ]

    def policies_seen(self) -> list[str]:
        """Policies with a recorded decision."""
        d = t.decisions.c
        rows = self._query(select(d.policy).where(d.policy != "").distinct().order_by(d.policy))
        return [str(r["policy"]) for r in rows]

    def root_of(self, run: str) -> str | None:
        """The lineage root of ``run`` as recorded (a decision about it, or the rerun it is)."""
        stmt = (
            select(t.decisions.c.root)
            .where(t.decisions.c.run == run)
            .union_all(select(t.issues.c.root).where(t.issues.c.target == run))
            .limit(1)
        )
        rows = self._query(stmt)
        return str(rows[0]["root"]) if rows else None

    def lineage_rows(
        self, *, since: datetime | None = None, root: str | None = None, limit: int = 20_000
    ) -> dict[str, list[dict[str, Any]]]:
        """Decisions, issue results and outcomes (as ``Ledger.lineage_rows``), oldest first, at
        most ``limit`` rows per table (the newest)."""

        def rows(table: Table) -> list[dict[str, Any]]:
            conds = []
            if since is not None:
                conds.append(table.c.at >= _aware(since))
            if root is not None:
                conds.append(table.c.root == root)
            stmt = select(table).where(and_(True, *conds)).order_by(table.c.at.desc()).limit(limit)
            return list(reversed(self._query(stmt)))

        decisions = [
            {
                "id": r["id"],
                "at": _text(r["at"]),
                "project": r["project"],
                "domain": r["domain"],
                "run": r["run"],
                "root": r["root"],
                **public_decision(_full_body(r)),  # type: ignore[arg-type]
            }
            for r in rows(t.decisions)
        ]
        issues = [{**r, "at": _text(r["at"])} for r in rows(t.issues)]
        outcomes = []
        for r in rows(t.outcomes):
            project, domain, target = str(r["target_key"]).split("/", 2)
            outcomes.append(
                {**r, "at": _text(r["at"]), "project": project, "domain": domain, "target": target}
            )
        return {"decisions": decisions, "issues": issues, "outcomes": outcomes}

    def latest_reproductions(self) -> list[dict[str, Any]]:
        """The newest recorded result of every check, with its diff."""
        r = t.reproductions.c
        stmt = (
            select(r.at, r.body)
            .ext(distinct_on(r.check_name))
            .order_by(r.check_name, r.scheduled_for.desc(), r.id.desc())
        )
        return [{**json.loads(row["body"]), "recorded_at": _text(row["at"])} for row in self._query(stmt)]

    def last_reproduction(self, check: str) -> datetime | None:
        """The latest scheduled (not manual) time of ``check`` with a recorded result."""
        r = t.reproductions.c
        rows = self._query(
            select(func.max(r.scheduled_for).label("at")).where(r.check_name == check, r.manual.is_(False))
        )
        return rows[0]["at"].astimezone(UTC) if rows and rows[0]["at"] else None

    def reproduction_checks(self) -> list[str]:
        """Names of the checks with a recorded result."""
        r = t.reproductions.c
        return [
            str(row["check_name"])
            for row in self._query(select(r.check_name).distinct().order_by(r.check_name))
        ]

    def reproduction_history(self, check: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Recorded results of ``check``, newest first, each with its diff and ``recorded_at``."""
        r = t.reproductions.c
        stmt = (
            select(r.at, r.body)
            .where(r.check_name == check)
            .order_by(r.scheduled_for.desc(), r.id.desc())
            .limit(max(0, limit))
        )
        return [{**json.loads(row["body"]), "recorded_at": _text(row["at"])} for row in self._query(stmt)]

    def issues(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded issue results, oldest first (times as ISO-8601 text, as the SQLite ledger's)."""
        rows = self._query(select(t.issues).order_by(t.issues.c.id).limit(limit))
        return [{**r, "at": r["at"].astimezone(UTC).isoformat()} for r in rows]

    def size_bytes(self) -> int:
        """0: the rows are in the database server, not in this process or its disk."""
        return 0

    def counts(self) -> dict[str, int]:
        """Row counts per table."""
        tables = ("failures", "decisions", "issues", "outcomes")
        stmt = text("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {n}) AS {n}" for n in tables))  # noqa: S608
        return {k: int(v) for k, v in self._query(stmt)[0].items()}
