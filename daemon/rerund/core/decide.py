"""The decision: what to do about one failure, purely, explainably and fast.

``decide(failure, policies, now)`` is a pure function of values: no I/O, no clock read (the
caller passes ``now``), no logging. ``explain`` makes the same decision and also returns a
human trace of every policy tried and every step after the match; a property test pins that
both always agree.

Semantics (the README, ``explain`` and the tests say the same):

1. A run labelled ``rerund-repro`` is the rerun of a reproduction check: its failure is the
   check's result, so it is ``ignore``d before any policy is tried.
2. Policies are tried in order; the first whose ``match`` holds decides. None -> ``ignore``.
3. ``retry: false`` -> ``ignore``, naming the policy.
4. ``attempt`` counts reruns already issued in the lineage; ``attempt >= max_attempts`` ->
   ``give_up``.
5. Otherwise rerun attempt ``n = attempt + 1``, due at ``failed_at + delay(n)`` (deterministic
   jittered exponential backoff), under a deterministic DNS-1035 name, carrying the labels
   ``rerund-root``, ``rerund-attempt``, ``rerund-policy`` over the merged labels.
6. If the global budget or the policy's budget has no slot left in its sliding window, the
   decision is ``defer`` with ``not_before`` = when the window frees a slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rerund.core.durations import format_duration
from rerund.core.model import Decision, Defer, Failure, GiveUp, Ignore, Rerun, Scope
from rerund.core.names import rerun_name
from rerund.core.rules import GLOBAL_BUDGET, Budget, PolicySet, Rule
from rerund.core.runs import LABEL_ATTEMPT, LABEL_POLICY, LABEL_REPRO, LABEL_ROOT, ROOT_ACTION
from rerund.core.times import iso

__all__ = ["LABEL_ATTEMPT", "LABEL_POLICY", "LABEL_ROOT", "Explanation", "decide", "explain", "iso"]


@dataclass(frozen=True)
class Explanation:
    """A decision and the trace that led to it (one human line per step)."""

    decision: Decision
    trace: list[str] = field(default_factory=list)


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
    return Explanation(decision=decision, trace=trace)


def _decide(failure: Failure, policies: PolicySet, now: datetime, trace: list[str] | None) -> Decision:
    run = failure.run
    check = failure.labels.get(LABEL_REPRO)
    if check is not None:
        reason = (
            f"run {run!r} is a rerun of reproduction check {check!r}: its failure is the check's "
            "result (`rerund repro history`), it is not rerun"
        )
        if trace is not None:
            trace.append(f"label {LABEL_REPRO}={check}: a reproduction rerun, never retried: ignore")
        return Ignore(reason=reason, source_run=run, root=failure.root)
    rule = policies.first_match(failure, trace)
    if rule is None:
        reason = f"no policy matches run {run!r} ({len(policies)} tried): it is not rerun"
        if trace is not None:
            trace.append("no policy matched: ignore")
        return Ignore(reason=reason, source_run=run, root=failure.root)
    if rule.retry is None:
        reason = f"policy {rule.name!r} never reruns run {run!r} (retry: false)"
        if trace is not None:
            trace.append(f"policy {rule.name!r} has retry: false: ignore")
        return Ignore(policy=rule.name, reason=reason, source_run=run, root=failure.root)
    return _plan(failure, policies, rule, now, trace)


def _plan(
    failure: Failure, policies: PolicySet, rule: Rule, now: datetime, trace: list[str] | None
) -> Decision:
    plan = rule.retry
    assert plan is not None
    run, root, name = failure.run, failure.root, rule.name
    n = failure.attempt + 1
    if trace is not None:
        trace.append(
            f"attempt: lineage {root!r} has {failure.attempt} rerun(s) so far; "
            f"the next would be attempt {n} of max_attempts={plan.max_attempts}"
        )
    if failure.attempt >= plan.max_attempts:
        reason = (
            f"policy {name!r} gives up on run {run!r}: "
            f"attempt {n} would exceed max_attempts={plan.max_attempts}"
        )
        if trace is not None:
            trace.append("give up")
        return GiveUp(policy=name, reason=reason, attempt=n, source_run=run, root=root)

    scope, action, scope_note = plan.scope, None, ""
    if scope == Scope.FAILED_ACTION:
        if failure.action in ("", ROOT_ACTION):
            scope = Scope.RUN
            scope_note = "scope failed_action falls back to run: the failing action is the root action a0"
        else:
            action = failure.action
    scope_text = f"scope {scope.value}" + (f" (action {action!r})" if action else "")
    new_name = rerun_name(plan.name, root=root, run=run, policy=name, attempt=n)
    env, labels, inputs = plan.overrides(n)
    labels.update({LABEL_ROOT: root, LABEL_ATTEMPT: str(n), LABEL_POLICY: name})
    base = plan.backoff.base(n)
    delay = plan.backoff.delay(root, n)
    due = _later(failure.failed_at, delay)
    if trace is not None:
        b = plan.backoff
        trace.append(
            f"backoff: base = min({format_duration(b.initial)} * {b.factor:g}^{n - 1}, "
            f"{format_duration(b.max)}) = {format_duration(base)}; jitter ±{b.jitter:g} "
            f"-> delay {format_duration(delay)}; due at {iso(due)}"
        )
        trace.append(scope_text + (f"; {scope_note}" if scope_note else ""))
        trace.append(f"name: template {plan.name!r} -> {new_name!r}")

    common = {
        "policy": name,
        "attempt": n,
        "scope": scope,
        "source_run": run,
        "action": action,
        "name": new_name,
        "env": env,
        "labels": labels,
        "inputs": inputs,
        "root": root,
    }
    blocked = _blocking_budget(failure, policies, rule, now, trace)
    if blocked is not None:
        budget_name, budget, used, frees = blocked
        reason = (
            f"policy {name!r} defers attempt {n} of run {run!r}: budget {budget_name!r} has used "
            f"{used} of {budget.max_reruns} reruns per {format_duration(budget.per)}; "
            f"a slot frees at {iso(frees)}"
        )
        if trace is not None:
            trace.append(f"defer until {iso(frees)}")
        return Defer(reason=reason, not_before=frees, budget=budget_name, **common)  # type: ignore[arg-type]

    reason = (
        f"policy {name!r} reruns run {run!r} as {new_name!r}: attempt {n} of "
        f"max_attempts={plan.max_attempts}, {scope_text}, due at {iso(due)} "
        f"after a {format_duration(delay)} backoff" + (f"; {scope_note}" if scope_note else "")
    )
    if trace is not None:
        trace.append(f"rerun as {new_name!r} at {iso(due)}")
    return Rerun(reason=reason, not_before=due, **common)  # type: ignore[arg-type]


def _later(when: datetime, delta: timedelta) -> datetime:
    """``when + delta``, or the latest representable time when that is past year 9999 (a
    failure document may say ``failed_at: 9999-12-31T00:00:00Z``): ``decide`` is total."""
    try:
        return when + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _blocking_budget(
    failure: Failure, policies: PolicySet, rule: Rule, now: datetime, trace: list[str] | None
) -> tuple[str, Budget, int, datetime] | None:
    """The exhausted budget that frees a slot last (name, budget, used, frees_at), or None."""
    assert rule.retry is not None
    candidates = [(GLOBAL_BUDGET, policies.global_budget), (rule.name, rule.retry.budget)]
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
