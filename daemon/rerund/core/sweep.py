"""The plan of a sweep: what one pass over an outage's failures would rerun, skip, and why.

``rerund sweep`` runs the daemon's decision core once over a window of past failures with
an outage policy. Everything here is pure — no I/O, no clock read (``now`` is a parameter):
the shell lists the failures and the reruns that exist, calls ``plan_sweep``, shows the plan,
and issues what it says.

Semantics (the README, the preview and the tests say the same):

- The *window* is ``[since, until]`` on the time a run failed. ``--since`` is a duration
  back from ``now``; ``--until`` a time (ISO-8601, UTC when no zone is given) or a duration
  back from ``now``, default ``now``. A window whose end is before its start is an error.
- Each failure in the window gets the decision the daemon would make with these policies —
  ``max_attempts``, budgets and name rules apply — except that backoff does not: the outage
  is over, so a rerun is issued now, not at ``failed_at + delay``.
- A rerun whose lineage attempt already exists on the control plane (any name, any issuer:
  the daemon, an earlier or concurrent sweep) is *already issued*; two failures of one
  lineage at the same attempt get one rerun (the second is a *duplicate*). So the plan never
  holds two reruns of one (scope, root, attempt).
- Reruns planned in this sweep use budget slots as they are planned (in failure order), so
  a budget caps the sweep exactly as it would cap the daemon; a failure whose budget is full
  is *skipped* with the time a slot frees.

Invariants (tested with Hypothesis): every failure in the window appears exactly once in the
plan (rerun, already issued, or skipped); failures outside it never; rerun targets are
distinct per (scope, root, attempt) and never exceed ``max_attempts``; the plan is a pure
function of its inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, assert_never

from rerund.core.decide import decide, rerun_changes
from rerund.core.durations import format_duration, parse_duration
from rerund.core.model import Decision, Defer, Failure, GiveUp, Ignore, Rerun, WaitForVersion
from rerund.core.redact import public_decision, scrub_urls
from rerund.core.rules import GLOBAL_BUDGET, PolicySet, RetryPlan
from rerund.core.runs import LABEL_REPRO
from rerund.core.times import iso

__all__ = [
    "SKIP_KINDS",
    "Group",
    "PlannedRerun",
    "SkipKind",
    "Skipped",
    "SweepPlan",
    "Window",
    "error_key",
    "parse_time",
    "parse_window",
    "plan_sweep",
]

SkipKind = Literal[
    "already_issued",
    "duplicate",
    "no_match",
    "not_retried",
    "max_attempts",
    "budget",
    "waiting_for_fix",
    "reproduction",
]
# Display order of the skipped groups, with a short human title each.
SKIP_KINDS: dict[SkipKind, str] = {
    "already_issued": "already issued (the rerun of that attempt exists)",
    "duplicate": "another failure of the lineage at the same attempt is rerun",
    "budget": "budget full (rerun it in a later sweep)",
    "waiting_for_fix": "waiting for a newer task version (the daemon relaunches it once one is deployed)",
    "max_attempts": "max_attempts reached (give up)",
    "not_retried": "policy says retry: false",
    "no_match": "no outage policy matches",
    "reproduction": "a reproduction check's rerun",
}

_TIME_HINT = "write an ISO-8601 time such as 2026-11-30T14:00:00Z (UTC when no zone is given) or a duration ago such as 30m"  # noqa: E501


@dataclass(frozen=True)
class Window:
    """Failures with ``since <= failed_at <= until`` are swept (both aware UTC)."""

    since: datetime
    until: datetime

    def contains(self, when: datetime) -> bool:
        return self.since <= when <= self.until

    @property
    def length(self) -> timedelta:
        return self.until - self.since

    def describe(self) -> str:
        """``2026-11-30T12:00:00Z .. 2026-11-30T14:00:00Z (2h)`` (whole seconds, for people)."""
        since, until = (t.replace(microsecond=0) for t in (self.since, self.until))
        return f"{iso(since)} .. {iso(until)} ({format_duration(until - since)})"

    def to_json(self) -> dict[str, str]:
        return {"since": iso(self.since), "until": iso(self.until)}


def parse_time(text: str, now: datetime) -> datetime:
    """``--until``: an ISO-8601 time (UTC when no zone is given) or a duration ago (``30m``).

    Raises ``ValueError`` saying what to write instead.
    """
    raw = text.strip()
    try:
        return now - parse_duration(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"--until {text!r} is neither a time nor a duration: {_TIME_HINT}") from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)


def parse_window(since: str, until: str | None, now: datetime) -> Window:
    """The window of ``--since DURATION [--until TIME]`` at ``now``.

    Raises ``ValueError`` (the CLI shows it as is) for an invalid duration or time, an empty
    window, and a window whose end is before its start. An end after ``now`` is cut to ``now``
    (no run has failed in the future).
    """
    try:
        back = parse_duration(since)
    except ValueError as exc:
        raise ValueError(f"--since: {exc}") from None
    if back <= timedelta(0):
        raise ValueError(f"--since {since!r} makes an empty window: give how far back to sweep, e.g. 2h")
    start = now - back
    end = now if until is None else min(parse_time(until, now), now)
    if end < start:
        raise ValueError(
            f"the sweep window ends before it starts: --until {until!r} is {iso(end)}, before the "
            f"start {iso(start)} (--since {since}); give a later --until or a longer --since"
        )
    return Window(since=start, until=end)


def error_key(failure: Failure) -> str:
    """How the preview groups errors: ``KIND code`` (or the message head when no code)."""
    err = failure.error
    what = err.code or (err.message.strip().splitlines() or [""])[0][:40] or "no error message"
    return f"{err.kind} {what}"


@dataclass(frozen=True)
class PlannedRerun:
    """A rerun the sweep will issue: the core's decision, due now (backoff does not apply)."""

    failure: Failure
    decision: Rerun

    @property
    def name(self) -> str:
        return self.decision.name

    @property
    def policy(self) -> str:
        return self.decision.policy

    @property
    def attempt(self) -> int:
        return self.decision.attempt

    @property
    def scope_key(self) -> str:
        return f"{self.failure.project}/{self.failure.domain}"

    def changes(self) -> list[str]:
        """What the rerun changes, one line each — the core's ``rerun_changes`` (as ``explain``
        shows them, env values never shown, lineage labels left out): the preview's column."""
        return rerun_changes(self.failure, self.decision, lineage=False)

    def to_json(self) -> dict[str, Any]:
        f = self.failure
        return {
            **_identity(f),
            "error": {
                "kind": f.error.kind,
                "code": f.error.code,
                "message": scrub_urls(f.error.message)[:300],
            },
            "failed_at": iso(f.failed_at),
            "decision": _shown(self.decision),
            "changes": self.changes(),
        }


def _identity(f: Failure) -> dict[str, Any]:
    """The fields that name a failed run in a preview row, planned or skipped."""
    return {"run": f.run, "project": f.project, "domain": f.domain, "task": f.task, "root": f.root}


def _shown(decision: Decision) -> dict[str, Any]:
    """``decision.to_json()`` as every public output shows it (``rerund.core.redact``: no env
    value, no input value that may be a secret, URLs without their secrets), for the preview."""
    return public_decision(decision.to_json())


@dataclass(frozen=True)
class Skipped:
    """A failure in the window the sweep does not rerun, with why (``reason`` is a sentence)."""

    failure: Failure
    kind: SkipKind
    reason: str
    decision: Decision
    existing: str | None = None  # already_issued / duplicate: the rerun that covers it

    def to_json(self) -> dict[str, Any]:
        f = self.failure
        return {
            **_identity(f),
            "kind": self.kind,
            "reason": self.reason,
            "existing": self.existing,
            "error": {"kind": f.error.kind, "code": f.error.code},
            "failed_at": iso(f.failed_at),
        }


@dataclass(frozen=True)
class Group:
    """Reruns planned for one (policy, error) pair."""

    policy: str
    error: str
    count: int


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will do over ``window``, decided at ``now``."""

    window: Window
    now: datetime
    reruns: tuple[PlannedRerun, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    policies: tuple[str, ...] = field(default=())

    @property
    def failures(self) -> int:
        return len(self.reruns) + len(self.skipped)

    def groups(self) -> list[Group]:
        """Planned reruns counted by (policy, error), largest first, then by name."""
        counts = Counter((r.policy, error_key(r.failure)) for r in self.reruns)
        return [Group(p, e, n) for (p, e), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def skipped_counts(self) -> dict[SkipKind, int]:
        """Skipped failures counted by kind, in ``SKIP_KINDS`` order (kinds with none left out)."""
        counts = Counter(s.kind for s in self.skipped)
        return {k: counts[k] for k in SKIP_KINDS if counts[k]}

    def decisions(self) -> list[tuple[Failure, Decision]]:
        """The decisions the ledger records, in failure order: every rerun and every skip but
        those whose rerun exists already (nothing was decided there: that attempt is issued)."""
        pairs = [(r.failure, r.decision) for r in self.reruns] + [
            (s.failure, s.decision) for s in self.skipped if s.kind not in ("already_issued", "duplicate")
        ]
        return sorted(pairs, key=lambda p: (p[0].failed_at, p[0].project, p[0].domain, p[0].run))

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window.to_json(),
            "decided_at": iso(self.now),
            "policies": list(self.policies),
            "failures": self.failures,
            "reruns": [r.to_json() for r in self.reruns],
            "groups": [{"policy": g.policy, "error": g.error, "count": g.count} for g in self.groups()],
            "skipped_counts": dict(self.skipped_counts()),
            "skipped": [s.to_json() for s in self.skipped],
        }


# (scope "project/domain", lineage root, attempt) -> the name of the rerun that exists
Existing = Callable[[str, str, int], str | None]


def plan_sweep(
    failures: Iterable[Failure],
    policies: PolicySet,
    *,
    window: Window,
    now: datetime,
    existing: Existing | Mapping[tuple[str, str, int], str] = lambda scope, root, attempt: None,
    budget_used: Mapping[str, int] | None = None,
    budget_oldest: Mapping[str, datetime] | None = None,
) -> SweepPlan:
    """The plan for ``failures`` (those outside ``window`` are left out) under ``policies``.

    ``existing`` tells which lineage attempts already have a rerun on the control plane
    (a mapping, or a function of scope, root and attempt returning its name or None);
    ``budget_used``/``budget_oldest`` are the budget counts of the reruns that exist (as the
    daemon counts them). Failures are decided in the order they failed (ties by scope and
    name), so a budget is spent on the earliest failures first.
    """
    lookup: Existing
    if isinstance(existing, Mapping):
        table = existing
        lookup = lambda scope, root, attempt: table.get((scope, root, attempt))  # noqa: E731
    else:
        lookup = existing
    windows = policies.budgets()
    used = dict(budget_used or {})
    oldest = dict(budget_oldest or {})
    planned: dict[tuple[str, str, int], str] = {}
    reruns: list[PlannedRerun] = []
    skipped: list[Skipped] = []
    ordered = sorted(
        (f for f in failures if window.contains(f.failed_at)),
        key=lambda f: (f.failed_at, f.project, f.domain, f.run),
    )
    for failure in ordered:
        with_budgets = failure.model_copy(update={"budget_used": dict(used), "budget_oldest": dict(oldest)})
        decision = decide(with_budgets, policies, now)
        if not isinstance(decision, Rerun):
            skipped.append(_skip(failure, decision))
            continue
        scope = f"{failure.project}/{failure.domain}"
        key = (scope, failure.root, decision.attempt)
        there = lookup(*key)
        if there is not None:
            reason = (
                f"run {failure.run!r}: attempt {decision.attempt} of lineage {failure.root!r} was "
                f"already issued as {there!r}; the sweep does not issue it again"
            )
            skipped.append(Skipped(failure, "already_issued", reason, decision, existing=there))
            continue
        if key in planned:
            reason = (
                f"run {failure.run!r}: attempt {decision.attempt} of lineage {failure.root!r} is "
                f"rerun once, as {planned[key]!r} (from another failure of the lineage)"
            )
            skipped.append(Skipped(failure, "duplicate", reason, decision, existing=planned[key]))
            continue
        planned[key] = decision.name
        reruns.append(PlannedRerun(failure, _now(decision, failure, policies, now)))
        for budget in (GLOBAL_BUDGET, decision.policy):
            if budget in windows:
                used[budget] = used.get(budget, 0) + 1
                oldest.setdefault(budget, now)
    return SweepPlan(
        window=window,
        now=now,
        reruns=tuple(reruns),
        skipped=tuple(skipped),
        policies=tuple(policies.names()),
    )


def _now(decision: Rerun, failure: Failure, policies: PolicySet, now: datetime) -> Rerun:
    """The rerun decision with backoff lifted: due ``now``, and a reason that says so."""
    rule = next((r for r in policies.rules if r.name == decision.policy), None)
    limit = (
        f" of max_attempts={rule.retry.max_attempts}"
        if rule is not None and isinstance(rule.retry, RetryPlan)
        else ""
    )
    where = f"scope {decision.scope.value}" + (f" (action {decision.action!r})" if decision.action else "")
    reason = (
        f"sweep: policy {decision.policy!r} reruns run {failure.run!r} as {decision.name!r}: "
        f"attempt {decision.attempt}{limit}, {where}, now (backoff does not apply after an outage)"
    )
    return replace(decision, not_before=now, reason=reason)


def _skip(failure: Failure, decision: Defer | GiveUp | Ignore) -> Skipped:
    kind: SkipKind
    reason = decision.reason
    if isinstance(decision, WaitForVersion):
        kind = "waiting_for_fix"
    elif isinstance(decision, Defer):
        kind = "budget"
        reason = f"{decision.reason}; this sweep leaves it, a later sweep can rerun it"
    elif isinstance(decision, GiveUp):
        kind = "max_attempts"
    elif isinstance(decision, Ignore):
        if failure.labels.get(LABEL_REPRO) is not None:
            kind = "reproduction"
        elif decision.policy is None:
            kind = "no_match"
        else:
            kind = "not_retried"
    else:
        assert_never(decision)
    return Skipped(failure, kind, reason, decision)
