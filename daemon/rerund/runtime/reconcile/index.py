"""The reruns index: every rerun known to exist on the control plane, by name and by
(scope, lineage root, attempt), from the last listing plus this process's own creates.

It is what makes issuing exactly-once cheap: a create first looks its (root, attempt) up here,
so a rerun that exists costs no RPC (its name, ``<root>-retry-<attempt>``, is the control
plane's guard against a second create whatever this index knows). It is
also where budget counts come from. Lineage learning fills in the labels a listing does not
return (open-source Flyte lists runs without labels): one GetRunDetails per unknown rerun, once.

Only reruns whose lineage labels are vouched for count (``rerund.core.lineage.vouches``): by
their relation (read with the labels; a relation naming a run not listed costs one
GetRunDetails of that run, once), by the ledger, or because this process created them. A run
with labels nobody vouches for is *forged*: it is in no lineage, no budget and no ``has``;
``on_forged`` hears of it once. A budget counts a lineage attempt once, however many runs
(an operator's copies of a rerun) carry it.

A pass costs what changed, not what the window holds: a scope is listed in full once (at
start, when the window reaches further back than the last full listing, and every
``FULL_RELISTING_EVERY`` — which also forgets reruns deleted or older than the window), and
every pass in between lists only the reruns of the window updated since the last listing
(``changed_since``, less ``CHANGE_MARGIN`` for a run created just before a listing but
committed just after it) and merges them in. Budget counts (``BudgetCounter``) follow each
rerun added, reserved, released or listed, and are rebuilt only after a full listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rerund.core.lineage import (
    MAX_ATTEMPT,
    BudgetCounter,
    attempt_of,
    claimed_lineage,
    policy_budgets,
    unvouched,
    vouches,
)
from rerund.core.runs import (
    LABEL_ATTEMPT,
    LABEL_POLICY,
    LABEL_REPRO,
    LABEL_ROOT,
    FailureFacts,
    RunRef,
    RunSummary,
)
from rerund.core.scopes import Coverage
from rerund.core.status import ListedRerun
from rerund.errors import ControlPlaneError, NotFoundError
from rerund.ports import ControlPlane
from rerund.sizedcache import ENTRY_BYTES, SizedCache, str_bytes

__all__ = ["CHANGE_MARGIN", "FULL_RELISTING_EVERY", "RerunIndex", "RerunInfo"]

# Runs whose lineage claim was checked (labels never change), bounded in bytes (~330 bytes a
# run): 8 MiB hold ~25,000, the reruns of a budget window of an hour at 6 failures/s with room
# to spare; a claim evicted is checked again when the run is listed again (the ledger first).
_VOUCHED_BYTES = 8 * 1024 * 1024
_FORGED_SEEN_BYTES = 1024 * 1024  # runs with forged labels already reported (~250 bytes each)
# How often a scope's reruns are listed in full (the window's reruns), not only those changed.
FULL_RELISTING_EVERY = timedelta(minutes=10)
# How far before the last listing a listing of changes reaches: a run created (by the control
# plane's clock, which the loop's clock follows) just before a listing may be committed after it.
CHANGE_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class _Listed:
    """What the index holds of one scope: every rerun created since ``since`` as of the full
    listing at ``full_at``, and the changes listed up to the listing that began at ``mark``."""

    since: datetime
    full_at: datetime
    mark: datetime


@dataclass(slots=True)
class RerunInfo:
    """One rerun: its lineage (root, attempt) and policy when known, and when it was created."""

    ref: RunRef
    created_at: datetime | None
    policy: str | None = None
    root: str | None = None
    attempt: int | None = None
    phase: str = ""  # as last listed ("" = created here, not listed since)
    # Whether (root, attempt) is vouched for (created here, relation, ledger); None: not yet known.
    trusted: bool | None = None
    relation: RunRef | None = None
    relation_known: bool = False

    @property
    def claim(self) -> tuple[str, int] | None:
        return (self.root, self.attempt) if self.root and self.attempt else None


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
            info.trusted = info.trusted if info.trusted is not None else old.trusted
        self.by_name[info.ref] = info
        if self._lineages is not None and info.trusted:
            self._lineages.add((info.ref.scope, info.root, info.attempt))

    def has(self, ref: RunRef, root: str, attempt: int) -> bool:
        """Whether a vouched-for rerun of (scope, root, attempt) is known, whatever its name: a
        run merely *named* like the rerun is not it (another lineage's, or a squatter's)."""
        if self._lineages is None:
            self._lineages = {(i.ref.scope, i.root, i.attempt) for i in self.by_name.values() if i.trusted}
        return (ref.scope, root, attempt) in self._lineages

    def vouched_changed(self) -> None:
        """Some reruns' ``trusted`` changed in place: the lineage set is rebuilt on the next ``has``."""
        self._lineages = None


def _claim_bytes(ref: RunRef, claim: tuple[str, int] | None) -> int:
    """Estimated bytes of one checked lineage claim: the entry, the run's name, the root's."""
    return ENTRY_BYTES + str_bytes(ref.name) + (0 if claim is None else 64 + str_bytes(claim[0]))


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
        issued_as: Callable[[RunRef], tuple[str, int] | None] = lambda _: None,
        on_forged: Callable[[RunRef, Mapping[str, str]], None] = lambda *_: None,
    ) -> None:
        self._cp = control_plane
        self._issued_as = issued_as  # the ledger: (root, attempt) of a run rerund recorded creating
        self._on_forged = on_forged
        # Runs whose lineage claim was checked: (root, attempt) vouched for, or None (original,
        # forged). Labels and relations never change, so an answer holds for the run's life.
        self._vouched: SizedCache[RunRef, tuple[str, int] | None] = SizedCache(
            "lineage_claims", _VOUCHED_BYTES, _claim_bytes
        )
        self._forged_seen: SizedCache[RunRef, None] = SizedCache(
            "forged_seen", _FORGED_SEEN_BYTES, lambda ref, _: ENTRY_BYTES + str_bytes(ref.name)
        )
        self._coverage = coverage or Coverage(())  # which listing finds which run (core.scopes)
        self._reads = reads
        self._count_error = count_error
        self._known = _Known()
        self._reserved: dict[RunRef, RerunInfo] = {}
        # The budget counts of the indexed and reserved reruns, kept as they change while a
        # policy in force has a budget; None while none has (nothing later reads them: built
        # again from the index on the first ``budget_counts``).
        self._budgets: BudgetCounter | None = None
        self._listed: dict[str, _Listed] = {}  # scope -> what its listings covered
        # Listed reruns whose lineage could not be read since ``start_pass``: until a listing
        # has read every one, the index does not cover the policies in force.
        self.unlearned = 0

    @property
    def caches(self) -> tuple[SizedCache[RunRef, Any], ...]:
        """The index's long-lived caches (``rerund_cache_bytes``)."""
        return (self._vouched, self._forged_seen)

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
        self._count(info.ref)

    def holder(self, ref: RunRef) -> RerunInfo | None:
        """The indexed run named ``ref``, if any (no RPC)."""
        return self._known.by_name.get(ref)

    def reserve(self, info: RerunInfo) -> None:
        self._reserved[info.ref] = info
        self._count(info.ref)

    def release(self, ref: RunRef) -> None:
        if self._reserved.pop(ref, None) is not None:
            self._count(ref)

    def lineages(self) -> dict[tuple[str, str, int], str]:
        """(scope "project/domain", root, attempt) -> name of every known rerun whose lineage is
        known (``rerund sweep`` plans against it and names the rerun in its preview)."""
        return {
            (i.ref.scope, i.root, i.attempt): i.ref.name
            for i in self._known.by_name.values()
            if i.root and i.attempt is not None and i.trusted
        }

    def members(self) -> Iterator[tuple[str, str | None, int | None]]:
        """(name, root, attempt) of every indexed rerun vouched for."""
        return ((i.ref.name, i.root, i.attempt) for i in self._known.by_name.values() if i.trusted)

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
            if i.root and i.trusted
        ]

    def budget_counts(
        self, now: datetime, budgets: Mapping[str, timedelta]
    ) -> tuple[dict[str, int], dict[str, datetime]]:
        """Budget counts over the indexed reruns and those being created right now: a lineage
        attempt counts once; a forged run never (one not checked yet does). A binary search per
        budget (``BudgetCounter``, kept as reruns are added, reserved, released and listed)."""
        if self._budgets is None:
            self._recount()
        assert self._budgets is not None
        return self._budgets.counts(budgets, now)

    @property
    def counting(self) -> bool:
        """Whether budget counts are kept (a policy in force has a budget)."""
        return self._budgets is not None

    def _count(self, ref: RunRef) -> None:
        """Count run ``ref`` again as the index now holds it: indexed, else reserved, else not."""
        if self._budgets is None:
            return
        info = self._known.by_name.get(ref) or self._reserved.get(ref)
        if info is None or info.trusted is False:
            self._budgets.discard(ref)
            return
        claim = info.claim
        group = (ref.scope, *claim) if info.trusted and claim is not None else None
        self._budgets.put(ref, (info.policy, info.created_at), group)

    def _recount(self) -> None:
        """Count every indexed and reserved rerun afresh (after a full listing, or when a
        budget comes into force)."""
        self._budgets = BudgetCounter()
        for ref in (*self._known.by_name, *self._reserved):
            self._count(ref)

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
        a control plane that lists no labels, 1 more per budgeted policy); ``on_listed`` sees
        each one. A full listing replaces the scope's part of the index; between full listings
        (see the module docstring) only the reruns changed since the last listing are listed
        and merged in. Returns how many were listed; raises ``ControlPlaneError`` when the
        listing fails."""
        scope = f"{project}/{domain}"
        if not budgets:
            self._budgets = None  # no budget in force: no counts to keep
        covered = self._listed.get(scope)
        full = covered is None or since < covered.since or now - covered.full_at >= FULL_RELISTING_EVERY
        changed_since = None if full or covered is None else covered.mark - CHANGE_MARGIN
        listed = [
            r
            for r in await self._cp.list_reruns(project, domain, since=since, changed_since=changed_since)
            if self._coverage.finds(scope, r.ref.project, r.ref.domain)
        ]
        by_policy: dict[RunRef, str] = {}
        if any(LABEL_POLICY not in r.labels for r in listed):
            # Open-source Flyte does not return labels in ListRuns: ask per budgeted policy.
            for name, window in policy_budgets(budgets).items():
                for r in await self._cp.list_reruns(
                    project, domain, since=now - window, policy=name, changed_since=changed_since
                ):
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
                relation=r.relation,
                relation_known=r.relation_known,
            )
            known = self._known.by_name.get(r.ref)
            if info.root is None and known is not None and known.root is not None:
                info.root, info.attempt = known.root, known.attempt
                info.policy = info.policy or known.policy
                info.relation, info.relation_known = known.relation, known.relation_known
            if known is not None and known.trusted is not None:
                info.trusted = known.trusted
            if info.root is None or (
                info.trusted is None and not info.relation_known and r.ref not in self._vouched
            ):
                unknown.append(info)
            fresh.add(info)
            on_listed(r)
        unread = await self._learn_lineages(unknown)
        unread += await self._vouch_listed(fresh, [fresh.by_name[r.ref] for r in listed])
        self.unlearned += unread
        if not full:
            for info in fresh.by_name.values():
                self._known.add(info)
                self._count(info.ref)
        else:
            # Keep other scopes, and what this listing cannot know yet (created by us while it ran).
            for ref, info in self._known.by_name.items():
                if not self._coverage.finds(scope, ref.project, ref.domain) or (
                    ref not in fresh.by_name and info.created_at is not None and info.created_at >= now
                ):
                    fresh.add(info)
            self._known = fresh
            if self._budgets is not None:
                self._recount()
            self._forget_claims()
        if unread:
            # A rerun whose lineage could not be read is listed again (in full) next pass.
            self._listed.pop(scope, None)
        elif full:
            self._listed[scope] = _Listed(since=since, full_at=now, mark=now)
        elif covered is not None:
            self._listed[scope] = replace(covered, mark=now)
        return len(listed)

    def _forget_claims(self) -> None:
        """After a full listing, forget the checked lineage claims of runs the index no longer
        holds (older than its window, or deleted): a claim is read when its run is listed, so
        the cache follows the window, not the history. A run listed again later (the window
        widened) is checked again, the ledger first (no RPC for reruns rerund created)."""
        keep = self._known.by_name.keys() | self._reserved.keys()
        for ref in [r for r in self._vouched if r not in keep]:
            self._vouched.pop(ref)

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
            if LABEL_REPRO in run.labels:
                info.trusted = False  # a reproduction rerun: in no lineage and no budget
            info.attempt = attempt_of(run.labels) if LABEL_ATTEMPT in run.labels else None
            info.policy = info.policy or run.labels.get(LABEL_POLICY)
            info.relation, info.relation_known = run.relation, run.relation_known

        await asyncio.gather(*(learn(i) for i in infos))
        return failed

    async def _vouch_listed(self, fresh: _Known, infos: Sequence[RerunInfo]) -> int:
        """Check the lineage claim of every listed rerun not checked yet, oldest first (so the
        run a relation names is usually checked already); returns how many could not be."""
        failed = 0
        listed = fresh.by_name
        for info in sorted(infos, key=lambda i: (i.created_at is None, i.created_at or 0)):
            if info.trusted is not None or (not info.relation_known and info.ref not in self._vouched):
                continue
            claim = info.claim
            if claim is None:
                if info.root is None:
                    continue  # its labels are not read yet
                # A policy label without a lineage rerund writes (no root, or no attempt 1..1000).
                info.trusted = False
                self._forged(info.ref, {LABEL_ROOT: info.root, LABEL_POLICY: info.policy or ""})
                continue
            try:
                found = await self._check(info.ref, claim, info.relation, listed, depth=0)
            except ControlPlaneError as exc:
                failed += 1
                self._count_error(exc)
                continue
            info.trusted = found == claim
        fresh.vouched_changed()
        return failed

    async def vouched_facts(self, facts: FailureFacts) -> FailureFacts:
        """``facts`` as the core may decide them: unchanged when the run claims no lineage or
        its claim is vouched for; without the lineage labels (``unvouched``: an original run of
        its own) when nobody vouches for them. May read the run its relation names (one
        GetRunDetails, once); raises ``ControlPlaneError`` when that read fails."""
        labels = facts.labels
        if LABEL_REPRO in labels or not any(k in labels for k in (LABEL_ROOT, LABEL_ATTEMPT, LABEL_POLICY)):
            return facts
        ref = facts.summary.ref
        claim = claimed_lineage(labels)
        if (
            claim is not None
            and await self._check(ref, claim, facts.relation, self._known.by_name, depth=0) == claim
        ):
            return facts
        if claim is None:
            self._forged(ref, labels)
        return unvouched(facts)

    async def identity(self, run: RunSummary) -> tuple[str, int] | None:
        """The (root, attempt) run ``run`` is vouched for as (``run`` from GetRunDetails: its
        labels and relation known), None when it is no lineage's rerun. May read the run its
        relation names; raises ``ControlPlaneError`` when that fails."""
        claim = claimed_lineage(run.labels)
        if claim is None:
            return None
        if not run.relation_known:
            run = await self._cp.get_run(run.ref)
        return await self._check(run.ref, claim, run.relation, self._known.by_name, depth=0)

    async def _check(
        self,
        ref: RunRef,
        claim: tuple[str, int],
        relation: RunRef | None,
        listed: Mapping[RunRef, RerunInfo],
        *,
        depth: int,
    ) -> tuple[str, int] | None:
        """The vouched (root, attempt) of run ``ref`` claiming ``claim``, or None (forged)."""
        if ref in self._vouched:
            self._vouched.touch(ref)
            return self._vouched[ref]
        known = self._known.by_name.get(ref) or listed.get(ref)
        if known is not None and known.trusted and known.claim == claim:
            return claim
        # Cheapest first: the relation to the root (no I/O), the ledger (local), the relation
        # to a rerun of the lineage (its identity: indexed, or one GetRunDetails).
        found: tuple[str, int] | None = claim
        if not vouches(ref, claim, relation, None) and self._issued_as(ref) != claim:
            parent = None
            if (
                relation is not None
                and relation != ref
                and relation.scope == ref.scope
                and depth < 2 * MAX_ATTEMPT
            ):
                parent = await self._identity_of(relation, listed, depth=depth + 1)
            found = claim if vouches(ref, claim, relation, parent) else None
        self._remember(ref, found)
        if found is None:
            self._forged(ref, {LABEL_ROOT: claim[0], LABEL_ATTEMPT: str(claim[1])})
        return found

    async def _identity_of(
        self, ref: RunRef, listed: Mapping[RunRef, RerunInfo], *, depth: int
    ) -> tuple[str, int] | None:
        """The vouched (root, attempt) of the run a relation names (None: an original run, a
        forged one, or gone)."""
        if ref in self._vouched:
            return self._vouched[ref]
        info = self._known.by_name.get(ref) or listed.get(ref)
        if info is not None and info.trusted is not None:
            return info.claim if info.trusted else None
        if info is not None and info.relation_known and info.claim is not None:
            return await self._check(ref, info.claim, info.relation, listed, depth=depth)
        try:
            # No ``reads`` permit: a failure being read holds one already (the listing's checks
            # run one at a time).
            run = await self._cp.get_run(ref)
        except NotFoundError:
            return None  # gone (garbage-collected): it vouches for nothing
        claim = claimed_lineage(run.labels)
        if claim is None:
            return None
        return await self._check(ref, claim, run.relation, listed, depth=depth)

    def _remember(self, ref: RunRef, found: tuple[str, int] | None) -> None:
        self._vouched.put(ref, found)

    def _forged(self, ref: RunRef, labels: Mapping[str, str]) -> None:
        if ref in self._forged_seen:
            return
        self._forged_seen.put(ref, None)
        self._on_forged(ref, labels)
