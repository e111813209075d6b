"""Load policy files into a compiled ``PolicySet``, or report every problem, located.

A path is a file or a directory; a directory contributes its ``*.yaml`` files in file-name
order, not recursively (so ``policies/tests/`` and ``policies/demo/`` are not policies).
Policies are evaluated in the order: paths as given, files in name order, policies in file
order. Each file's ``defaults`` apply to its own policies; at most one file may define the
global budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerund.core.backoff import Backoff
from rerund.core.compare import Tolerance
from rerund.core.cron import cron_problem, timezone_problem
from rerund.core.durations import format_duration, parse_duration
from rerund.core.incidents import IncidentRule
from rerund.core.model import Phase, RunOverrides, Scope
from rerund.core.repro import UNSCOPED, CompareSettings, ReproCheck, ReproSource
from rerund.core.resources import (
    RESOURCE_NAMES,
    ResourceRule,
    ResourceRules,
    parse_multiplier,
    parse_quantity,
)
from rerund.core.rules import (
    DEFAULT_MAX_WAIT,
    DEFAULT_PHASES,
    Budget,
    Escalation,
    GiveUpBelow,
    GpuFaultMatch,
    MatchSpec,
    NeverRetry,
    Origin,
    PolicySet,
    RetryPlan,
    Rule,
    subsumes,
)
from rerund.errors import PolicyError, PolicyProblem
from rerund.policy.model import (
    BackoffSpec,
    BudgetSpec,
    PolicyFile,
    PolicySpec,
    RelaunchKeys,
    ReproductionSpec,
    ResourcesSpec,
    RetrySpec,
    RunSpecKeys,
    allowed_keys,
)
from rerund.policy.source import Document, format_path, locate, read_document, validate

__all__ = [
    "BUILTIN_BACKOFF",
    "BUILTIN_MAX_ATTEMPTS",
    "expand_paths",
    "load_policies",
    "load_policies_and_warnings",
]

BUILTIN_MAX_ATTEMPTS = 3
BUILTIN_BACKOFF = Backoff(initial=parse_duration("30s"), factor=2.0, max=parse_duration("10m"), jitter=0.1)


POLICY_SUFFIXES = (".yaml", ".yml")
_POLICY_KEYS = frozenset({"apiVersion", "defaults", "budgets", "incidents", "policies", "reproductions"})


def expand_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[PolicyProblem]]:
    """Files to load: each file as given, each directory's ``*.yaml`` and ``*.yml`` in name
    order (not recursively)."""
    files: list[Path] = []
    problems: list[PolicyProblem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
            if not found:
                others = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
                has = (
                    f" (it has: {', '.join(others[:10])}{', ...' if len(others) > 10 else ''})"
                    if others
                    else ""
                )
                problems.append(
                    PolicyProblem(
                        str(path), 1, 1, "", f"no *.yaml or *.yml policy files in this directory{has}"
                    )
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(PolicyProblem(str(path), 1, 1, "", "no such file or directory; check the path"))
    return files, problems


def _not_a_policy_file(data: Mapping[str, Any]) -> str | None:
    """Why a YAML mapping is not a policy file at all (None when it looks like one): one
    clear problem instead of one per unknown key."""
    if _POLICY_KEYS & set(data):
        return None
    if "cases" in data:
        kind = "a policy test file: run it with `rerund test`"
    elif "tasks" in data or "runs" in data:
        kind = "a sandbox workload file: pass it to `rerund sandbox --workload`"
    elif {"endpoint", "org", "scopes", "state", "http"} & set(data):
        kind = "a settings file: pass it with --config"
    elif "run" in data and ("error" in data or "failed_at" in data):
        kind = "a failure document: pass it with `rerund explain --failure`"
    else:
        return (
            "not a policy file (no apiVersion); add 'apiVersion: rerund/v1' if it is one, or move it "
            "out of the policy directory"
        )
    return f"not a policy file (no apiVersion); it looks like {kind}"


@dataclass
class _Loaded:
    doc: Document
    spec: PolicyFile


def load_policies(paths: Sequence[str | Path]) -> PolicySet:
    """Load, validate and compile the policies at ``paths``.

    Raises ``PolicyError`` carrying every problem found in every file (not just the first),
    each located as ``file:line:col: yaml.path: message``. Warnings (see
    ``load_policies_and_warnings``) do not stop a load.
    """
    return load_policies_and_warnings(paths)[0]


def load_policies_and_warnings(
    paths: Sequence[str | Path], *, backend: str = "auto"
) -> tuple[PolicySet, tuple[PolicyProblem, ...]]:
    """``load_policies``, plus the warnings: valid settings that cannot do what they say (an
    ``escalate`` step after the last attempt ``max_attempts`` allows; under ``backend: oss``, a
    match on ``error.codes`` or ``error.gpu_fault``, which open-source Flyte never serves),
    located like problems. ``rerund check`` prints them, and fails on them with ``--strict``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files, problems = expand_paths(paths)
    loaded: list[_Loaded] = []
    allowed = allowed_keys()
    for path in files:
        doc, doc_problems = read_document(path)
        problems.extend(doc_problems)
        if doc is None:
            continue
        if doc.data is None:
            problems.append(
                PolicyProblem(
                    doc.file, 1, 1, "", "empty policy file; it needs at least 'apiVersion: rerund/v1'"
                )
            )
            continue
        if not isinstance(doc.data, dict):
            line, column, _ = locate(doc.node, ())
            problems.append(
                PolicyProblem(
                    doc.file,
                    line,
                    column,
                    "",
                    "expected a mapping with apiVersion, defaults, budgets, policies",
                )
            )
            continue
        why = _not_a_policy_file(doc.data)
        if why is not None:
            problems.append(PolicyProblem(doc.file, 1, 1, "", why))
            continue
        spec, spec_problems = _validate_file(doc, allowed)
        problems.extend(spec_problems)
        if spec is not None:
            loaded.append(_Loaded(doc, spec))
    warnings: list[PolicyProblem] = []
    rules, global_budget, compile_problems = _compile(loaded, warnings)
    if backend == "oss":
        warnings.extend(_oss_warnings(loaded))
    problems.extend(compile_problems)
    checks, check_problems = _reproductions(loaded)
    problems.extend(check_problems)
    incidents, incident_problems = _incidents(loaded)
    problems.extend(incident_problems)
    warnings.extend(_unscoped_sources(loaded))
    if problems:
        raise PolicyError(problems)
    policies = PolicySet(
        rules,
        global_budget=global_budget,
        sources=[str(f) for f in files],
        reproductions=checks,
        incidents=incidents,
    )
    return policies, tuple(warnings)


_OSS_UNSERVED = {
    "codes": (
        "open-source Flyte serves no error code (the executor keeps only the message and the kind), "
        "so this never matches under backend: oss; match on error.classes (read from the "
        "executor's messages) or error.patterns instead"
    ),
    "gpu_fault": (
        "open-source Flyte serves no gpu_fault (the executor keeps only the message and the kind), "
        "so this never matches under backend: oss; match on error.patterns in the message instead"
    ),
}


def _oss_warnings(loaded: Sequence[_Loaded]) -> list[PolicyProblem]:
    """A warning at each ``match.error.codes`` / ``match.error.gpu_fault`` (``backend: oss``)."""
    out: list[PolicyProblem] = []
    for item in loaded:
        for index, policy in enumerate(item.spec.policies):
            error = policy.match.error
            if error is None:
                continue
            for key, why in _OSS_UNSERVED.items():
                if getattr(error, key) is not None:
                    out.append(_at(item.doc, ("policies", index, "match", "error", key), why))
    return out


def _validate_file(
    doc: Document, allowed: dict[str, list[str]]
) -> tuple[PolicyFile | None, list[PolicyProblem]]:
    version = doc.data.get("apiVersion")
    if "apiVersion" in doc.data and version != "rerund/v1":
        line, column, _ = locate(doc.node, ("apiVersion",))
        return None, [
            PolicyProblem(
                doc.file,
                line,
                column,
                "apiVersion",
                f"unsupported apiVersion {version!r}; this rerund reads 'rerund/v1'",
            )
        ]
    return validate(
        PolicyFile,
        doc,
        allowed={k: list(v) for k, v in allowed.items()},
        context={"cron_problem": cron_problem, "timezone_problem": timezone_problem},
    )


def _at(doc: Document, loc: tuple[str | int, ...], message: str) -> PolicyProblem:
    line, column, path = locate(doc.node, loc)
    return PolicyProblem(doc.file, line, column, format_path(path), message)


def _named(
    doc: Document, loc: tuple[str | int, ...], what: str, name: str, seen: dict[str, Origin]
) -> tuple[tuple[str | int, ...], Origin, PolicyProblem | None]:
    """Where the ``what`` (policy, check) at ``loc`` is defined, and the problem when ``name``
    was defined before (in ``seen``, which remembers the first definition of each name)."""
    line, column, _ = locate(doc.node, loc)
    origin = Origin(doc.file, line, column)
    if name in seen:
        message = (
            f"duplicate {what} name {name!r}, first defined at {seen[name]}; {what} names must be unique"
        )
        return loc, origin, _at(doc, (*loc, "name"), message)
    seen[name] = origin
    return loc, origin, None


def _merge_backoff(*layers: BackoffSpec | None) -> Backoff:
    values: dict[str, Any] = {
        "initial": BUILTIN_BACKOFF.initial,
        "factor": BUILTIN_BACKOFF.factor,
        "max": BUILTIN_BACKOFF.max,
        "jitter": BUILTIN_BACKOFF.jitter,
    }
    for layer in layers:
        if layer is None:
            continue
        for key in values:
            value = getattr(layer, key)
            if value is not None:
                values[key] = value
    return Backoff(**values)


def _incidents(loaded: Sequence[_Loaded]) -> tuple[IncidentRule | None, list[PolicyProblem]]:
    """The ``incidents:`` settings (one file may define them, like the global budget)."""
    rule: IncidentRule | None = None
    where: str | None = None
    problems: list[PolicyProblem] = []
    for item in loaded:
        spec = item.spec.incidents
        if spec is None:
            continue
        line, column, _ = locate(item.doc.node, ("incidents",))
        if where is not None:
            problems.append(
                _at(
                    item.doc,
                    ("incidents",),
                    f"already defined at {where}; define incidents in one file only",
                )
            )
            continue
        where = f"{item.doc.file}:{line}:{column}"
        rule = IncidentRule(
            failures=spec.open.failures, within=spec.open.within, probe_every=spec.probe_every
        )
    return rule, problems


def _budget(spec: BudgetSpec | None) -> Budget | None:
    return None if spec is None else Budget(max_reruns=spec.max_reruns, per=spec.per)


def _compile(
    loaded: Sequence[_Loaded], warnings: list[PolicyProblem]
) -> tuple[list[Rule], Budget | None, list[PolicyProblem]]:
    rules: list[Rule] = []
    problems: list[PolicyProblem] = []
    global_budget: Budget | None = None
    global_where: str | None = None
    seen: dict[str, Origin] = {}
    no_patterns: list[int] = []  # positions of rules without error.patterns
    by_first_pattern: dict[str, list[int]] = {}  # pattern -> positions of rules listing it
    for item in loaded:
        doc, spec = item.doc, item.spec
        if spec.budgets.global_ is not None:
            line, column, _ = locate(doc.node, ("budgets", "global"))
            here = f"{doc.file}:{line}:{column}"
            if global_where is not None:
                problems.append(
                    _at(
                        doc,
                        ("budgets", "global"),
                        f"the global budget is already defined at {global_where}; define it in one file only",
                    )
                )
            else:
                global_budget, global_where = _budget(spec.budgets.global_), here
        for index, policy in enumerate(spec.policies):
            loc, origin, duplicate = _named(doc, ("policies", index), "policy", policy.name, seen)
            if duplicate is not None:
                problems.append(duplicate)
                continue
            rule, rule_problems = _rule(doc, spec, policy, loc, origin)
            if rule is not None and isinstance(rule.retry, RetryPlan):
                warnings.extend(_idle_steps(doc, rule.retry, loc))
            problems.extend(rule_problems)
            if rule is None:
                continue
            shadow = _shadowing(rule, rules, no_patterns, by_first_pattern)
            if shadow is not None:
                problems.append(
                    _at(
                        doc,
                        (*loc, "name"),
                        f"policy {policy.name!r} is unreachable: earlier policy {shadow.name!r} "
                        f"({shadow.origin}) matches every failure it would match; move it before "
                        f"{shadow.name!r} or narrow {shadow.name!r}",
                    )
                )
            position = len(rules)
            rules.append(rule)
            if rule.match.patterns is None:
                no_patterns.append(position)
            else:
                for pattern in rule.match.patterns:
                    by_first_pattern.setdefault(pattern, []).append(position)
    return rules, global_budget, problems


def _shadowing(
    rule: Rule, earlier: Sequence[Rule], no_patterns: list[int], by_pattern: dict[str, list[int]]
) -> Rule | None:
    """The first earlier rule that matches everything ``rule`` matches, or None.

    An earlier rule with ``patterns`` can only cover a rule whose patterns are all among its
    own, so only rules without patterns or sharing the first pattern are compared: linear in
    practice instead of quadratic.
    """
    candidates = list(no_patterns)
    if rule.match.patterns is not None:
        candidates.extend(by_pattern.get(rule.match.patterns[0], ()))
    for position in sorted(set(candidates)):
        if subsumes(earlier[position].match, rule.match):
            return earlier[position]
    return None


def _rule(
    doc: Document, spec: PolicyFile, policy: PolicySpec, loc: tuple[str | int, ...], origin: Origin
) -> tuple[Rule | None, list[PolicyProblem]]:
    m = policy.match
    err = m.error
    match = MatchSpec(
        projects=None if m.projects is None else frozenset(m.projects),
        domains=None if m.domains is None else frozenset(m.domains),
        tasks=None if m.tasks is None else tuple(dict.fromkeys(m.tasks)),
        action_tasks=None if m.action_tasks is None else tuple(dict.fromkeys(m.action_tasks)),
        labels=dict(m.labels),
        phases=DEFAULT_PHASES if m.phases is None else frozenset(Phase(p) for p in m.phases),
        kinds=None if err is None or err.kinds is None else frozenset(err.kinds),
        codes=None if err is None or err.codes is None else frozenset(err.codes),
        patterns=None if err is None or err.patterns is None else tuple(dict.fromkeys(err.patterns)),
        exclude=None if err is None or err.exclude is None else tuple(dict.fromkeys(err.exclude)),
        classes=None if err is None or err.classes is None else frozenset(err.classes),
        gpu_fault=None if err is None or err.gpu_fault is None else _gpu_match(err.gpu_fault),
    )
    if policy.retry is False:
        return Rule(policy.name, origin, match, NeverRetry()), []
    retry = policy.retry if isinstance(policy.retry, RetrySpec) else RetrySpec()
    d = spec.defaults
    backoff = _merge_backoff(d.backoff, retry.backoff)
    problems: list[PolicyProblem] = []
    if backoff.max < backoff.initial:
        where: tuple[str | int, ...] = (
            (*loc, "retry", "backoff") if retry.backoff is not None else ("defaults", "backoff")
        )
        problems.append(
            _at(
                doc,
                where,
                f"backoff max {format_duration(backoff.max)} is shorter than initial "
                f"{format_duration(backoff.initial)}; raise max or lower initial",
            )
        )
        return None, problems
    max_attempts = retry.max_attempts if retry.max_attempts is not None else d.max_attempts
    scope = retry.scope or d.scope or Scope.RUN
    if scope != Scope.RECOVER:
        forcing = [((*loc, "retry", "force_rerun_actions"), retry)] + [
            ((*loc, "retry", "escalate", at, "force_rerun_actions"), o)
            for at, o in sorted(retry.escalate.items())
        ]
        for where_key, keys in forcing:
            if keys.force_rerun_actions is not None:
                problems.append(
                    _at(
                        doc,
                        where_key,
                        f"force_rerun_actions only applies with scope: recover (it names succeeded actions a "
                        f"recover rerun re-executes), but this policy's scope is {scope.value}; set "
                        "scope: recover or remove force_rerun_actions",
                    )
                )
        if problems:
            return None, problems
    problems.extend(_relaunch_problems(doc, retry, loc, scope))
    if problems:
        return None, problems
    plan = RetryPlan(
        scope=scope,
        max_attempts=BUILTIN_MAX_ATTEMPTS if max_attempts is None else max_attempts,
        backoff=backoff,
        env={**d.env, **retry.env},
        labels={**d.labels, **retry.labels},
        inputs={**d.inputs, **retry.inputs},
        escalate=tuple(
            Escalation(
                at=at,
                env=dict(o.env),
                labels=dict(o.labels),
                inputs=dict(o.inputs),
                run=_run_overrides(o),
                resources=_resource_rules(o.resources),
                task_version=o.task_version,
            )
            for at, o in sorted(retry.escalate.items())
        ),
        budget=_budget(retry.budget),
        run=_run_overrides(retry),
        resources=_resource_rules(retry.resources),
        task_version=retry.task_version or "same",
        max_wait=retry.max_wait or DEFAULT_MAX_WAIT,
        give_up_below=None
        if retry.give_up_below is None
        else GiveUpBelow(
            recovery_rate=retry.give_up_below.recovery_rate,
            min_reruns=retry.give_up_below.min_reruns,
            window=retry.give_up_below.window,
        ),
    )
    return Rule(policy.name, origin, match, plan), problems


def _idle_steps(doc: Document, plan: RetryPlan, loc: tuple[str | int, ...]) -> list[PolicyProblem]:
    """Warnings for ``escalate`` steps that start after the last attempt ``max_attempts``
    allows: valid, but they never apply."""
    n = plan.max_attempts
    last = (
        "so there is no rerun; raise max_attempts or remove the step"
        if n == 0
        else f"so the last rerun is attempt {n}; lower the step to at most {n} or raise max_attempts"
    )
    return [
        _at(
            doc,
            (*loc, "retry", "escalate", step.at),
            f"step {step.at} never applies: max_attempts is {n}, {last}",
        )
        for step in plan.escalate
        if step.at > n
    ]


def _relaunch_problems(
    doc: Document, retry: RetrySpec, loc: tuple[str | int, ...], scope: Scope
) -> list[PolicyProblem]:
    """Relaunch keys where they cannot apply, and values above their own caps."""
    problems: list[PolicyProblem] = []
    blocks: list[tuple[tuple[str | int, ...], RelaunchKeys]] = [((*loc, "retry"), retry)] + [
        ((*loc, "retry", "escalate", at), o) for at, o in sorted(retry.escalate.items())
    ]
    if scope != Scope.RELAUNCH:
        for where, keys in blocks:
            for key in ("resources", "task_version"):
                if getattr(keys, key) is not None:
                    problems.append(
                        _at(
                            doc,
                            (*where, key),
                            f"{key} only applies with scope: relaunch (a rerun reuses the source action's "
                            "task spec, so its resources and task version cannot change), but this policy's "
                            f"scope is {scope.value}; set scope: relaunch or remove {key}",
                        )
                    )
        if retry.max_wait is not None:
            problems.append(
                _at(
                    doc,
                    (*loc, "retry", "max_wait"),
                    f"max_wait only applies with scope: relaunch and task_version: newer, but this policy's "
                    f"scope is {scope.value}; remove max_wait",
                )
            )
        return problems
    if retry.max_wait is not None and all(keys.task_version != "newer" for _, keys in blocks):
        problems.append(
            _at(
                doc,
                (*loc, "retry", "max_wait"),
                "max_wait bounds the wait of task_version: newer, which this policy never uses; "
                "set task_version: newer or remove max_wait",
            )
        )
    caps: dict[str, tuple[str, tuple[str | int, ...]]] = {}
    for where, keys in blocks:
        if keys.resources is not None and keys.resources.max is not None:
            for name in RESOURCE_NAMES:
                cap = getattr(keys.resources.max, name)
                if cap is not None:
                    caps[name] = (str(cap), where)
    for where, keys in blocks:
        res = keys.resources
        if res is None:
            continue
        for name in RESOURCE_NAMES:
            value = getattr(res, name)
            own = getattr(res.max, name) if res.max is not None else None
            cap_text = str(own) if own is not None else caps.get(name, ("", ()))[0]
            if value is None or not cap_text or parse_multiplier(str(value)) is not None:
                continue
            if parse_quantity(str(value)) > parse_quantity(cap_text):
                problems.append(
                    _at(
                        doc,
                        (*where, "resources", name),
                        f"{name}: {value} is above its max {cap_text}; a relaunch would be capped at "
                        f"{cap_text}: raise max or lower {name}",
                    )
                )
    return problems


def _resource_rules(spec: ResourcesSpec | None) -> ResourceRules:
    """A ``resources:`` block as the core's rules (values validated by the model)."""
    if spec is None:
        return ResourceRules()
    rules: dict[str, ResourceRule] = {}
    caps: dict[str, Any] = {}
    cap_texts: dict[str, str] = {}
    for name in RESOURCE_NAMES:
        value = getattr(spec, name)
        if value is not None:
            text = str(value).strip()
            factor = parse_multiplier(text)
            rules[name] = (
                ResourceRule(text=text, factor=factor)
                if factor is not None
                else ResourceRule(text=text, value=parse_quantity(text))
            )
        cap = getattr(spec.max, name) if spec.max is not None else None
        if cap is not None:
            caps[name] = parse_quantity(str(cap))
            cap_texts[name] = str(cap).strip()
    return ResourceRules(rules=rules, caps=caps, cap_texts=cap_texts)  # type: ignore[arg-type]


def _run_overrides(keys: RunSpecKeys) -> RunOverrides:
    """The RunSpec keys of a ``retry`` block or an ``escalate`` step as the core's value."""
    return RunOverrides(
        queue=keys.queue,
        interruptible=keys.interruptible,
        service_account=keys.service_account,
        overwrite_cache=keys.overwrite_cache,
        annotations=dict(keys.annotations),
        max_action_concurrency=keys.max_action_concurrency,
        force_rerun_actions=tuple(keys.force_rerun_actions or ()),
    )


def _gpu_match(spec: Any) -> GpuFaultMatch:
    return GpuFaultMatch(
        codes=None if spec.codes is None else frozenset(spec.codes),
        severities=None if spec.severities is None else frozenset(spec.severities),
        kinds=None if spec.kinds is None else frozenset(spec.kinds),
    )


def _reproductions(loaded: Sequence[_Loaded]) -> tuple[list[ReproCheck], list[PolicyProblem]]:
    """Compile every file's ``reproductions:``; names are unique across files."""
    checks: list[ReproCheck] = []
    problems: list[PolicyProblem] = []
    seen: dict[str, Origin] = {}
    for item in loaded:
        doc = item.doc
        for index, spec in enumerate(item.spec.reproductions):
            loc, origin, duplicate = _named(doc, ("reproductions", index), "check", spec.name, seen)
            if duplicate is not None:
                problems.append(duplicate)
            check, found = _check(doc, spec, loc, origin)
            problems.extend(found)
            if check is not None and seen[spec.name] == origin:
                checks.append(check)
    return checks, problems


def _unscoped_sources(loaded: Sequence[_Loaded]) -> list[PolicyProblem]:
    """A warning at every reproduction source that names no project or no domain: it runs in
    the daemon's first scope that names both, so under wildcard scopes alone (``*/*``) never."""
    return [
        _at(item.doc, ("reproductions", index, "source"), f"check {spec.name!r}: {UNSCOPED}")
        for item in loaded
        for index, spec in enumerate(item.spec.reproductions)
        if spec.source.project is None or spec.source.domain is None
    ]


def _check(
    doc: Document, spec: ReproductionSpec, loc: tuple[str | int, ...], origin: Origin
) -> tuple[ReproCheck | None, list[PolicyProblem]]:
    problems: list[PolicyProblem] = []
    src, cmp = spec.source, spec.compare
    if (src.run is None) == (src.task is None):
        what = "both" if src.run is not None else "neither"
        problems.append(
            _at(
                doc,
                (*loc, "source"),
                f"source names {what} of run and task; give exactly one: {{run: NAME}} for a fixed "
                "reference run, or {task: NAME} for the latest run of a task",
            )
        )
    elif src.run is not None:
        for key in ("phase", "labels"):
            if key in src.model_fields_set:
                problems.append(
                    _at(
                        doc,
                        (*loc, "source", key),
                        f"{key} only selects among runs of a task; with a fixed run it does nothing: "
                        f"remove it, or use task: instead of run:",
                    )
                )
    if cmp.outputs == "tolerance" and cmp.tolerance is None:
        problems.append(
            _at(
                doc,
                (*loc, "compare", "outputs"),
                "outputs: tolerance needs a tolerance, e.g. tolerance: {rel: 1e-6, abs: 0}",
            )
        )
    if cmp.tolerance is not None and cmp.outputs != "tolerance":
        problems.append(
            _at(
                doc,
                (*loc, "compare", "tolerance"),
                f"tolerance is only used with outputs: tolerance, but outputs is {cmp.outputs}; "
                "set outputs: tolerance or remove tolerance",
            )
        )
    if problems:
        return None, problems
    return (
        ReproCheck(
            name=spec.name,
            schedule=spec.schedule,
            timezone=spec.timezone,
            source=ReproSource(
                run=src.run,
                task=src.task,
                phase=src.phase or "SUCCEEDED",
                labels=dict(src.labels),
                project=src.project,
                domain=src.domain,
            ),
            compare=CompareSettings(
                phase=cmp.phase,
                outputs=cmp.outputs,
                tolerance=(
                    None if cmp.tolerance is None else Tolerance(rel=cmp.tolerance.rel, abs=cmp.tolerance.abs)
                ),
                ignore=tuple(dict.fromkeys(cmp.ignore)),
            ),
            env=dict(spec.env),
            labels=dict(spec.labels),
            timeout=spec.timeout,
            misfire_grace=spec.misfire_grace,
            origin=str(origin),
            description=spec.description,
        ),
        [],
    )
