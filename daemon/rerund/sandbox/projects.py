"""``flyteidl2.project.ProjectService``: the projects of the sandbox's org, for org-wide clients.

A client watching a whole org learns its projects from ``ListProjects`` (``flyte.remote.Project
.listall``). The sandbox's projects are the workload's project, every project a workload batch
or arrival names, and every project a run was created in (``POST /_sandbox/runs`` with a new
``project`` creates one, as a new team onboarding would). Each has the default Flyte domains
plus any other domain a run used. Filters are the string form the SDK sends
(``eq(state, 0)``, terms joined by ``+``); only ``state`` is filterable.
"""

from __future__ import annotations

import re
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from flyteidl2.project import project_service_pb2 as pj
from flyteidl2.project.project_service_connect import ProjectService

from rerund.sandbox.store import Store
from rerund.sandbox.workload import Workload

__all__ = ["SandboxProjectService", "project_domains"]

DEFAULT_DOMAINS = ("development", "staging", "production")
_TERM = re.compile(r"^\s*eq\(\s*state\s*,\s*(\d+)\s*\)\s*$")

Ctx = RequestContext[Any, Any]


def project_domains(workload: Workload, store: Store, org: str) -> dict[str, list[str]]:
    """Project name -> its domains (defaults first, then others by name), for ``org``."""
    domains: dict[str, set[str]] = {workload.project: {workload.domain}}
    for batch in (*workload.runs, *workload.arrivals):
        domains.setdefault(batch.project or workload.project, set()).add(batch.domain or workload.domain)
    for r_org, project, domain in store.scopes():
        if r_org == org:
            domains.setdefault(project, set()).add(domain)
    return {p: [*DEFAULT_DOMAINS, *sorted(d - set(DEFAULT_DOMAINS))] for p, d in sorted(domains.items())}


class SandboxProjectService(ProjectService):  # type: ignore[misc]
    """``ListProjects`` and ``GetProject`` over ``project_domains``; projects are all ACTIVE."""

    def __init__(self, workload: Workload, store: Store, org: str) -> None:
        self._workload = workload
        self._store = store
        self._org = org

    def _projects(self) -> list[pj.Project]:
        return [
            pj.Project(
                id=name,
                name=name,
                org=self._org,
                state=pj.PROJECT_STATE_ACTIVE,
                domains=[pj.Domain(id=d, name=d) for d in domains],
            )
            for name, domains in project_domains(self._workload, self._store, self._org).items()
        ]

    async def list_projects(self, request: pj.ListProjectsRequest, ctx: Ctx) -> pj.ListProjectsResponse:
        if request.org and request.org != self._org:
            return pj.ListProjectsResponse(projects=pj.Projects())
        states: set[int] | None = None
        for term in filter(None, (t.strip() for t in request.filters.split("+"))):
            m = _TERM.match(term)
            if m is None:
                raise ConnectError(
                    Code.INVALID_ARGUMENT,
                    f"ListProjects: filter {term!r} is not supported; "
                    "the sandbox filters by eq(state, N) only",
                )
            states = (states or set()) | {int(m.group(1))}
        projects = [p for p in self._projects() if states is None or p.state in states]
        limit = request.limit if request.limit > 0 else 100
        try:
            offset = int(request.token) if request.token else 0
        except ValueError:
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                f"ListProjects: page token {request.token!r} is not one this sandbox issued",
            ) from None
        page = projects[offset : offset + limit]
        token = str(offset + limit) if offset + limit < len(projects) else ""
        return pj.ListProjectsResponse(projects=pj.Projects(projects=page, token=token))

    async def get_project(self, request: pj.GetProjectRequest, ctx: Ctx) -> pj.GetProjectResponse:
        for p in self._projects():
            if p.id == request.id:
                return pj.GetProjectResponse(project=p)
        raise ConnectError(Code.NOT_FOUND, f"project {request.id!r} not found in org {self._org!r}")
