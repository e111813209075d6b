"""The sandbox's records of runs and actions, and the names and phases they use.

Records are plain mutable dataclasses owned by the store (one event-loop thread mutates them);
protobuf messages are built from them on demand (``rerund.sandbox.protos``). Specs that came in
as protobuf (``RunSpec``, ``TaskSpec``, ``Inputs``, ``Outputs``) are kept as messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flyteidl2.common import phase_pb2
from flyteidl2.task import common_pb2, run_pb2, task_definition_pb2

__all__ = [
    "NAME_RULE",
    "PHASE_NAMES",
    "SUCCESS_PHASES",
    "TERMINAL_PHASES",
    "ActionRec",
    "ErrorRec",
    "RunKey",
    "RunRec",
    "name_problem",
]

QUEUED = phase_pb2.ACTION_PHASE_QUEUED
RUNNING = phase_pb2.ACTION_PHASE_RUNNING
SUCCEEDED = phase_pb2.ACTION_PHASE_SUCCEEDED
FAILED = phase_pb2.ACTION_PHASE_FAILED
ABORTED = phase_pb2.ACTION_PHASE_ABORTED
TIMED_OUT = phase_pb2.ACTION_PHASE_TIMED_OUT
RECOVERED = phase_pb2.ACTION_PHASE_RECOVERED

TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED, ABORTED, TIMED_OUT, RECOVERED})
SUCCESS_PHASES = frozenset({SUCCEEDED, RECOVERED})
PHASE_NAMES = {v: k.removeprefix("ACTION_PHASE_") for k, v in phase_pb2.ActionPhase.items() if v != 0}

RunKey = tuple[str, str, str, str]  # org, project, domain, name

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
NAME_RULE = (
    "1-30 characters of lowercase letters, digits and '-', starting with a letter and ending "
    "with a letter or digit (DNS-1035)"
)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid run name, or None when it is."""
    if not name:
        return "is empty"
    if len(name) > 30:
        return f"has {len(name)} characters (at most 30)"
    if not _DNS1035.match(name):
        return "is not a DNS-1035 label"
    return None


@dataclass
class ErrorRec:
    """``ErrorInfo`` of a failed action; ``kind`` is ``USER`` or ``SYSTEM``."""

    kind: str
    code: str
    message: str
    gpu_fault: dict[str, Any] | None = None  # flyteidl2 core.GpuFault fields (GpuFaultSpec)


@dataclass
class ActionRec:
    name: str
    parent: str
    task: str
    task_spec: task_definition_pb2.TaskSpec
    phase: int
    created_at: datetime
    updated_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: ErrorRec | None = None
    abort_reason: str | None = None
    inputs: common_pb2.Inputs | None = None
    outputs: common_pb2.Outputs | None = None
    recovered_from: str | None = None  # run name the outputs were recovered from
    # The phase its last attempt ended in, when an abort turned a finished action ABORTED
    # (profile ``oss``: AbortRun has no phase condition; the attempt keeps its phase).
    finished_phase: int | None = None


@dataclass
class RunRec:
    """One run. ``lineage`` is the name of the original run its relations lead back to;
    ``source_action`` the action of the related run the new run was sourced from."""

    org: str
    project: str
    domain: str
    name: str
    task: str
    run_spec: run_pb2.RunSpec
    created_at: datetime
    updated_at: datetime
    lineage: str
    relation_type: int = 0
    related_to: RunKey | None = None
    source_action: str | None = None
    created_by: str = "sandbox"
    actions: dict[str, ActionRec] = field(default_factory=dict)

    @property
    def key(self) -> RunKey:
        return (self.org, self.project, self.domain, self.name)

    @property
    def root(self) -> ActionRec:
        return self.actions["a0"]

    @property
    def phase(self) -> int:
        return self.actions["a0"].phase

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.run_spec.labels.values)

    @property
    def envs(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.run_spec.envs.values}
