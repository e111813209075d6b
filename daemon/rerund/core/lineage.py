"""Lineage, purely: from the facts of a failed run to the ``Failure`` the core decides about,
from a ``Rerun`` decision to the ``RerunRequest`` the shell sends, the budget counts, and the
notice sent when a lineage is exhausted.

A lineage is an original run and the reruns issued for it, linked by the labels every rerun
carries (``rerund-root``, ``rerund-attempt``, ``rerund-policy``, set by ``decide`` and nowhere
else). Everything here is a function of values: no I/O, no clock (``now`` is a parameter).

Labels are not a trust boundary: anyone who launches a run can write them. A run's claim to be
attempt n of lineage ``root`` counts only when its relation vouches for it (``vouches``: the
SDK sets ``RunSpec.relation`` on every rerun, naming the run it reruns) or rerund's ledger
recorded creating it (a relaunch has no relation). Unvouched labels are ignored (``unvouched``):
the run is an original run of its own lineage, and it never counts against a budget.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rerund.core.model import Failure, GiveUp, Phase, Rerun, Scope
from rerund.core.redact import public_fields, scrub_urls, without_userinfo
from rerund.core.rules import GLOBAL_BUDGET
from rerund.core.runs import (
    FAILED_PHASES,
    LABEL_ATTEMPT,
    LABEL_CANARIES,
    LABEL_POLICY,
    LABEL_REPRO,
    LABEL_ROOT,
    ROOT_ACTION,
    FailureFacts,
    RelaunchRequest,
    RerunRequest,
    RunRef,
)
from rerund.core.times import iso

__all__ = [
    "MAX_ATTEMPT",
    "BudgetCounter",
    "BudgetRows",
    "attempt_of",
    "budget_counts",
    "claimed_lineage",
    "decided_as",
    "exhausted_notice",
    "failure_from",
    "issue_request",
    "lineage_names",
    "parse_attempt",
    "policy_budgets",
    "relaunch_request",
    "rerun_request",
    "unvouched",
    "vouches",
]


MAX_ATTEMPT = 1000  # the largest max_attempts a policy may set (and so the largest label written)


def parse_attempt(labels: Mapping[str, str]) -> int | None:
    """The attempt a run's ``rerund-attempt`` label names: 0 without the label, None when the
    label is not one rerund writes (a whole number 0..``MAX_ATTEMPT``, ASCII digits only).

    Bounded: a forged ``9223372036854775808`` or a 10,000-digit label is None, never an
    integer that overflows SQLite or Python's int-from-str limit.
    """
    text = labels.get(LABEL_ATTEMPT)
    if text is None:
        return 0
    if not (0 < len(text) <= len(str(MAX_ATTEMPT)) and text.isascii() and text.isdigit()):
        return None
    n = int(text)
    return n if n <= MAX_ATTEMPT else None


def attempt_of(labels: Mapping[str, str]) -> int:
    """The reruns issued in the lineage before this run (its ``rerund-attempt`` label; 0 for
    an original run, or when the label is not one rerund writes: ``decide`` then ignores the
    run, saying so)."""
    return parse_attempt(labels) or 0


def claimed_lineage(labels: Mapping[str, str]) -> tuple[str, int] | None:
    """The (root, attempt) a run's labels claim: a ``rerund-root`` and an attempt rerund
    writes (1..``MAX_ATTEMPT``). None for an original run, a reproduction rerun (it inherits the
    labels of the run it reruns, and is never part of a lineage) or labels rerund never writes."""
    root = labels.get(LABEL_ROOT)
    if not root or LABEL_REPRO in labels:
        return None
    attempt = parse_attempt(labels)
    return (root, attempt) if attempt else None


def vouches(
    ref: RunRef, claim: tuple[str, int], relation: RunRef | None, parent: tuple[str, int] | None
) -> bool:
    """Whether the relation of run ``ref`` backs its ``claim`` to be attempt n of lineage root.

    It does when it names, in ``ref``'s project and domain, the lineage's previous run: the
    root itself for attempt 1, else a run vouched for as attempt n-1 of the same root; or a
    run vouched for as attempt n of it (an operator's ``flyte rerun`` of a rerund rerun inherits
    its labels and names it: a copy of that attempt). ``parent`` is the vouched (root, attempt)
    of the run the relation names (None: an original run, or one not vouched for). A run
    without a relation (launched afresh, not rerun) never vouches for lineage labels.
    """
    root, attempt = claim
    if relation is None or relation.scope != ref.scope or relation == ref:
        return False
    if attempt == 1 and relation.name == root:
        return True
    return parent is not None and parent[0] == root and parent[1] in (attempt - 1, attempt)


def unvouched(facts: FailureFacts) -> FailureFacts:
    """``facts`` with the lineage labels (``rerund-root``, ``-attempt``, ``-policy``) removed:
    how a run whose labels nobody vouches for is decided — as an original run of its own."""
    drop = (LABEL_ROOT, LABEL_ATTEMPT, LABEL_POLICY, LABEL_CANARIES)
    if not any(k in facts.labels or k in facts.summary.labels for k in drop):
        return facts
    labels = {k: v for k, v in facts.labels.items() if k not in drop}
    shown = {k: v for k, v in facts.summary.labels.items() if k not in drop}
    return replace(facts, labels=labels, summary=replace(facts.summary, labels=shown))


def decided_as(facts: FailureFacts) -> FailureFacts | None:
    """The facts a failure is decided on. A run an operator aborted after it had finished
    (open-source AbortRun has no phase condition: ``finished_phase`` says what it was) is
    decided as the phase it finished in — the same decision, so the same rerun name, never a
    second rerun — and not at all (None) when it had succeeded. Any other run as it is."""
    if facts.finished_phase is None:
        return facts
    if facts.finished_phase not in FAILED_PHASES:
        return None
    return replace(facts, summary=replace(facts.summary, phase=facts.finished_phase))


def failure_from(
    facts: FailureFacts,
    used: Mapping[str, int] | None = None,
    oldest: Mapping[str, datetime] | None = None,
    latest_version: str | None = None,
) -> Failure:
    """The ``Failure`` of ``facts``, with the budget counts ``used`` / ``oldest`` (from
    ``budget_counts``) and the latest deployed version of its task as last listed
    (``latest_version``, None: not listed). Its root is the ``rerund-root`` label, else the
    run itself."""
    s = facts.summary
    return Failure(
        run=s.ref.name,
        root=facts.labels.get(LABEL_ROOT, "") or s.ref.name,
        attempt=attempt_of(facts.labels),
        project=s.ref.project,
        domain=s.ref.domain,
        task=s.task,
        labels=dict(facts.labels),
        phase=Phase(s.phase),
        action=facts.action,
        action_task=facts.action_task,
        error=facts.error,
        failed_at=facts.failed_at,
        budget_used=dict(used or {}),
        budget_oldest=dict(oldest or {}),
        spec=facts.spec,
        task_version=facts.task_version,
        resources=facts.resources,
        latest_version=latest_version,
    )


def rerun_request(facts: FailureFacts, decision: Rerun) -> RerunRequest:
    """The CreateRun of ``decision``: scope ``failed_action`` reruns the failing action, scope
    ``run`` the root action ``a0``, scope ``recover`` the root action with succeeded actions
    reused. The labels are the decision's (lineage labels included); the RunSpec overrides
    are the decision's, and the source's spec (when read with the failure) rides along so the
    adapter keeps the source's values the SDK would overwrite."""
    action = (decision.action or facts.action) if decision.scope == Scope.FAILED_ACTION else ROOT_ACTION
    return RerunRequest(
        source=facts.summary.ref,
        name=decision.name,
        action=action,
        recover=decision.scope == Scope.RECOVER,
        env=dict(decision.env),
        labels=dict(decision.labels),
        inputs=dict(decision.inputs),
        overrides=decision.overrides,
        source_spec=facts.spec,
    )


def issue_request(facts: FailureFacts, decision: Rerun) -> RerunRequest | RelaunchRequest:
    """What carrying out ``decision`` creates: a relaunch for scope ``relaunch``, else a rerun."""
    if decision.relaunch is not None:
        return relaunch_request(facts, decision)
    return rerun_request(facts, decision)


def relaunch_request(facts: FailureFacts, decision: Rerun) -> RelaunchRequest:
    """The relaunch of ``decision`` (scope ``relaunch``): its target task, version and
    resources, the decision's env, labels (lineage labels included), inputs and RunSpec
    overrides, and the source's spec when read with the failure."""
    target = decision.relaunch
    if target is None:
        raise ValueError(
            f"decision for run {decision.source_run!r} is not a relaunch (scope {decision.scope.value})"
        )
    return RelaunchRequest(
        source=facts.summary.ref,
        name=decision.name,
        task=target.task or facts.summary.task,
        version=target.version,
        resources=target.resources,
        env=dict(decision.env),
        labels=dict(decision.labels),
        inputs=dict(decision.inputs),
        overrides=decision.overrides,
        source_spec=facts.spec,
    )


def policy_budgets(budgets: Mapping[str, timedelta]) -> dict[str, timedelta]:
    """The budgets of single policies (every budget but the global one)."""
    return {name: window for name, window in budgets.items() if name != GLOBAL_BUDGET}


def budget_counts(
    reruns: Iterable[tuple[str | None, datetime | None]],
    budgets: Mapping[str, timedelta],
    now: datetime,
) -> tuple[dict[str, int], dict[str, datetime]]:
    """Per budget: how many of ``reruns`` (``(policy, created_at)``; None = created now) fall in
    its sliding window ending at ``now``, and when the oldest of them was created. The global
    budget counts every rerun, a policy's budget the reruns of that policy."""
    rows = [(policy, created_at or now) for policy, created_at in reruns]
    used: dict[str, int] = {}
    oldest: dict[str, datetime] = {}
    for name, window in budgets.items():
        start = now - window
        times = [t for policy, t in rows if (name == GLOBAL_BUDGET or policy == name) and t >= start]
        used[name] = len(times)
        if times:
            oldest[name] = min(times)
    return used, oldest


Row = tuple[str | None, datetime | None]  # (policy, created_at; None = being created now)


class BudgetRows:
    """Reruns' creation times kept sorted, overall and per policy, so that a budget count is a
    binary search, not a scan: a pass decides many failures over the same reruns (after a
    policy reload, thousands), and a scan per decision costs what the budget window issued.
    ``counts`` answers exactly what ``budget_counts`` answers for the same rows. Built from
    ``(policy, created_at)`` rows (None = created now); ``add`` and ``remove`` change one row
    (an insertion into a sorted list: no re-sort)."""

    def __init__(self, reruns: Iterable[Row] = ()) -> None:
        self._all: list[datetime] = []
        self._by_policy: dict[str | None, list[datetime]] = {}
        self._now_all = 0  # rows created now: in every window, counted as ``now``
        self._now_by_policy: dict[str | None, int] = {}
        for policy, created_at in reruns:
            if created_at is None:
                self._now_all += 1
                self._now_by_policy[policy] = self._now_by_policy.get(policy, 0) + 1
            else:
                self._all.append(created_at)
                self._by_policy.setdefault(policy, []).append(created_at)
        self._all.sort()
        for times in self._by_policy.values():
            times.sort()

    def __len__(self) -> int:
        return len(self._all) + self._now_all

    def add(self, policy: str | None, created_at: datetime | None) -> None:
        """One row more."""
        if created_at is None:
            self._now_all += 1
            self._now_by_policy[policy] = self._now_by_policy.get(policy, 0) + 1
            return
        insort(self._all, created_at)
        insort(self._by_policy.setdefault(policy, []), created_at)

    def remove(self, policy: str | None, created_at: datetime | None) -> None:
        """One row fewer: one that ``add`` (or the constructor) counted."""
        if created_at is None:
            self._now_all -= 1
            left = self._now_by_policy[policy] - 1
            if left:
                self._now_by_policy[policy] = left
            else:
                del self._now_by_policy[policy]
            return
        for times in (self._all, self._by_policy[policy]):
            del times[bisect_left(times, created_at)]
        if not self._by_policy[policy]:
            del self._by_policy[policy]

    def counts(
        self, budgets: Mapping[str, timedelta], now: datetime
    ) -> tuple[dict[str, int], dict[str, datetime]]:
        """Per budget: how many rows fall in its window ending at ``now``, and the oldest of them
        (as ``budget_counts``)."""
        used: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        empty: list[datetime] = []
        for name, window in budgets.items():
            start = now - window
            if name == GLOBAL_BUDGET:
                times, at_now = self._all, self._now_all
            else:
                times, at_now = self._by_policy.get(name, empty), self._now_by_policy.get(name, 0)
            if now < start:  # a negative window: rows created now are outside it too
                at_now = 0
            first = bisect_left(times, start)
            used[name] = len(times) - first + at_now
            candidates = times[first : first + 1] + ([now] if at_now else [])
            if candidates:
                oldest[name] = min(candidates)
        return used, oldest


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _first_created(members: Mapping[Hashable, Row]) -> Row | None:
    """The row a group of copies counts as: the earliest created (one being created now last)."""
    if not members:
        return None
    return min(members.values(), key=lambda r: (r[1] is None, r[1] or _EARLIEST, r[0] or ""))


class BudgetCounter:
    """The budget counts of a set of reruns that changes one rerun at a time, kept as it
    changes (``put``, ``discard``) instead of gathered and sorted again: a pass's cost does not
    grow with what the budget window holds.

    Each entry (any hashable id: a run name) counts once; entries of one ``group`` (the copies
    of one lineage attempt: ``(scope, root, attempt)``) count once together, as the earliest
    created of them. ``counts`` answers what ``budget_counts`` answers over the counted rows.
    Pure data (no clock, no I/O); the interface is small so that the counts may later come from
    shared state instead."""

    def __init__(self) -> None:
        self._rows = BudgetRows()
        self._entries: dict[Hashable, tuple[Hashable | None, Row]] = {}
        self._groups: dict[Hashable, dict[Hashable, Row]] = {}

    def __len__(self) -> int:
        """How many rows count (a group once)."""
        return len(self._rows)

    def __contains__(self, entry: Hashable) -> bool:
        return entry in self._entries

    def put(self, entry: Hashable, row: Row, group: Hashable | None = None) -> None:
        """Entry ``entry`` counts as ``row`` (replacing what it counted as before), alone or as
        one copy of ``group``."""
        self.discard(entry)
        self._entries[entry] = (group, row)
        if group is None:
            self._rows.add(*row)
            return
        members = self._groups.setdefault(group, {})
        before = _first_created(members)
        members[entry] = row
        self._replace(before, _first_created(members))

    def discard(self, entry: Hashable) -> None:
        """Entry ``entry`` no longer counts (nothing when it did not)."""
        old = self._entries.pop(entry, None)
        if old is None:
            return
        group, row = old
        if group is None:
            self._rows.remove(*row)
            return
        members = self._groups[group]
        before = _first_created(members)
        del members[entry]
        if not members:
            del self._groups[group]
        self._replace(before, _first_created(members))

    def _replace(self, before: Row | None, after: Row | None) -> None:
        if before == after:
            return
        if before is not None:
            self._rows.remove(*before)
        if after is not None:
            self._rows.add(*after)

    def counts(
        self, budgets: Mapping[str, timedelta], now: datetime
    ) -> tuple[dict[str, int], dict[str, datetime]]:
        """Per budget: the rows in its window ending at ``now``, and the oldest (``budget_counts``)."""
        return self._rows.counts(budgets, now)


def lineage_names(root: str, run: str, reruns: Iterable[tuple[str, str | None, int | None]]) -> list[str]:
    """The runs of lineage ``root``, oldest first: the root, its known reruns (``(name, root,
    attempt)``) by attempt, and ``run`` last when it is not among them."""
    names = [root] + [
        name for name, r, _ in sorted(reruns, key=lambda x: x[2] or 0) if r == root and name != root
    ]
    if run not in names:
        names.append(run)
    return names


def exhausted_notice(
    facts: FailureFacts,
    failure: Failure,
    decision: GiveUp,
    *,
    lineage: list[str],
    console_url: str,
    now: datetime,
) -> dict[str, Any]:
    """The notification sent when ``decision`` gives up on a lineage (event ``lineage_exhausted``).

    A public output: URLs in the reason and the error keep only scheme and host (``redact``).
    """
    ref: RunRef = facts.summary.ref
    reason = scrub_urls(decision.reason)
    return {
        "text": f"rerund: lineage {failure.root!r} exhausted — {reason}",
        "event": "lineage_exhausted",
        "run": ref.name,
        "project": ref.project,
        "domain": ref.domain,
        "root": failure.root,
        "lineage": lineage,
        "policy": decision.policy,
        "attempt": decision.attempt,  # the attempt refused, as in history and /decisions
        "reruns_issued": failure.attempt,
        "reason": reason,
        "error": public_fields(facts.error.model_dump(exclude_none=True)),
        "console_url": without_userinfo(console_url),
        "decided_at": iso(now),
    }
