"""The policy file as pydantic models (``apiVersion: rerund/v1``).

These models validate one file's shape and values (types, durations, RE2 patterns, name
templates); ``rerund.policy.loader`` then merges defaults, checks what spans policies and
files (duplicate names, unreachable policies) and compiles ``rerund.core.rules.Rule``s.
``rerund schema`` prints ``PolicyFile``'s JSON Schema. Every model is frozen and forbids
unknown keys.

``reproductions:`` (scheduled reproduction checks) lives in the same file. Its cron
``schedule`` is checked by the core's crontab grammar: the loader passes the checks in the
validation context (``cron_problem`` and ``timezone_problem`` of ``rerund.core.cron``, pure);
a bare ``PolicyFile.model_validate(data)`` without that context checks the shape only.
Cross-field rules (``outputs: tolerance`` needs ``tolerance``, a source is
a ``run`` or a ``task``, names unique) are checked by the loader, to point at the exact key.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    WithJsonSchema,
)

from rerund.core.durations import DURATION_PATTERN, format_duration, parse_duration
from rerund.core.incidents import MAX_INCIDENT_FAILURES, MAX_INCIDENT_WINDOW
from rerund.core.labels import label_key_problem, label_value_problem
from rerund.core.model import Phase, Scope
from rerund.core.names import NAME_RULE
from rerund.core.resources import limit_problem, parse_multiplier, quantity_problem
from rerund.core.rules import compile_pattern_error
from rerund.core.taxonomy import FAILURE_CLASSES

__all__ = [
    "API_VERSION",
    "BackoffSpec",
    "BudgetSpec",
    "BudgetsSpec",
    "DefaultsSpec",
    "ErrorSelector",
    "GiveUpBelowSpec",
    "GpuFaultSelector",
    "IncidentOpenSpec",
    "IncidentsSpec",
    "MatchSpecModel",
    "OverrideSpec",
    "PolicyFile",
    "PolicySpec",
    "ReproCompareSpec",
    "ReproSourceSpec",
    "ReproductionSpec",
    "ResourceCapsSpec",
    "ResourcesSpec",
    "RetrySpec",
    "RunSpecKeys",
    "ToleranceSpec",
]

API_VERSION = "rerund/v1"
POLICY_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


def _duration(value: object) -> timedelta:
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a duration: a number with a unit s, m, h or d, e.g. 30s, 10m, 1h, 1d, 1h30m",
            "examples": ["30s", "10m", "1h"],
        }
    ),
]


def _pattern(value: str) -> str:
    problem = compile_pattern_error(value)
    if problem is not None:
        raise ValueError(f"invalid RE2 pattern {value!r}: {problem}")
    return value


NAME_REMOVED = (
    "'name' (a rerun name template) is no longer a policy key: every rerun is named "
    f"{NAME_RULE} (e.g. abc123-retry-1), a function of the lineage attempt only, so that no "
    "restart, reload or replica with other policies can create a second rerun for one attempt; "
    "remove this key"
)


def _removed_name(value: object) -> None:
    raise ValueError(NAME_REMOVED)


def _policy_name(value: str) -> str:
    import re

    if not re.fullmatch(POLICY_NAME_PATTERN, value):
        raise ValueError(
            f"invalid policy name {value!r}: use 1-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    if value == "global":
        raise ValueError("policy name 'global' is reserved for the global budget; choose another name")
    return value


def _no_reserved_labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if key.startswith("rerund-"):
            raise ValueError(
                f"label {key!r} is set by rerund itself; choose a key not starting with 'rerund-'"
            )
    return _kubernetes_labels(value)


def _kubernetes_labels(value: dict[str, str]) -> dict[str, str]:
    """Labels go onto the pod: a key or value Kubernetes refuses leaves the run QUEUED forever."""
    for key, v in value.items():
        problem = label_key_problem(key)
        if problem is not None:
            raise ValueError(f"label key {key!r} {problem}; the cluster would refuse the run's pod")
        problem = label_value_problem(v)
        if problem is not None:
            raise ValueError(
                f"label {key!r}: value {v!r} {problem}; the cluster would refuse the run's pod "
                "and the run would stay QUEUED"
            )
    return value


Pattern = Annotated[str, AfterValidator(_pattern), Field(description="an RE2 regular expression, searched")]
NonEmpty = Annotated[str, Field(min_length=1)]
Labels = Annotated[dict[str, str], AfterValidator(_no_reserved_labels)]
Env = dict[str, str]
Inputs = dict[str, Any]
ErrorKind = Literal["USER", "SYSTEM", "UNSPECIFIED"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class BackoffSpec(_Spec):
    """Exponential backoff: ``min(initial * factor**(n-1), max)``, jittered by ±jitter."""

    initial: Duration | None = None
    factor: float | None = Field(default=None, ge=1, le=100)
    max: Duration | None = None
    jitter: float | None = Field(default=None, ge=0, lt=1)


# A budget above this many reruns per window is no budget: remove it instead.
MAX_BUDGET_RERUNS = 1_000_000
# The most attempts a policy may allow (max_attempts), so also the last step that can apply.
MAX_ATTEMPTS = 1000


class BudgetSpec(_Spec):
    """At most ``max_reruns`` reruns in any sliding window of length ``per``."""

    max_reruns: int = Field(ge=1, le=MAX_BUDGET_RERUNS)
    per: Duration


class BudgetsSpec(_Spec):
    """File-level budgets. ``global`` counts reruns of every policy."""

    global_: BudgetSpec | None = Field(default=None, alias="global")


def _incident_window(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0 or value > MAX_INCIDENT_WINDOW:
        raise ValueError(
            f"must be a positive duration of at most {format_duration(MAX_INCIDENT_WINDOW)}, "
            f"got {format_duration(value)}; write e.g. 1m"
        )
    return value


IncidentWindow = Annotated[Duration, AfterValidator(_incident_window)]


class IncidentOpenSpec(_Spec):
    """When an incident opens: ``failures`` failed runs of one fingerprint within ``within``."""

    failures: int = Field(ge=1, le=MAX_INCIDENT_FAILURES, description="failed runs of one fingerprint")
    within: IncidentWindow = Field(description="the sliding window they fall in, e.g. 1m")


class IncidentsSpec(_Spec):
    """The outage breaker (``rerund.core.incidents``): an open incident holds the reruns of its
    fingerprint and sends one canary rerun every ``probe_every``."""

    open: IncidentOpenSpec
    probe_every: IncidentWindow = Field(
        default=timedelta(seconds=30), description="while open: one canary rerun at a time, this often"
    )


def _only_true(value: bool) -> bool:
    if value is not True:
        raise ValueError(
            "overwrite_cache: false cannot be applied: the flyte SDK's rerun path can only turn "
            "overwrite_cache on; remove the key to keep the source run's setting"
        )
    return value


_UINT32_MAX = 2**32 - 1
# Kubernetes' rules for annotation keys (a qualified name) and their total size: the rerun's pods
# carry the run's annotations, and a pod that breaks them is refused.
_K8S_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_ANNOTATIONS_MAX_BYTES = 256 * 1024


def _annotation_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return _K8S_NAME.fullmatch(name) is not None


def _annotations(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _annotation_key_ok(key):
            raise ValueError(
                f"annotation key {key!r} is not a Kubernetes annotation key (the rerun's pods carry its "
                "annotations); write 1-63 letters, digits, '-', '_' or '.', starting and ending with a "
                "letter or digit, optionally after a DNS prefix and '/' (e.g. example.com/team)"
            )
        if key.startswith("rerund-"):
            raise ValueError(
                f"annotation {key!r} is set by rerund itself; choose a key not starting with 'rerund-'"
            )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if size > _ANNOTATIONS_MAX_BYTES:
        raise ValueError(
            f"the annotations take {size} bytes; Kubernetes allows {_ANNOTATIONS_MAX_BYTES} in all "
            "(keys and values): shorten them"
        )
    for key, v in value.items():
        problem = label_value_problem(v)
        if problem is not None:
            raise ValueError(
                f"annotation {key!r}: value {v!r} {problem}; rerund writes only label values "
                "(a value the cluster refuses leaves the run QUEUED)"
            )
    return value


def _concurrency(value: int) -> int:
    if value > _UINT32_MAX:
        raise ValueError(
            f"max_action_concurrency must be at most {_UINT32_MAX} (RunSpec.max_action_concurrency is a "
            f"uint32), got {value}; remove the key to keep the source run's setting"
        )
    if value < 2:
        raise ValueError(
            f"max_action_concurrency must be at least 2, got {value}: 1 would deadlock the run (a parent "
            "action holds its slot while it waits for its children) and 0 cannot be set on a rerun; "
            "remove the key to keep the source run's setting"
        )
    return value


class RunSpecKeys(_Spec):
    """What a rerun changes in the source run's RunSpec besides env, labels and inputs: the
    ``with_runcontext`` parameters the flyte SDK applies on a rerun. Unset keys keep the source
    run's value."""

    queue: NonEmpty | None = Field(
        default=None, description="run the rerun on this queue (e.g. ondemand-pool)"
    )
    interruptible: bool | None = Field(
        default=None, description="false moves a spot (interruptible) run to on-demand capacity"
    )
    service_account: NonEmpty | None = Field(default=None, description="the Kubernetes service account")
    overwrite_cache: Annotated[bool, AfterValidator(_only_true), WithJsonSchema({"const": True})] | None = (
        Field(default=None, description="true: recompute cached outputs instead of reusing them")
    )
    annotations: Annotated[dict[NonEmpty, str], AfterValidator(_annotations)] = Field(
        default_factory=dict, description="merged over the source run's annotations"
    )
    max_action_concurrency: (
        Annotated[
            int,
            AfterValidator(_concurrency),
            WithJsonSchema({"type": "integer", "minimum": 2, "maximum": _UINT32_MAX}),
        ]
        | None
    ) = Field(default=None, description="at least 2: how many actions of the run may run at once")
    force_rerun_actions: list[NonEmpty] | None = Field(
        default=None,
        min_length=1,
        description="scope recover only: actions that re-execute although they succeeded (e.g. a1)",
    )


def _resource_value(value: Any) -> str:
    """A resource rule as written: ``2x`` (a multiplier, 1x to ``MAX_MULTIPLIER``x) or a quantity
    (at most ``MAX_QUANTITY``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"{value!r} is not a resource value; write a multiplier such as 2x or a quantity such as 16Gi"
        )
    text = str(value).strip()
    factor = parse_multiplier(text)
    if factor is not None:
        if factor < 1:
            raise ValueError(
                f"multiplier {text} would lower the resource; a relaunch never lowers a resource "
                "(use at least 1x, e.g. 2x)"
            )
        problem = limit_problem(text)
        if problem is not None:
            raise ValueError(problem)
        return text
    if text.endswith("x"):
        raise ValueError(f"{text!r} is not a multiplier; write e.g. 2x or 1.5x")
    problem = quantity_problem(text) or limit_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity; write e.g. 64Gi, 16 or 500m")
    text = str(value).strip()
    problem = quantity_problem(text)
    if problem is not None:
        raise ValueError(problem + " (a max is a quantity, not a multiplier)")
    problem = limit_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


_QUANTITY_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}]}
ResourceValue = Annotated[
    Any,
    AfterValidator(_resource_value),
    WithJsonSchema(
        {
            **_QUANTITY_SCHEMA,
            "description": "a multiplier of the failed run's request and limit (2x, 1.5x) or a "
            "Kubernetes quantity that sets them (16Gi, 512Mi, 4, 500m)",
            "examples": ["2x", "16Gi"],
        }
    ),
]
Quantity = Annotated[
    Any,
    AfterValidator(_quantity),
    WithJsonSchema({**_QUANTITY_SCHEMA, "description": "a Kubernetes quantity", "examples": ["64Gi", "16"]}),
]


class ResourceCapsSpec(_Spec):
    """The most a relaunch may ask for, per resource: escalation stops at what a node has."""

    memory: Quantity | None = None
    cpu: Quantity | None = None
    gpu: Quantity | None = None
    ephemeral_storage: Quantity | None = None


class ResourcesSpec(_Spec):
    """Resources of a relaunch (scope relaunch only), derived from the failed run's."""

    memory: ResourceValue | None = Field(default=None, description="e.g. 2x or 16Gi")
    cpu: ResourceValue | None = Field(default=None, description="e.g. 2x, 4 or 500m")
    gpu: ResourceValue | None = Field(default=None, description="e.g. 2x or 2 (devices)")
    ephemeral_storage: ResourceValue | None = Field(default=None, description="e.g. 2x or 100Gi")
    max: ResourceCapsSpec | None = Field(default=None, description="caps, e.g. {memory: 64Gi}")


TaskVersion = Literal["same", "latest", "newer"]


class RelaunchKeys(_Spec):
    """What a relaunch (``scope: relaunch``) changes that a rerun cannot: resources and the
    task version."""

    resources: ResourcesSpec | None = Field(
        default=None, description="scope relaunch only: the relaunch's resources, from the failed run's"
    )
    task_version: TaskVersion | None = Field(
        default=None,
        description="scope relaunch only: same (the failed run's version, default), latest (the latest "
        "deployed), newer (wait until a version newer than the failed one is deployed)",
    )


class _EnvLabelsInputs(_Spec):
    env: Env = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    inputs: Inputs = Field(default_factory=dict)


class OverrideSpec(RelaunchKeys, RunSpecKeys, _EnvLabelsInputs):
    """Settings merged over the policy's own from an attempt on (``escalate``): env, labels,
    inputs, the RunSpec keys of ``retry`` and, for scope relaunch, resources and task_version."""


def _attempt_key(value: Any) -> Any:
    """An ``escalate`` key is an attempt number; YAML 1.1 reads ``true``/``yes``/``on`` (and
    ``false``/``no``/``off``) as bools, which pydantic would take as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError(
            f"escalate key {str(value).lower()} is not an attempt number (YAML reads true, yes, on, false, "
            "no and off as booleans); write the attempt the step starts at, e.g. 2: {...}"
        )
    return value


EscalateKey = Annotated[int, BeforeValidator(_attempt_key), Field(ge=1, le=MAX_ATTEMPTS)]


class DefaultsSpec(_Spec):
    """Merged under every policy's ``retry`` block in the same file."""

    scope: Scope | None = None
    max_attempts: int | None = Field(default=None, ge=0, le=MAX_ATTEMPTS)
    backoff: BackoffSpec | None = None
    # Not a policy key: accepted by the parser only to say why (``NAME_REMOVED``).
    name: Annotated[Any, AfterValidator(_removed_name)] = Field(
        default=None, json_schema_extra={"deprecated": True}
    )
    env: Env = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    inputs: Inputs = Field(default_factory=dict)


MAX_EVIDENCE_WINDOW = timedelta(days=90)


def _evidence_window(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0 or value > MAX_EVIDENCE_WINDOW:
        raise ValueError(
            f"must be a positive duration of at most {format_duration(MAX_EVIDENCE_WINDOW)}, "
            f"got {format_duration(value)}; write e.g. 7d"
        )
    return value


class GiveUpBelowSpec(_Spec):
    """Give up when the reruns of a failure's fingerprint over ``window`` (at least
    ``min_reruns`` of them) recovered less often than ``recovery_rate``."""

    recovery_rate: float = Field(ge=0, le=1, description="0..1, e.g. 0.1")
    min_reruns: int = Field(ge=1, le=MAX_BUDGET_RERUNS, description="reruns seen before judging, e.g. 10")
    window: Annotated[Duration, AfterValidator(_evidence_window)] = Field(description="e.g. 7d")


class RetrySpec(DefaultsSpec, RunSpecKeys, RelaunchKeys):
    """How to rerun what the policy matched."""

    escalate: dict[EscalateKey, OverrideSpec] = Field(default_factory=dict)
    budget: BudgetSpec | None = None
    give_up_below: GiveUpBelowSpec | None = None
    max_wait: Annotated[Duration, AfterValidator(lambda v: _positive(v))] | None = Field(
        default=None,
        description="task_version: newer only: how long to wait for a newer version before giving up "
        "(default 1d)",
    )


FailureClass = Literal[
    "oom",
    "gpu_fault",
    "interrupted",
    "image",
    "timeout",
    "queued_timeout",
    "runtime_timeout",
    "deadline",
    "retries_exhausted",
    "resource_exhausted",
    "non_recoverable",
    "user",
    "system",
]
# tests/policy pins that FailureClass lists exactly the keys of FAILURE_CLASSES.


class GpuFaultSelector(_Spec):
    """The error carries a GPU fault (``ErrorInfo.gpu_fault``) with one of these codes (Xid /
    SXid numbers), severities and kinds; an unset list matches any."""

    codes: list[Annotated[int, Field(ge=0, le=_UINT32_MAX)]] | None = Field(
        default=None, min_length=1, description="e.g. [48, 79]"
    )
    severities: list[Literal["USER", "WARN", "CRITICAL"]] | None = Field(default=None, min_length=1)
    kinds: list[Literal["XID", "SXID"]] | None = Field(default=None, min_length=1)


def _upper(value: Any) -> Any:
    """``system`` -> ``SYSTEM``: kinds and phases are case-insensitive in policy files."""
    return value.upper() if isinstance(value, str) else value


class ErrorSelector(_Spec):
    """Selectors on the failing action's error."""

    kinds: list[Annotated[ErrorKind, BeforeValidator(_upper)]] | None = Field(default=None, min_length=1)
    codes: list[NonEmpty] | None = Field(default=None, min_length=1)
    classes: list[FailureClass] | None = Field(
        default=None,
        min_length=1,
        description="flyte's failure taxonomy: "
        + "; ".join(f"{name}: {meaning}" for name, meaning in FAILURE_CLASSES.items()),
    )
    gpu_fault: GpuFaultSelector | None = None
    patterns: list[Pattern] | None = Field(default=None, min_length=1)
    exclude: list[Pattern] | None = Field(default=None, min_length=1)


class MatchSpecModel(_Spec):
    """Every given selector must hold; inside a list any element may."""

    projects: list[NonEmpty] | None = Field(default=None, min_length=1)
    domains: list[NonEmpty] | None = Field(default=None, min_length=1)
    tasks: list[NonEmpty] | None = Field(default=None, min_length=1, description="shell-style globs")
    action_tasks: list[NonEmpty] | None = Field(default=None, min_length=1, description="shell-style globs")
    labels: dict[str, str] = Field(default_factory=dict)
    phases: list[Annotated[Phase, BeforeValidator(_upper)]] | None = Field(default=None, min_length=1)
    error: ErrorSelector | None = None


def _retry_kind(value: Any) -> str:
    return "flag" if isinstance(value, bool) else "spec"


RetryField = Annotated[
    Annotated[RetrySpec, Tag("spec")] | Annotated[bool, Tag("flag")],
    Discriminator(_retry_kind),
]


class PolicySpec(_Spec):
    """One policy: a name, what it matches and how it retries (``retry: false`` = never)."""

    name: Annotated[
        str,
        AfterValidator(_policy_name),
        Field(json_schema_extra={"pattern": POLICY_NAME_PATTERN, "not": {"const": "global"}}),
    ]
    match: MatchSpecModel = Field(default_factory=MatchSpecModel)
    retry: RetryField = True
    description: str | None = None


def _check_name(value: str) -> str:
    import re

    if not re.fullmatch(POLICY_NAME_PATTERN, value):
        raise ValueError(
            f"invalid check name {value!r}: use 1-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _checked(value: str, info: ValidationInfo, check: str) -> str:
    """``value`` when the validation context's ``check`` (``cron_problem`` or
    ``timezone_problem``: why the value is unusable, or None) finds nothing wrong."""
    problem_of = (info.context or {}).get(check)
    problem = problem_of(value) if problem_of is not None else None
    if problem is not None:
        raise ValueError(problem)
    return value


def _cron(value: str, info: ValidationInfo) -> str:
    return _checked(value, info, "cron_problem")


def _timezone(value: str, info: ValidationInfo) -> str:
    return _checked(value, info, "timezone_problem")


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError(f"must be a positive duration, got {format_duration(value)}; write e.g. 2h")
    return value


RunPhase = Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]


class ReproSourceSpec(_Spec):
    """The reference run: a fixed ``run``, or the latest run of ``task`` matching the rest."""

    run: NonEmpty | None = Field(default=None, description="a fixed reference run (its name)")
    task: NonEmpty | None = Field(default=None, description="the latest run of this task is the reference")
    phase: RunPhase | None = Field(default=None, description="with task: the phase it ended in (SUCCEEDED)")
    labels: dict[str, str] = Field(default_factory=dict, description="with task: labels it carries")
    project: NonEmpty | None = Field(
        default=None, description="default: the daemon's first scope that names both (none under */*)"
    )
    domain: NonEmpty | None = Field(
        default=None, description="default: the daemon's first scope that names both (none under */*)"
    )


class ToleranceSpec(_Spec):
    """Two numbers are equal when ``|a - b| <= max(abs, rel * max(|a|, |b|))``."""

    rel: float = Field(default=0.0, ge=0, le=1)
    abs: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class ReproCompareSpec(_Spec):
    """What must match between the reference and the rerun."""

    phase: bool = Field(default=True, description="the rerun must end in the reference's phase")
    outputs: Literal["exact", "tolerance", "none"] = "exact"
    tolerance: ToleranceSpec | None = Field(default=None, description="with outputs: tolerance")
    ignore: list[NonEmpty] = Field(
        default_factory=list, description="output names (or paths like metrics.wall_time) not compared"
    )


class ReproductionSpec(_Spec):
    """A scheduled reproduction check: rerun a reference run, compare phase and outputs."""

    name: Annotated[
        str,
        AfterValidator(_check_name),
        Field(json_schema_extra={"pattern": POLICY_NAME_PATTERN}),
    ]
    schedule: Annotated[
        str,
        AfterValidator(_cron),
        Field(description="crontab: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"),
    ]
    timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        default="UTC", description="IANA timezone of the schedule, e.g. Europe/Paris"
    )
    source: ReproSourceSpec
    compare: ReproCompareSpec = Field(default_factory=ReproCompareSpec)
    env: Env = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    timeout: Annotated[Duration, AfterValidator(_positive)] = Field(
        default=timedelta(hours=2), description="a rerun not terminal by then counts as timeout"
    )
    misfire_grace: Annotated[Duration, AfterValidator(_positive)] | None = Field(
        default=None,
        description="after downtime, run the latest missed firing only if it is at most this old "
        "(default: always, once)",
    )
    description: str | None = None


class PolicyFile(_Spec):
    """A rerund policy file."""

    api_version: Literal["rerund/v1"] = Field(alias="apiVersion")
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    budgets: BudgetsSpec = Field(default_factory=BudgetsSpec)
    incidents: IncidentsSpec | None = None
    policies: list[PolicySpec] = Field(default_factory=list)
    reproductions: list[ReproductionSpec] = Field(default_factory=list)


def allowed_keys() -> dict[str, list[str]]:
    """Parent key -> keys allowed under it, for "unknown key" messages. A removed key that is
    kept only to explain its removal (``deprecated`` in the schema, e.g. ``retry.name``) is
    not allowed, so it is not listed."""

    def keys(model: type[BaseModel]) -> list[str]:
        return [
            f.alias or name
            for name, f in model.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("deprecated"))
        ]

    return {
        "": keys(PolicyFile),
        "defaults": keys(DefaultsSpec),
        "budgets": keys(BudgetsSpec),
        "global": keys(BudgetSpec),
        "budget": keys(BudgetSpec),
        "incidents": keys(IncidentsSpec),
        "open": keys(IncidentOpenSpec),
        "give_up_below": keys(GiveUpBelowSpec),
        "policies": keys(PolicySpec),
        "match": keys(MatchSpecModel),
        "error": keys(ErrorSelector),
        "gpu_fault": keys(GpuFaultSelector),
        "retry": keys(RetrySpec),
        "backoff": keys(BackoffSpec),
        "escalate": keys(OverrideSpec),
        "resources": keys(ResourcesSpec),
        "max": keys(ResourceCapsSpec),
        "reproductions": keys(ReproductionSpec),
        "source": keys(ReproSourceSpec),
        "compare": keys(ReproCompareSpec),
        "tolerance": keys(ToleranceSpec),
    }
