"""The sandbox workload file: which tasks exist, how each behaves, and which runs to start.

A workload is what makes the sandbox a useful stand-in for a real cluster: every run, including
reruns created through ``CreateRun``, moves QUEUED -> RUNNING -> a terminal phase by the
behaviour its task declares. Behaviour is counted per lineage (the k-th execution of a task in
a lineage takes ``behaviour[k-1]``, the last entry repeats), so ``[fail, fail, succeed]``
recovers after two reruns. ``hang`` keeps the execution RUNNING until it is aborted (a rerun
still running at a reproduction check's timeout). Outputs written ``{random: [low, high]}``
are drawn anew for every execution: nondeterministic outputs, for reproduction checks.

Shape (see the README section "The sandbox")::

    project: demo
    domain: development
    tasks:
      train.fit:
        duration: 0.5s
        behaviour: [fail, fail, succeed]
        error: {kind: SYSTEM, code: ConnectionResetError, message: "..."}
        inputs: {lr: 0.1}                 # default inputs; also declares the interface
        outputs: {accuracy: 0.93, loss: {random: [0.1, 0.2]}}
      etl.pipeline: {children: [etl.extract, etl.load]}
      train.spot:
        behaviour: succeed
        when:                             # first rule whose spec matches decides
          - spec: {interruptible: true}   # preempted while on spot capacity
            behaviour: fail
            error: {kind: USER, code: Interrupted, message: "node preempted"}
          - spec: {queue: gpu-a}          # a GPU fault on one queue only
            behaviour: fail
            error: {kind: SYSTEM, code: GpuXidError, gpu_fault: {kind: XID, code: 79, severity: CRITICAL}}
    runs: [{task: train.fit, count: 3, labels: {team: ml}, inputs: {lr: 0.1}}]
    arrivals: [{task: train.fit, every: 2s, for: 60s}]
    outages:                              # a dependency down: matching executions fail
      - tasks: ['etl.*']                  # glob patterns of task names
        after: 0s                         # from the sandbox's start
        for: 40s                          # every execution starting inside the window fails
        error: {kind: SYSTEM, code: SlowDown, message: "503 SlowDown: Please reduce your request rate."}

An outage's failures are not executions of the task: after the window, a task's ``behaviour``
goes on where it was (``[fail, succeed]`` still fails once). ``POST /_sandbox/outages`` starts
one at runtime.

An ``error`` may add ``message_bytes: 5242880``: its message repeated to that many characters
(a 5 MB traceback, without writing one into the file).

A run may also declare ``env``, ``annotations``, ``queue``, ``interruptible``,
``cache_lookup_scope``, ``service_account``, ``overwrite_cache`` and ``max_action_concurrency``;
they are stored in its RunSpec where the flyte SDK puts them. A task's interface covers its own
``inputs`` and every input its runs are given.

Deployed tasks, versions and resources (what ``TaskService`` serves and a relaunch needs)::

    max_resources: {memory: 64Gi, cpu: 16, gpu: 8}   # the platform's task resource limits
    tasks:
      train.big:
        resources: {memory: 4Gi, cpu: 1}    # requests (and limits:, same keys) of the container
        oom_below: 8Gi                      # fails OOMKilled (kind USER) below this memory request
        versions: [v1, {version: v2, behaviour: succeed}]   # oldest first; the last is the latest
    runs: [{task: train.big, version: v1}]  # default: the latest version
    deploys: [{task: train.big, version: v3, after: 30s, behaviour: succeed}]  # deployed later

A version is the task with some fields replaced (``behaviour``, ``error``, ``duration``,
``outputs``, ``resources``, ``limits``, ``oom_below``, ``when``); a task without ``versions``
has the one version ``sandbox``. ``POST /_sandbox/tasks`` deploys a version at runtime.

A bad file is refused with ``WorkloadError`` whose problems carry file:line:column and the YAML
path of each mistake. Loading is pure apart from reading the file.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rerund.core import durations
from rerund.core.quantities import MAX_QUANTITY, MAX_QUANTITY_TEXT, quantity_value
from rerund.errors import PolicyProblem, WorkloadError
from rerund.safeyaml import decode, load_text
from rerund.sandbox import literals

__all__ = [
    "RESOURCE_KEYS",
    "Arrival",
    "Deploy",
    "ErrorSpec",
    "GpuFaultSpec",
    "Outage",
    "ResourceSpec",
    "RunBatch",
    "SpecMatch",
    "TaskDef",
    "TaskVersionSpec",
    "WhenRule",
    "Workload",
    "load_workload",
    "outage_from_json",
    "parse_duration",
    "parse_quantity",
    "workload_from_dict",
]

Outcome = Literal["succeed", "fail", "timeout", "hang"]


MAX_DURATION_S = 365 * 86400.0  # any longer and asyncio cannot schedule the wake-up


def parse_duration(value: Any) -> float:
    """Seconds of a duration such as ``50ms``, ``0.5s``, ``2m``, ``1h``, ``1m30s`` or a bare number
    of seconds (``rerund.core.durations``, the one parser; workloads write no days), at most
    ``MAX_DURATION_S``. Raises ``ValueError`` with the accepted forms otherwise."""
    too_long = f"duration {value!r} is longer than the sandbox's maximum of 8760h; use e.g. 2m"
    try:
        seconds = durations.parse_duration(value, bare_seconds=True, days=False).total_seconds()
    except durations.DurationError as exc:
        if exc.kind == "negative":
            raise ValueError(f"duration {value!r} is negative; use e.g. 50ms, 0.5s, 2m, 1h") from None
        if exc.kind == "too_long":
            raise ValueError(too_long) from None
        raise ValueError(f"duration {value!r} is not a duration; use e.g. 50ms, 0.5s, 2m, 1h") from None
    except ValueError:  # a float NaN
        raise ValueError(f"duration {value!r} is not a duration; use e.g. 50ms, 0.5s, 2m, 1h") from None
    if seconds > MAX_DURATION_S:
        raise ValueError(too_long)
    return seconds


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


RESOURCE_KEYS = ("cpu", "memory", "gpu", "ephemeral_storage")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes quantity (``4Gi``, ``500m``, ``2``) in base units, as the control plane
    checks it. Raises ``ValueError`` naming the accepted forms."""
    value = quantity_value(str(text))
    if value is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity; use e.g. 4Gi, 512Mi, 2 or 500m")
    if value > MAX_QUANTITY:
        raise ValueError(f"{text!r} is above {MAX_QUANTITY_TEXT}, the largest quantity Kubernetes holds")
    return value


def _quantity_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity; use e.g. 4Gi, 512Mi, 2 or 500m")
    text = str(value).strip()
    parse_quantity(text)
    return text


def _behaviour_list(v: Any) -> Any:
    """A single outcome stands for a list of one; an empty list is refused."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list) and not v:
        raise ValueError("behaviour must list at least one of succeed, fail, timeout, hang")
    return v


def _literal_inputs(v: dict[str, Any]) -> dict[str, Any]:
    """Every input value is one the sandbox can write as a Flyte literal."""
    for key, value in v.items():
        try:
            literals.literal_type_of(value)
        except TypeError as exc:
            raise ValueError(f"input {key!r}: {exc}") from None
    return v


# The field types shared by a task, its versions, its ``when`` rules and the runs to start
# (one validator each).
Behaviour = Annotated[tuple[Outcome, ...], BeforeValidator(_behaviour_list)]
OomBelow = Annotated[str, BeforeValidator(_quantity_text)]
Inputs = Annotated[dict[str, Any], AfterValidator(_literal_inputs)]


class ResourceSpec(_Frozen):
    """Container resource requests (or limits) of a task, as Kubernetes quantities."""

    cpu: str | None = None
    memory: str | None = None
    gpu: str | None = None
    ephemeral_storage: str | None = None

    @field_validator("cpu", "memory", "gpu", "ephemeral_storage", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Any:
        return None if v is None else _quantity_text(v)

    def items(self) -> list[tuple[str, str]]:
        return [(k, getattr(self, k)) for k in RESOURCE_KEYS if getattr(self, k) is not None]


class GpuFaultSpec(_Frozen):
    """``ErrorInfo.gpu_fault`` (flyteidl2 ``core.GpuFault``) of a failing execution."""

    kind: Literal["XID", "SXID"] = "XID"
    code: int = Field(default=79, ge=0, le=2**32 - 1)
    name: str = ""
    severity: Literal["USER", "WARN", "CRITICAL"] = "CRITICAL"
    gpu_uuid: str = ""
    gpu_index: int | None = Field(default=None, ge=0)
    pci_bus_id: str = ""
    node: str = ""

    @field_validator("kind", "severity", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class ErrorSpec(_Frozen):
    """The error a failing execution reports (``ActionDetails.error_info``)."""

    kind: Literal["USER", "SYSTEM"] = "SYSTEM"
    code: str = "RuntimeError"
    message: str = "RuntimeError: task failed"
    gpu_fault: GpuFaultSpec | None = None
    # The message repeated (and cut) to this many characters: a huge error message (a dumped
    # dataframe, a 5 MB traceback) without writing it into the workload file. One string shared
    # by every execution that fails with it, so the sandbox's memory does not grow per run.
    message_bytes: int = Field(default=0, ge=0, le=64 * 1024 * 1024)

    @field_validator("kind", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _pad_message(self) -> ErrorSpec:
        n = self.message_bytes
        if n and len(self.message) != n:
            unit = (self.message or "x") + "\n"
            object.__setattr__(self, "message", (unit * (n // len(unit) + 1))[:n])
        return self


class SpecMatch(_Frozen):
    """Conditions on the run's ``RunSpec``; every one given must hold. ``interruptible`` is the
    run's value, or the task's own ``interruptible`` when the RunSpec leaves it unset."""

    queue: str | None = None
    interruptible: bool | None = None
    service_account: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)

    def holds(self, spec: RunSpecFacts) -> bool:
        """True when every condition holds for ``spec``."""
        return (
            (self.queue is None or spec.queue == self.queue)
            and (self.interruptible is None or spec.interruptible == self.interruptible)
            and (self.service_account is None or spec.service_account == self.service_account)
            and all(spec.labels.get(k) == v for k, v in self.labels.items())
            and all(spec.env.get(k) == v for k, v in self.env.items())
        )


class RunSpecFacts(_Frozen):
    """What ``SpecMatch`` reads from a run's RunSpec (built by the engine)."""

    queue: str = ""
    interruptible: bool = False
    service_account: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)


class WhenRule(_Frozen):
    """A behaviour that holds only for runs whose spec matches ``spec`` (e.g. preempted only
    while interruptible). Unset ``behaviour`` / ``error`` fall back to the task's own."""

    spec: SpecMatch
    behaviour: Behaviour | None = None
    error: ErrorSpec | None = None


DEFAULT_VERSION = "sandbox"  # the version of a task that declares no versions
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


class TaskVersionSpec(_Frozen):
    """One deployed version of a task: the task with the given fields replaced."""

    version: str
    duration: float | None = None
    behaviour: Behaviour | None = None
    error: ErrorSpec | None = None
    outputs: dict[str, Any] | None = None
    resources: ResourceSpec | None = None
    limits: ResourceSpec | None = None
    oom_below: OomBelow | None = None
    when: tuple[WhenRule, ...] | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(
                f"version {v!r} is not a version name: 1-63 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    def apply(self, task: TaskDef) -> TaskDef:
        """``task`` with this version's fields."""
        changes = {k: getattr(self, k) for k in self.model_fields_set if k != "version"}
        return task.model_copy(update=changes)


class TaskDef(_Frozen):
    """One task of the workload. ``children`` run in order as child actions a1, a2, ... of the
    root action; the first failing child fails the run with its error."""

    duration: float = 0.0
    queued: float = 0.0
    behaviour: Behaviour = ("succeed",)
    error: ErrorSpec = Field(default_factory=ErrorSpec)
    timeout_error: ErrorSpec = Field(
        default_factory=lambda: ErrorSpec(
            kind="SYSTEM", code="DeadlineExceeded", message="task exceeded its timeout"
        )
    )
    inputs: Inputs = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    children: tuple[str, ...] = ()
    interruptible: bool = False
    when: tuple[WhenRule, ...] = ()
    resources: ResourceSpec | None = None
    limits: ResourceSpec | None = None
    oom_below: OomBelow | None = None
    versions: tuple[TaskVersionSpec, ...] = ()
    # Events an execution writes while RUNNING (status and log updates): with the oss profile's
    # cap of 500 events per action, more cut off the terminal event and its error.
    status_events: int = Field(default=0, ge=0)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"version": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique_versions(self) -> TaskDef:
        names = [v.version for v in self.versions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"version {dupes[0]!r} is listed twice; each version of a task is deployed once")
        return self

    def version_names(self) -> list[str]:
        """The task's versions, oldest first (``[sandbox]`` when it declares none)."""
        return [v.version for v in self.versions] or [DEFAULT_VERSION]

    def at_version(self, version: str) -> TaskDef:
        """The task as version ``version`` behaves (the task itself for an undeclared one)."""
        for spec in self.versions:
            if spec.version == version:
                return spec.apply(self)
        return self

    @field_validator("duration", "queued", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("outputs")
    @classmethod
    def _outputs_are_literals(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if _is_random(value):
                bounds = value["random"]
                if not (
                    isinstance(bounds, list)
                    and len(bounds) == 2
                    and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
                    and bounds[0] <= bounds[1]
                ):
                    raise ValueError(f"output {key!r}: random needs [low, high] numbers with low <= high")
                continue
            try:
                literals.literal_type_of(value)
            except TypeError as exc:
                raise ValueError(f"output {key!r}: {exc}") from None
        return v

    def outcome(self, k: int, spec: RunSpecFacts | None = None) -> Outcome:
        """The outcome of the k-th execution (1-based) in a lineage; the last entry repeats.
        With ``spec``, the first ``when`` rule whose spec matches supplies the behaviour."""
        behaviour = self.rule_for(spec)[0]
        return behaviour[min(max(k, 1), len(behaviour)) - 1]

    def rule_for(self, spec: RunSpecFacts | None) -> tuple[tuple[Outcome, ...], ErrorSpec]:
        """(behaviour, error) for a run with ``spec``: the first matching ``when`` rule's,
        each falling back to the task's own."""
        if spec is not None:
            for rule in self.when:
                if rule.spec.holds(spec):
                    return rule.behaviour or self.behaviour, rule.error or self.error
        return self.behaviour, self.error

    def example_outputs(self) -> dict[str, Any]:
        """Outputs with random ones replaced by their lower bound (for the interface)."""
        return {k: (float(v["random"][0]) if _is_random(v) else v) for k, v in self.outputs.items()}


def _is_random(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"random"}


DEFAULT_TASK = TaskDef()


class RunBatch(_Frozen):
    """Runs started when the sandbox starts. ``env`` (or ``envs``), ``labels``, ``annotations``,
    ``queue``, ``interruptible``, ``cache_lookup_scope``, ``service_account``,
    ``overwrite_cache`` and ``max_action_concurrency`` land in the run's RunSpec exactly where
    the flyte SDK's ``with_runcontext(...).run(...)`` puts them."""

    task: str
    count: int = Field(default=1, ge=1, le=100_000)
    labels: dict[str, str] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict, validation_alias=AliasChoices("env", "envs"))
    annotations: dict[str, str] = Field(default_factory=dict)
    queue: str = ""
    interruptible: bool | None = None
    cache_lookup_scope: Literal["global", "project-domain"] | None = None
    service_account: str = ""
    overwrite_cache: bool = False
    max_action_concurrency: int = Field(default=0, ge=0)
    inputs: Inputs = Field(default_factory=dict)
    project: str | None = None
    domain: str | None = None
    version: str | None = Field(default=None, description="the task version to run (default: the latest)")


class Deploy(TaskVersionSpec):
    """A version of ``task`` deployed ``after`` the sandbox starts (what a CI pipeline does)."""

    task: str
    after: float = 0.0

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> float:
        return parse_duration(v)


class Arrival(RunBatch):
    """Steady traffic: ``count`` runs of ``task`` every ``every`` for ``for`` (forever if 0)."""

    every: float
    for_: float = Field(default=0.0, alias="for")

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("every must be a positive duration, e.g. 2s")
        return seconds

    @field_validator("for_", mode="before")
    @classmethod
    def _for(cls, v: Any) -> float:
        return parse_duration(v)


class Outage(_Frozen):
    """A dependency down for a while: every execution of a task matching one of ``tasks`` (glob
    patterns, ``fnmatch``: ``etl.*``) that starts ``after`` .. ``after + for`` fails with
    ``error``. In a workload ``after`` counts from the sandbox's start; posted at runtime
    (``POST /_sandbox/outages``), from the post. Durations are scaled by ``time_scale``."""

    tasks: tuple[str, ...]
    after: float = 0.0
    for_: float = Field(alias="for")
    error: ErrorSpec = Field(
        default_factory=lambda: ErrorSpec(
            kind="SYSTEM", code="ServiceUnavailable", message="503 Service Unavailable: a dependency is down"
        )
    )

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or not all(v):
            raise ValueError(
                "list at least one task pattern, e.g. ['etl.*'] (an empty pattern matches nothing)"
            )
        return v

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("for_", mode="before")
    @classmethod
    def _for(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("an outage lasts a positive duration, e.g. 40s")
        return seconds

    def covers(self, task: str) -> bool:
        """True when ``task`` matches one of the outage's patterns."""
        return any(fnmatch.fnmatchcase(task, pattern) for pattern in self.tasks)

    def unmatched(self, tasks: Iterable[str]) -> list[tuple[int, str]]:
        """(index, pattern) of each pattern that matches none of ``tasks`` (a typo, most likely)."""
        names = list(tasks)
        return [(i, p) for i, p in enumerate(self.tasks) if not fnmatch.filter(names, p)]


class Workload(_Frozen):
    """A validated workload."""

    project: str = "demo"
    domain: str = "development"
    tasks: dict[str, TaskDef] = Field(default_factory=dict)
    runs: tuple[RunBatch, ...] = ()
    arrivals: tuple[Arrival, ...] = ()
    deploys: tuple[Deploy, ...] = ()
    outages: tuple[Outage, ...] = ()
    max_resources: ResourceSpec | None = None

    @model_validator(mode="after")
    def _references(self) -> Workload:
        problems: list[tuple[tuple[Any, ...], str]] = []
        known = sorted(self.tasks)
        for section, items in (("runs", self.runs), ("arrivals", self.arrivals)):
            for i, item in enumerate(items):
                task = self.tasks.get(item.task)
                if task is not None and item.version is not None and item.version not in task.version_names():
                    problems.append(
                        (
                            (section, i, "version"),
                            f"task {item.task!r} has no version {item.version!r}; its versions: "
                            f"{', '.join(task.version_names())}",
                        )
                    )
        for i, deploy in enumerate(self.deploys):
            task = self.tasks.get(deploy.task)
            if task is None:
                problems.append(
                    (("deploys", i, "task"), f"unknown task {deploy.task!r}; known tasks: {known}")
                )
            elif deploy.version in task.version_names():
                problems.append(
                    (
                        ("deploys", i, "version"),
                        f"task {deploy.task!r} already has version {deploy.version!r}; deploy a new version",
                    )
                )
        for i, outage in enumerate(self.outages):
            for j, pattern in outage.unmatched(self.tasks):
                problems.append(
                    (("outages", i, "tasks", j), f"pattern {pattern!r} matches no task; known tasks: {known}")
                )
        for name, task in self.tasks.items():
            for i, child in enumerate(task.children):
                if child not in self.tasks:
                    problems.append(
                        (("tasks", name, "children", i), f"unknown task {child!r}; known tasks: {known}")
                    )
        seen: dict[tuple[str, str], tuple[str, str]] = {}  # (task, input) -> (type, where)
        for name, task in self.tasks.items():
            for key, value in task.inputs.items():
                seen[(name, key)] = (_type_name(value), f"tasks.{name}.inputs.{key}")
        for section, items in (("runs", self.runs), ("arrivals", self.arrivals)):
            for i, item in enumerate(items):
                if item.task not in self.tasks:
                    problems.append(
                        ((section, i, "task"), f"unknown task {item.task!r}; known tasks: {known}")
                    )
                for key, value in item.inputs.items():
                    kind = _type_name(value)
                    first = seen.setdefault((item.task, key), (kind, f"{section}[{i}].inputs.{key}"))
                    if first[0] != kind:
                        problems.append(
                            (
                                (section, i, "inputs", key),
                                f"input {key!r} of task {item.task!r} is {kind} here but {first[0]} at "
                                f"{first[1]}; a task has one interface, give every run the same type",
                            )
                        )
        cycle = _find_cycle(self.tasks)
        if cycle:
            problems.append((("tasks", cycle[0], "children"), f"children form a cycle: {' -> '.join(cycle)}"))
        if problems:
            raise _ReferenceProblems(problems)
        return self

    def task(self, name: str) -> TaskDef:
        """The definition of ``name``; unknown tasks (created through the API) just succeed."""
        return self.tasks.get(name, DEFAULT_TASK)

    def interface_inputs(self, name: str) -> dict[str, Any]:
        """Example values of every input task ``name`` takes: its own ``inputs`` plus every
        input its ``runs`` and ``arrivals`` give it, so the task's interface covers each input
        a run carries (and ``flyte rerun RUN --lr 0.2`` or a policy's ``inputs:`` can change it).
        The task's own value wins; otherwise the first run that gives the input."""
        out: dict[str, Any] = {}
        for batch in (*self.runs, *self.arrivals):
            if batch.task == name:
                for key, value in batch.inputs.items():
                    out.setdefault(key, value)
        out.update(self.task(name).inputs)
        return out


class _ReferenceProblems(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


def _type_name(value: Any) -> str:
    """The kind of value an input is (for interface conflicts): int, float, str, bool, ..."""
    return type(value).__name__


def _find_cycle(tasks: Mapping[str, TaskDef]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for child in tasks[name].children if name in tasks else ():
            if state.get(child) == 1:
                return [*path, child]
            if child in tasks and child not in state:
                found = visit(child, [*path, child])
                if found:
                    return found
        state[name] = 2
        return None

    for name in tasks:
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


# --- loading with file:line:column ------------------------------------------------------------

Marks = dict[tuple[Any, ...], tuple[int, int]]


def _marks(node: yaml.Node) -> Marks:
    """Line and column of every value by its path (keys as written), to locate problems.

    The document is within ``rerund.safeyaml``'s budgets (depth and alias-expanded size), so
    this walk is bounded by the budget even though an aliased value is located under each of
    its paths; it is iterative all the same.
    """
    marks: Marks = {}
    todo: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())]
    while todo:
        current, path = todo.pop()
        marks.setdefault(path, (current.start_mark.line + 1, current.start_mark.column + 1))
        if isinstance(current, yaml.MappingNode):
            todo.extend(
                (value, (*path, key.value))
                for key, value in current.value
                if isinstance(key, yaml.ScalarNode)
            )
        elif isinstance(current, yaml.SequenceNode):
            todo.extend((item, (*path, i)) for i, item in enumerate(current.value))
    return marks


def _yaml_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _locate(marks: Marks, path: tuple[Any, ...]) -> tuple[int, int]:
    for cut in range(len(path), -1, -1):
        if path[:cut] in marks:
            return marks[path[:cut]]
    return (1, 1)


def _problems_from(exc: ValidationError, marks: Marks, file: str) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    for err in exc.errors():
        loc = tuple("for" if p == "for_" else p for p in err["loc"])
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _ReferenceProblems):
            for path, message in ctx_error.problems:
                line, col = _locate(marks, (*loc, *path))
                problems.append(PolicyProblem(file, line, col, _yaml_path((*loc, *path)), message))
            continue
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        line, col = _locate(marks, loc)
        problems.append(PolicyProblem(file, line, col, _yaml_path(loc), message))
    return problems


def outage_from_json(body: Mapping[str, Any], tasks: Iterable[str]) -> Outage:
    """An outage posted at runtime (``POST /_sandbox/outages``), validated as a workload's
    ``outages:`` entry against the known ``tasks``. Raises ``ValueError`` naming the field
    (``for: ...``, ``tasks[0]: ...``) and what is wrong."""
    try:
        outage = Outage.model_validate(dict(body))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple("for" if p == "for_" else p for p in err["loc"])
        message = f"unknown field {loc[-1]!r}" if err["type"] == "extra_forbidden" else err["msg"]
        raise ValueError(f"{_yaml_path(loc) or 'body'}: {message.removeprefix('Value error, ')}") from None
    known = sorted(tasks)
    for i, pattern in outage.unmatched(known):
        raise ValueError(f"tasks[{i}]: pattern {pattern!r} matches no task; known tasks: {known}")
    return outage


def workload_from_dict(
    data: Mapping[str, Any], *, source: str = "<workload>", marks: Marks | None = None
) -> Workload:
    """Validate a workload given as data. Raises ``WorkloadError`` listing every problem."""
    try:
        return Workload.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems_from(exc, marks or {}, source)
        raise WorkloadError(problems, f"workload {source} is invalid; the sandbox did not start") from None


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload file. Raises ``WorkloadError`` with file:line:column."""
    file = str(path)
    summary = f"workload {file} is invalid; the sandbox did not start"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise WorkloadError(
            [PolicyProblem(file, 1, 1, "", f"cannot read the workload file: {exc.strerror or exc}")], summary
        ) from None
    text, problems = decode(raw, file)
    doc = None
    if text is not None:
        doc, problems = load_text(text, file)
    if doc is None:
        raise WorkloadError(problems, summary)
    data = {} if doc.data is None else doc.data
    marks = _marks(doc.node) if doc.node is not None else {}
    if not isinstance(data, dict):
        raise WorkloadError(
            [
                PolicyProblem(
                    file, 1, 1, "", "a workload file must be a mapping with tasks:, runs:, arrivals:"
                )
            ],
            f"workload {file} is invalid; the sandbox did not start",
        )
    return workload_from_dict(data, source=file, marks=marks)
