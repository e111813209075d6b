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
    runs: [{task: train.fit, count: 3, labels: {team: ml}, inputs: {lr: 0.1}}]
    arrivals: [{task: train.fit, every: 2s, for: 60s}]

A bad file is refused with ``WorkloadError`` whose problems carry file:line:column and the YAML
path of each mistake. Loading is pure apart from reading the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rerund.errors import PolicyProblem, WorkloadError
from rerund.sandbox import literals

__all__ = [
    "Arrival",
    "ErrorSpec",
    "RunBatch",
    "TaskDef",
    "Workload",
    "load_workload",
    "parse_duration",
    "workload_from_dict",
]

Outcome = Literal["succeed", "fail", "timeout", "hang"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds of a duration such as ``50ms``, ``0.5s``, ``2m``, ``1h`` or a bare number of
    seconds. Raises ``ValueError`` with the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration; use e.g. 50ms, 0.5s, 2m, 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative; use e.g. 50ms, 0.5s, 2m, 1h")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"duration {value!r} is not a duration; use e.g. 50ms, 0.5s, 2m, 1h")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ErrorSpec(_Frozen):
    """The error a failing execution reports (``ActionDetails.error_info``)."""

    kind: Literal["USER", "SYSTEM"] = "SYSTEM"
    code: str = "RuntimeError"
    message: str = "RuntimeError: task failed"

    @field_validator("kind", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class TaskDef(_Frozen):
    """One task of the workload. ``children`` run in order as child actions a1, a2, ... of the
    root action; the first failing child fails the run with its error."""

    duration: float = 0.0
    queued: float = 0.0
    behaviour: tuple[Outcome, ...] = ("succeed",)
    error: ErrorSpec = Field(default_factory=ErrorSpec)
    timeout_error: ErrorSpec = Field(
        default_factory=lambda: ErrorSpec(
            kind="SYSTEM", code="DeadlineExceeded", message="task exceeded its timeout"
        )
    )
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    children: tuple[str, ...] = ()

    @field_validator("duration", "queued", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("behaviour", mode="before")
    @classmethod
    def _behaviour(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list) and not v:
            raise ValueError("behaviour must list at least one of succeed, fail, timeout, hang")
        return v

    @field_validator("inputs")
    @classmethod
    def _inputs_are_literals(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            try:
                literals.literal_type_of(value)
            except TypeError as exc:
                raise ValueError(f"input {key!r}: {exc}") from None
        return v

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

    def outcome(self, k: int) -> Outcome:
        """The outcome of the k-th execution (1-based) in a lineage; the last entry repeats."""
        return self.behaviour[min(max(k, 1), len(self.behaviour)) - 1]

    def example_outputs(self) -> dict[str, Any]:
        """Outputs with random ones replaced by their lower bound (for the interface)."""
        return {k: (float(v["random"][0]) if _is_random(v) else v) for k, v in self.outputs.items()}


def _is_random(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"random"}


DEFAULT_TASK = TaskDef()


class RunBatch(_Frozen):
    """Runs started when the sandbox starts."""

    task: str
    count: int = Field(default=1, ge=1, le=100_000)
    labels: dict[str, str] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    project: str | None = None
    domain: str | None = None


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


class Workload(_Frozen):
    """A validated workload."""

    project: str = "demo"
    domain: str = "development"
    tasks: dict[str, TaskDef] = Field(default_factory=dict)
    runs: tuple[RunBatch, ...] = ()
    arrivals: tuple[Arrival, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Workload:
        problems: list[tuple[tuple[Any, ...], str]] = []
        known = sorted(self.tasks)
        for name, task in self.tasks.items():
            for i, child in enumerate(task.children):
                if child not in self.tasks:
                    problems.append(
                        (("tasks", name, "children", i), f"unknown task {child!r}; known tasks: {known}")
                    )
        for section, items in (("runs", self.runs), ("arrivals", self.arrivals)):
            for i, item in enumerate(items):
                if item.task not in self.tasks:
                    problems.append(
                        ((section, i, "task"), f"unknown task {item.task!r}; known tasks: {known}")
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


class _ReferenceProblems(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


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


def _construct(node: yaml.Node, path: tuple[Any, ...], marks: Marks) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            out[key] = _construct(value_node, (*path, key), marks)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), marks) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(
            [PolicyProblem(file, 1, 1, "", f"cannot read the workload file: {exc.strerror or exc}")],
            f"workload {file} is invalid; the sandbox did not start",
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise WorkloadError(
            [PolicyProblem(file, line, col, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")],
            f"workload {file} is invalid; the sandbox did not start",
        ) from None
    marks: Marks = {}
    data = _construct(node, (), marks) if node is not None else {}
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
