"""The decision: what to do about one failure, purely, explainably and fast.

``decide(failure, policies, now)`` is a pure function of values: no I/O, no clock read (the
caller passes ``now``), no logging. ``explain`` makes the same decision and also returns a
human trace of every policy tried and every step after the match; a property test pins that
both always agree.

Semantics (the README, ``explain`` and the tests say the same):

1. A run labelled ``rerund-repro`` is the rerun of a reproduction check: its failure is the
   check's result, so it is ``ignore``d before any policy is tried. A ``rerund-attempt`` label
   rerund never writes (not a whole number 0..``MAX_ATTEMPT``: forged or damaged) is
   ``ignore``d too, with the label in the reason (``rerund.core.lineage.parse_attempt``).
1b. A failure of class ``non_recoverable`` (the task raised flyte's ``NonRecoverableError``:
   "retries are irrelevant") is ``ignore``d by a built-in rule, ahead of every policy.
2. Policies are tried in order; the first whose ``match`` holds decides. None -> ``ignore``.
3. ``retry: false`` -> ``ignore``, naming the policy.
4. ``attempt`` counts reruns already issued in the lineage; ``attempt >= max_attempts`` ->
   ``give_up``.
5. Otherwise rerun attempt ``n = attempt + 1``, due at ``failed_at + delay(n)`` (deterministic
   jittered exponential backoff), under the name ``<root>-retry-<n>`` (a function of the
   lineage attempt only, so every replica computes the same one), carrying the labels
   ``rerund-root``, ``rerund-attempt``, ``rerund-policy`` over the merged labels.
5b. Every decision carries the failure's ``fingerprint`` (``rerund.core.fingerprints``): its
   task, error kind, classes, code and normalised message, hashed; never the run or lineage.
6. If the global budget or the policy's budget has no slot left in its sliding window, the
   decision is ``defer`` with ``not_before`` = when the window frees a slot.
7. A rerun (and a defer) carries the policy's RunSpec ``overrides`` (queue, interruptible, ...)
   for its attempt; a rerun's reason ends with what it changes in the source's RunSpec besides
   rerund's lineage labels (exactly, when ``failure.spec`` is known; see ``rerund.core.runspec``).
   The reason is public (log line, ledger, ``explain``): it names env keys and input keys but
   shows no env value and no input value that could be a secret (``rerund.core.redact``).
8. Scope ``relaunch`` runs the deployed task afresh (``RelaunchTarget``): the task version is
   the failed one (``same``), the latest deployed (``latest``), or — ``newer`` — one deployed
   after the failed one: until the daemon's task listing shows such a version the decision is
   a ``WaitForVersion`` defer, and at ``failed_at + max_wait`` a ``give_up``. Resources are
   the failed run's, changed by the policy's ``resources`` rules (``rerund.core.resources``);
   a relaunch on the same version that would not get more of any resource (every rule is at
   its cap) is a ``give_up``: it would fail the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from rerund.core.durations import format_duration
from rerund.core.fingerprints import failure_fingerprint, fingerprint
from rerund.core.incidents import canaries_of
from rerund.core.lineage import MAX_ATTEMPT, parse_attempt
from rerund.core.model import (
    Decision,
    Defer,
    Failure,
    GiveUp,
    Ignore,
    RelaunchTarget,
    Rerun,
    RunOverrides,
    Scope,
    WaitForVersion,
)
from rerund.core.names import NAME_RULE, rerun_name
from rerund.core.redact import input_change
from rerund.core.resources import ResourcesView, plan_resources
from rerund.core.rules import GLOBAL_BUDGET, Budget, NeverRetry, PolicySet, RetryPlan, Rule
from rerund.core.runs import (
    LABEL_ATTEMPT,
    LABEL_CANARIES,
    LABEL_POLICY,
    LABEL_REPRO,
    LABEL_ROOT,
    ROOT_ACTION,
)
from rerund.core.runspec import SDK_ENV_KEYS, expected_rerun_spec, override_changes, spec_changes
from rerund.core.taxonomy import classify
from rerund.core.times import iso

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_POLICY",
    "LABEL_ROOT",
    "Explanation",
    "decide",
    "explain",
    "iso",
    "rerun_changes",
]


@dataclass(frozen=True)
class Explanation:
    """A decision and the trace that led to it (one human line per step). ``changes`` is the
    diff of the rerun's RunSpec against the source's (``rerun_changes``); empty unless the
    decision is a ``Rerun`` or a ``Defer``."""

    decision: Decision
    trace: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def rerun_changes(failure: Failure, decision: Rerun | Defer, *, lineage: bool = True) -> list[str]:
    """What the rerun of ``decision`` changes in ``failure``'s RunSpec, one line per field.

    Exact when ``failure.spec`` is known, else each key the rerun sets against "the source's
    value". ``lineage=False`` leaves rerund's own lineage labels out (for one-line reasons).
    """
    out = _changes(
        failure, decision.env, decision.labels, decision.inputs, decision.overrides, lineage=lineage
    )
    return out + relaunch_changes(failure, decision.relaunch)


def relaunch_changes(failure: Failure, target: RelaunchTarget | None) -> list[str]:
    """What a relaunch changes besides the RunSpec: the task version and the resources."""
    if target is None:
        return []
    failed = failure.task_version or "unknown"
    version = target.version or "the latest deployed"
    out = [
        f"task version: {failed} -> {version}"
        if target.version != failure.task_version
        else f"task version: {failed} (same)"
    ]
    if target.resources is None:
        out.append("resources: as deployed with that version")
    else:
        out += [f"resources {line}" for line in target.resource_changes]
    return out


# The lines ``_changes`` leaves out with ``lineage=False``: rerund's own lineage labels.
_OWN_LABEL_LINES = tuple(f"labels {k}:" for k in (LABEL_ROOT, LABEL_ATTEMPT, LABEL_POLICY, LABEL_CANARIES))


def _changes(
    failure: Failure,
    env: Mapping[str, str],
    labels: Mapping[str, str],
    inputs: Mapping[str, Any],
    overrides: RunOverrides,
    *,
    lineage: bool,
) -> list[str]:
    out: list[str]
    if failure.spec is None:
        out = override_changes(env=env, labels=labels, overrides=overrides)
    else:
        after = expected_rerun_spec(failure.spec, env=env, labels=labels, overrides=overrides)
        out = spec_changes(failure.spec, after)
        added = [k for k in SDK_ENV_KEYS if k not in failure.spec.env and k not in env]
        if added:
            out.append(f"env {', '.join(added)}: added by the flyte SDK (absent from the source run)")
        if overrides.force_rerun_actions:
            out.append("force_rerun_actions: " + ", ".join(overrides.force_rerun_actions))
    if not lineage:
        out = [line for line in out if not line.startswith(_OWN_LABEL_LINES)]
    out += [input_change(k, v) for k, v in sorted(inputs.items())]  # values only when not secret
    return out


def decide(failure: Failure, policies: PolicySet, now: datetime) -> Decision:
    """The decision for ``failure`` under ``policies`` at time ``now`` (pure, deterministic).

    Invariants: same inputs -> same decision; a ``rerun`` never has ``attempt`` above the
    policy's ``max_attempts``; its ``name`` is a valid run name, distinct per (root, attempt).
    """
    return _decide(failure, policies, now, None)


def explain(failure: Failure, policies: PolicySet, now: datetime) -> Explanation:
    """``decide`` plus a trace: per policy tried, which selector held or failed and why."""
    trace: list[str] = []
    decision = _decide(failure, policies, now, trace)
    changes = rerun_changes(failure, decision) if isinstance(decision, Rerun | Defer) else []
    return Explanation(decision=decision, trace=trace, changes=changes)


def _decide(failure: Failure, policies: PolicySet, now: datetime, trace: list[str] | None) -> Decision:
    """The decision, with the failure's fingerprint on it (whatever the decision is): its
    ``failure_fingerprint``, of the failure classes ``_choose`` reads too (classified once).
    Each decision is built with it (``fp``), not copied to add it: a reload decides thousands."""
    error = failure.error
    classes = classify(error, failure.phase)
    fp = fingerprint(
        task=failure.action_task, kind=error.kind, classes=classes, code=error.code, message=error.message
    )
    return _choose(failure, policies, now, trace, classes, fp)


def _choose(
    failure: Failure,
    policies: PolicySet,
    now: datetime,
    trace: list[str] | None,
    classes: frozenset[str],
    fp: str,
) -> Decision:
    run = failure.run
    check = failure.labels.get(LABEL_REPRO)
    if check is not None:
        reason = (
            f"run {run!r} is a rerun of reproduction check {check!r}: its failure is the check's "
            "result (`rerund repro history`), it is not rerun"
        )
        if trace is not None:
            trace.append(f"label {LABEL_REPRO}={check}: a reproduction rerun, never retried: ignore")
        return Ignore(reason=reason, source_run=run, root=failure.root, fingerprint=fp)
    if parse_attempt(failure.labels) is None:
        shown = repr(failure.labels[LABEL_ATTEMPT])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        reason = (
            f"run {run!r} has label {LABEL_ATTEMPT}={shown}, which rerund never writes (a whole "
            f"number 0..{MAX_ATTEMPT}): a forged or damaged lineage is not rerun"
        )
        if trace is not None:
            trace.append(f"label {LABEL_ATTEMPT}={shown} is not an attempt number: ignore")
        return Ignore(reason=reason, source_run=run, root=failure.root, fingerprint=fp)
    if "non_recoverable" in classes:
        reason = (
            f"run {run!r} failed with NonRecoverableError (code {failure.error.code!r}): the task "
            "declared that retries are irrelevant; a built-in rule ahead of every policy never reruns it"
        )
        if trace is not None:
            trace.append(
                "built-in rule non_recoverable: the error is flyte's NonRecoverableError, never rerun "
                "(checked before any policy): ignore"
            )
        return Ignore(reason=reason, source_run=run, root=failure.root, fingerprint=fp)
    rule = policies.first_match(failure, trace)
    if rule is None:
        reason = f"no policy matches run {run!r} ({len(policies)} tried): it is not rerun"
        if trace is not None:
            trace.append("no policy matched: ignore")
        return Ignore(reason=reason, source_run=run, root=failure.root, fingerprint=fp)
    if isinstance(rule.retry, NeverRetry):
        reason = f"policy {rule.name!r} never reruns run {run!r} (retry: false)"
        if trace is not None:
            trace.append(f"policy {rule.name!r} has retry: false: ignore")
        return Ignore(policy=rule.name, reason=reason, source_run=run, root=failure.root, fingerprint=fp)
    return _plan(failure, policies, rule, rule.retry, now, trace, fp)


def _plan(
    failure: Failure,
    policies: PolicySet,
    rule: Rule,
    plan: RetryPlan,
    now: datetime,
    trace: list[str] | None,
    fp: str,
) -> Decision:
    """The decision of ``rule`` (whose retry plan is ``plan``) for ``failure`` (fingerprint ``fp``)."""
    run, root, name = failure.run, failure.root, rule.name
    n = failure.attempt + 1
    # Canary reruns of an incident (``rerund.core.incidents``) are not counted against
    # max_attempts; the attempt number (and so the rerun's name) still advances.
    canaries = canaries_of(failure.labels, failure.attempt)
    counted = failure.attempt - canaries
    not_counted = f" ({canaries} canary rerun(s) of an incident not counted)" if canaries else ""
    if trace is not None:
        trace.append(
            f"attempt: lineage {root!r} has {failure.attempt} rerun(s) so far{not_counted}; "
            f"the next would be attempt {counted + 1} of max_attempts={plan.max_attempts}"
        )
    if counted >= plan.max_attempts:
        reason = (
            f"policy {name!r} gives up on run {run!r}: "
            f"attempt {counted + 1} would exceed max_attempts={plan.max_attempts}{not_counted}"
        )
        if trace is not None:
            trace.append("give up")
        return GiveUp(policy=name, reason=reason, attempt=n, source_run=run, root=root, fingerprint=fp)
    hopeless = _hopeless(failure, plan, trace)
    if hopeless is not None:
        reason = f"policy {name!r} gives up on run {run!r}: {hopeless}"
        if trace is not None:
            trace.append("give up")
        return GiveUp(policy=name, reason=reason, attempt=n, source_run=run, root=root, fingerprint=fp)

    scope, action, scope_note = plan.scope, None, ""
    if scope == Scope.FAILED_ACTION:
        if failure.action in ("", ROOT_ACTION):
            scope = Scope.RUN
            scope_note = "scope failed_action falls back to run: the failing action is the root action a0"
        else:
            action = failure.action
    scope_text = f"scope {scope.value}" + (f" (action {action!r})" if action else "")
    if scope_note:  # short in the reason (a log line); the trace says it in full
        scope_text += " (the root action a0 failed)"
    new_name = rerun_name(root=root, attempt=n)
    relaunch: RelaunchTarget | None = None
    if scope == Scope.RELAUNCH:
        chosen = _relaunch_target(failure, plan, n, now, trace)
        if not isinstance(chosen, RelaunchTarget):
            return _waiting(failure, rule.name, plan, n, new_name, chosen, trace, fp)
        relaunch = chosen
        scope_text = (
            f"scope relaunch (task {relaunch.task!r} version "
            f"{relaunch.version or 'latest'!r}, task_version: {relaunch.task_version})"
        )
    env, labels, inputs = plan.overrides(n)
    overrides = plan.run_overrides(n)
    if scope != Scope.RECOVER and overrides.force_rerun_actions:
        # The loader refuses this; a PolicySet built by hand may still carry it.
        overrides = overrides.model_copy(update={"force_rerun_actions": ()})
    labels.update({LABEL_ROOT: root, LABEL_ATTEMPT: str(n), LABEL_POLICY: name})
    if canaries:
        labels[LABEL_CANARIES] = str(canaries)
    delay = plan.backoff.delay(root, n)
    due = _later(failure.failed_at, delay)
    if trace is not None:
        b = plan.backoff
        base = b.base(n)
        trace.append(
            f"backoff: base = min({format_duration(b.initial)} * {b.factor:g}^{n - 1}, "
            f"{format_duration(b.max)}) = {format_duration(base)}; jitter ±{b.jitter:g} "
            f"-> delay {format_duration(delay)}; due at {iso(due)}"
        )
        trace.append(
            f"scope {scope.value}"
            + (f" (action {action!r})" if action else "")
            + (f"; {scope_note}" if scope_note else "")
        )
        trace.append(f"name: {NAME_RULE} of lineage {root!r} -> {new_name!r}")

    common = _PlannedFields(
        fingerprint=fp,
        policy=name,
        attempt=n,
        scope=scope,
        source_run=run,
        action=action,
        name=new_name,
        env=env,
        labels=labels,
        inputs=inputs,
        overrides=overrides,
        root=root,
        relaunch=relaunch,
    )
    changed = _changes(failure, env, labels, inputs, overrides, lineage=False)
    changed += relaunch_changes(failure, relaunch)
    change_text = "; changes: " + (", ".join(changed) if changed else "none besides the lineage labels")
    if trace is not None:
        trace.append(change_text.removeprefix("; "))
    blocked = _blocking_budget(failure, policies, rule.name, plan, now, trace)
    if blocked is not None:
        budget_name, budget, used, frees = blocked
        verb = "relaunch" if relaunch is not None else "attempt"
        reason = (
            f"policy {name!r} defers {verb} {n} of run {run!r}: budget {budget_name!r} has used "
            f"{used} of {budget.max_reruns} reruns per {format_duration(budget.per)}; "
            f"a slot frees at {iso(frees)}"
        )
        if trace is not None:
            trace.append(f"defer until {iso(frees)}")
        return Defer(reason=reason, not_before=frees, budget=budget_name, **common)

    verb = "relaunches" if relaunch is not None else "reruns"
    reason = (
        f"policy {name!r} {verb} run {run!r} as {new_name!r}: attempt {counted + 1} of "
        f"max_attempts={plan.max_attempts}{not_counted}, {scope_text}, due at {iso(due)} "
        f"after a {format_duration(delay)} backoff" + change_text
    )
    if trace is not None:
        trace.append(f"{'relaunch' if relaunch is not None else 'rerun'} as {new_name!r} at {iso(due)}")
    return Rerun(reason=reason, not_before=due, **common)


class _PlannedFields(TypedDict):
    """What a ``Rerun`` and the ``Defer`` of the same plan share (typed keyword arguments)."""

    fingerprint: str
    policy: str
    attempt: int
    scope: Scope
    source_run: str
    action: str | None
    name: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    inputs: Mapping[str, Any]
    overrides: RunOverrides
    root: str
    relaunch: RelaunchTarget | None


@dataclass(frozen=True)
class _Wait:
    """No newer version yet: wait until ``deadline`` (``give_up`` then, or now: ``expired``)."""

    failed_version: str
    deadline: datetime
    expired: bool


@dataclass(frozen=True)
class _NoGain:
    """A relaunch on the same version that would get no more of any resource."""

    why: str


def _relaunch_target(
    failure: Failure, plan: RetryPlan, n: int, now: datetime, trace: list[str] | None
) -> RelaunchTarget | _Wait | _NoGain:
    """The version and resources relaunch ``n`` runs with, or why there is none (yet)."""
    rules, version_rule = plan.relaunch_settings(n)
    failed, latest = failure.task_version, failure.latest_version
    shown_latest = "not listed yet" if latest is None else repr(latest)
    if version_rule == "same":
        version = failed
        why = (
            f"the failed run's version {failed!r}"
            if failed
            else "the failed run's version is unknown: latest"
        )
    elif version_rule == "latest":
        version = latest or ""
        why = (
            f"the latest deployed ({shown_latest}; resolved when relaunched)"
            if not latest
            else (f"the latest deployed, {latest!r}")
        )
    else:
        if latest is not None and latest != failed:
            version, why = latest, f"{latest!r}, deployed after the failed version {failed!r}"
        else:
            deadline = _later(failure.failed_at, plan.max_wait)
            if trace is not None:
                trace.append(
                    f"task_version: newer: task {failure.task!r} failed on version {failed!r}; latest "
                    f"deployed: {shown_latest}; no newer version yet "
                    f"(max_wait={format_duration(plan.max_wait)}, until {iso(deadline)})"
                )
            return _Wait(failed_version=failed, deadline=deadline, expired=now >= deadline)
    if trace is not None:
        trace.append(f"task_version: {version_rule}: task {failure.task!r} version {why}")
    if not rules:
        if trace is not None:
            trace.append("resources: as deployed with that version (no resources: rules)")
        return RelaunchTarget(task=failure.task, version=version, task_version=version_rule)
    source = failure.resources if failure.resources is not None else ResourcesView()
    planned = plan_resources(source, rules)
    if trace is not None:
        trace.append(
            f"resources: {rules.describe()} over the failed run's {source.describe()} -> "
            f"{planned.target.describe()}" + ("; " + "; ".join(planned.notes) if planned.notes else "")
        )
    if not planned.grew and version == failed:
        detail = "; ".join(planned.notes) or f"{rules.describe()} leaves {source.describe()} as it is"
        return _NoGain(
            why=f"a relaunch on the same task version {failed!r} would get no more resources ({detail}): "
            "it would fail the same way"
        )
    return RelaunchTarget(
        task=failure.task,
        version=version,
        task_version=version_rule,
        resources=planned.target,
        resource_changes=planned.changes + planned.notes,
    )


def _waiting(
    failure: Failure,
    name: str,
    plan: RetryPlan,
    n: int,
    new_name: str,
    why: _Wait | _NoGain,
    trace: list[str] | None,
    fp: str,
) -> Decision:
    """The ``give_up`` or ``WaitForVersion`` of a relaunch by policy ``name`` that cannot run now."""
    run, root, task = failure.run, failure.root, failure.task
    if isinstance(why, _NoGain):
        if trace is not None:
            trace.append("give up: the relaunch would change nothing that can help")
        return GiveUp(
            policy=name,
            reason=f"policy {name!r} gives up on run {run!r}: {why.why}",
            attempt=n,
            source_run=run,
            root=root,
            fingerprint=fp,
        )
    wait = format_duration(plan.max_wait)
    if why.expired:
        if trace is not None:
            trace.append("give up: max_wait is over")
        return GiveUp(
            policy=name,
            reason=(
                f"policy {name!r} gives up on run {run!r}: no version of task {task!r} newer than "
                f"{why.failed_version!r} was deployed within max_wait={wait} (until {iso(why.deadline)})"
            ),
            attempt=n,
            source_run=run,
            root=root,
            fingerprint=fp,
        )
    env, labels, inputs = plan.overrides(n)
    labels.update({LABEL_ROOT: root, LABEL_ATTEMPT: str(n), LABEL_POLICY: name})
    reason = (
        f"policy {name!r} waits for a fix of task {task!r}: run {run!r} failed on version "
        f"{why.failed_version!r}; relaunch {n} runs as {new_name!r} once a newer version is deployed "
        f"(the daemon lists the task's versions at each resync), at the latest until "
        f"{iso(why.deadline)} (max_wait={wait}), then gives up"
    )
    if trace is not None:
        trace.append(f"wait for a newer version of {task!r} until {iso(why.deadline)}")
    return WaitForVersion(
        policy=name,
        reason=reason,
        attempt=n,
        scope=Scope.RELAUNCH,
        source_run=run,
        name=new_name,
        env=env,
        labels=labels,
        inputs=inputs,
        overrides=plan.run_overrides(n),
        root=root,
        not_before=why.deadline,
        task=task,
        failed_version=why.failed_version,
        relaunch=RelaunchTarget(task=task, version="", task_version="newer"),
        fingerprint=fp,
    )


def _hopeless(failure: Failure, plan: RetryPlan, trace: list[str] | None) -> str | None:
    """Why history says reruns of this failure do not recover (``give_up_below``), or None."""
    rule = plan.give_up_below
    if rule is None:
        return None
    window = format_duration(rule.window)
    fingerprint = failure_fingerprint(failure)
    seen = failure.evidence.get(window)
    if seen is None:
        if trace is not None:
            trace.append(
                f"give_up_below: no history of fingerprint {fingerprint} over {window} is known "
                "(no ledger): not applied"
            )
        return None
    reruns, recovered = seen
    evidence = f"reruns of fingerprint {fingerprint} recovered {recovered} of {reruns} in {window}"
    rate = f"recovery_rate={rule.recovery_rate:g}, min_reruns={rule.min_reruns}"
    if reruns >= rule.min_reruns and recovered < rule.recovery_rate * reruns:
        if trace is not None:
            trace.append(f"give_up_below: {evidence}: below {rate}")
        return f"{evidence}, below {rate} (give_up_below)"
    if trace is not None:
        why = (
            f"fewer than min_reruns={rule.min_reruns}" if reruns < rule.min_reruns else f"at or above {rate}"
        )
        trace.append(f"give_up_below: {evidence}: {why}, rerun")
    return None


def _later(when: datetime, delta: timedelta) -> datetime:
    """``when + delta``, or the latest representable time when that is past year 9999 (a
    failure document may say ``failed_at: 9999-12-31T00:00:00Z``): ``decide`` is total."""
    try:
        return when + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _blocking_budget(
    failure: Failure, policies: PolicySet, name: str, plan: RetryPlan, now: datetime, trace: list[str] | None
) -> tuple[str, Budget, int, datetime] | None:
    """The exhausted budget (the global one, or policy ``name``'s) that frees a slot last
    (name, budget, used, frees_at), or None."""
    candidates = [(GLOBAL_BUDGET, policies.global_budget), (name, plan.budget)]
    worst: tuple[str, Budget, int, datetime] | None = None
    for budget_name, budget in candidates:
        if budget is None:
            continue
        used = failure.budget_used.get(budget_name, 0)
        window = format_duration(budget.per)
        if used < budget.max_reruns:
            if trace is not None:
                trace.append(
                    f"budget {budget_name!r}: {used} of {budget.max_reruns} reruns used "
                    f"per {window}: a slot is free"
                )
            continue
        oldest = failure.budget_oldest.get(budget_name)
        frees = max(_later(oldest, budget.per), now) if oldest is not None else _later(now, budget.per)
        if trace is not None:
            trace.append(
                f"budget {budget_name!r}: {used} of {budget.max_reruns} reruns used per {window}: "
                f"exhausted, a slot frees at {iso(frees)}"
            )
        if worst is None or frees > worst[3]:
            worst = (budget_name, budget, used, frees)
    return worst
