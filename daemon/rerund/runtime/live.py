"""A live explanation: the decision the daemon would make about one run now, from the control
plane, with the reruns of its lineage that already exist.

Used by ``rerund explain RUN`` and the operator page (``/?explain=RUN``). Read-only: nothing is
recorded, scheduled or created. It lists the scope's reruns as a daemon's first pass would (for
budget counts and the lineage), then reads the run (``get_run``) and its failure
(``read_failure``); the RPC costs are those of the ``rerund.ports.ControlPlane`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rerund.core.decide import Explanation, explain
from rerund.core.durations import format_duration
from rerund.core.fingerprints import failure_fingerprint
from rerund.core.lineage import failure_from
from rerund.core.model import Failure
from rerund.core.rules import PolicySet
from rerund.core.runs import FAILED_PHASES, RunRef
from rerund.core.scopes import ORG, Coverage, plan
from rerund.core.status import ListedRerun, iso
from rerund.errors import LedgerError, NotFoundError
from rerund.ports import ControlPlane
from rerund.runtime.reconcile import DEFAULT_LOOKBACK
from rerund.runtime.reconcile.index import RerunIndex
from rerund.runtime.relaunch import TaskVersions, task_key

__all__ = ["SEARCH_BACK", "LiveExplanation", "explain_live", "find_run"]

# How far back a bare run name is looked for under a wildcard scope (in the org's failed runs),
# at least: ``rerund explain`` and the page use the settings' lookback when it is longer.
SEARCH_BACK = timedelta(days=1)


@dataclass(frozen=True)
class LiveExplanation:
    """The explanation, the failure it was made for, and the listed reruns of the run's scope."""

    explanation: Explanation
    failure: Failure
    reruns: tuple[ListedRerun, ...]

    def lineage(self) -> list[ListedRerun]:
        """The existing reruns of this failure's lineage, by attempt."""
        return sorted((r for r in self.reruns if r.root == self.failure.root), key=lambda r: r.attempt)

    def facts(self, ref: RunRef) -> dict[str, Any]:
        """The failure's facts as ``rerund explain`` and the operator page show them."""
        failure = self.failure
        return {
            "run": str(ref),
            "root": failure.root,
            "attempt": failure.attempt,
            "task": failure.task,
            "phase": failure.phase.value,
            "action": failure.action,
            "action_task": failure.action_task,
            "error": failure.error.model_dump(exclude_none=True),
            "failed_at": iso(failure.failed_at),
            "budget_used": dict(failure.budget_used),
        }


async def find_run(
    cp: ControlPlane, name: str, scopes: Sequence[tuple[str, str]], *, since: datetime
) -> list[RunRef]:
    """The runs named ``name`` in ``scopes``, sorted: for each concrete scope the listings of
    ``plan(scopes)`` name, a GetRunDetails (1 RPC; an absent run is skipped); when a scope is a
    pattern (``*/*``, ``ml/*``), the org's failed runs updated since ``since`` (the org-wide
    ListRuns the daemon itself lists, paged), those ``scopes`` cover. A run that did not fail,
    or failed before ``since``, is found in a concrete scope only."""
    coverage = Coverage(tuple(scopes))
    found: set[RunRef] = set()
    for listing in plan(scopes):
        if listing == ORG:
            runs = await cp.list_failed(*ORG, since=since)
            found.update(
                r.ref for r in runs if r.ref.name == name and coverage.covers(r.ref.project, r.ref.domain)
            )
            continue
        with contextlib.suppress(NotFoundError):
            found.add((await cp.get_run(RunRef(*listing, name))).ref)
    return sorted(found)


def with_history(
    failure: Failure,
    policies: PolicySet,
    now: datetime,
    history: Callable[[str, datetime], tuple[int, int]],
) -> Failure:
    """``failure`` with its ``evidence``: per window of the policies' ``give_up_below``, what
    ``history`` says of the reruns of its fingerprint since ``now - window``."""
    windows = policies.evidence_windows()
    if not windows:
        return failure
    fingerprint = failure_fingerprint(failure)
    evidence: dict[str, tuple[int, int]] = {}
    for window in windows:
        try:
            evidence[format_duration(window)] = history(fingerprint, now - window)
        except LedgerError:
            continue  # no evidence for this window: give_up_below says so in the trace
    return failure.model_copy(update={"evidence": evidence})


async def explain_live(
    cp: ControlPlane,
    ref: RunRef,
    policies: PolicySet,
    now: datetime,
    history: Callable[[str, datetime], tuple[int, int]] | None = None,
) -> LiveExplanation | None:
    """The decision the daemon would make about run ``ref`` at ``now``, with its trace, from its
    real lineage labels and the budget counts of the reruns on the control plane (listed as a
    daemon's first pass would list them). None when the run has not failed (rerund decides
    only about FAILED, TIMED_OUT and ABORTED runs). ``history(fingerprint, since)``: the ledger's
    (reruns, recovered) of a fingerprint, for ``give_up_below`` (None: no evidence)."""
    budgets = policies.budgets()
    since = min([now - DEFAULT_LOOKBACK, *(now - window for window in budgets.values())])
    index = RerunIndex(cp, reads=asyncio.Semaphore(8), count_error=lambda _exc: None)
    await index.refresh(ref.project, ref.domain, since=since, budgets=budgets, now=now)
    summary = await cp.get_run(ref)
    if summary.phase not in FAILED_PHASES:
        return None
    facts = await index.vouched_facts(await cp.read_failure(summary))
    used, oldest = index.budget_counts(now, budgets)
    versions = TaskVersions(cp)  # the latest version of its task, as a waiting relaunch sees it
    await versions.refresh([task_key(facts)])
    failure = failure_from(facts, used, oldest, versions.latest(task_key(facts)))
    if history is not None:
        failure = with_history(failure, policies, now, history)
    return LiveExplanation(explain(failure, policies, now), failure, tuple(index.listed()))
