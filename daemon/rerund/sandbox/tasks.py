"""Deployed tasks and their versions, and ``flyteidl2.task.TaskService`` over them.

What the flyte SDK asks when it runs a deployed task (``flyte.remote.Task.get(name,
version=... | auto_version="latest")``): ``ListTasks`` (name EQUAL, sorted by ``created_at``
descending, limit 1) for the latest version, then ``GetTaskDetails`` for the version's spec.
A run of a deployed task then names it in ``CreateRun.task_id`` (or, after ``.override(...)``,
sends the changed spec in ``task_spec``), so the catalog also tells the engine how each
version behaves.

Every workload task is deployed, with its ``versions`` (oldest first; ``sandbox`` when it
declares none), in the workload's project/domain and in each project/domain its runs use.
``deploy`` adds a version at runtime (``POST /_sandbox/tasks``, or a workload ``deploys:``
entry). Deploy times are strictly increasing, so "the latest" is well defined. Deployed
versions live in memory: a sandbox restart redeploys the workload's versions only.

The catalog also checks the resources of a task spec the way the platform does
(``resource_problem``): quantities must parse, a limit may not be below its request, and no
value may exceed the workload's ``max_resources``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from flyteidl2.common import list_pb2
from flyteidl2.core import tasks_pb2
from flyteidl2.task import task_definition_pb2 as td_pb2
from flyteidl2.task import task_service_pb2 as ts_pb2
from flyteidl2.task.task_service_connect import TaskService
from pydantic import ValidationError

from rerund.sandbox import protos
from rerund.sandbox.workload import TaskDef, TaskVersionSpec, Workload, parse_quantity

__all__ = ["Deployed", "SandboxTaskService", "TaskCatalog", "resource_problem", "spec_resources"]

Ctx = RequestContext[Any, Any]
Scope = tuple[str, str]  # project, domain

_RESOURCE_NAME = {
    tasks_pb2.Resources.CPU: "cpu",
    tasks_pb2.Resources.MEMORY: "memory",
    tasks_pb2.Resources.GPU: "gpu",
    tasks_pb2.Resources.EPHEMERAL_STORAGE: "ephemeral_storage",
}


@dataclass(frozen=True)
class Deployed:
    """One deployed version of a task in one project/domain."""

    project: str
    domain: str
    task: str
    version: str
    definition: TaskDef
    deployed_at: datetime


def spec_resources(spec: td_pb2.TaskSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(requests, limits) of a task spec's container, keyed cpu/memory/gpu/ephemeral_storage."""
    res = spec.task_template.container.resources
    requests = {_RESOURCE_NAME[e.name]: e.value for e in res.requests if e.name in _RESOURCE_NAME}
    limits = {_RESOURCE_NAME[e.name]: e.value for e in res.limits if e.name in _RESOURCE_NAME}
    return requests, limits


def resource_problem(spec: td_pb2.TaskSpec, max_resources: Mapping[str, str]) -> str | None:
    """Why the platform refuses ``spec``'s resources (None: it accepts them)."""
    requests, limits = spec_resources(spec)
    values: dict[str, dict[str, Any]] = {"request": {}, "limit": {}}
    for which, entries in (("request", requests), ("limit", limits)):
        for name, text in entries.items():
            try:
                values[which][name] = parse_quantity(text)
            except ValueError as exc:
                return f"{name} {which} {exc}"
    for name, limit in values["limit"].items():
        request = values["request"].get(name)
        if request is not None and limit < request:
            return f"{name} limit {limits[name]} is below its request {requests[name]}"
    for which, entries in (("request", requests), ("limit", limits)):
        for name, value in values[which].items():
            cap = max_resources.get(name)
            if cap is not None and value > parse_quantity(cap):
                return (
                    f"{name} {which} {entries[name]} exceeds the platform's task resource limit {cap}; "
                    "ask for at most that"
                )
    return None


class TaskCatalog:
    """Deployed tasks, by (project, domain, task), versions oldest first. Event-loop thread only."""

    def __init__(self, workload: Workload, *, org: str, clock: Callable[[], datetime]) -> None:
        self.workload = workload
        self.org = org
        self.clock = clock
        self._versions: dict[tuple[str, str, str], list[Deployed]] = {}
        self._last: datetime | None = None
        self.max_resources = dict(workload.max_resources.items()) if workload.max_resources else {}
        for name, task in workload.tasks.items():
            for project, domain in self._scopes(name):
                for version in task.version_names():
                    self._add(project, domain, name, version, task.at_version(version))

    def _scopes(self, task: str) -> list[Scope]:
        scopes: list[Scope] = [(self.workload.project, self.workload.domain)]
        for batch in (*self.workload.runs, *self.workload.arrivals):
            if batch.task == task:
                scope = (batch.project or self.workload.project, batch.domain or self.workload.domain)
                if scope not in scopes:
                    scopes.append(scope)
        return scopes

    def _add(self, project: str, domain: str, task: str, version: str, definition: TaskDef) -> Deployed:
        now = self.clock()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)  # strictly increasing: "latest" is well defined
        self._last = now
        d = Deployed(project, domain, task, version, definition, now)
        self._versions.setdefault((project, domain, task), []).append(d)
        return d

    def versions(self, project: str, domain: str, task: str) -> list[Deployed]:
        """Versions of ``task`` in ``project/domain``, oldest first (empty: not deployed)."""
        return list(self._versions.get((project, domain, task), ()))

    def get(self, project: str, domain: str, task: str, version: str) -> Deployed | None:
        return next(
            (d for d in self._versions.get((project, domain, task), ()) if d.version == version), None
        )

    def latest(self, project: str, domain: str, task: str) -> Deployed | None:
        found = self._versions.get((project, domain, task))
        return found[-1] if found else None

    def all(self, project: str, domain: str) -> list[Deployed]:
        return [d for (p, dm, _), ds in self._versions.items() if (p, dm) == (project, domain) for d in ds]

    def definition(self, task: str, version: str) -> TaskDef:
        """How version ``version`` of ``task`` behaves (any scope: a version is one build)."""
        for (_, _, name), ds in self._versions.items():
            if name == task:
                for d in ds:
                    if d.version == version:
                        return d.definition
        base = self.workload.task(task)
        return base.at_version(version)

    def deploy(self, body: Mapping[str, Any]) -> Deployed:
        """Deploy a new version: ``{"task": NAME, "version": V, ...task fields}`` (fields as a
        workload ``versions:`` entry, plus optional ``project`` / ``domain``). Raises
        ``ValueError`` saying what is wrong."""
        data = dict(body)
        task = str(data.pop("task", "") or "")
        project = str(data.pop("project", None) or self.workload.project)
        domain = str(data.pop("domain", None) or self.workload.domain)
        if task not in self.workload.tasks:
            known = ", ".join(sorted(self.workload.tasks)) or "none"
            raise ValueError(f"task {task!r} is not in the sandbox workload; known tasks: {known}")
        try:
            spec = TaskVersionSpec.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        if self.get(project, domain, task, spec.version) is not None:
            raise ValueError(
                f"task {task!r} version {spec.version!r} is already deployed in {project}/{domain}; "
                "deploy a new version"
            )
        base = self.latest(project, domain, task)
        definition = spec.apply(base.definition if base is not None else self.workload.task(task))
        return self._add(project, domain, task, spec.version, definition)

    def task_spec(self, d: Deployed, inputs: Mapping[str, Any] | None = None) -> td_pb2.TaskSpec:
        return protos.task_spec_for(
            d.task,
            d.definition,
            org=self.org,
            project=d.project,
            domain=d.domain,
            inputs=inputs if inputs is not None else self.workload.interface_inputs(d.task),
            version=d.version,
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Plain data for ``GET /_sandbox/tasks``."""
        return [
            {
                "project": d.project,
                "domain": d.domain,
                "task": d.task,
                "version": d.version,
                "deployed_at": d.deployed_at.isoformat(),
                "latest": d is ds[-1],
            }
            for ds in self._versions.values()
            for d in ds
        ]


def _invalid(msg: str) -> ConnectError:
    return ConnectError(Code.INVALID_ARGUMENT, msg)


def _task_id(org: str, d: Deployed) -> td_pb2.TaskIdentifier:
    return td_pb2.TaskIdentifier(org=org, project=d.project, domain=d.domain, name=d.task, version=d.version)


def _metadata(d: Deployed) -> td_pb2.TaskMetadata:
    md = td_pb2.TaskMetadata(
        short_name=d.task.rsplit(".", 1)[-1],
        environment_name=d.task.split(".", 1)[0] if "." in d.task else "",
    )
    md.deployed_at.CopyFrom(protos.ts(d.deployed_at))
    return md


_SORT_KEYS = {"created_at", "deployed_at", "name", "version"}
_FILTER_FIELDS = {"name", "version"}


class SandboxTaskService(TaskService):  # type: ignore[misc]
    """``flyteidl2.task.TaskService``: ListTasks, GetTaskDetails, ListVersions over the catalog.
    DeployTask is not served (deploy with ``POST /_sandbox/tasks``)."""

    def __init__(self, catalog: TaskCatalog) -> None:
        self.catalog = catalog

    async def get_task_details(
        self, request: ts_pb2.GetTaskDetailsRequest, ctx: Ctx
    ) -> ts_pb2.GetTaskDetailsResponse:
        tid = request.task_id
        missing = [f for f in ("org", "project", "domain", "name", "version") if not getattr(tid, f)]
        if missing:
            raise _invalid(f"GetTaskDetails: task identifier needs a non-empty {', '.join(missing)}")
        d = self.catalog.get(tid.project, tid.domain, tid.name, tid.version)
        if d is None or tid.org != self.catalog.org:
            known = [v.version for v in self.catalog.versions(tid.project, tid.domain, tid.name)]
            raise ConnectError(
                Code.NOT_FOUND,
                f"task {tid.name!r} version {tid.version!r} not found in {tid.org}/{tid.project}/{tid.domain}"
                + (f"; deployed versions: {', '.join(known)}" if known else "; no version of it is deployed"),
            )
        return ts_pb2.GetTaskDetailsResponse(
            details=td_pb2.TaskDetails(
                task_id=_task_id(self.catalog.org, d), metadata=_metadata(d), spec=self.catalog.task_spec(d)
            )
        )

    async def list_tasks(self, request: ts_pb2.ListTasksRequest, ctx: Ctx) -> ts_pb2.ListTasksResponse:
        pid = request.project_id
        if not (pid.name and pid.domain):
            raise _invalid(
                f"ListTasks needs project_id with a non-empty name and domain (got name={pid.name!r} "
                f"domain={pid.domain!r})"
            )
        items = self.catalog.all(pid.name, pid.domain)
        items = [d for d in items if all(_holds(f, d) for f in request.request.filters)]
        items = _sorted(items, request.request)
        page, token = _page(items, request.request)
        return ts_pb2.ListTasksResponse(
            tasks=[td_pb2.Task(task_id=_task_id(self.catalog.org, d), metadata=_metadata(d)) for d in page],
            token=token,
            metadata=ts_pb2.ListTasksResponse.ListTasksMetadata(total=len(items), filtered_total=len(items)),
        )

    async def list_versions(
        self, request: ts_pb2.ListVersionsRequest, ctx: Ctx
    ) -> ts_pb2.ListVersionsResponse:
        tn = request.task_name
        items = self.catalog.versions(tn.project, tn.domain, tn.name)
        items = _sorted(items, request.request)
        page, token = _page(items, request.request)
        out = ts_pb2.ListVersionsResponse(token=token)
        for d in page:
            v = out.versions.add(version=d.version)
            v.deployed_at.CopyFrom(protos.ts(d.deployed_at))
        return out


def _holds(f: list_pb2.Filter, d: Deployed) -> bool:
    if f.field not in _FILTER_FIELDS:
        raise _invalid(
            f"ListTasks: cannot filter on {f.field!r}; filter on {', '.join(sorted(_FILTER_FIELDS))}"
        )
    value = d.task if f.field == "name" else d.version
    F = list_pb2.Filter
    if f.function == F.EQUAL:
        return value == (f.values[0] if f.values else "")
    if f.function == F.NOT_EQUAL:
        return value != (f.values[0] if f.values else "")
    if f.function == F.VALUE_IN:
        return value in f.values
    if f.function == F.CONTAINS:
        return any(v in value for v in f.values)
    raise _invalid(
        f"ListTasks: filter function {F.Function.Name(f.function)} is not supported on {f.field!r}"
    )


def _sorted(items: list[Deployed], request: list_pb2.ListRequest) -> list[Deployed]:
    key, ascending = "created_at", True
    if request.HasField("sort_by"):
        key = request.sort_by.key or "created_at"
        ascending = request.sort_by.direction == list_pb2.Sort.ASCENDING
    if key not in _SORT_KEYS:
        raise _invalid(f"cannot sort tasks by {key!r}; sort by {', '.join(sorted(_SORT_KEYS))}")
    if key in ("created_at", "deployed_at"):
        return sorted(items, key=lambda d: d.deployed_at, reverse=not ascending)
    return sorted(
        items, key=lambda d: (d.task if key == "name" else d.version, d.deployed_at), reverse=not ascending
    )


def _page(items: list[Deployed], request: list_pb2.ListRequest) -> tuple[list[Deployed], str]:
    limit = request.limit if request.limit > 0 else 100
    token = request.token
    # The tokens this sandbox issues are plain ASCII offsets; int() would also take '-1' (a slice
    # from the end), '+1', ' 1', '1_0' and other scripts' digits.
    if token and not (token.isascii() and token.isdigit()):
        raise _invalid(f"page token {token!r} is not one this sandbox issued; start again")
    offset = int(token) if token else 0
    page = items[offset : offset + limit]
    nxt = offset + limit
    return page, (str(nxt) if nxt < len(items) else "")
