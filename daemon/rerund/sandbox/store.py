"""The sandbox store: in-memory runs with indexes, written through to SQLite when durable.

Memory is the primary structure so that a storm of 20,000 failing runs stays cheap to query:

- runs by key, and per (org, project, domain) scope in creation order (``created_at`` ranges
  by bisection);
- per scope: phase -> runs, ``(label key, value)`` -> runs, label key -> runs, task -> runs;
- an append-only update log ``(updated_at, run)`` so ``updated_at >= watermark`` costs only
  the runs updated since the watermark.

A query starts from the smallest candidate set an index gives and checks the remaining filters
on each candidate. With ``--db PATH`` every change marks the run dirty; a flusher writes dirty
runs, lineage counters and uploaded input blobs in one transaction on a dedicated thread (WAL),
so the event loop never waits on the disk. ``:memory:`` keeps everything in memory only.

The store is used from the sandbox's single event-loop thread only.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from flyteidl2.task import common_pb2, run_pb2, task_definition_pb2

from rerund.errors import ConfigError
from rerund.sandbox.query import Filter, Sort
from rerund.sandbox.records import ActionRec, ErrorRec, RunKey, RunRec

__all__ = ["Store"]

Scope = tuple[str, str, str]
Listener = Callable[[RunRec, ActionRec], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    org TEXT, project TEXT, domain TEXT, name TEXT, meta TEXT NOT NULL, run_spec BLOB NOT NULL,
    PRIMARY KEY (org, project, domain, name));
CREATE TABLE IF NOT EXISTS actions (
    org TEXT, project TEXT, domain TEXT, run TEXT, name TEXT, meta TEXT NOT NULL,
    task_spec BLOB NOT NULL, inputs BLOB, outputs BLOB,
    PRIMARY KEY (org, project, domain, run, name));
CREATE TABLE IF NOT EXISTS counters (
    lineage TEXT, task TEXT, n INTEGER NOT NULL, PRIMARY KEY (lineage, task));
CREATE TABLE IF NOT EXISTS blobs (uri TEXT PRIMARY KEY, data BLOB NOT NULL);
"""


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


class Store:
    """Runs, actions, lineage counters and uploaded inputs; see the module docstring."""

    def __init__(self, db: str | Path = ":memory:") -> None:
        self.runs: dict[RunKey, RunRec] = {}
        self.blobs: dict[str, common_pb2.Inputs] = {}
        # Runs whose input and output blobs are gone from storage (``SandboxHandle.lose_data``).
        self.lost_data: set[RunKey] = set()
        # Runs whose row an operator deleted from the database (``SandboxHandle.forget``):
        # nothing under flyteorg/flyte ``runs/`` deletes a run, so only by hand. Reads answer
        # NOT_FOUND and listings skip them; the records stay for the sandbox's own views.
        self.gone: set[RunKey] = set()
        self.counters: dict[tuple[str, str], int] = {}
        self._scope_runs: dict[Scope, list[RunRec]] = defaultdict(list)
        self._scope_created: dict[Scope, list[datetime]] = defaultdict(list)
        self._phase: dict[Scope, dict[int, dict[RunKey, None]]] = defaultdict(lambda: defaultdict(dict))
        self._indexed_phase: dict[RunKey, int] = {}
        self._label_kv: dict[Scope, dict[tuple[str, str], set[RunKey]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._label_k: dict[Scope, dict[str, set[RunKey]]] = defaultdict(lambda: defaultdict(set))
        self._task: dict[Scope, dict[str, set[RunKey]]] = defaultdict(lambda: defaultdict(set))
        self._log_times: list[datetime] = []
        self._log_keys: list[RunKey] = []
        self.listeners: list[Listener] = []
        self._db_path = None if str(db) == ":memory:" else Path(db)
        self._dirty_runs: set[RunKey] = set()
        self._dirty_counters: set[tuple[str, str]] = set()
        self._dirty_blobs: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = threading.Lock()
        if self._db_path is not None:
            self._open()

    # --- persistence ---------------------------------------------------------------------

    @property
    def durable(self) -> bool:
        return self._db_path is not None

    def _open(self) -> None:
        assert self._db_path is not None
        try:
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"sandbox database {self._db_path} cannot be opened: {exc}; "
                "pass a writable --db PATH or --db :memory:"
            ) from exc
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-sqlite")
        self._load(conn)

    def _load(self, conn: sqlite3.Connection) -> None:
        actions: dict[RunKey, list[ActionRec]] = defaultdict(list)
        for org, project, domain, run, name, meta, task_spec, inputs, outputs in conn.execute(
            "SELECT org, project, domain, run, name, meta, task_spec, inputs, outputs FROM actions"
        ):
            m = json.loads(meta)
            a = ActionRec(
                name=name,
                parent=m["parent"],
                task=m["task"],
                task_spec=task_definition_pb2.TaskSpec.FromString(task_spec),
                phase=m["phase"],
                created_at=datetime.fromisoformat(m["created_at"]),
                updated_at=datetime.fromisoformat(m["updated_at"]),
                start_time=_dt(m.get("start_time")),
                end_time=_dt(m.get("end_time")),
                error=ErrorRec(**m["error"]) if m.get("error") else None,
                abort_reason=m.get("abort_reason"),
                inputs=common_pb2.Inputs.FromString(inputs) if inputs is not None else None,
                outputs=common_pb2.Outputs.FromString(outputs) if outputs is not None else None,
                recovered_from=m.get("recovered_from"),
                finished_phase=m.get("finished_phase"),
            )
            actions[(org, project, domain, run)].append(a)
        loaded: list[RunRec] = []
        for org, project, domain, name, meta, run_spec in conn.execute(
            "SELECT org, project, domain, name, meta, run_spec FROM runs"
        ):
            m = json.loads(meta)
            r = RunRec(
                org=org,
                project=project,
                domain=domain,
                name=name,
                task=m["task"],
                run_spec=run_pb2.RunSpec.FromString(run_spec),
                created_at=datetime.fromisoformat(m["created_at"]),
                updated_at=datetime.fromisoformat(m["updated_at"]),
                lineage=m["lineage"],
                relation_type=m.get("relation_type", 0),
                related_to=tuple(m["related_to"]) if m.get("related_to") else None,  # type: ignore[arg-type]
                source_action=m.get("source_action"),
                created_by=m.get("created_by", "sandbox"),
            )
            acts = sorted(actions.get(r.key, []), key=lambda a: (a.created_at, len(a.name), a.name))
            r.actions = {a.name: a for a in acts}
            if "a0" in r.actions:
                loaded.append(r)
        loaded.sort(key=lambda r: r.created_at)
        for r in loaded:
            self._index_new(r)
        for run_updates in sorted(loaded, key=lambda r: r.updated_at):
            self._log_times.append(run_updates.updated_at)
            self._log_keys.append(run_updates.key)
        for lineage, task, n in conn.execute("SELECT lineage, task, n FROM counters"):
            self.counters[(lineage, task)] = n
        for uri, data in conn.execute("SELECT uri, data FROM blobs"):
            self.blobs[uri] = common_pb2.Inputs.FromString(data)

    def _rows(
        self,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        runs, actions = [], []
        for key in self._dirty_runs:
            r = self.runs.get(key)
            if r is None:
                continue
            meta = {
                "task": r.task,
                "created_at": r.created_at.isoformat(),
                "updated_at": r.updated_at.isoformat(),
                "lineage": r.lineage,
                "relation_type": r.relation_type,
                "related_to": list(r.related_to) if r.related_to else None,
                "source_action": r.source_action,
                "created_by": r.created_by,
            }
            runs.append((*key, json.dumps(meta), r.run_spec.SerializeToString()))
            for a in r.actions.values():
                am = {
                    "parent": a.parent,
                    "task": a.task,
                    "phase": a.phase,
                    "created_at": a.created_at.isoformat(),
                    "updated_at": a.updated_at.isoformat(),
                    "start_time": _iso(a.start_time),
                    "end_time": _iso(a.end_time),
                    "error": vars(a.error) if a.error else None,
                    "abort_reason": a.abort_reason,
                    "recovered_from": a.recovered_from,
                    "finished_phase": a.finished_phase,
                }
                actions.append(
                    (
                        *key,
                        a.name,
                        json.dumps(am),
                        a.task_spec.SerializeToString(),
                        a.inputs.SerializeToString() if a.inputs is not None else None,
                        a.outputs.SerializeToString() if a.outputs is not None else None,
                    )
                )
        counters = [(lin, task, self.counters[(lin, task)]) for lin, task in self._dirty_counters]
        blobs = [(uri, self.blobs[uri].SerializeToString()) for uri in self._dirty_blobs if uri in self.blobs]
        self._dirty_runs.clear()
        self._dirty_counters.clear()
        self._dirty_blobs.clear()
        return runs, actions, counters, blobs

    def _write(self, batch: tuple[list[tuple[Any, ...]], ...]) -> None:
        runs, actions, counters, blobs = batch
        if self._conn is None or not (runs or actions or counters or blobs):
            return
        with self._flush_lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)", runs)
                conn.executemany("INSERT OR REPLACE INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", actions)
                conn.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)", counters)
                conn.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?)", blobs)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def flush(self) -> None:
        """Write every dirty record now (on the writer thread)."""
        if self._executor is None:
            return
        batch = self._rows()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)

    def start_flusher(self, interval: float = 0.05) -> None:
        """Flush dirty records every ``interval`` seconds until ``close``."""
        if self._executor is None or self._flusher is not None:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                if self._dirty_runs or self._dirty_counters or self._dirty_blobs:
                    await self.flush()

        self._flusher = asyncio.get_running_loop().create_task(loop(), name="sandbox-flusher")

    async def close(self) -> None:
        """Flush and close the database (idempotent)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._executor is not None:
            await self.flush()
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writes --------------------------------------------------------------------------

    def _index_new(self, r: RunRec) -> None:
        key = r.key
        scope = key[:3]
        self.runs[key] = r
        pos = bisect.bisect_right(self._scope_created[scope], r.created_at)
        self._scope_created[scope].insert(pos, r.created_at)
        self._scope_runs[scope].insert(pos, r)
        self._phase[scope][r.phase][key] = None
        self._indexed_phase[key] = r.phase
        for k, v in r.labels.items():
            self._label_kv[scope][(k, v)].add(key)
            self._label_k[scope][k].add(key)
        self._task[scope][r.task].add(key)

    def add_run(self, r: RunRec) -> None:
        """Insert a new run (its key must be free) and announce its root action."""
        self._index_new(r)
        self._log_times.append(r.updated_at)
        self._log_keys.append(r.key)
        self._dirty_runs.add(r.key)
        for listener in list(self.listeners):
            listener(r, r.root)

    def touch(self, r: RunRec, a: ActionRec, now: datetime) -> None:
        """Record that action ``a`` of run ``r`` changed at ``now``: re-index, persist, notify."""
        a.updated_at = now
        r.updated_at = max(r.updated_at, now)
        key = r.key
        old = self._indexed_phase.get(key)
        if old != r.phase:
            scope = key[:3]
            if old is not None:
                self._phase[scope][old].pop(key, None)
            self._phase[scope][r.phase][key] = None
            self._indexed_phase[key] = r.phase
        self._log_times.append(r.updated_at)
        self._log_keys.append(key)
        self._dirty_runs.add(key)
        for listener in list(self.listeners):
            listener(r, a)

    def next_count(self, lineage: str, task: str) -> int:
        """Count one more execution of ``task`` in ``lineage`` and return the new count."""
        k = (lineage, task)
        n = self.counters.get(k, 0) + 1
        self.counters[k] = n
        self._dirty_counters.add(k)
        return n

    def put_blob(self, uri: str, inputs: common_pb2.Inputs) -> None:
        self.blobs[uri] = inputs
        self._dirty_blobs.add(uri)

    # --- reads ---------------------------------------------------------------------------

    def scope_runs(self, scope: Scope) -> list[RunRec]:
        return self._scope_runs.get(scope, [])

    def count_by_phase(self) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for per_scope in self._phase.values():
            for phase, keys in per_scope.items():
                out[phase] += len(keys)
        return dict(out)

    def _candidates(self, scope: Scope, filters: list[Filter]) -> Iterable[RunRec]:
        """The smallest candidate set the indexes give for ``filters`` (a superset of the
        matches; the caller checks every filter on each candidate)."""
        from flyteidl2.common import list_pb2

        F = list_pb2.Filter
        options: list[tuple[int, Callable[[], Iterable[RunRec]]]] = []
        runs = self.runs
        for f in filters:
            if f.field == "phase" and f.function in (F.EQUAL, F.VALUE_IN):
                per_phase = self._phase.get(scope, {})
                sets = [per_phase.get(p, {}) for p in f.phases]
                size = sum(len(s) for s in sets)
                options.append((size, lambda sets=sets: (runs[k] for s in sets for k in list(s))))  # type: ignore[misc]
            elif f.label is not None and f.function == F.EQUAL:
                s = self._label_kv.get(scope, {}).get((f.label, f.strings[0]), set())
                options.append((len(s), lambda s=s: (runs[k] for k in list(s))))  # type: ignore[misc]
            elif f.label is not None and f.function == F.EXISTS:
                s = self._label_k.get(scope, {}).get(f.label, set())
                options.append((len(s), lambda s=s: (runs[k] for k in list(s))))  # type: ignore[misc]
            elif f.field == "task_name" and f.function == F.EQUAL:
                s = self._task.get(scope, {}).get(f.strings[0], set())
                options.append((len(s), lambda s=s: (runs[k] for k in list(s))))  # type: ignore[misc]
            elif (
                f.field == "updated_at" and f.function in (F.GREATER_THAN_OR_EQUAL, F.GREATER_THAN) and f.time
            ):
                start = bisect.bisect_left(self._log_times, f.time)
                size = len(self._log_times) - start
                keys = self._log_keys

                def since(start: int = start, keys: list[RunKey] = keys) -> Iterable[RunRec]:
                    seen: set[RunKey] = set()
                    for k in keys[start:]:
                        if k not in seen and k[:3] == scope:
                            seen.add(k)
                            yield runs[k]

                options.append((size, since))
            elif f.field == "created_at" and f.time and f.function != F.NOT_EQUAL:
                created = self._scope_created.get(scope, [])
                in_scope = self._scope_runs.get(scope, [])
                if f.function in (F.GREATER_THAN_OR_EQUAL, F.GREATER_THAN):
                    lo, hi = bisect.bisect_left(created, f.time), len(created)
                elif f.function in (F.LESS_THAN, F.LESS_THAN_OR_EQUAL):
                    lo, hi = 0, bisect.bisect_right(created, f.time)
                else:
                    lo, hi = bisect.bisect_left(created, f.time), bisect.bisect_right(created, f.time)
                options.append((hi - lo, lambda lo=lo, hi=hi, rs=in_scope: rs[lo:hi]))  # type: ignore[misc]
        if not options:
            return self._scope_runs.get(scope, [])
        return min(options, key=lambda o: o[0])[1]()

    def query(self, scope: Scope, filters: list[Filter], sort: Sort) -> list[RunRec]:
        """Runs of ``scope`` matching every filter, sorted (ties broken by name)."""
        out = [r for r in self._candidates(scope, filters) if all(_run_matches(f, r) for f in filters)]
        out.sort(key=_sort_key(sort.key, run=True), reverse=not sort.ascending)
        return out

    def scopes(self) -> list[Scope]:
        """Every (org, project, domain) that has runs."""
        return [scope for scope, runs in self._scope_runs.items() if runs]

    def query_org(self, org: str, filters: list[Filter], sort: Sort) -> list[RunRec]:
        """Runs of every project and domain of ``org`` matching every filter, sorted."""
        out = [
            r
            for scope in self.scopes()
            if scope[0] == org
            for r in self._candidates(scope, filters)
            if all(_run_matches(f, r) for f in filters)
        ]
        out.sort(key=_sort_key(sort.key, run=True), reverse=not sort.ascending)
        return out


def _run_attr(r: RunRec, name: str) -> Any:
    if name == "phase":
        return r.phase
    if name == "created_at":
        return r.created_at
    if name == "updated_at":
        return r.updated_at
    if name == "task_name":
        return r.task
    if name == "task_version":
        return r.root.task_spec.task_template.id.version
    if name == "created_by":
        return r.created_by
    if name == "name":
        return r.name
    if name == "start_time":
        return r.root.start_time or r.created_at
    if name == "end_time":
        return r.root.end_time or r.updated_at
    raise KeyError(name)


def _run_matches(f: Filter, r: RunRec) -> bool:
    return f.matches(lambda n: _run_attr(r, n), lambda: r.labels)


def oss_column(r: RunRec, a: ActionRec, column: str) -> Any:
    """Column ``column`` of the open-source ``actions`` row of action ``a`` of run ``r``
    (``runs/repository/models/action.go``); None is SQL NULL."""
    task_id = a.task_spec.task_template.id
    if column == "project":
        return r.project
    if column == "domain":
        return r.domain
    if column == "run_name":
        return r.name
    if column == "phase":
        return a.phase
    if column == "action_type":
        return 1  # ACTION_TYPE_TASK
    if column in ("task_name", "function_name"):
        return a.task
    if column == "task_project":
        return task_id.project or r.project
    if column == "task_domain":
        return task_id.domain or r.domain
    if column == "task_version":
        return task_id.version or None
    if column == "created_at":
        return a.created_at
    if column == "updated_at":
        return a.updated_at
    if column == "ended_at":
        return a.end_time
    if column == "duration_ms":
        if a.start_time is None or a.end_time is None:
            return None
        return int((a.end_time - a.start_time).total_seconds() * 1000)
    return None  # run_source, created_by_subject, trigger_*: the sandbox has none


def action_attr(a: ActionRec, name: str) -> Any:
    if name == "phase":
        return a.phase
    if name == "created_at":
        return a.created_at
    if name == "updated_at":
        return a.updated_at
    if name == "task_name":
        return a.task
    if name == "name":
        return a.name
    if name == "parent_name":
        return a.parent
    if name == "start_time":
        return a.start_time or a.created_at
    if name == "end_time":
        return a.end_time or a.updated_at
    raise KeyError(name)


def _sort_key(key: str, *, run: bool) -> Callable[[Any], Any]:
    if run:
        return lambda r: (_run_attr(r, key), r.name)
    return lambda a: (action_attr(a, key), len(a.name), a.name)
