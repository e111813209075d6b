"""Gathering what ``rerund suggest`` works on: the failed runs of a window, their fingerprints,
and what their reruns did — from the control plane and, when there is one, the ledger (its
counts of a fingerprint's reruns and recoveries, when they are larger).

A rerun is any run whose RunSpec relation names another run, whoever made it: a person with
``flyte.rerun`` or rerund (``list_ended``: the ended runs of the window, each with its
relation), and any run carrying a vouched ``rerund-root`` label (``list_reruns``: a relaunch
has no relation). A chain of reruns (a rerun of a rerun) counts for the first run of the chain,
the original failure: each rerun is one rerun of it, a SUCCEEDED one a recovery. A failed run
that is itself a rerun counts for its lineage, not as a failure of its own. Runs ABORTED
(usually on purpose) are not failures. Cost per scope: one ListRuns of failures, one of ended
runs, one of rerund's reruns (each paged), a read per original failure (at most ``limit``), and
on open-source Flyte a GetRunDetails per run of the window (its labels and relation, read once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from rerund.core.fingerprints import failure_fingerprint
from rerund.core.lineage import failure_from
from rerund.core.rules import DEFAULT_PHASES
from rerund.core.runs import LABEL_ROOT, TERMINAL_PHASES, FailureFacts, RunSummary
from rerund.errors import LedgerError
from rerund.policy.suggest import Seen
from rerund.ports import ControlPlane

__all__ = ["gather_failures"]


async def gather_failures(
    cp: ControlPlane,
    scopes: Sequence[tuple[str, str]],
    *,
    since: datetime,
    limit: int = 1000,
    history: Callable[[str, datetime], tuple[int, int]] | None = None,
) -> list[Seen]:
    """The failures of ``scopes`` since ``since`` grouped by fingerprint (at most ``limit``
    original failures read), with their reruns' outcomes."""
    seen: dict[str, Seen] = {}
    reads = asyncio.Semaphore(8)
    for project, domain in scopes:
        failed = await cp.list_failed(project, domain, since=since)
        ended = await cp.list_ended(project, domain, since=since)
        # run -> the run it reruns (in this scope), from the relations the listing knows
        relation = {
            r.ref.name: r.relation.name
            for r in ended
            if r.relation is not None and r.relation.scope == r.ref.scope
        }
        outcomes: dict[str, dict[str, str]] = {}  # original run -> {rerun: its phase}
        for r in ended:
            if r.ref.name in relation:
                outcomes.setdefault(_first_of(r.ref.name, relation), {})[r.ref.name] = r.phase
        for r in await cp.list_reruns(project, domain, since=since):
            if not r.labels:  # a listing may leave labels out (open-source Flyte): read the run
                async with reads:
                    r = await cp.get_run(r.ref)
            root = r.labels.get(LABEL_ROOT)
            if root:
                outcomes.setdefault(root, {})[r.ref.name] = r.phase
        candidates = [
            s
            for s in failed
            if not s.labels.get(LABEL_ROOT) and s.phase != "ABORTED" and s.ref.name not in relation
        ]
        candidates = candidates[: max(0, limit - sum(x.failures for x in seen.values()))]

        async def read(summary: RunSummary) -> FailureFacts:
            async with reads:
                return await cp.read_failure(summary)

        for facts in await asyncio.gather(*(read(s) for s in candidates)):
            failure = failure_from(facts)
            if facts.relation is not None:  # a rerun of a run older than the window
                continue
            if failure.labels.get(LABEL_ROOT) or failure.phase not in DEFAULT_PHASES:
                continue
            fp = failure_fingerprint(failure)
            group = seen.setdefault(fp, Seen(fingerprint=fp, example=failure))
            group.failures += 1
            group.runs.append(failure.run)
            phases = [p for p in outcomes.get(failure.run, {}).values() if p in TERMINAL_PHASES]
            group.reruns += len(phases)
            group.recovered += sum(1 for p in phases if p == "SUCCEEDED")
    if history is not None:
        for group in seen.values():
            try:
                reruns, recovered = history(group.fingerprint, since)
            except LedgerError:
                continue
            if reruns > group.reruns:
                group.reruns, group.recovered = reruns, recovered
    return list(seen.values())


def _first_of(run: str, relation: Mapping[str, str]) -> str:
    """The first run of ``run``'s chain of reruns: follow ``relation`` (rerun -> the run it
    reruns) until a run that reruns none (a cycle, which relations cannot form, stops too)."""
    seen = {run}
    while run in relation and relation[run] not in seen:
        run = relation[run]
        seen.add(run)
    return run
