"""The audit ledger: a local SQLite file recording every decision, issue result and outcome.

It is a record, never needed for correctness. Deleting it loses history and makes the daemon
start again from ``--lookback``; it never causes a missed or a duplicate rerun, because what is
owed is recomputed from the control plane and rerun names are deterministic. The daemon also
uses the ledger to count each fact once in its metrics across restarts (``record_*`` return
whether the fact is new) and to remember which reruns it created, so their outcomes can be
followed after a restart without an extra RPC.

Group commits (``group_commits``, what the daemon turns on): the one-row writes (failures,
decisions, issue results, outcomes) are decided new or not at once (a read of the row's unique
key, which takes no lock) and written together by a ``flush`` ``schedule``d a moment later (the
daemon: 50 ms), in one short transaction — a storm records thousands of rows a second, and a
commit per row was most of rerund's CPU after the RPCs themselves, while holding the write lock
between flushes would shut ``rerund sweep`` out of the file. As in the PostgreSQL ledger
(``rerund.adapters.sqlstate.ledger``), deciding "new" costs one read per *run*, not per row: a
run whose failure the file did not have is *fresh* to this process, and the later facts about it
(its decisions — a reload decides every owed failure again —, its rerun's issue result, that
rerun's outcome) are new unless this process recorded them (kept in memory for the runs seen
last, within ``FRESH_BYTES``: a ``SizedCache``). A flush that fails, a refused row and a
reopened file forget the fresh runs: they are read again. The exception is a ``rerund sweep``
writing the file while the daemon runs: a decision the sweep recorded first about a run fresh to
the daemon is counted again by the daemon (its metrics and log line; the row is still written
once).
Every other write (watermarks, pruning, reproductions), every read and ``close`` write the
pending rows first, so a watermark is never ahead of the rows it covers. A hard crash loses at
most the pending rows; they are facts the daemon derives again from the control plane on
restart (the failures after the watermark are read again), so nothing is missed or created
twice.

WAL mode lets ``rerund history`` read while the daemon writes. ``prune`` keeps the file
bounded (the daemon calls it with its ``ledger_retention`` setting). Timestamps are stored as
aware UTC ISO-8601 strings.

Decisions and issue results carry their ``source``: ``daemon`` (``rerund run``) or ``sweep``
(``rerund sweep``, which opens the same file with ``Ledger(path, source="sweep")``). A ledger
written before the column existed gains it on open, its rows counted as ``daemon``. Decisions
carry their failure's ``fingerprint`` (``rerund.core.fingerprints``) in a column of their own,
indexed with the time (what incidents count); rows written before it have ``''`` there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rerund.core.incidents import MAX_INCIDENT_WINDOW, IncidentRecord, Members
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.redact import public_decision
from rerund.core.runs import RunRef
from rerund.errors import LedgerError
from rerund.lograte import EveryMinute
from rerund.sizedcache import ENTRY_BYTES, SizedCache

__all__ = ["IssueRecord", "Ledger", "Source"]

log = logging.getLogger("rerund.ledger")

# Runs new to the file whose facts this process remembers (``_record``), in estimated bytes
# (``rerund_cache_bytes{cache="ledger_fresh"}``): ~320 bytes a run with its failure and two
# decisions, some 6,500 runs. What asks it: the facts that follow a failure within minutes (its
# decision, its rerun's issue and outcome) and a reload deciding the owed failures again; a run
# forgotten costs one unique-key read per fact (a reload over more owed failures than this holds
# reads each, ~25 µs). It held 8 MiB until round 7: history, at ~1 KB a failure in the soak.
FRESH_BYTES = 2 * 1024 * 1024
_DIGEST_BYTES = 8


# -- fresh runs (both ledgers: this file's and ``sqlstate.PostgresLedger``) ----------------
#
# A fresh run's entry is its key and the digests of the facts this process recorded about it,
# one ``bytes``: 8 bytes a fact (``fact_digest``), not a tuple of strings (~120 bytes). A
# digest is the fact key's ``hash`` (the process's own: never stored); two facts of one run
# share one with odds of about 2**-64 (a run has a few facts), and equal keys always do.


def fact_digest(key: tuple[Any, ...]) -> bytes:
    """The 8 bytes a fresh run keeps for the fact of unique key ``key``."""
    return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(_DIGEST_BYTES, "little")


def has_fact(known: bytes, digest: bytes) -> bool:
    """Whether ``known`` (a fresh run's digests, end to end) holds ``digest`` (at a digest's
    boundary: not across two)."""
    at = known.find(digest)
    while at > 0 and at % _DIGEST_BYTES:
        at = known.find(digest, at + 1)
    return at >= 0


def fresh_bytes(run: str, known: bytes) -> int:
    """Estimated bytes of one fresh run: the entry, its key, its digests."""
    return ENTRY_BYTES + sys.getsizeof(run) + sys.getsizeof(known)


def freshen(fresh: SizedCache[str, bytes], run: str) -> bytes:
    """Remember ``run`` as new to the ledger in ``fresh`` (the ledger's lock held), or make it the
    newest entry; the oldest beyond the budget are forgotten (their facts are read again).
    Returns the digests of the facts recorded about it so far."""
    known = fresh.get(run)
    if known is None:
        known = b""
        fresh.put(run, known)
    else:
        fresh.touch(run)
    return known


_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    run_key TEXT PRIMARY KEY, project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL,
    failed_at TEXT NOT NULL, seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, run_key TEXT NOT NULL,
    project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL, root TEXT NOT NULL,
    attempt INTEGER, policy TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (run_key, decision, policy, attempt)
);
-- The table's UNIQUE treats NULL attempts (ignore, give_up without a plan) as distinct;
-- this index makes "the same decision about the same run" one row whatever the attempt.
CREATE UNIQUE INDEX IF NOT EXISTS decisions_once
    ON decisions (run_key, decision, policy, IFNULL(attempt, -1));
CREATE INDEX IF NOT EXISTS decisions_run ON decisions (run);
CREATE INDEX IF NOT EXISTS decisions_root ON decisions (root);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, source_key TEXT NOT NULL,
    target_key TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL, target TEXT NOT NULL,
    root TEXT NOT NULL, attempt INTEGER NOT NULL, policy TEXT NOT NULL, scope TEXT NOT NULL,
    result TEXT NOT NULL, message TEXT NOT NULL,
    UNIQUE (target_key, result)
);
CREATE TABLE IF NOT EXISTS outcomes (
    target_key TEXT PRIMARY KEY, at TEXT NOT NULL, policy TEXT NOT NULL, root TEXT NOT NULL,
    attempt INTEGER NOT NULL, phase TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS watermarks (scope TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reproductions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, check_name TEXT NOT NULL,
    scheduled_for TEXT NOT NULL, manual INTEGER NOT NULL, result TEXT NOT NULL,
    reason TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL, reference TEXT,
    rerun TEXT, diff TEXT NOT NULL, body TEXT NOT NULL,
    UNIQUE (check_name, scheduled_for, manual)
);
CREATE INDEX IF NOT EXISTS reproductions_check ON reproductions (check_name, scheduled_for);
-- Incidents of the outage breaker (rerund.core.incidents): one row per fingerprint and opening,
-- replaced as it changes; ``body`` is ``IncidentRecord.to_json()``.
CREATE TABLE IF NOT EXISTS incidents (
    fingerprint TEXT NOT NULL, opened_at TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (fingerprint, opened_at)
);
-- Runs that rerun a run (their RunSpec relation) seen ended, by hand or by rerund
-- (``record_rerun_seen``): the reruns by hand are evidence for ``fingerprint_recoveries``.
CREATE TABLE IF NOT EXISTS reruns_seen (
    target_key TEXT PRIMARY KEY, source_key TEXT NOT NULL, phase TEXT NOT NULL, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reruns_seen_source ON reruns_seen (source_key);
-- What the outage breaker counts per fingerprint (rerund.core.incidents.Members), saved with each
-- pass (``at``): kind 'window' (a failed run toward opening, ``failed_at`` its failure time),
-- 'run' and 'lineage' (the failed runs and lineages of its open incident).
CREATE TABLE IF NOT EXISTS incident_members (
    fingerprint TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, failed_at TEXT,
    at TEXT NOT NULL, PRIMARY KEY (fingerprint, kind, name)
);
"""

Source = Literal["daemon", "sweep"]
# Columns added after the first release: (table, column, definition), added on open when absent.
_ADDED_COLUMNS = (
    ("decisions", "source", "TEXT NOT NULL DEFAULT 'daemon'"),
    ("issues", "source", "TEXT NOT NULL DEFAULT 'daemon'"),
    ("decisions", "fingerprint", "TEXT NOT NULL DEFAULT ''"),  # '' for decisions recorded before it
    ("decisions", "reason_id", "INTEGER"),  # the reason's template in ``texts`` (compact rows)
)

# -- compact rows (at most 500 bytes per ignored failure: bench/README.md §10) --------------
#
# A new file is created lean (``_LEAN_GENERATED_SCHEMA``, or ``_LEAN_SCHEMA`` before SQLite
# 3.31; before ``_SCHEMA``, whose IF NOT EXISTS then skips those tables):
# ``auto_vacuum=INCREMENTAL`` (it can only be set before the first table), ``failures`` WITHOUT
# ROWID (its key is stored once, not in a table and an index), ``decisions`` without the
# table-level UNIQUE that ``decisions_once`` already enforces (one b-tree less per decision),
# and what a row would hold twice as a generated column. An existing file keeps its tables and
# ``auto_vacuum=NONE`` (SQLite changes that only with a full VACUUM, which rewrites the file
# under the write lock): its freed pages are reused by later rows, so it stops growing at what
# its retention holds, but it does not shrink; the compact rows below apply to it too.
#
# Every decision row is compact, in old and new files alike: ``body`` keeps only what its columns
# and the defaults of ``Decision.to_json()`` do not already say (``{}`` for an ignore), and the
# reason, with the run's name cut out, is stored once in ``texts`` by its hash (``reason_id``):
# "policy 'x' never reruns run '…' (retry: false)" is one row for every run it was said of.
# Rows written before keep their full body and reason and read back as before.
_LEAN_SCHEMA = """
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE IF NOT EXISTS failures (
    run_key TEXT PRIMARY KEY, project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL,
    failed_at TEXT NOT NULL, seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, run_key TEXT NOT NULL,
    project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL, root TEXT NOT NULL,
    attempt INTEGER, policy TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL,
    body TEXT NOT NULL
);
"""
# With SQLite >= 3.31, what a lean row would store twice is a generated column instead (computed
# when read, never stored): a failure's project, domain and run from its key, a decision's key
# from its project, domain and run. Their inserts then name only the stored columns
# (``_generated``).
_AFTER_SLASH = "substr(run_key, instr(run_key, '/') + 1)"
_LEAN_GENERATED_SCHEMA = f"""
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE IF NOT EXISTS failures (
    run_key TEXT PRIMARY KEY,
    project TEXT GENERATED ALWAYS AS (substr(run_key, 1, instr(run_key, '/') - 1)) VIRTUAL,
    domain TEXT GENERATED ALWAYS AS
        (substr({_AFTER_SLASH}, 1, instr({_AFTER_SLASH}, '/') - 1)) VIRTUAL,
    run TEXT GENERATED ALWAYS AS (substr({_AFTER_SLASH}, instr({_AFTER_SLASH}, '/') + 1)) VIRTUAL,
    failed_at TEXT NOT NULL, seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
    run_key TEXT GENERATED ALWAYS AS (project || '/' || domain || '/' || run) VIRTUAL,
    project TEXT NOT NULL, domain TEXT NOT NULL, run TEXT NOT NULL, root TEXT NOT NULL,
    attempt INTEGER, policy TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL,
    body TEXT NOT NULL
);
"""
_TEXTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS texts (id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, text TEXT NOT NULL);
"""
_RUN = "\x00"  # where the run's name stood in a stored reason template
# Decision.to_json()'s keys and their values when a decision leaves them empty.
_BODY_DEFAULTS: dict[str, Any] = {
    "action": None,
    "env": {},
    "fingerprint": None,  # a decision's own is kept in its column (``_compact_body``)
    "inputs": {},
    "labels": {},
    "name": None,
    "not_before": None,
    "overrides": {},
    "scope": None,
}
# Pages the scheduled prune returns to the file system at most per call (incremental vacuum).
_VACUUM_PAGES = 10_000


def _template(reason: str, run: str) -> str | None:
    """``reason`` with ``run`` cut out (``_RUN``), or None when it cannot be stored that way."""
    if _RUN in reason or not run:
        return None
    return reason.replace(run, _RUN)


# ``json.dumps(..., sort_keys=True, default=str, separators=(",", ":"))``, its encoder built once.
_COMPACT_JSON = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":"))


def _compact_body(
    body: dict[str, Any], *, kind: str, policy: str, attempt: Any, run: str, fingerprint: str
) -> str:
    """``body`` without what ``_full_body`` restores from the row's columns and the defaults."""
    base = {**_BODY_DEFAULTS, "decision": kind, "policy": policy, "attempt": attempt, "source_run": run}
    if fingerprint:  # kept in its own column
        base["fingerprint"] = fingerprint
    kept = {k: v for k, v in body.items() if k == "reason" or k not in base or base[k] != v}
    kept.pop("reason", None)
    absent = sorted(k for k in base if k not in body)
    if absent:
        kept["__absent__"] = absent
    return _COMPACT_JSON.encode(kept)


def _full_body(row: sqlite3.Row) -> dict[str, Any]:
    """The decision body a row stands for, compact or written before compaction."""
    stored = json.loads(row["body"])
    keys = row.keys()
    template = row["reason_template"] if "reason_template" in keys else None
    reason = template.replace(_RUN, row["run"]) if template is not None else row["reason"]
    base = {
        **_BODY_DEFAULTS,
        "decision": row["decision"],
        "policy": row["policy"],
        "attempt": row["attempt"],
        "source_run": row["run"],
        "reason": reason,
    }
    if "fingerprint" in keys and row["fingerprint"]:  # its own column, when the body has none
        base["fingerprint"] = row["fingerprint"]
    body = {**base, **stored}
    for key in body.pop("__absent__", ()):
        body.pop(key, None)
    return body


_INSERT_FAILURE = "INSERT OR IGNORE INTO failures VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_FAILURE_GENERATED = "INSERT OR IGNORE INTO failures (run_key, failed_at, seen_at) VALUES (?, ?, ?)"
_INSERT_DECISION = (
    "INSERT OR IGNORE INTO decisions (at, run_key, project, domain, run, root, attempt, policy,"
    " decision, reason, body, source, fingerprint, reason_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT id FROM texts WHERE hash = ?))"
)
_INSERT_DECISION_GENERATED = (  # run_key is generated from project, domain and run
    "INSERT OR IGNORE INTO decisions (at, project, domain, run, root, attempt, policy,"
    " decision, reason, body, source, fingerprint, reason_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT id FROM texts WHERE hash = ?))"
)
_DECISION_ROWS = (
    "SELECT d.*, t.text AS reason_template FROM decisions d LEFT JOIN texts t ON t.id = d.reason_id"
)
# Size retention (``_prune_to_size``): lineages in flight (a rerun created, its outcome not yet
# recorded) are never pruned; the rest goes oldest first.
_IN_FLIGHT = (
    "SELECT i.root FROM issues i LEFT JOIN outcomes o ON o.target_key = i.target_key"
    " WHERE i.result = 'created' AND o.target_key IS NULL"
)
_OLDEST_SETTLED = (
    "SELECT at FROM decisions WHERE root NOT IN (" + _IN_FLIGHT + ") ORDER BY at LIMIT 1 OFFSET ?"  # noqa: S608
)
_COUNT_SETTLED = "SELECT COUNT(*) FROM decisions WHERE root NOT IN (" + _IN_FLIGHT + ")"  # noqa: S608
_DELETE_SETTLED = (
    "DELETE FROM decisions WHERE at <= ? AND root NOT IN (" + _IN_FLIGHT + ")",  # noqa: S608
    "DELETE FROM issues WHERE at <= ? AND root NOT IN (" + _IN_FLIGHT + ")",  # noqa: S608
    "DELETE FROM outcomes WHERE at <= ? AND root NOT IN (" + _IN_FLIGHT + ")",  # noqa: S608
    "DELETE FROM failures WHERE seen_at <= ? AND run NOT IN"  # noqa: S608
    " (SELECT run FROM decisions WHERE root IN (" + _IN_FLIGHT + "))",
)
# Indexes on added columns, created once the columns are there.
# Reruns of failures with a fingerprint and how many succeeded (``fingerprint_recoveries``).
_RECOVERIES = (
    "SELECT d.fingerprint, COUNT(*), COALESCE(SUM(o.phase = 'SUCCEEDED'), 0) FROM decisions d"
    " JOIN issues i ON i.source_key = d.project || '/' || d.domain || '/' || d.run"
    "  AND i.attempt = d.attempt AND i.result = 'created'"
    " JOIN outcomes o ON o.target_key = i.target_key"
    " WHERE d.decision = 'rerun' AND d.at >= ?"
)
# Reruns by hand (``reruns_seen`` rows of runs rerund did not create) of the runs decided since
# ``?``, per fingerprint: (how many ended, how many succeeded).
_SEEN_RECOVERIES = (
    "SELECT d.fingerprint, COUNT(*), COALESCE(SUM(m.phase = 'SUCCEEDED'), 0) FROM"
    " (SELECT DISTINCT project, domain, run, fingerprint FROM decisions WHERE at >= ? AND {cond}) d"
    " JOIN reruns_seen m ON m.source_key = d.project || '/' || d.domain || '/' || d.run"
    " WHERE m.target_key NOT IN (SELECT target_key FROM issues) GROUP BY d.fingerprint"
)
_ADDED_INDEXES = "CREATE INDEX IF NOT EXISTS decisions_fingerprint ON decisions (fingerprint);"


def _z(text: str) -> str:
    """A stored time as rerund shows every time: UTC ISO-8601 with a ``Z``."""
    return text.replace("+00:00", "Z") if isinstance(text, str) else text


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise LedgerError(f"timestamp {ts!r} has no timezone; the ledger stores aware UTC times only")
    return ts.astimezone(UTC).isoformat()


def _member_rows(m: Members) -> list[tuple[str, str, str | None]]:
    """The (kind, name, failed at) rows of ``m`` (``incident_members``, both ledgers)."""
    rows: list[tuple[str, str, str | None]] = [("window", run, _iso(at)) for run, at in m.window]
    rows += [("run", run, None) for run in m.runs]
    rows += [("lineage", lineage, None) for lineage in m.lineages]
    return rows


def _members_of(rows: Iterable[tuple[str, str, str, datetime | None]]) -> dict[str, Members]:
    """``incident_members`` rows (fingerprint, kind, name, failed at) as ``Members``."""
    parts: dict[str, tuple[list[tuple[str, datetime]], list[str], list[str]]] = {}
    for fingerprint, kind, name, failed_at in rows:
        window, runs, lineages = parts.setdefault(fingerprint, ([], [], []))
        if kind == "window" and failed_at is not None:
            window.append((name, failed_at.astimezone(UTC)))
        elif kind == "run":
            runs.append(name)
        elif kind == "lineage":
            lineages.append(name)
    return {
        fp: Members(window=tuple(sorted(w, key=lambda x: (x[1], x[0]))), runs=tuple(r), lineages=tuple(ln))
        for fp, (w, r, ln) in parts.items()
    }


@dataclass(frozen=True)
class IssueRecord:
    """A rerun this daemon created, as remembered in the ledger."""

    project: str
    domain: str
    target: str
    root: str
    attempt: int
    policy: str
    scope: str
    at: datetime


class GroupCommits:
    """Group commits, as both ledgers (this file's SQLite one, ``sqlstate.PostgresLedger``) do
    them: rows wait in memory until ``flush`` writes them in one transaction. A ledger sets
    ``_lock``, ``_closed``, ``_schedule`` and ``_flush_handle`` and writes with
    ``_write_pending`` (lock held)."""

    _lock: threading.Lock
    _closed: bool
    _schedule: Callable[[Callable[[], None]], object] | None
    _flush_handle: object
    _flush_errors: EveryMinute | None = None  # set at the first failed group

    def _write_pending(self) -> None:
        raise NotImplementedError

    def group_commits(self, schedule: Callable[[Callable[[], None]], object] | None) -> None:
        """Group the one-row writes: ``schedule(flush)`` is called when the first row of a
        group is recorded and must call ``flush`` soon (e.g. ``loop.call_later(0.05, flush)``;
        what it returns is cancelled on ``close`` if it has a ``cancel``). ``None``: one
        transaction per row again (the pending rows are written first)."""
        self.flush()
        self._schedule = schedule

    def flush(self) -> None:
        """Write the pending rows in one short transaction. A failure is logged (one line a
        minute while it keeps failing; those rows are lost, the daemon derives them again after
        a restart), never raised: it runs from a timer. Nothing after ``close``."""
        with self._lock:
            if self._closed:
                return
            self._write_pending_or_log()

    def _cancel_flush(self) -> None:
        handle, self._flush_handle = self._flush_handle, None
        cancel = getattr(handle, "cancel", None)
        if callable(cancel):
            cancel()

    def _write_pending_or_log(self) -> None:
        """``_write_pending``, its failure logged (lock held)."""
        try:
            self._write_pending()
        except LedgerError as exc:
            self._log_error(str(exc))

    def _log_error(self, message: str) -> None:
        """An ERROR line about the ledger's storage. A database that is down (or a file that
        cannot be reopened) fails every write: one line a minute, the others counted in it."""
        if self._flush_errors is None:
            self._flush_errors = EveryMinute(log)
        self._flush_errors.error(message)


class Ledger(GroupCommits):
    """SQLite audit ledger. Every method raises ``LedgerError`` (never ``sqlite3.Error``).

    ``source`` (``daemon`` or ``sweep``) is written with every decision and issue result
    recorded through this handle."""

    def __init__(
        self,
        path: str | Path,
        *,
        source: Source = "daemon",
        create: bool = True,
        on_reopen: Callable[[], None] | None = None,
        max_bytes: int = 0,
    ) -> None:
        """Open (``create``: and create when needed) the ledger at ``path``.

        ``create=False`` is for the commands that only read (``history``, ``status``,
        ``explain``, ``repro``): no directory is made for it. Either way an SQLite file with
        tables but no ``decisions`` table is refused before anything is written to it (no
        schema, no WAL switch), so a mistyped ``--state`` never alters another program's
        database (an empty file is an empty ledger).

        Before each write and read the ledger checks that ``path`` still names the file it
        opened (device and inode): SQLite would keep writing to a deleted or replaced file that
        nobody reads again. When it does not, the ledger logs an ERROR, reopens ``path`` (a new
        file gets the schema) and calls ``on_reopen`` (the daemon counts it in
        ``rerund_ledger_reopened_total``)."""
        self.path = str(path)
        self.source = source
        self._create = create
        self._on_reopen = on_reopen
        self.max_bytes = max_bytes  # ``ledger_max_bytes``: what ``prune`` keeps the rows within (0: no bound)
        self._lock = threading.Lock()
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._pending_keys: set[tuple[Any, ...]] = set()
        # Run key -> the digests of the facts this process recorded about it (``fact_digest``),
        # for the runs whose failure was new to the file (``_record``), least recently used first.
        self._fresh: SizedCache[str, bytes] = SizedCache("ledger_fresh", FRESH_BYTES, fresh_bytes)
        self._flush_handle: object = None
        self._closed = False
        if self.path != ":memory:" and Path(self.path).is_dir():
            raise LedgerError(
                f"ledger {self.path!r} is a directory, not a ledger file; pass the file itself as "
                f"--state, e.g. {Path(self.path) / 'rerund.db'}"
            )
        self._db, self._identity = self._open()

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at ``path`` now; None when there is none (or in memory)."""
        if self.path == ":memory:":
            return None
        try:
            st = Path(self.path).stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
        """A connection to ``path`` with the schema, and the identity of the file it opened."""
        try:
            if self.path != ":memory:" and self._create:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            db.row_factory = sqlite3.Row
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "decisions" not in tables:
                db.close()
                raise LedgerError(
                    f"{self.path!r} is an SQLite database but not a rerund ledger (it has tables but no "
                    "decisions table); pass the --state file a rerund daemon writes (default ./rerund.db); "
                    "nothing was written to it"
                )
            if not tables:  # a new file: lean tables, incremental vacuum (before any table)
                generated = sqlite3.sqlite_version_info >= (3, 31, 0)
                db.executescript(_LEAN_GENERATED_SCHEMA if generated else _LEAN_SCHEMA)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA + _TEXTS_SCHEMA)
            for table, column, definition in _ADDED_COLUMNS:
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    try:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
            db.executescript(_ADDED_INDEXES)
            self._generated = {  # lean files: which inserts leave out generated columns
                table: any(row["hidden"] in (2, 3) for row in db.execute(f"PRAGMA table_xinfo({table})"))
                for table in ("failures", "decisions")
            }
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc):
                raise LedgerError(
                    f"ledger {self.path!r} cannot be opened: {exc}; check the --state path is writable"
                ) from exc
            raise LedgerError(
                f"{self.path!r} is not a rerund ledger (not an SQLite database); pass the --state "
                "file a rerund daemon writes (default ./rerund.db)"
            ) from exc
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(
                f"ledger {self.path!r} cannot be opened: {exc}; check the --state path is writable"
            ) from exc
        return db, self._file_identity()

    def _reopen_if_replaced(self) -> None:
        """Reopen ``path`` when it no longer names the file this handle opened (lock held).

        One ``stat`` per flush, write and read. Raises ``LedgerError`` when the new file cannot
        be opened (the caller logs it; the next write tries again)."""
        if self._identity is None or self._file_identity() == self._identity:
            return
        self._log_error(
            f"ledger {self.path!r} is no longer the file rerund opened (deleted or replaced); reopening"
            " it (a new file gets a fresh schema); the audit rows written to the old file since then"
            " are not in it"
        )
        with suppress(sqlite3.Error):
            # SQLite leaves the WAL of a moved file behind at ``path-wal``, where the new file
            # would replay the old rows into itself: move them into the old file and empty it.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with suppress(sqlite3.Error):
            self._db.close()
        self._db, self._identity = self._open()
        self._fresh.clear()  # the new file has none of their rows
        if self._on_reopen is not None:
            self._on_reopen()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._write_pending_or_log()
            finally:
                self._cancel_flush()
                self._closed = True
                self._db.close()

    def _write_pending(self) -> None:
        """Write the pending rows (lock held): the write lock is taken for this moment only, so
        another process (``rerund sweep``) writing the same file waits milliseconds, not for as
        long as the daemon keeps recording. A row the database refuses is logged and skipped."""
        rows, self._pending = self._pending, []
        self._pending_keys.clear()
        if not rows:
            return
        try:
            self._reopen_if_replaced()
        except LedgerError as exc:
            self._fresh.clear()  # some rows are not written: what is new is read again
            raise LedgerError(f"{exc}; the {len(rows)} rows recorded since the last write are lost") from exc
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, args in rows:
                try:
                    self._db.execute(sql, args)
                except sqlite3.IntegrityError as exc:
                    log.error("ledger %r refused a row (%s); that row is lost", self.path, exc)
                    self._fresh.clear()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fresh.clear()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerError(
                f"ledger {self.path!r} write failed: {exc}; the {len(rows)} rows recorded since the "
                "last write are lost (the daemon derives them again after a restart)"
            ) from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._write_pending_or_log()
            self._reopen_if_replaced()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path!r} write failed: {exc}; the record is lost") from exc

    def _record(
        self,
        key: tuple[Any, ...],
        exists: str,
        exists_args: tuple[Any, ...],
        insert: str,
        args: tuple[Any, ...],
        before: tuple[str, tuple[Any, ...]] | None = None,
        *,
        run: str,
        failure: bool = False,
        creates: str | None = None,
    ) -> bool:
        """Record one row (``INSERT OR IGNORE``) about run ``run`` (its ``project/domain/name``);
        True when it was not recorded before. ``before``: a statement written just ahead of it
        (the row's shared text, ``texts``). ``failure``: the row is ``run``'s failure;
        ``creates``: a run this fact says this process created (fresh from now on).

        With group commits on, whether it is new is decided now and the row joins the pending
        ones, written by the next ``flush``: by this process's memory when ``run`` is fresh (see
        the module docstring), else by a read of the row's unique key (``exists``; a failure
        found new makes its run fresh). Else it is written at once in its own transaction."""
        if self._schedule is None:
            with self._tx() as db:
                if before is not None:
                    db.execute(*before)
                return bool(db.execute(insert, args).rowcount == 1)
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self.path!r} is closed; the record is lost")
            if key in self._pending_keys:
                return False
            fact = fact_digest(key)
            known = self._fresh.get(run)
            if known is not None:
                if has_fact(known, fact):
                    return False
            else:
                try:
                    if self._db.execute(exists, exists_args).fetchone() is not None:
                        return False
                except sqlite3.Error as exc:
                    raise LedgerError(
                        f"ledger {self.path!r} write failed: {exc}; the record is lost"
                    ) from exc
                if failure:  # new to the file: its run is fresh from now on
                    known = b""
            if known is not None:
                self._fresh.put(run, known + fact)  # the newest entry, one put
            if creates is not None:
                freshen(self._fresh, creates)
            if not self._pending:  # the first row of a group: its flush
                self._flush_handle = self._schedule(self.flush)
            self._pending_keys.add(key)
            if before is not None and before not in self._pending_keys:
                # Once per group: a storm's (or a reload's) rows share a few reason texts, and
                # the rows after the first in the same transaction find it written.
                self._pending_keys.add(before)
                self._pending.append(before)
            self._pending.append((insert, args))
            return True

    @property
    def caches(self) -> tuple[SizedCache[str, bytes]]:
        """The ledger's long-lived caches (``rerund_cache_bytes``)."""
        return (self._fresh,)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._write_pending_or_log()  # what this process recorded is read back
            self._reopen_if_replaced()
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path!r} read failed: {exc}") from exc

    # -- writes ------------------------------------------------------------------------------

    def record_failure(
        self, *, project: str, domain: str, run: str, failed_at: datetime, now: datetime
    ) -> bool:
        """Remember a failed run; True when it was not recorded before."""
        key = f"{project}/{domain}/{run}"
        args: tuple[Any, ...]
        if self._generated["failures"]:  # project, domain and run are generated from the key
            insert, args = _INSERT_FAILURE_GENERATED, (key, _iso(failed_at), _iso(now))
        else:
            insert, args = _INSERT_FAILURE, (key, project, domain, run, _iso(failed_at), _iso(now))
        return self._record(
            ("failure", key),
            "SELECT 1 FROM failures WHERE run_key = ?",
            (key,),
            insert,
            args,
            run=key,
            failure=True,
        )

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
        when this (run, kind, policy, attempt) was not recorded before (by either source)."""
        key = f"{project}/{domain}/{run}"
        attempt, policy, kind = decision.get("attempt"), decision.get("policy") or "", decision["decision"]
        if not isinstance(policy, str) or not (attempt is None or isinstance(attempt, int)):
            # Said here, as the PostgreSQL ledger does: a fresh run's row is not read first.
            raise LedgerError(
                f"ledger {self.path!r} write failed: policy {policy!r} or attempt {attempt!r} of the "
                f"decision about run {run!r} cannot be stored (text and a whole number); the record is lost"
            )
        reason = str(decision["reason"])
        template = _template(reason, run)
        fingerprint = str(decision.get("fingerprint") or "")
        body = _compact_body(
            decision, kind=kind, policy=policy, attempt=attempt, run=run, fingerprint=fingerprint
        )
        before, digest = None, None
        if template is not None:  # the reason once in ``texts``, the row pointing at it
            digest = hashlib.sha256(template.encode("utf-8", "surrogatepass")).digest()[:16]
            before = ("INSERT OR IGNORE INTO texts (hash, text) VALUES (?, ?)", (digest, template))
            reason = ""
        stored_key = () if self._generated["decisions"] else (key,)  # else generated from the columns
        return self._record(
            ("decision", key, kind, policy, -1 if attempt is None else attempt),
            "SELECT 1 FROM decisions WHERE run_key = ? AND decision = ? AND policy = ?"
            " AND IFNULL(attempt, -1) = IFNULL(?, -1)",
            (key, kind, policy, attempt),
            _INSERT_DECISION_GENERATED if self._generated["decisions"] else _INSERT_DECISION,
            (
                _iso(now),
                *stored_key,
                project,
                domain,
                run,
                root,
                attempt,
                policy,
                kind,
                reason,
                body,
                self.source,
                fingerprint,
                digest,
            ),
            before,
            run=key,
        )

    def record_issue(self, issue: RerunIssue, *, now: datetime) -> bool:
        """Record the result of issuing a rerun (created|already_exists|invalid|dry_run) with
        this handle's ``source``."""
        src = issue.source
        key = f"{src.project}/{src.domain}/{issue.target}"
        return self._record(
            ("issue", key, issue.result),
            "SELECT 1 FROM issues WHERE target_key = ? AND result = ?",
            (key, issue.result),
            "INSERT OR IGNORE INTO issues (at, source_key, target_key, project, domain, target, root,"
            " attempt, policy, scope, result, message, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _iso(now),
                str(src),
                key,
                src.project,
                src.domain,
                issue.target,
                issue.root,
                issue.attempt,
                issue.policy,
                issue.scope,
                issue.result,
                issue.message,
                self.source,
            ),
            run=str(src),
            creates=key if issue.result == "created" else None,
        )

    def record_outcome(self, outcome: RerunOutcome, *, now: datetime) -> bool:
        """Record the terminal phase of a rerun; True when not recorded before."""
        key = str(outcome.target)
        return self._record(
            ("outcome", key),
            "SELECT 1 FROM outcomes WHERE target_key = ?",
            (key,),
            "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)",
            (key, _iso(now), outcome.policy, outcome.root, outcome.attempt, outcome.phase),
            run=key,
        )

    def record_reproduction(self, result: dict[str, Any], *, now: datetime) -> bool:
        """Record a finished reproduction firing (``ReproResult.to_json()``, diff included);
        True when this (check, scheduled time, manual) was not recorded before."""
        scheduled = _iso(datetime.fromisoformat(str(result["scheduled_for"]).replace("Z", "+00:00")))
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO reproductions (at, check_name, scheduled_for, manual, result, reason,"
                " project, domain, reference, rerun, diff, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _iso(now),
                    result["check"],
                    scheduled,
                    1 if result.get("manual") else 0,
                    result["result"],
                    result["reason"],
                    result.get("project") or "",
                    result.get("domain") or "",
                    result.get("reference"),
                    result.get("rerun"),
                    json.dumps(result.get("diff") or []),
                    json.dumps(result, sort_keys=True, default=str),
                ),
            )
            return cur.rowcount == 1

    def record_incident(self, record: IncidentRecord, *, now: datetime) -> bool:
        """Save ``record`` (replacing the row of its fingerprint and opening time); True when
        its state was not recorded before (``rerund.ports.DecisionLedger.record_incident``)."""
        opened = _iso(record.opened_at)
        with self._tx() as db:
            row = db.execute(
                "SELECT state FROM incidents WHERE fingerprint = ? AND opened_at = ?",
                (record.fingerprint, opened),
            ).fetchone()
            if row is not None and row[0] == "closed":
                return False  # closed is final: a late write of the open state does not reopen it
            db.execute(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?)",
                (record.fingerprint, opened, record.state, _iso(now), json.dumps(record.to_json())),
            )
            return row is None or row[0] != record.state

    def fingerprint_recoveries(
        self, *, since: datetime, fingerprint: str | None = None
    ) -> dict[str, tuple[int, int]]:
        """Fingerprint -> (reruns decided since ``since`` for its failures whose outcome is
        recorded, how many succeeded); only ``fingerprint`` when given (the
        ``decisions_fingerprint`` index finds its rows)."""
        if fingerprint is None:
            rows = self._query(
                _RECOVERIES + " AND d.fingerprint != '' GROUP BY d.fingerprint", (_iso(since),)
            )
            rows += self._query(_SEEN_RECOVERIES.format(cond="fingerprint != ''"), (_iso(since),))
        else:  # the decisions_fingerprint index finds the rows
            rows = self._query(
                _RECOVERIES + " AND d.fingerprint = ? GROUP BY d.fingerprint", (_iso(since), fingerprint)
            )
            rows += self._query(_SEEN_RECOVERIES.format(cond="fingerprint = ?"), (_iso(since), fingerprint))
        out: dict[str, tuple[int, int]] = {}
        for r in rows:  # rerund's reruns, then the reruns by hand
            n, ok = out.get(str(r[0]), (0, 0))
            out[str(r[0])] = (n + int(r[1]), ok + int(r[2]))
        return out

    def record_rerun_seen(self, target: RunRef, source: RunRef, phase: str, *, now: datetime) -> bool:
        """Run ``target``, a rerun of ``source`` (its relation), ended in ``phase``; True when
        not recorded before (``rerund.ports.DecisionLedger.record_rerun_seen``)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO reruns_seen VALUES (?, ?, ?, ?)",
                (str(target), str(source), phase, _iso(now)),
            )
            return cur.rowcount == 1

    def incidents(self, *, since: datetime) -> list[IncidentRecord]:
        """The open incidents and those closed (or saved) at or after ``since``, newest first."""
        rows = self._query(
            "SELECT body FROM incidents WHERE state = 'open' OR at >= ? ORDER BY opened_at DESC",
            (_iso(since),),
        )
        return [IncidentRecord.from_json(json.loads(r[0])) for r in rows]

    def save_incident_members(self, members: Mapping[str, Members], *, now: datetime) -> None:
        """Replace each fingerprint's saved members; forget the windows saved over a day ago
        (``rerund.ports.DecisionLedger.save_incident_members``). One transaction."""
        with self._tx() as db:
            for fingerprint, m in members.items():
                db.execute("DELETE FROM incident_members WHERE fingerprint = ?", (fingerprint,))
                db.executemany(
                    "INSERT OR REPLACE INTO incident_members VALUES (?, ?, ?, ?, ?)",
                    [
                        (fingerprint, kind, name, failed_at, _iso(now))
                        for kind, name, failed_at in _member_rows(m)
                    ],
                )
            db.execute(
                "DELETE FROM incident_members WHERE kind = 'window' AND at < ?",
                (_iso(now - MAX_INCIDENT_WINDOW),),
            )

    def incident_members(self) -> dict[str, Members]:
        """The saved members per fingerprint (windows oldest first)."""
        rows = self._query(
            "SELECT fingerprint, kind, name, failed_at FROM incident_members ORDER BY fingerprint, name"
        )
        return _members_of(
            (str(r[0]), str(r[1]), str(r[2]), datetime.fromisoformat(r[3]) if r[3] else None) for r in rows
        )

    def set_watermark(self, scope: str, at: datetime) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO watermarks VALUES (?, ?)", (scope, _iso(at)))

    def prune(self, older_than: datetime) -> int:
        """Delete records older than ``older_than``, then, when ``max_bytes`` is set, the oldest
        records until the rows fit in it (``_prune_to_size``); texts no row uses any more go
        too, and free pages go back to the file system (``vacuum``). Returns the number of rows
        deleted."""
        cutoff = _iso(older_than)
        deleted = 0
        with self._tx() as db:
            for table, column in (
                ("decisions", "at"),
                ("issues", "at"),
                ("outcomes", "at"),
                ("failures", "seen_at"),
                ("reproductions", "at"),
                ("reruns_seen", "at"),
            ):
                deleted += db.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,)).rowcount  # noqa: S608
        if self.max_bytes:
            deleted += self._prune_to_size(self.max_bytes)
        with self._tx() as db:
            db.execute(
                "DELETE FROM texts WHERE id NOT IN"
                " (SELECT reason_id FROM decisions WHERE reason_id IS NOT NULL)"
            )
            if deleted:
                self._fresh.clear()  # rows this process recorded may be gone: they are read again
        self.vacuum()
        return deleted

    def _used_bytes(self) -> int:
        """Bytes the rows take: pages in use (the file's pages less its free list)."""
        rows = self._query(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count"
            " FROM pragma_freelist_count()) AS pages, (SELECT page_size FROM pragma_page_size()) AS size"
        )
        return int(rows[0]["pages"]) * int(rows[0]["size"])

    def _prune_to_size(self, max_bytes: int) -> int:
        """Delete the oldest decisions, issue results, outcomes and failures until the rows take
        at most ``max_bytes`` — never a row of a lineage still in flight (a rerun created whose
        outcome is not recorded: the daemon follows it from these rows). Each step deletes the
        share of the oldest decisions the excess is of the whole (and 10% more), with the rows
        of the same age in the other tables. Returns the rows deleted; stops when only rows of
        lineages in flight are left."""
        deleted = 0
        while (used := self._used_bytes()) > max_bytes:
            with self._tx() as db:
                settled = int(db.execute(_COUNT_SETTLED).fetchone()[0])
                step = max(1, min(settled, int(settled * (used - max_bytes) / used * 1.1) + 1))
                row = db.execute(_OLDEST_SETTLED, (step - 1,)).fetchone()
                if row is None or row["at"] is None:
                    break
                n = sum(db.execute(sql, (row["at"],)).rowcount for sql in _DELETE_SETTLED)
            deleted += n
            if n == 0:
                break
        return deleted

    def vacuum(self, pages: int = _VACUUM_PAGES) -> int:
        """Return up to ``pages`` free pages to the file system (``PRAGMA incremental_vacuum``) and
        truncate the WAL; returns the pages returned. A file created before rerund set
        ``auto_vacuum=INCREMENTAL`` (its mode is NONE) keeps its free pages for later rows."""
        with self._lock:
            self._write_pending_or_log()
            try:
                free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
                mode = int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0])
                if mode == 2 and free:  # a script runs it to the end (a statement frees a page a step)
                    self._db.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                after = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            except sqlite3.Error as exc:
                raise LedgerError(
                    f"ledger {self.path!r} vacuum failed: {exc}; the file keeps its size"
                ) from exc
        return free - after

    # -- reads -------------------------------------------------------------------------------

    def watermark(self, scope: str) -> datetime | None:
        rows = self._query("SELECT at FROM watermarks WHERE scope = ?", (scope,))
        return datetime.fromisoformat(rows[0]["at"]) if rows else None

    def created_without_outcome(self) -> list[IssueRecord]:
        """Reruns this daemon created whose terminal phase is not recorded yet."""
        rows = self._query(
            "SELECT i.* FROM issues i LEFT JOIN outcomes o ON o.target_key = i.target_key"
            " WHERE i.result = 'created' AND o.target_key IS NULL ORDER BY i.id"
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
                at=datetime.fromisoformat(r["at"]),
            )
            for r in rows
        ]

    def issued_as(self, project: str, domain: str, target: str) -> tuple[str, int] | None:
        """(root, attempt) of run ``target`` when this ledger recorded creating it (the unique
        key (target_key, result) makes this one indexed lookup)."""
        rows = self._query(
            "SELECT root, attempt FROM issues WHERE target_key = ? AND result = 'created'",
            (f"{project}/{domain}/{target}",),
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
        """Recent decisions, newest first; ``run`` matches the run or its lineage root, ``source``
        the process that decided (daemon|sweep), ``contains`` a part of the run or root (the
        operator page's search, ``%`` and ``_`` literal). Each row says its ``source``."""
        where, args = [], []
        if source:
            where.append("source = ?")
            args.append(source)
        if run:
            where.append("(run = ? OR root = ?)")
            args += [run, run]
        if contains:
            pattern = "%" + contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(run LIKE ? ESCAPE '\\' OR root LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        if policy:
            where.append("policy = ?")
            args.append(policy)
        sql = _DECISION_ROWS
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.id DESC LIMIT ?"
        args.append(str(max(0, limit)))
        out = []
        for r in self._query(sql, tuple(args)):
            body = public_decision(_full_body(r))  # also for records written before redaction
            out.append(
                {
                    "at": _z(r["at"]),
                    "project": r["project"],
                    "domain": r["domain"],
                    "run": r["run"],
                    "root": r["root"],
                    "source": r["source"],
                    **body,
                    "fingerprint": r["fingerprint"] or None,
                }
            )
        return out

    def policies_seen(self) -> list[str]:
        """Policies with a recorded decision (for "no decision for policy X" messages)."""
        rows = self._query("SELECT DISTINCT policy FROM decisions WHERE policy != '' ORDER BY policy")
        return [str(r["policy"]) for r in rows]

    def root_of(self, run: str) -> str | None:
        """The lineage root of ``run`` as recorded (a decision about it, or the rerun it is)."""
        rows = self._query(
            "SELECT root FROM decisions WHERE run = ? UNION ALL SELECT root FROM issues WHERE target = ?"
            " LIMIT 1",
            (run, run),
        )
        return str(rows[0]["root"]) if rows else None

    def lineage_rows(
        self, *, since: datetime | None = None, root: str | None = None, limit: int = 20_000
    ) -> dict[str, list[dict[str, Any]]]:
        """Decisions, issue results and outcomes (each row with ``project``, ``domain``, ``root``)
        recorded at or after ``since`` (all when None), of lineage ``root`` only when given,
        oldest first: the input of ``rerund.core.status``. At most ``limit`` rows per table
        (the newest)."""
        where, args = [], []
        if since is not None:
            where.append("at >= ?")
            args.append(_iso(since))
        if root is not None:
            where.append("root = ?")
            args.append(root)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        tail = " ORDER BY at DESC LIMIT ?"

        def rows(table: str) -> list[sqlite3.Row]:
            source = _DECISION_ROWS if table == "decisions" else f"SELECT * FROM {table}"  # noqa: S608
            return list(reversed(self._query(f"{source}{cond}{tail}", (*args, limit))))

        decisions = [
            {
                "id": r["id"],
                "at": _z(r["at"]),
                "project": r["project"],
                "domain": r["domain"],
                "run": r["run"],
                "root": r["root"],
                **public_decision(_full_body(r)),  # also for records written before redaction
            }
            for r in rows("decisions")
        ]
        issues = [{**dict(r), "at": _z(r["at"])} for r in rows("issues")]
        outcomes = []
        for r in rows("outcomes"):
            project, domain, target = str(r["target_key"]).split("/", 2)
            outcomes.append(
                {**dict(r), "at": _z(r["at"]), "project": project, "domain": domain, "target": target}
            )
        return {"decisions": decisions, "issues": issues, "outcomes": outcomes}

    def latest_reproductions(self) -> list[dict[str, Any]]:
        """The newest recorded result of every check, with its diff."""
        rows = self._query(
            "SELECT r.at, r.body FROM reproductions r JOIN (SELECT check_name, MAX(scheduled_for) AS s"
            " FROM reproductions GROUP BY check_name) m"
            " ON m.check_name = r.check_name AND m.s = r.scheduled_for"
            " ORDER BY r.check_name, r.id"
        )
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            body = {**json.loads(r["body"]), "recorded_at": _z(r["at"])}
            latest[body["check"]] = body
        return list(latest.values())

    def last_reproduction(self, check: str) -> datetime | None:
        """The latest scheduled (not manual) time of ``check`` with a recorded result."""
        rows = self._query(
            "SELECT MAX(scheduled_for) AS at FROM reproductions WHERE check_name = ? AND manual = 0", (check,)
        )
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    def reproduction_checks(self) -> list[str]:
        """Names of the checks with a recorded result."""
        rows = self._query("SELECT DISTINCT check_name FROM reproductions ORDER BY check_name")
        return [str(r["check_name"]) for r in rows]

    def reproduction_history(self, check: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Recorded results of ``check``, newest first, each with its diff and ``recorded_at``."""
        rows = self._query(
            "SELECT at, body FROM reproductions WHERE check_name = ? ORDER BY scheduled_for DESC, id DESC"
            " LIMIT ?",
            (check, max(0, limit)),
        )
        return [{**json.loads(r["body"]), "recorded_at": _z(r["at"])} for r in rows]

    def issues(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded issue results, oldest first."""
        return [dict(r) for r in self._query("SELECT * FROM issues ORDER BY id LIMIT ?", (limit,))]

    def size_bytes(self) -> int:
        """The ledger's size on disk: the database file plus its WAL (0 in memory)."""
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", "-wal"):
            with suppress(OSError):
                total += Path(self.path + suffix).stat().st_size
        return total

    def counts(self) -> dict[str, int]:
        """Row counts per table (for tests and ``history --format json`` summaries)."""
        out = {}
        for table in ("failures", "decisions", "issues", "outcomes"):
            out[table] = int(self._query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])  # noqa: S608
        return out
