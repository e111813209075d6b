"""The Flyte services the sandbox serves: RunService, DataProxyService, ClusterService.

Each subclasses the Protocol generated in ``flyteidl2`` (methods not overridden answer
UNIMPLEMENTED, as a real backend without that feature would). Errors follow the real
backend's codes: INVALID_ARGUMENT for bad names and identifiers, ALREADY_EXISTS for a
duplicate run name, NOT_FOUND for unknown runs and actions. Every RPC is counted by method
name and may be delayed or answered UNAVAILABLE by the configured faults (``Faults``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter, OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from flyteidl2.cluster import payload_pb2 as cluster_pb2
from flyteidl2.cluster.service_connect import ClusterService
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.common import run_pb2 as common_run_pb2
from flyteidl2.dataproxy import dataproxy_service_pb2 as dp_pb2
from flyteidl2.dataproxy.dataproxy_service_connect import DataProxyService
from flyteidl2.task import common_pb2
from flyteidl2.workflow import run_definition_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunService

from rerund.sandbox import protos
from rerund.sandbox.engine import Engine
from rerund.sandbox.profiles import (
    UNION,
    OssQuery,
    Profile,
    oss_default_order,
    oss_query,
    strip_error_codes,
    strip_org,
)
from rerund.sandbox.query import Filter, QueryError, parse_filters, parse_sort
from rerund.sandbox.records import (
    FAILED,
    NAME_RULE,
    QUEUED,
    RUNNING,
    TERMINAL_PHASES,
    ActionRec,
    RunKey,
    RunRec,
    name_problem,
)
from rerund.sandbox.store import Store, action_attr, oss_column
from rerund.sandbox.tasks import resource_problem

__all__ = [
    "Faults",
    "Hub",
    "RpcStats",
    "RunRequestCounts",
    "SandboxClusterService",
    "SandboxDataProxyService",
    "SandboxRunService",
]

log = logging.getLogger("rerund.sandbox")

Ctx = RequestContext[Any, Any]

_SNAPSHOT_LIMIT = 100
_MAX_PAGE = 1000


@dataclass
class Faults:
    """Injected faults: the share of RPCs answered UNAVAILABLE, a latency added to every RPC,
    the number of messages after which watch streams are dropped (0 = never), and the share of
    run reads the database fails (``db_errors``): open-source Flyte answers any database error
    of GetRunDetails NOT_FOUND (``runs/service/run_service.go`` ``GetRunDetails``) and of
    ListRuns INTERNAL (``ListRuns``), so a run that exists can be reported absent. The union
    profile answers both INTERNAL (``Profile.not_found_for_db_errors``)."""

    unavailable: float = 0.0
    latency_s: float = 0.0
    drop_streams_after: int = 0
    db_errors: float = 0.0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unavailable": self.unavailable,
            "latency": f"{round(self.latency_s * 1000, 3):g}ms",
            "drop_streams_after": self.drop_streams_after,
        }
        if self.db_errors:
            out["db_errors"] = self.db_errors
        return out


# What open-source Flyte answers when the database fails a run read (``db_errors``).
_DB_ERROR = {
    "GetRunDetails": (
        Code.NOT_FOUND,
        "failed to get run: sandbox fault injection (db_errors): the database failed the read; "
        "open-source Flyte answers NOT_FOUND for any database error here",
    ),
    "ListRuns": (
        Code.INTERNAL,
        "failed to list runs: sandbox fault injection (db_errors): the database failed the query",
    ),
}


class RpcStats:
    """Counts RPCs by method name and applies ``Faults``; a Connect metadata interceptor."""

    def __init__(self, faults: Faults, rng: Any, profile: Profile = UNION) -> None:
        self.counts: Counter[str] = Counter()
        self.faults = faults
        self._rng = rng
        self._profile = profile

    async def on_start(self, ctx: Ctx) -> None:
        name = ctx.method().name
        self.counts[name] += 1
        f = self.faults
        if f.latency_s > 0:
            await asyncio.sleep(f.latency_s)
        if f.unavailable > 0 and self._rng.random() < f.unavailable:
            raise ConnectError(
                Code.UNAVAILABLE,
                f"sandbox fault injection: {name} answered UNAVAILABLE "
                f"(unavailable={f.unavailable}); retry with backoff",
            )
        if f.db_errors > 0 and name in _DB_ERROR and self._rng.random() < f.db_errors:
            self.counts[f"{name}DbError"] += 1
            code, message = _DB_ERROR[name]
            if not self._profile.not_found_for_db_errors and code == Code.NOT_FOUND:
                code, message = (
                    Code.INTERNAL,
                    "failed to get run: sandbox fault injection (db_errors): the database failed the read",
                )
            raise ConnectError(code, message)

    async def on_end(self, token: None, ctx: Ctx, error: Exception | None) -> None:
        return None


class RunRequestCounts:
    """Counts unary RPCs per run: run name -> method -> requests. The run is the one the request
    names in ``run_id`` or ``action_id.run`` (for CreateRun and UploadInputs: the run being
    created). Requests without a run (ListRuns, SelectCluster) and streams are not counted
    here, nor requests refused by an injected fault. A Connect unary interceptor; it shows
    whether a client asks the same thing about the same run twice."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    async def intercept_unary(self, call_next: Callable[[Any, Ctx], Any], request: Any, ctx: Ctx) -> Any:
        name = _subject_run(request)
        if name:
            self.counts[name][ctx.method().name] += 1
        return await call_next(request, ctx)

    def as_json(self) -> dict[str, dict[str, int]]:
        return {run: dict(methods) for run, methods in self.counts.items()}


def _subject_run(request: Any) -> str:
    for field_name in ("run_id", "action_id"):
        try:
            present = request.HasField(field_name)
        except ValueError:  # the message has no such field
            continue
        if present:
            ident = getattr(request, field_name)
            return str(ident.name if field_name == "run_id" else ident.run.name)
    return ""


class Hub:
    """Fan-out of changes to watch streams (all on the event-loop thread).

    Messages are built when a change is published (once, shared by all watchers), so each
    message shows the state right after its change even when a client reads slowly.
    """

    def __init__(self, profile: Profile = UNION) -> None:
        self.profile = profile
        self.run_watchers: list[tuple[Callable[[RunRec], bool], asyncio.Queue[Any]]] = []
        # ``oss`` profile: each watcher gets run keys in a bounded buffer (full: dropped) and
        # reads the run when it delivers the message (``action.go`` WatchAllRunUpdates).
        self.oss_watchers: list[tuple[Callable[[RunRec], bool], asyncio.Queue[Any]]] = []
        self.dropped = 0
        self.action_watchers: dict[tuple[RunKey, str], set[asyncio.Queue[Any]]] = defaultdict(set)
        self.detail_watchers: dict[RunKey, set[asyncio.Queue[Any]]] = defaultdict(set)

    def publish(self, r: RunRec, a: ActionRec) -> None:
        if a.name == "a0" and a.phase != QUEUED:  # a root phase change or abort, not a new run
            for match, q in self.oss_watchers:
                if not match(r):
                    continue
                try:
                    q.put_nowait(r.key)
                except asyncio.QueueFull:
                    self.dropped += 1
                    log.warning("sandbox: a WatchRuns buffer is full; dropping the update of run %s", r.name)
        run_msg = None
        for match, q in self.run_watchers:
            if match(r):
                if run_msg is None:
                    run_msg = rs.WatchRunsResponse(runs=[protos.run(r)])
                q.put_nowait(run_msg)
        watchers = self.action_watchers.get((r.key, a.name))
        if watchers:
            action_msg = rs.WatchActionDetailsResponse(details=protos.action_details(r, a))
            for q in watchers:
                q.put_nowait(action_msg)
        if a.name == "a0":
            details = self.detail_watchers.get(r.key)
            if details:
                details_msg = rs.WatchRunDetailsResponse(details=protos.run_details(r))
                for q in details:
                    q.put_nowait(details_msg)

    def close_all(self) -> None:
        """End every open watch stream (on shutdown)."""
        for _, q in self.run_watchers:
            q.put_nowait(None)
        for _, q in self.oss_watchers:
            while True:  # make room for the end marker in a full buffer
                try:
                    q.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    q.get_nowait()
        for qs in (*self.action_watchers.values(), *self.detail_watchers.values()):
            for q in qs:
                q.put_nowait(None)


def _invalid(msg: str) -> ConnectError:
    return ConnectError(Code.INVALID_ARGUMENT, msg)


def _key(run_id: identifier_pb2.RunIdentifier, rpc: str) -> RunKey:
    missing = [f for f in ("org", "project", "domain", "name") if not getattr(run_id, f)]
    if missing:
        raise _invalid(
            f"{rpc}: run identifier needs a non-empty {', '.join(missing)} "
            f"(got org={run_id.org!r} project={run_id.project!r} "
            f"domain={run_id.domain!r} name={run_id.name!r})"
        )
    return (run_id.org, run_id.project, run_id.domain, run_id.name)


class _Base:
    def __init__(
        self, store: Store, engine: Engine, hub: Hub, stats: RpcStats, profile: Profile = UNION
    ) -> None:
        self.store = store
        self.engine = engine
        self.hub = hub
        self.stats = stats
        self.profile = profile
        self.pager = Pager()

    def _org(self, run_id: identifier_pb2.RunIdentifier) -> identifier_pb2.RunIdentifier:
        """The identifier as the sandbox keys it: without org support (``oss``) a request's org
        is ignored and the sandbox's own org used."""
        if self.profile.identifiers_org:
            return run_id
        return identifier_pb2.RunIdentifier(
            org=self.engine.org, project=run_id.project, domain=run_id.domain, name=run_id.name
        )

    def _out(self, msg: Any) -> Any:
        """A response message as the profile shows it (``oss``: identifiers without org, and a
        ``Run`` without its root action's relation: read it from GetRunDetails' RunSpec)."""
        if not self.profile.listed_relation and isinstance(msg, run_definition_pb2.Run):
            msg.action.metadata.ClearField("relation")
        if not self.profile.error_codes:
            strip_error_codes(msg)
        return msg if self.profile.identifiers_org else strip_org(msg)

    def _error_shown(self, a: ActionRec) -> bool:
        """Whether ``error_info`` of ``a`` is in its details now. ``oss``: only for FAILED, and
        only ``error_delay_s`` after the phase said FAILED (the last attempt's events lag)."""
        p = self.profile
        if not p.error_only_failed:
            return True
        if a.phase != FAILED or a.end_time is None:
            return False
        return (self.engine.clock() - a.end_time).total_seconds() >= p.error_delay_s

    def _events_cut(self, a: ActionRec) -> bool:
        """``oss`` (item 19): whether ``a``'s terminal event lies beyond the first
        ``event_cap`` events of the action (QUEUED, RUNNING and its ``status_events`` first)."""
        cap = self.profile.event_cap
        if not cap or a.phase not in TERMINAL_PHASES or a.abort_reason is not None:
            return False
        td = self.engine.catalog.definition(a.task, a.task_spec.task_template.id.version)
        return 2 + td.status_events >= cap

    def _details(self, r: RunRec, a: ActionRec, with_error: bool) -> run_definition_pb2.ActionDetails:
        """``a``'s details as served: its error when ``with_error`` and shown; with its
        terminal event cut off (item 19), the attempt as last kept and an empty error."""
        if not self._events_cut(a):
            return protos.action_details(r, a, with_error=with_error and self._error_shown(a))
        d = protos.action_details(r, a, with_error=False)
        attempt = d.attempts[-1]
        attempt.phase = RUNNING  # type: ignore[assignment]
        attempt.ClearField("end_time")
        if a.phase == FAILED:
            d.error_info.SetInParent()  # the last attempt's nil error, set
        return d

    def _run(self, run_id: identifier_pb2.RunIdentifier, rpc: str) -> RunRec:
        rid = self._org(run_id)
        if self.profile.validates_requests:
            key = _key(rid, rpc)
        else:  # an empty field finds no row: NOT_FOUND (the profile's item 17)
            key = (rid.org, rid.project, rid.domain, rid.name)
        r = self.store.runs.get(key) if key not in self.store.gone else None
        if r is None:
            raise ConnectError(Code.NOT_FOUND, f"run {'/'.join(key)} not found")
        return r

    def _action(self, action_id: identifier_pb2.ActionIdentifier, rpc: str) -> tuple[RunRec, ActionRec]:
        r = self._run(action_id.run, rpc)
        name = action_id.name or "a0"
        a = r.actions.get(name)
        if a is None:
            raise ConnectError(
                Code.NOT_FOUND,
                f"action {name!r} not found in run {r.name}; it has {', '.join(r.actions)}",
            )
        return r, a

    def _action_data(
        self, action_id: identifier_pb2.ActionIdentifier, rpc: str
    ) -> tuple[common_pb2.Inputs, common_pb2.Outputs]:
        r, a = self._action(action_id, rpc)
        if (r.org, r.project, r.domain, r.name) in self.store.lost_data:
            if self.profile.missing_data_empty:
                return common_pb2.Inputs(), common_pb2.Outputs()
            raise ConnectError(
                Code.NOT_FOUND,
                f"{rpc}: the inputs of action {a.name} of run {r.name} are no longer in storage",
            )
        return (a.inputs or common_pb2.Inputs(), a.outputs or common_pb2.Outputs())


class Pager:
    """Token paging over a result computed once per listing.

    The first page computes the whole sorted result and keeps it (the 64 most recent results);
    later pages slice it, so paging through 20,000 runs costs one query, not one per page, and
    a listing is a consistent snapshot. A token whose result was evicted (or issued before a
    restart) is recomputed and resumes after the last item it named.
    """

    def __init__(self, keep: int = 64) -> None:
        self._results: OrderedDict[str, list[Any]] = OrderedDict()
        self._keep = keep
        self._next = 0

    def page(
        self,
        rpc: str,
        request: list_pb2.ListRequest,
        compute: Callable[[], list[Any]],
        ident: Callable[[Any], str],
    ) -> tuple[list[Any], str]:
        limit = min(request.limit if request.limit > 0 else 100, _MAX_PAGE)
        if request.token:
            try:
                snap, offset_text, last = request.token.split(".", 2)
                offset = int(offset_text)
            except ValueError:
                raise _invalid(
                    f"{rpc}: page token {request.token!r} is not one this sandbox issued; "
                    "start again without a token"
                ) from None
            items = self._results.get(snap)
            if items is None:
                items = compute()
                ids = [ident(x) for x in items]
                offset = ids.index(last) + 1 if last in ids else min(offset, len(items))
                snap = self._store(items)
            else:
                self._results.move_to_end(snap)
        else:
            items, offset = compute(), 0
            snap = ""
        page = items[offset : offset + limit]
        nxt = offset + limit
        if nxt >= len(items):
            return page, ""
        if not snap:
            snap = self._store(items)
        return page, f"{snap}.{nxt}.{ident(page[-1])}"

    def _store(self, items: list[Any]) -> str:
        self._next += 1
        snap = f"p{self._next}"
        self._results[snap] = items
        while len(self._results) > self._keep:
            self._results.popitem(last=False)
        return snap


class SandboxRunService(_Base, RunService):  # type: ignore[misc]
    """``flyteidl2.workflow.RunService``."""

    async def create_run(self, request: rs.CreateRunRequest, ctx: Ctx) -> rs.CreateRunResponse:
        if request.HasField("run_id"):
            rid = request.run_id
            org, project, domain, name = rid.org, rid.project, rid.domain, rid.name
        elif request.HasField("project_id"):
            pid = request.project_id
            org, project, domain, name = pid.organization, pid.name, pid.domain, ""
        else:
            raise _invalid("CreateRun needs run_id or project_id; neither was set")
        if not self.profile.identifiers_org:
            org = self.engine.org  # open-source identifiers have no org: the request's is ignored
        missing = [f for f, v in (("org", org), ("project", project), ("domain", domain)) if not v]
        if missing and self.profile.validates_requests:
            raise _invalid(
                f"CreateRun needs a non-empty {', '.join(missing)} "
                f"(got org={org!r} project={project!r} domain={domain!r})"
            )
        if request.HasField("run_id"):
            problem = name_problem(name)
            if problem:
                raise _invalid(f"run name {name!r} {problem}: a run name must be {NAME_RULE}")
        if not project:  # oss (item 17): the project check asks GetProject with an empty id
            raise ConnectError(Code.INTERNAL, "failed to validate project: invalid_argument: id is required")
        if request.HasField("run_id"):
            existing = self.store.runs.get((org, project, domain, name))
            if existing is not None and self.profile.create_returns_existing:
                # ON CONFLICT DO NOTHING, the inline inputs overwritten, the root action enqueued
                # again (it executes again), and the existing row returned as a success.
                # The answer is the row as read before the enqueue.
                answer = rs.CreateRunResponse(run=self._out(protos.run(existing)))
                inputs = request.inputs if request.HasField("inputs") else existing.root.inputs
                self.engine.reexecute(existing, inputs or common_pb2.Inputs())
                return answer
            if existing is not None:
                raise ConnectError(
                    Code.ALREADY_EXISTS, f"run {name!r} already exists in {org}/{project}/{domain}"
                )
        else:
            name = self.engine.new_name(org, project, domain)
        if self.profile.check_project and not self._project_known(project):
            raise ConnectError(Code.NOT_FOUND, f'project "{project}" not found')
        which = request.WhichOneof("task")
        if which == "task_spec":
            task_spec = request.task_spec
            problem = resource_problem(task_spec, self.engine.catalog.max_resources)
            if problem is not None and self.profile.validates_requests:
                raise _invalid(f"CreateRun: the task's resources are refused: {problem}")
        elif which == "task_id":
            tid = request.task_id
            deployed = self.engine.catalog.get(
                tid.project or project, tid.domain or domain, tid.name, tid.version
            )
            if deployed is None:
                raise ConnectError(
                    Code.NOT_FOUND,
                    f"task {tid.name!r} version {tid.version!r} is not deployed in "
                    f"{tid.project or project}/{tid.domain or domain}",
                )
            task_spec = self.engine.catalog.task_spec(deployed)
        elif which == "trigger_name":
            raise ConnectError(
                Code.UNIMPLEMENTED, "the sandbox does not run triggers; pass a task_spec or task_id"
            )
        else:
            raise _invalid("CreateRun needs a task_spec or task_id; neither was set")
        if request.HasField("inputs"):
            inputs = request.inputs
        elif request.HasField("offloaded_input_data"):
            uri = request.offloaded_input_data.uri
            found = self.store.blobs.get(uri)
            if found is None and self.profile.validates_requests:
                raise _invalid(f"offloaded inputs {uri!r} not found; upload them with UploadInputs first")
            inputs = found or common_pb2.Inputs()  # oss: not checked (item 17)
        else:
            inputs = common_pb2.Inputs()
        run_spec = request.run_spec
        if run_spec.HasField("relation") and run_spec.relation.HasField("related_to"):
            rel = run_spec.relation.related_to
            if not self.profile.identifiers_org:
                rel.org = self.engine.org
            rel_key = (rel.org, rel.project, rel.domain, rel.name)
            if rel_key not in self.store.runs and self.profile.validates_requests:
                raise ConnectError(
                    Code.NOT_FOUND,
                    f"related run {'/'.join(rel_key)} not found; a rerun must name an existing run",
                )
        r = self.engine.create(
            org=org,
            project=project,
            domain=domain,
            name=name,
            task_spec=task_spec,
            inputs=inputs,
            run_spec=run_spec,
            created_by=ctx.request_headers().get("user-agent", "sandbox")[:64] or "sandbox",
        )
        return rs.CreateRunResponse(run=self._out(protos.run(r)))

    def _project_known(self, project: str) -> bool:
        """A project exists when the workload names it or a run lives in it."""
        w = self.engine.workload
        if project == w.project or any(b.project == project for b in (*w.runs, *w.arrivals)):
            return True
        return any(key[1] == project for key in self.store.runs)

    async def abort_run(self, request: rs.AbortRunRequest, ctx: Ctx) -> rs.AbortRunResponse:
        r = self._run(request.run_id, "AbortRun")
        reason = request.reason or ("User requested abort" if self.profile.abort_finished else "aborted")
        if self.profile.abort_finished and r.phase in TERMINAL_PHASES:
            self.engine.abort_finished(r, reason)
        else:
            self.engine.abort(r, reason)
        return rs.AbortRunResponse()

    async def abort_action(self, request: rs.AbortActionRequest, ctx: Ctx) -> rs.AbortActionResponse:
        r, a = self._action(request.action_id, "AbortAction")
        if self.profile.abort_any_action:  # item 18: any action, whatever its phase
            reason = request.reason or "User requested abort"
            if a.name != "a0":
                self.engine.abort_action(r, a, reason)
            elif r.phase in TERMINAL_PHASES:
                self.engine.abort_finished(r, reason)
            else:
                self.engine.abort(r, reason)
        elif a.name == "a0":
            self.engine.abort(r, request.reason or "aborted")
        return rs.AbortActionResponse()

    async def get_run_details(self, request: rs.GetRunDetailsRequest, ctx: Ctx) -> rs.GetRunDetailsResponse:
        r = self._run(request.run_id, "GetRunDetails")
        details = protos.run_details(r)
        if self.profile.root_error_in_details:
            details.action.CopyFrom(self._details(r, r.root, with_error=True))
        details = self._out(details)
        if self.profile.echo_request_ids:  # the request's identifier, its org included
            details.action.id.run.CopyFrom(request.run_id)
        return rs.GetRunDetailsResponse(details=details)

    async def watch_run_details(
        self, request: rs.WatchRunDetailsRequest, ctx: Ctx
    ) -> AsyncIterator[rs.WatchRunDetailsResponse]:
        r = self._run(request.run_id, "WatchRunDetails")
        q: asyncio.Queue[rs.WatchRunDetailsResponse | None] = asyncio.Queue()
        watchers = self.hub.detail_watchers[r.key]
        watchers.add(q)
        sent = 0
        try:
            msg: rs.WatchRunDetailsResponse | None = rs.WatchRunDetailsResponse(details=protos.run_details(r))
            while msg is not None:
                self._maybe_drop(sent, "WatchRunDetails")
                if self.profile.empty_run_details_stream:  # one empty message per update, no end
                    yield rs.WatchRunDetailsResponse(details=run_definition_pb2.RunDetails())
                    sent += 1
                    msg = await q.get()
                    continue
                yield msg
                sent += 1
                if msg.details.action.status.phase in TERMINAL_PHASES:
                    return
                msg = await q.get()
        finally:
            watchers.discard(q)

    async def get_action_details(
        self, request: rs.GetActionDetailsRequest, ctx: Ctx
    ) -> rs.GetActionDetailsResponse:
        r, a = self._action(request.action_id, "GetActionDetails")
        details = self._out(self._details(r, a, with_error=True))
        if self.profile.echo_request_ids:
            details.id.CopyFrom(request.action_id)
        return rs.GetActionDetailsResponse(details=details)

    async def watch_action_details(
        self, request: rs.WatchActionDetailsRequest, ctx: Ctx
    ) -> AsyncIterator[rs.WatchActionDetailsResponse]:
        r, a = self._action(request.action_id, "WatchActionDetails")
        q: asyncio.Queue[rs.WatchActionDetailsResponse | None] = asyncio.Queue()
        watchers = self.hub.action_watchers[(r.key, a.name)]
        watchers.add(q)
        sent = 0
        try:
            msg: rs.WatchActionDetailsResponse | None = rs.WatchActionDetailsResponse(
                details=protos.action_details(r, a)
            )
            while msg is not None:
                self._maybe_drop(sent, "WatchActionDetails")
                if self.profile.echo_request_ids:
                    msg.details.id.CopyFrom(request.action_id)
                yield msg if self.profile.error_codes else strip_error_codes(msg)
                sent += 1
                if msg.details.status.phase in TERMINAL_PHASES:
                    return
                msg = await q.get()
        finally:
            watchers.discard(q)

    async def get_action_data(self, request: rs.GetActionDataRequest, ctx: Ctx) -> rs.GetActionDataResponse:
        inputs, outputs = self._action_data(request.action_id, "GetActionData")
        return rs.GetActionDataResponse(inputs=inputs, outputs=outputs)

    async def get_action_data_u_r_is(
        self, request: rs.GetActionDataURIsRequest, ctx: Ctx
    ) -> rs.GetActionDataURIsResponse:
        r, a = self._action(request.action_id, "GetActionDataURIs")
        base = f"sandbox://{r.org}/{r.project}/{r.domain}/{r.name}/{a.name}"
        return rs.GetActionDataURIsResponse(
            inputs_uri=f"{base}/inputs.pb", outputs_uri=f"{base}/outputs.pb" if a.outputs is not None else ""
        )

    async def list_runs(self, request: rs.ListRunsRequest, ctx: Ctx) -> rs.ListRunsResponse:
        if not self.profile.label_filters:
            return self._oss_list_runs(request)  # open-source ListRuns needs a project
        if request.WhichOneof("scope_by") == "org":
            return self._list_org_runs(request)
        pid = request.project_id
        org = pid.organization or request.org
        if not (org and pid.name and pid.domain):
            raise _invalid(
                "ListRuns needs project_id with a non-empty organization, name and domain "
                f"(got organization={org!r} name={pid.name!r} domain={pid.domain!r})"
            )
        try:
            filters = parse_filters(request.request.filters)
            sort = parse_sort(request.request.sort_by if request.request.HasField("sort_by") else None)
        except QueryError as exc:
            raise _invalid(f"ListRuns: {exc}") from None
        if request.HasField("task_name") and request.task_name.name:
            filters.append(Filter("task_name", list_pb2.Filter.EQUAL, strings=(request.task_name.name,)))
        scope = (org, pid.name, pid.domain)
        page, token = self.pager.page(
            "ListRuns", request.request, lambda: self.store.query(scope, filters, sort), lambda r: r.name
        )
        return rs.ListRunsResponse(runs=[protos.run(r) for r in page], token=token)

    def _oss_list_runs(self, request: rs.ListRunsRequest) -> rs.ListRunsResponse:
        """ListRuns as the open-source service answers it (``run_service.go`` ListRuns)."""
        query = oss_query(request.request, "ListRuns", self.profile)
        which = request.WhichOneof("scope_by")
        rows: list[RunRec]
        if which == "project_id":  # ``NewProjectIdFilter``: project and domain equal, empty or not
            pid = request.project_id
            rows = self.store.scope_runs((self.engine.org, pid.name, pid.domain))
        elif which in ("task_name", "task_id"):  # ``NewRunTaskNameFilter`` / ``NewRunTaskIdFilter``
            t = getattr(request, which)
            want = {"task_project": t.project, "task_domain": t.domain, "task_name": t.name}
            if which == "task_id":
                want["task_version"] = request.task_id.version
            rows = [
                r
                for r in self.store.runs.values()
                if all(oss_column(r, r.root, c) == v for c, v in want.items())
            ]
        elif which == "trigger_name":
            rows = []  # the sandbox fires no triggers
        else:  # org, or no scope: every run of every org (the org is not a column)
            rows = list(self.store.runs.values())
        gone = self.store.gone
        page = _oss_page(query, [(r, r.root) for r in rows if not gone or r.key not in gone])
        return rs.ListRunsResponse(runs=[self._out(protos.run(r)) for r, _ in page[0]], token=page[1])

    def _list_org_runs(self, request: rs.ListRunsRequest) -> rs.ListRunsResponse:
        """ListRuns with ``org``: every project and domain of the org, one paged listing."""
        org = request.org
        if not org:
            raise _invalid("ListRuns with an org scope needs a non-empty org")
        try:
            filters = parse_filters(request.request.filters)
            sort = parse_sort(request.request.sort_by if request.request.HasField("sort_by") else None)
        except QueryError as exc:
            raise _invalid(f"ListRuns: {exc}") from None
        page, token = self.pager.page(
            "ListRuns",
            request.request,
            lambda: self.store.query_org(org, filters, sort),
            lambda r: f"{r.project}/{r.domain}/{r.name}",
        )
        return rs.ListRunsResponse(runs=[protos.run(r) for r in page], token=token)

    async def watch_runs(self, request: rs.WatchRunsRequest, ctx: Ctx) -> AsyncIterator[rs.WatchRunsResponse]:
        if self.profile.oss_watch:
            async for oss_msg in self._oss_watch_runs(request):
                yield oss_msg
            return
        match = _watch_scope(request)
        q: asyncio.Queue[rs.WatchRunsResponse | None] = asyncio.Queue()
        entry = (match, q)
        self.hub.run_watchers.append(entry)
        sent = 0
        try:
            snapshot = sorted((r for r in self.store.runs.values() if match(r)), key=lambda r: r.updated_at)
            msg: rs.WatchRunsResponse | None = rs.WatchRunsResponse(
                runs=[protos.run(r) for r in snapshot[-_SNAPSHOT_LIMIT:]]
            )
            while msg is not None:
                self._maybe_drop(sent, "WatchRuns")
                yield msg
                sent += 1
                msg = await q.get()
        finally:
            self.hub.run_watchers.remove(entry)

    async def _oss_watch_runs(self, request: rs.WatchRunsRequest) -> AsyncIterator[rs.WatchRunsResponse]:
        """WatchRuns as the open-source service streams it (``run_service.go`` WatchRuns)."""
        match = _oss_watch_scope(request)
        q: asyncio.Queue[RunKey | None] = asyncio.Queue(maxsize=self.profile.watch_buffer)
        entry = (match, q)
        self.hub.oss_watchers.append(entry)
        sent = 0
        try:
            # Up to ``watch_snapshot`` matching runs, and nothing at all when none match.
            matching = [r for r in self.store.runs.values() if match(r)]
            ordered = oss_default_order(matching, lambda r, c: oss_column(r, r.root, c), lambda r: r.name)
            snapshot = ordered[: self.profile.watch_snapshot]
            if snapshot:
                self._maybe_drop(sent, "WatchRuns")
                yield rs.WatchRunsResponse(runs=[self._out(protos.run(r)) for r in snapshot])
                sent += 1
            while True:
                key = await q.get()
                if key is None:
                    return
                r = self.store.runs.get(key)
                if r is None:
                    continue
                self._maybe_drop(sent, "WatchRuns")
                yield rs.WatchRunsResponse(runs=[self._out(protos.run(r))])  # the run as it is now
                sent += 1
        finally:
            self.hub.oss_watchers.remove(entry)

    def _maybe_drop(self, sent: int, rpc: str) -> None:
        n = self.stats.faults.drop_streams_after
        if n and sent >= n:
            raise ConnectError(
                Code.UNAVAILABLE,
                f"sandbox fault injection: {rpc} stream dropped after {sent} messages "
                f"(drop_streams_after={n}); reconnect",
            )

    async def list_actions(self, request: rs.ListActionsRequest, ctx: Ctx) -> rs.ListActionsResponse:
        r = self._run(request.run_id, "ListActions")
        if not self.profile.label_filters:
            query = oss_query(request.request, "ListActions", self.profile)
            rows, token = _oss_page(query, [(r, a) for a in r.actions.values()])
            return rs.ListActionsResponse(actions=[self._list_action(r, a) for _, a in rows], token=token)
        try:
            filters = parse_filters(request.request.filters, for_actions=True)
            sort = parse_sort(
                request.request.sort_by if request.request.HasField("sort_by") else None,
                default_ascending=True,
            )
        except QueryError as exc:
            raise _invalid(f"ListActions: {exc}") from None
        acts = [a for a in r.actions.values() if all(_action_matches(f, a) for f in filters)]
        acts.sort(key=lambda a: (action_attr(a, sort.key), len(a.name), a.name), reverse=not sort.ascending)
        page, token = self.pager.page("ListActions", request.request, lambda: acts, lambda a: a.name)
        return rs.ListActionsResponse(actions=[protos.action(r, a) for a in page], token=token)

    def _list_action(self, r: RunRec, a: ActionRec) -> Any:
        msg = protos.action(r, a)
        if not self.profile.action_list_task:  # ``convertActionToEnrichedProto``: parent and group only
            parent, group = msg.metadata.parent, msg.metadata.group
            msg.metadata.Clear()
            msg.metadata.parent, msg.metadata.group = parent, group
        return self._out(msg)


def _oss_page(
    query: OssQuery, rows: list[tuple[RunRec, ActionRec]]
) -> tuple[list[tuple[RunRec, ActionRec]], str]:
    """Match, sort and cut one page of (run, action) rows; a fresh query every page."""

    def row_of(r: RunRec, a: ActionRec) -> Callable[[str], Any]:
        return lambda c: oss_column(r, a, c)

    matching = [(r, a) for r, a in rows if query.matches(row_of(r, a))]
    return query.page(
        matching, lambda row, c: oss_column(row[0], row[1], c), lambda row: row[1].name + row[0].name
    )


def _oss_watch_scope(request: rs.WatchRunsRequest) -> Callable[[RunRec], bool]:
    """Only the ``project_id`` scope is honoured; org, task and cluster scopes get every run
    (``run_service.go`` runMatchesFilter)."""
    if request.WhichOneof("target") == "project_id":
        pid = request.project_id
        return lambda r: r.project == pid.name and r.domain == pid.domain
    return lambda r: True


def _action_matches(f: Filter, a: ActionRec) -> bool:
    return f.matches(lambda n: action_attr(a, n), dict)


def _watch_scope(request: rs.WatchRunsRequest) -> Callable[[RunRec], bool]:
    which = request.WhichOneof("target")
    if which == "project_id":
        pid = request.project_id
        org, project, domain = pid.organization, pid.name, pid.domain
        return lambda r: r.project == project and r.domain == domain and (not org or r.org == org)
    if which == "task_id":
        tid = request.task_id
        return lambda r: r.task == tid.name and r.project == tid.project and r.domain == tid.domain
    if which == "org":
        org = request.org
        return lambda r: r.org == org
    return lambda r: True  # cluster_id or nothing: the sandbox is one cluster


class SandboxDataProxyService(_Base, DataProxyService):  # type: ignore[misc]
    """``flyteidl2.dataproxy.DataProxyService``: inputs are kept in the store, addressed by a
    content-derived ``sandbox://inputs/<sha256>`` URI."""

    async def upload_inputs(
        self, request: dp_pb2.UploadInputsRequest, ctx: Ctx
    ) -> dp_pb2.UploadInputsResponse:
        which = request.WhichOneof("id")
        if which == "run_id":
            _key(request.run_id, "UploadInputs")
            rid = request.run_id
            problem = name_problem(rid.name)
            if problem:
                raise _invalid(f"run name {rid.name!r} {problem}: a run name must be {NAME_RULE}")
        elif which == "project_id":
            pid = request.project_id
            if not (pid.organization and pid.name and pid.domain):
                raise _invalid(
                    "UploadInputs needs project_id with a non-empty organization, name and domain "
                    f"(got organization={pid.organization!r} name={pid.name!r} domain={pid.domain!r})"
                )
        data = request.inputs.SerializeToString(deterministic=True)
        digest = hashlib.sha256(data).hexdigest()
        uri = f"sandbox://inputs/{digest}"
        self.store.put_blob(uri, request.inputs)
        return dp_pb2.UploadInputsResponse(
            offloaded_input_data=common_run_pb2.OffloadedInputData(uri=uri, inputs_hash=digest)
        )

    async def get_action_data(
        self, request: dp_pb2.GetActionDataRequest, ctx: Ctx
    ) -> dp_pb2.GetActionDataResponse:
        r, a = self._action(request.action_id, "GetActionData")
        inputs, outputs = self._action_data(request.action_id, "GetActionData")
        base = f"sandbox://{r.org}/{r.project}/{r.domain}/{r.name}/{a.name}"
        if (r.org, r.project, r.domain, r.name) in self.store.lost_data:  # oss: no blob, no URI
            return dp_pb2.GetActionDataResponse(inputs=inputs, outputs=outputs)
        return dp_pb2.GetActionDataResponse(
            inputs=inputs,
            outputs=outputs,
            inputs_uri=f"{base}/inputs.pb",
            outputs_uri=f"{base}/outputs.pb" if a.outputs is not None else "",
        )


class SandboxClusterService(ClusterService):  # type: ignore[misc]
    """``flyteidl2.cluster.ClusterService``: an empty answer makes the SDK use the control
    plane's own endpoint for data-plane calls."""

    async def select_cluster(
        self, request: cluster_pb2.SelectClusterRequest, ctx: Ctx
    ) -> cluster_pb2.SelectClusterResponse:
        return cluster_pb2.SelectClusterResponse()
