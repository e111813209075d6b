"""Values the core works on: a ``Failure`` as rerund reads it, and the ``Decision`` it makes —
one of ``Rerun``, ``GiveUp``, ``Ignore``, ``Defer``, each a frozen value with a human ``reason``.

These are the contract between the daemon (which builds a ``Failure`` from the control plane),
the decision core (``rerund.core.decide``) and the tools (``rerund explain``, ``rerund test``,
the audit ledger). The JSON form of a ``Decision`` (``Decision.to_json()``) is the documented
contract of ``explain --format json`` and of the ledger::

    {"decision": "rerun|give_up|ignore|defer", "policy": str|null, "reason": str,
     "attempt": int|null, "scope": str|null, "source_run": str, "action": str|null,
     "name": str|null, "env": {}, "labels": {}, "inputs": {}, "overrides": {},
     "not_before": iso8601|null, "fingerprint": str|null}

``fingerprint`` is the failure's fingerprint (``rerund.core.fingerprints``: 12 hex characters,
the same for every failure of one cause), set by ``decide`` on every decision; null only on a
decision built without one.

``overrides`` holds only the RunSpec keys the policy changes (``queue``, ``interruptible``,
``service_account``, ``overwrite_cache``, ``annotations``, ``max_action_concurrency``,
``force_rerun_actions``); ``{}`` when it changes none.

For ``rerun`` the ``not_before`` is the time the rerun is due (failed_at + backoff delay);
for ``defer`` it is when a budget window frees a slot (or, waiting for a newer task version,
when ``max_wait`` ends).

A relaunch (scope ``relaunch``: a fresh run of the deployed task, see ``RelaunchTarget``) adds
one key, ``"relaunch": {"task", "version", "task_version", "resources", "resource_changes"}``;
a defer waiting for a newer task version adds ``"waiting_for": {"task", "failed_version"}``.
Reruns' JSON is unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rerund.core.resources import ResourcesView
from rerund.core.times import iso

__all__ = [
    "MAX_CODE_CHARS",
    "MAX_MESSAGE_CHARS",
    "Decision",
    "DecisionKind",
    "Defer",
    "ErrorInfo",
    "Failure",
    "GiveUp",
    "GpuFault",
    "Ignore",
    "Phase",
    "RelaunchTarget",
    "Rerun",
    "RunOverrides",
    "RunSpecView",
    "Scope",
    "TaskVersionRule",
    "WaitForVersion",
    "bounded_text",
]

# Error messages are facts from the control plane of any size (a stack trace, a dumped
# dataframe); what the daemon keeps per failure must not follow them. 4 KiB keeps every
# realistic message whole and bounds 10,000 cached failures to ~40 MB.
MAX_MESSAGE_CHARS = 4096
MAX_CODE_CHARS = 256
_TRUNCATED = re.compile(r"… \[truncated: \d+ bytes in all, sha256 [0-9a-f]{16}\] …")


class Phase(StrEnum):
    """Terminal phases a failure can be in (names as in flyteidl2 ``ActionPhase``)."""

    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"


class Scope(StrEnum):
    """What a rerun re-executes."""

    RUN = "run"  # the whole run, from the root action a0
    FAILED_ACTION = "failed_action"  # only the failing child action (action_name=...)
    RECOVER = "recover"  # the whole run with recover=True: succeeded actions are reused
    RELAUNCH = "relaunch"  # a fresh run of the deployed task: new resources and/or task version


TaskVersionRule = Literal["same", "latest", "newer"]


DecisionKind = Literal["rerun", "give_up", "ignore", "defer"]

ErrorKind = Literal["USER", "SYSTEM", "UNSPECIFIED"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


GpuFaultKind = Literal["XID", "SXID", "UNSPECIFIED"]
GpuSeverity = Literal["USER", "WARN", "CRITICAL", "UNSPECIFIED"]


class GpuFault(_Frozen):
    """The GPU fault the backend attributed a failure to (flyteidl2 ``core.GpuFault`` on
    ``ErrorInfo.gpu_fault``): an Xid (GPU) or SXid (NVSwitch) ``code``, its ``name`` and the
    health daemon's ``severity`` (USER: the workload caused it; WARN; CRITICAL: the hardware)."""

    kind: GpuFaultKind = "UNSPECIFIED"
    code: int = Field(default=0, ge=0)
    name: str = ""
    severity: GpuSeverity = "UNSPECIFIED"

    @field_validator("kind", "severity", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


def bounded_text(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its head, tail, size and a hash.

    ``head… [truncated: N bytes in all, sha256 0123456789abcdef] …tail`` with head and tail
    ``limit // 2`` characters each: the head is what a human reads first, the tail is where a
    traceback names its exception (policy patterns, even ``$``-anchored, still see it); size
    and hash tell two long messages apart. Idempotent: a bounded text is returned as it is (a
    record read back is not truncated twice).
    """
    if len(text) <= limit:
        return text
    match = _TRUNCATED.search(text)
    if match is not None and len(text) - (match.end() - match.start()) <= limit:
        return text
    data = text.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(data).hexdigest()[:16]
    head = limit - limit // 2
    tail = text[len(text) - limit // 2 :] if limit // 2 else ""
    return f"{text[:head]}… [truncated: {len(data)} bytes in all, sha256 {digest}] …{tail}"


class ErrorInfo(_Frozen):
    """The error of the failing action (``ActionDetails.error_info`` in flyteidl2).

    Bounded where the facts enter: ``code`` and ``message`` longer than ``MAX_CODE_CHARS`` /
    ``MAX_MESSAGE_CHARS`` keep their head, tail, size and hash (``bounded_text``), so every cache
    and pending item that holds a failure is bounded whatever the control plane sends.
    """

    kind: ErrorKind = "UNSPECIFIED"
    code: str = ""
    message: str = ""
    gpu_fault: GpuFault | None = None

    @field_validator("code")
    @classmethod
    def _bound_code(cls, v: str) -> str:
        return bounded_text(v, MAX_CODE_CHARS)

    @field_validator("message")
    @classmethod
    def _bound_message(cls, v: str) -> str:
        return bounded_text(v, MAX_MESSAGE_CHARS)


CacheLookupScope = Literal["global", "project-domain", ""]


class RunSpecView(_Frozen):
    """The parts of a run's ``RunSpec`` a rerun inherits, as plain values (flyteidl2
    ``task.RunSpec``): what the rerun invariant is stated over and ``explain`` diffs.

    ``interruptible`` is None when the spec leaves it unset (the task's own setting holds);
    ``cache_lookup_scope`` is ``""`` when unspecified; ``service_account`` is
    ``security_context.run_as.k8s_service_account``.
    """

    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    queue: str = ""
    interruptible: bool | None = None
    service_account: str = ""
    overwrite_cache: bool = False
    cache_lookup_scope: CacheLookupScope = ""
    max_action_concurrency: int = Field(default=0, ge=0)


class RunOverrides(_Frozen):
    """What a policy changes in the rerun's ``RunSpec`` besides env, labels and inputs (the
    ``with_runcontext`` parameters the SDK applies on a rerun, plus ``force_rerun_actions`` of
    ``rerun(recover=True)``). None / empty = keep the source run's value."""

    queue: str | None = None
    interruptible: bool | None = None
    service_account: str | None = None
    overwrite_cache: bool | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    max_action_concurrency: int | None = Field(default=None, ge=2)
    force_rerun_actions: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """True when nothing is overridden."""
        return self == RunOverrides()

    def to_json(self) -> dict[str, Any]:
        """Only the overridden keys (the JSON form in ``Decision.to_json``)."""
        out: dict[str, Any] = {}
        for key in ("queue", "interruptible", "service_account", "overwrite_cache", "max_action_concurrency"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.force_rerun_actions:
            out["force_rerun_actions"] = list(self.force_rerun_actions)
        return out


class Failure(_Frozen):
    """One failed run as the decision core sees it.

    ``root`` is the original run of the lineage, ``attempt`` the number of reruns already
    issued in the lineage (0 for an original run). ``action`` is the failing action (``a0`` =
    the root action), ``action_task`` its task. ``budget_used`` maps a budget name
    (``global`` or a policy name) to the reruns issued in its current window;
    ``budget_oldest`` (optional) to the issue time of the oldest rerun counted there, so a
    ``defer`` can say exactly when a slot frees (without it: ``now + window``). ``spec`` is the
    run's RunSpec when known: a decision then says exactly what its rerun changes.

    For relaunches: ``task_version`` is the version of the run's task that failed,
    ``resources`` the root task's requests and limits (None: unknown), ``latest_version`` the
    latest deployed version of the task as the daemon last listed it (None: not listed).
    """

    run: str = Field(min_length=1)
    root: str = ""
    attempt: int = Field(default=0, ge=0, le=1000)  # MAX_ATTEMPT: labels above it are forged
    project: str = ""
    domain: str = ""
    task: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    phase: Phase = Phase.FAILED
    action: str = "a0"
    action_task: str = ""
    error: ErrorInfo = Field(default_factory=ErrorInfo)
    failed_at: datetime
    budget_used: dict[str, int] = Field(default_factory=dict)
    budget_oldest: dict[str, datetime] = Field(default_factory=dict)
    spec: RunSpecView | None = None
    task_version: str = ""
    resources: ResourcesView | None = None
    latest_version: str | None = None
    # Evidence from history: window (``7d``, as ``format_duration`` writes it) -> (reruns of
    # this failure's fingerprint that ended in it, how many of them succeeded). Read from the
    # ledger by the daemon for the windows of its policies' ``give_up_below``.
    evidence: dict[str, tuple[int, int]] = Field(default_factory=dict)

    @field_validator("failed_at")
    @classmethod
    def _aware_utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("failed_at must carry a timezone, e.g. 2026-11-24T10:00:00Z")
        return v.astimezone(UTC)

    @field_validator("budget_oldest")
    @classmethod
    def _aware_utc_values(cls, v: dict[str, datetime]) -> dict[str, datetime]:
        for name, when in v.items():
            if when.tzinfo is None:
                raise ValueError(f"budget_oldest[{name!r}] must carry a timezone, e.g. 2026-11-24T10:00:00Z")
        return {name: when.astimezone(UTC) for name, when in v.items()}

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_other_fields(cls, data: Any) -> Any:
        """Defaults that depend on other fields: ``root`` defaults to ``run``, ``action_task``
        to ``task`` (copied only when those are strings: a wrong one is reported once, as itself)."""
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for field_name, source in (("root", "run"), ("action_task", "task")):
            if filled.get(field_name, "") == "" and isinstance(filled.get(source), str):
                filled[field_name] = filled[source]
        return filled


@dataclass(frozen=True, kw_only=True)
class _Decided:
    """What every decision says: the ``reason`` (the log line, the ``explain`` output and the
    audit record at once), the run decided about and the lineage it belongs to, and the
    failure's ``fingerprint`` (``rerund.core.fingerprints``; ``decide`` sets it).
    ``root`` is not part of the JSON contract."""

    decision: ClassVar[DecisionKind]
    reason: str
    source_run: str
    root: str = ""
    policy: str | None = None
    fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON contract (see module docstring)."""
        return {
            "decision": self.decision,
            "policy": self.policy,
            "reason": self.reason,
            "attempt": None,
            "scope": None,
            "source_run": self.source_run,
            "action": None,
            "name": None,
            "env": {},
            "labels": {},
            "inputs": {},
            "overrides": {},
            "not_before": None,
            "fingerprint": self.fingerprint or None,
        }


@dataclass(frozen=True, kw_only=True)
class Ignore(_Decided):
    """Nothing to do: no policy matches, the policy never reruns, or the run is a reproduction
    rerun. ``policy`` names the policy when one matched."""

    decision: ClassVar[DecisionKind] = "ignore"


@dataclass(frozen=True, kw_only=True)
class GiveUp(_Decided):
    """The lineage is exhausted: attempt ``attempt`` would exceed the policy's max_attempts."""

    decision: ClassVar[DecisionKind] = "give_up"
    policy: str
    attempt: int

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "attempt": self.attempt}


@dataclass(frozen=True)
class RelaunchTarget:
    """What a relaunch runs: version ``version`` of the deployed task ``task`` (``""``: the
    latest deployed when it is created), chosen by the policy's ``task_version`` rule, with
    ``resources`` (None: the deployed task's own). ``resource_changes`` says what differs from
    the failed run's resources, one line each (``memory request 4Gi -> 8Gi``)."""

    task: str
    version: str
    task_version: TaskVersionRule
    resources: ResourcesView | None = None
    resource_changes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "version": self.version or None,
            "task_version": self.task_version,
            "resources": self.resources.model_dump() if self.resources is not None else None,
            "resource_changes": list(self.resource_changes),
        }


@dataclass(frozen=True, kw_only=True)
class _Planned(_Decided):
    """A rerun planned by ``policy``: attempt ``attempt`` under the run name ``name``, of
    ``scope`` (``action`` names the failing action for scope failed_action), with ``env``,
    ``labels`` (the lineage labels included), ``inputs`` and the RunSpec ``overrides``."""

    policy: str
    attempt: int
    scope: Scope
    name: str
    action: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    inputs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    overrides: RunOverrides = field(default_factory=RunOverrides, hash=False)
    not_before: datetime
    relaunch: RelaunchTarget | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out = {
            **super().to_json(),
            "attempt": self.attempt,
            "scope": self.scope.value,
            "action": self.action,
            "name": self.name,
            "env": dict(self.env),
            "labels": dict(self.labels),
            "inputs": dict(self.inputs),
            "overrides": self.overrides.to_json(),
            "not_before": iso(self.not_before),
        }
        if self.relaunch is not None:
            out["relaunch"] = self.relaunch.to_json()
        return out


@dataclass(frozen=True, kw_only=True)
class Rerun(_Planned):
    """Create the rerun, due at ``not_before`` (failed_at + the backoff delay)."""

    decision: ClassVar[DecisionKind] = "rerun"


@dataclass(frozen=True, kw_only=True)
class Defer(_Planned):
    """The rerun would be due, but budget ``budget`` has no slot left: decide again at
    ``not_before``, when its window frees one."""

    decision: ClassVar[DecisionKind] = "defer"
    budget: str


@dataclass(frozen=True, kw_only=True)
class WaitForVersion(Defer):
    """A relaunch with ``task_version: newer`` waits for a fix: run ``source_run`` failed on
    version ``failed_version`` of ``task``, and no newer version is deployed yet. Decided again
    when the daemon's task listing shows one; ``not_before`` is when ``max_wait`` ends (then
    the policy gives up). ``budget`` is empty: no budget is involved."""

    budget: str = ""
    task: str
    failed_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "waiting_for": {"task": self.task, "failed_version": self.failed_version},
        }


Decision = Rerun | GiveUp | Ignore | Defer
"""What to do about one failure: a closed set of frozen values, matched on by the shell."""
