"""Raw Connect RunService requests to a sandbox, built as the flyte SDK builds them: for the
tests that check the sandbox over the wire (``union`` fidelity and the ``oss`` profile)."""

from __future__ import annotations

from typing import Any

from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs

from rerund.sandbox.protos import task_spec_for
from rerund.sandbox.workload import TaskDef


def run_id(sb: Any, name: str, **over: Any) -> identifier_pb2.RunIdentifier:
    """The identifier of run ``name`` in the sandbox's org/project/domain (``over`` replaces any)."""
    fields = {"org": sb.org, "project": sb.project, "domain": sb.domain, "name": name, **over}
    return identifier_pb2.RunIdentifier(**fields)


def create(sb: Any, client: Any, name: str, task: str = "ok", run_spec: Any = None, **over: Any) -> Any:
    """CreateRun of workload task ``task`` as run ``name`` (with ``run_spec`` when given)."""
    spec = task_spec_for(task, TaskDef(), org=sb.org, project=sb.project, domain=sb.domain)
    req = rs.CreateRunRequest(run_id=run_id(sb, name, **over), task_spec=spec)
    if run_spec is not None:
        req.run_spec.CopyFrom(run_spec)
    return client.create_run(req)


def list_runs(sb: Any, client: Any, *filters: Any, limit: int, token: str = "", sort: Any = None) -> Any:
    """ListRuns of the sandbox's project/domain: one page of ``limit`` (0: the service's default)."""
    req = list_pb2.ListRequest(limit=limit, token=token, filters=list(filters))
    if sort is not None:
        req.sort_by.CopyFrom(sort)
    return client.list_runs(
        rs.ListRunsRequest(
            request=req,
            org=sb.org,
            project_id=identifier_pb2.ProjectIdentifier(
                organization=sb.org, name=sb.project, domain=sb.domain
            ),
        )
    )


def names(resp: Any) -> list[str]:
    """The run names of a ListRuns answer, in its order."""
    return [r.action.id.run.name for r in resp.runs]
