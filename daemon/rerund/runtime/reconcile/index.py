"""The reruns index: every rerun known to exist on the control plane, by name and by
(scope, lineage root, attempt), from the last listing plus this process's own creates.

It is what makes issuing exactly-once cheap: a create first looks its (root, attempt) up here,
so a rerun that exists costs no RPC (its name, ``<root>-retry-<attempt>``, is the control
plane's guard against a second create whatever this index knows). It is
also where budget counts come from. Lineage learning fills in the labels a listing does not
return (open-source Flyte lists runs without labels): one GetRunDetails per unknown rerun, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rerund.core.lineage import attempt_of, budget_counts, policy_budgets
from rerund.core.runs import LABEL_ATTEMPT, LABEL_POLICY, LABEL_REPRO, LABEL_ROOT, RunRef, RunSummary
from rerund.core.scopes import Coverage
from rerund.core.status import ListedRerun
from rerund.errors import ControlPlaneError
from rerund.ports import ControlPlane

__all__ = ["RerunIndex", "RerunInfo"]


@dataclass
class RerunInfo:
    """One rerun: its lineage (root, attempt) and policy when known, and when it was created."""

    ref: RunRef
    created_at: datetime | None
    policy: str | None = None
    root: str | None = None
    attempt: int | None = None
    phase: str = ""  # as last listed ("" = created here, not listed since)


@dataclass
class _Known:
    """Reruns by name, and the (scope, root, attempt) of every one of them."""

    by_name: dict[RunRef, RerunInfo] = field(default_factory=dict)
    # Built on the first ``has`` (after a listing has learned its lineages) and kept up to date
    # by ``add``: a create checks it in O(1).
    _lineages: set[tuple[str, str | None, int | None]] | None = None

    def add(self, info: RerunInfo) -> None:
        old = self.by_name.get(info.ref)
        if old is not None:
            info.policy = info.policy or old.policy
            info.root = info.root or old.root
            info.attempt = info.attempt if info.attempt is not None else old.attempt
            info.created_at = info.created_at or old.created_at
            info.phase = info.phase or old.phase
        self.by_name[info.ref] = info
        if self._lineages is not None:
            self._lineages.add((info.ref.scope, info.root, info.attempt))

    def has(self, ref: RunRef, root: str, attempt: int) -> bool:
        if ref in self.by_name:
            return True
        if self._lineages is None:
            self._lineages = {(i.ref.scope, i.root, i.attempt) for i in self.by_name.values()}
        return (ref.scope, root, attempt) in self._lineages


class RerunIndex:
    """The reruns known to exist, plus those being created right now (``reserve``): a
    reserved rerun counts against budgets until its create settles, so two failures decided in
    one pass cannot both take the last slot."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        reads: asyncio.Semaphore,
        count_error: Callable[[ControlPlaneError], None],
        coverage: Coverage | None = None,
    ) -> None:
        self._cp = control_plane
        self._coverage = coverage or Coverage(())  # which listing finds which run (core.scopes)
        self._reads = reads
        self._count_error = count_error
        self._known = _Known()
        self._reserved: dict[RunRef, RerunInfo] = {}
        # Listed reruns whose lineage could not be read since ``start_pass``: until a listing
        # has read every one, the index does not cover the policies in force.
        self.unlearned = 0

    def start_pass(self) -> None:
        """A resync pass begins: count unread lineages afresh."""
        self.unlearned = 0

    def __len__(self) -> int:
        return len(self._known.by_name)

    def has(self, ref: RunRef, root: str, attempt: int) -> bool:
        """Whether rerun ``ref`` exists, or another rerun of the same (root, attempt)."""
        return self._known.has(ref, root, attempt)

    def add(self, info: RerunInfo) -> None:
        """A rerun now known to exist (created here, or found to exist already)."""
        self._known.add(info)

    def reserve(self, info: RerunInfo) -> None:
        self._reserved[info.ref] = info

    def release(self, ref: RunRef) -> None:
        self._reserved.pop(ref, None)

    def lineages(self) -> dict[tuple[str, str, int], str]:
        """(scope "project/domain", root, attempt) -> name of every known rerun whose lineage is
        known (``rerund sweep`` plans against it and names the rerun in its preview)."""
        return {
            (i.ref.scope, i.root, i.attempt): i.ref.name
            for i in self._known.by_name.values()
            if i.root and i.attempt is not None
        }

    def members(self) -> Iterator[tuple[str, str | None, int | None]]:
        """(name, root, attempt) of every indexed rerun."""
        return ((i.ref.name, i.root, i.attempt) for i in self._known.by_name.values())

    def listed(self) -> list[ListedRerun]:
        """The reruns of known lineages as last listed, plus this process's creates (no RPC):
        what the operator page and ``rerund explain`` show, counted as the decisions count."""
        return [
            ListedRerun(
                i.ref.project,
                i.ref.domain,
                i.ref.name,
                i.root,
                i.attempt or 0,
                i.policy or "",
                i.phase,
                i.created_at,
            )
            for i in self._known.by_name.values()
            if i.root
        ]

    def budget_counts(
        self, now: datetime, budgets: Mapping[str, timedelta]
    ) -> tuple[dict[str, int], dict[str, datetime]]:
        """Budget counts over the indexed reruns and those being created right now."""
        known = self._known.by_name
        reserved = (i for ref, i in self._reserved.items() if ref not in known)
        return budget_counts(((i.policy, i.created_at) for i in (*known.values(), *reserved)), budgets, now)

    async def refresh(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        budgets: Mapping[str, timedelta],
        now: datetime,
        on_listed: Callable[[RunSummary], None] = lambda _: None,
    ) -> int:
        """List the reruns of ``project/domain`` created since ``since`` (1 ListRuns, paged; on
        a control plane that lists no labels, 1 more per budgeted policy) and replace the
        scope's part of the index with them; ``on_listed`` sees each one. Returns how many
        were listed; raises ``ControlPlaneError`` when the listing fails."""
        scope = f"{project}/{domain}"
        listed = [
            r
            for r in await self._cp.list_reruns(project, domain, since=since)
            if self._coverage.finds(scope, r.ref.project, r.ref.domain)
        ]
        by_policy: dict[RunRef, str] = {}
        if any(LABEL_POLICY not in r.labels for r in listed):
            # Open-source Flyte does not return labels in ListRuns: ask per budgeted policy.
            for name, window in policy_budgets(budgets).items():
                for r in await self._cp.list_reruns(project, domain, since=now - window, policy=name):
                    by_policy[r.ref] = name
        fresh = _Known()
        unknown: list[RerunInfo] = []
        for r in listed:
            labels = r.labels
            info = RerunInfo(
                ref=r.ref,
                created_at=r.created_at,
                policy=labels.get(LABEL_POLICY) or by_policy.get(r.ref),
                root=labels.get(LABEL_ROOT),
                attempt=attempt_of(labels) if LABEL_ATTEMPT in labels else None,
                phase=r.phase,
            )
            known = self._known.by_name.get(r.ref)
            if info.root is None and known is not None and known.root is not None:
                info.root, info.attempt = known.root, known.attempt
                info.policy = info.policy or known.policy
            if info.root is None:
                unknown.append(info)
            fresh.add(info)
            on_listed(r)
        self.unlearned += await self._learn_lineages(unknown)
        # Keep other scopes, and what this listing cannot know yet (created by us while it ran).
        for ref, info in self._known.by_name.items():
            if not self._coverage.finds(scope, ref.project, ref.domain) or (
                ref not in fresh.by_name and info.created_at is not None and info.created_at >= now
            ):
                fresh.add(info)
        self._known = fresh
        return len(listed)

    async def _learn_lineages(self, infos: Sequence[RerunInfo]) -> int:
        """Read the lineage labels of listed reruns this process does not know yet (one
        GetRunDetails each, once: the index keeps what it learned). Open-source Flyte lists
        runs without labels, and the budgets and the lineage notice count reruns by (root,
        attempt) and policy. A failed read leaves the rerun known by name only until the next
        pass; returns how many reads failed."""
        failed = 0

        async def learn(info: RerunInfo) -> None:
            async with self._reads:
                try:
                    run = await self._cp.get_run(info.ref)
                except ControlPlaneError as exc:
                    nonlocal failed
                    failed += 1
                    self._count_error(exc)
                    return
            # "" = read, and not part of a lineage (a reproduction rerun inherits the labels of
            # the run it reruns): never read again
            info.root = "" if LABEL_REPRO in run.labels else run.labels.get(LABEL_ROOT, "")
            info.attempt = attempt_of(run.labels) if LABEL_ATTEMPT in run.labels else None
            info.policy = info.policy or run.labels.get(LABEL_POLICY)

        await asyncio.gather(*(learn(i) for i in infos))
        return failed
