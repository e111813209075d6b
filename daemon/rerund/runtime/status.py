"""Gathering the facts ``rerund.core.status`` works on: ledger rows, listed reruns, budgets.

Two callers: the daemon's operator page (facts from its own reruns index and pending items,
no RPC), and ``rerund status`` (facts from the control plane — one ListRuns per scope — and
the ledger file, so it works from any machine that reaches both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from rerund.core.incidents import IncidentRecord
from rerund.core.rules import PolicySet
from rerund.core.runs import LABEL_ATTEMPT, LABEL_POLICY, LABEL_ROOT, RunSummary
from rerund.core.status import ListedRerun, Status, budget_limits, compute_status
from rerund.ports import ControlPlane

__all__ = ["StatusLedger", "gather_status", "listed_from_summaries", "status_from_control_plane"]

# How far back the status looks, at least (longer when a budget window is longer).
STATUS_WINDOW = timedelta(hours=24)


class StatusLedger(Protocol):
    def lineage_rows(
        self, *, since: datetime | None = None, root: str | None = None, limit: int = 20_000
    ) -> dict[str, list[dict[str, Any]]]: ...

    def latest_reproductions(self) -> list[dict[str, Any]]: ...

    def incidents(self, *, since: datetime) -> Sequence[IncidentRecord]: ...

    def fingerprint_recoveries(
        self, *, since: datetime, fingerprint: str | None = None
    ) -> dict[str, tuple[int, int]]: ...


def window(policies: PolicySet | None) -> timedelta:
    """The span the status covers: a day, or the longest budget window."""
    spans = (
        [STATUS_WINDOW, *(b.per for b in budget_limits(policies).values())] if policies else [STATUS_WINDOW]
    )
    return max(spans)


def listed_from_summaries(summaries: Iterable[RunSummary]) -> list[ListedRerun]:
    """Reruns as listed by the control plane (those without lineage labels are left out)."""
    out = []
    for s in summaries:
        root = s.labels.get(LABEL_ROOT)
        if not root:
            continue
        try:
            attempt = int(s.labels.get(LABEL_ATTEMPT, "0"))
        except ValueError:
            attempt = 0
        out.append(
            ListedRerun(
                project=s.ref.project,
                domain=s.ref.domain,
                name=s.ref.name,
                root=root,
                attempt=attempt,
                policy=s.labels.get(LABEL_POLICY, ""),
                phase=s.phase,
                created_at=s.created_at,
            )
        )
    return out


def gather_status(
    *,
    now: datetime,
    ledger: StatusLedger | None,
    policies: PolicySet | None,
    reruns: Sequence[ListedRerun] = (),
    pending: Mapping[str, datetime | None] | None = None,
    notes: Sequence[str] = (),
) -> Status:
    """The status from the ledger (when there is one) and the listed reruns."""
    rows: dict[str, list[dict[str, Any]]] = {"decisions": [], "issues": [], "outcomes": []}
    repros: list[dict[str, Any]] = []
    incidents: Sequence[IncidentRecord] = ()
    recoveries: dict[str, tuple[int, int]] = {}
    if ledger is not None:
        rows = ledger.lineage_rows(since=now - window(policies))
        repros = ledger.latest_reproductions()
        incidents = ledger.incidents(since=now - window(policies))
        recoveries = ledger.fingerprint_recoveries(since=now - window(policies))
    return compute_status(
        now=now,
        decisions=rows["decisions"],
        issues=rows["issues"],
        outcomes=rows["outcomes"],
        reruns=reruns,
        budgets=budget_limits(policies) if policies else {},
        reproductions=repros,
        pending=pending,
        notes=notes,
        incidents=incidents,
        recoveries=recoveries,
    )


async def status_from_control_plane(
    cp: ControlPlane,
    scopes: Sequence[tuple[str, str]],
    *,
    now: datetime,
    ledger: StatusLedger | None,
    policies: PolicySet | None,
    notes: Sequence[str] = (),
) -> Status:
    """``rerund status``: list the reruns of each scope (1 ListRuns each, paged), then gather."""
    since = now - window(policies)
    reads = asyncio.Semaphore(8)

    async def labelled(summary: RunSummary) -> RunSummary:
        # Open-source Flyte lists runs without labels: read them (GetRunDetails) once each.
        if LABEL_ROOT in summary.labels:
            return summary
        async with reads:
            return await cp.get_run(summary.ref)

    reruns: list[ListedRerun] = []
    for project, domain in scopes:
        listed = await cp.list_reruns(project, domain, since=since)
        reruns += listed_from_summaries(await asyncio.gather(*(labelled(s) for s in listed)))
    return gather_status(now=now, ledger=ledger, policies=policies, reruns=reruns, notes=notes)
