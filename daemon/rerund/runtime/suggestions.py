"""Gathering what ``rerund suggest`` works on: the failed runs of a window, their fingerprints,
and what their reruns did — from the control plane (one ListRuns of failures and one of
rerund's reruns per scope, a GetRunDetails per original failure read) and, when there is one,
the ledger (its counts of a fingerprint's reruns and recoveries, when they are larger).

A failed run that is itself a rerun (a vouched ``rerund-root`` label) counts for its lineage,
not as a failure of its own. Runs ABORTED (usually on purpose) are left out. Recovery is seen
through rerund's reruns (they carry its labels); a manual rerun that succeeded is not listed by
the control plane port (it lists failed runs and rerund's reruns only) unless the ledger saw it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
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
        outcomes: dict[str, list[str]] = {}
        for r in await cp.list_reruns(project, domain, since=since):
            if not r.labels:  # a listing may leave labels out (open-source Flyte): read the run
                async with reads:
                    r = await cp.get_run(r.ref)
            root = r.labels.get(LABEL_ROOT)
            if root:
                outcomes.setdefault(root, []).append(r.phase)
        candidates = [s for s in failed if not s.labels.get(LABEL_ROOT) and s.phase != "ABORTED"]
        candidates = candidates[: max(0, limit - sum(x.failures for x in seen.values()))]

        async def read(summary: RunSummary) -> FailureFacts:
            async with reads:
                return await cp.read_failure(summary)

        for facts in await asyncio.gather(*(read(s) for s in candidates)):
            failure = failure_from(facts)
            if failure.labels.get(LABEL_ROOT) or failure.phase not in DEFAULT_PHASES:
                continue
            fp = failure_fingerprint(failure)
            group = seen.setdefault(fp, Seen(fingerprint=fp, example=failure))
            group.failures += 1
            group.runs.append(failure.run)
            phases = [p for p in outcomes.get(failure.run, []) if p in TERMINAL_PHASES]
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
