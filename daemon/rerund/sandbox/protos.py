"""Build the flyteidl2 messages the SDK reads from the sandbox's records (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flyteidl2.common import identifier_pb2
from flyteidl2.common import run_pb2 as common_run_pb2
from flyteidl2.core import execution_pb2 as core_execution_pb2
from flyteidl2.core import identifier_pb2 as core_identifier_pb2
from flyteidl2.core import tasks_pb2
from flyteidl2.task import task_definition_pb2
from flyteidl2.workflow import run_definition_pb2
from google.protobuf import timestamp_pb2

from rerund.sandbox import literals
from rerund.sandbox.records import ActionRec, RunRec
from rerund.sandbox.workload import TaskDef

__all__ = [
    "action",
    "action_details",
    "action_id",
    "run",
    "run_details",
    "run_id",
    "task_spec_for",
    "ts",
]

_KIND = {
    "USER": run_definition_pb2.ErrorInfo.KIND_USER,
    "SYSTEM": run_definition_pb2.ErrorInfo.KIND_SYSTEM,
}
TASK_VERSION = "sandbox"
TASK_TYPE = "python"
CONTAINER_IMAGE = "ghcr.io/flyteorg/flyte:py3.11-sandbox"
_RESOURCE_ENUM = {
    "cpu": tasks_pb2.Resources.CPU,
    "memory": tasks_pb2.Resources.MEMORY,
    "gpu": tasks_pb2.Resources.GPU,
    "ephemeral_storage": tasks_pb2.Resources.EPHEMERAL_STORAGE,
}


def ts(dt: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(dt)
    return t


def run_id(r: RunRec) -> identifier_pb2.RunIdentifier:
    return identifier_pb2.RunIdentifier(org=r.org, project=r.project, domain=r.domain, name=r.name)


def action_id(r: RunRec, a: ActionRec) -> identifier_pb2.ActionIdentifier:
    return identifier_pb2.ActionIdentifier(run=run_id(r), name=a.name)


def task_spec_for(
    name: str,
    task: TaskDef,
    *,
    org: str,
    project: str,
    domain: str,
    inputs: Mapping[str, Any] | None = None,
    version: str = TASK_VERSION,
) -> task_definition_pb2.TaskSpec:
    """The TaskSpec of a workload task: its identity (``version`` of it), a container with the
    task's resource requests and limits, and the interface its example inputs and outputs imply
    (so ``rerun(..., lr=0.2)`` can convert new inputs). ``inputs`` (default: the task's own)
    are the example values of every input the interface declares."""
    container = tasks_pb2.Container(image=CONTAINER_IMAGE, args=["sandbox-task", name])
    for entries, spec in (
        (container.resources.requests, task.resources),
        (container.resources.limits, task.limits),
    ):
        for key, value in spec.items() if spec is not None else ():
            entries.append(tasks_pb2.Resources.ResourceEntry(name=_RESOURCE_ENUM[key], value=value))
    return task_definition_pb2.TaskSpec(
        task_template=tasks_pb2.TaskTemplate(
            id=core_identifier_pb2.Identifier(
                resource_type=core_identifier_pb2.TASK,
                org=org,
                project=project,
                domain=domain,
                name=name,
                version=version,
            ),
            type=TASK_TYPE,
            interface=literals.interface_for(
                task.inputs if inputs is None else inputs, task.example_outputs()
            ),
            container=container,
        ),
        short_name=name.rsplit(".", 1)[-1],
    )


def _metadata(r: RunRec, a: ActionRec) -> run_definition_pb2.ActionMetadata:
    tmpl = a.task_spec.task_template
    md = run_definition_pb2.ActionMetadata(
        parent=a.parent,
        action_type=run_definition_pb2.ACTION_TYPE_TASK,
        task=run_definition_pb2.TaskActionMetadata(
            id=task_definition_pb2.TaskIdentifier(
                org=tmpl.id.org or r.org,
                project=tmpl.id.project or r.project,
                domain=tmpl.id.domain or r.domain,
                name=a.task,
                version=tmpl.id.version,
            ),
            task_type=tmpl.type or TASK_TYPE,
            short_name=a.task_spec.short_name or a.task.rsplit(".", 1)[-1],
        ),
        environment_name=a.task.split(".", 1)[0] if "." in a.task else "",
    )
    if a.name == "a0" and r.related_to is not None:
        org, project, domain, name = r.related_to
        md.relation.CopyFrom(
            common_run_pb2.Relation(
                related_to=identifier_pb2.RunIdentifier(org=org, project=project, domain=domain, name=name),
                relation_type=r.relation_type,  # type: ignore[arg-type]
            )
        )
    if a.recovered_from:
        md.recovered_from.CopyFrom(
            identifier_pb2.ActionIdentifier(
                run=identifier_pb2.RunIdentifier(
                    org=r.org, project=r.project, domain=r.domain, name=a.recovered_from
                ),
                name=a.name,
            )
        )
    return md


def _status(a: ActionRec) -> run_definition_pb2.ActionStatus:
    st = run_definition_pb2.ActionStatus(phase=a.phase, attempts=1)  # type: ignore[arg-type]
    if a.start_time:
        st.start_time.CopyFrom(ts(a.start_time))
    if a.end_time:
        st.end_time.CopyFrom(ts(a.end_time))
        if a.start_time:
            st.duration_ms = int((a.end_time - a.start_time).total_seconds() * 1000)
    return st


def action(r: RunRec, a: ActionRec) -> run_definition_pb2.Action:
    return run_definition_pb2.Action(id=action_id(r, a), metadata=_metadata(r, a), status=_status(a))


def run(r: RunRec) -> run_definition_pb2.Run:
    """``Run`` as ListRuns/WatchRuns/CreateRun return it. Like open-source Flyte, ``labels`` is
    left empty: read them from ``RunDetails.run_spec.labels``."""
    return run_definition_pb2.Run(action=action(r, r.root))


def _error_info(a: ActionRec) -> run_definition_pb2.ErrorInfo | None:
    if a.error is None:
        return None
    info = run_definition_pb2.ErrorInfo(
        kind=_KIND.get(a.error.kind, run_definition_pb2.ErrorInfo.KIND_UNSPECIFIED),
        code=a.error.code,
        message=a.error.message,
    )
    fault = a.error.gpu_fault
    if fault:
        gf = info.gpu_fault
        gf.kind = core_execution_pb2.GpuFault.Kind.Value(f"KIND_{fault.get('kind', 'XID')}")
        gf.code = int(fault.get("code", 0))
        gf.name = str(fault.get("name", ""))
        gf.severity = core_execution_pb2.GpuFault.Severity.Value(
            f"SEVERITY_{fault.get('severity', 'CRITICAL')}"
        )
        gf.gpu_uuid = str(fault.get("gpu_uuid", ""))
        gf.pci_bus_id = str(fault.get("pci_bus_id", ""))
        gf.node = str(fault.get("node", ""))
        if fault.get("gpu_index") is not None:
            gf.gpu_index = int(fault["gpu_index"])
    return info


def action_details(r: RunRec, a: ActionRec, *, with_error: bool = True) -> run_definition_pb2.ActionDetails:
    d = run_definition_pb2.ActionDetails(
        id=action_id(r, a), metadata=_metadata(r, a), status=_status(a), task=a.task_spec
    )
    attempt = run_definition_pb2.ActionAttempt(
        phase=a.finished_phase or a.phase,  # type: ignore[arg-type]
        attempt=1,
    )
    if a.start_time:
        attempt.start_time.CopyFrom(ts(a.start_time))
    if a.end_time:
        attempt.end_time.CopyFrom(ts(a.end_time))
    err = _error_info(a)
    if err is not None and with_error:
        d.error_info.CopyFrom(err)
        attempt.error_info.CopyFrom(err)
    if a.abort_reason is not None:
        d.abort_info.reason = a.abort_reason
    d.attempts.append(attempt)
    return d


def run_details(r: RunRec, *, with_error: bool = False) -> run_definition_pb2.RunDetails:
    """``RunDetails``. By default the root action's error is omitted, as Union does: read
    errors with GetActionDetails / ``Run.first_failure()``. Open-source Flyte includes the root
    action's own error (``with_error``)."""
    return run_definition_pb2.RunDetails(
        run_spec=r.run_spec, action=action_details(r, r.root, with_error=with_error)
    )
