"""The reconcile loop: read facts from the control plane, call the pure core, record, act.

Level-triggered: what a failed run is owed is a pure function (``rerund.core.decide``) of
facts on the control plane (its error, its vouched lineage labels, the reruns that exist), so
after a crash, a restart or on another replica the same facts give the same decision. Local
state (the seen-cache, the ledger, the scheduler's jobs) only saves RPCs and records history.

Contract:

- *Never twice.* A rerun's name is a function of its lineage attempt (``rerund.core.names``);
  ``creates`` sends each create once, under a name no other run holds.
- *Never missed.* Failed runs come from a WatchRuns stream and a ListRuns resync every pass
  (where each listing starts: ``windows``); the watermark never passes a failure still owed
  something (``owed``). Only a decision carried out settles a failure; a transient error
  leaves it pending, retried with backoff (``issuer``).
- No policy ``if`` lives here: the four decision kinds map to four actions (a relaunch is a
  ``Rerun``; a ``WaitForVersion`` stays pending until the task listing shows another version
  or its ``max_wait`` ends).

RPC costs are those of the ``rerund.ports.ControlPlane`` methods; a settled failure and an
already-issued rerun cost none on the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from rerund.aiotasks import TaskSet
from rerund.clock import utcnow
from rerund.core.decide import decide as core_decide
from rerund.core.lineage import failure_from, lineage_names
from rerund.core.model import Decision, Defer, Failure, GiveUp, Ignore, Rerun, WaitForVersion
from rerund.core.rules import PolicySet
from rerund.core.runs import FAILED_PHASES, FailureFacts, RunRef, RunSummary
from rerund.core.scopes import Coverage
from rerund.core.status import ListedRerun
from rerund.errors import (
    ControlPlaneError,
    CredentialsError,
    NotFoundError,
)
from rerund.ports import ControlPlane, DecisionLedger, Notifier, Outbox, Scheduler
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.creates import Creates, Issued
from rerund.runtime.reconcile.facts import ReadAgain, facts_to_decide
from rerund.runtime.reconcile.follow import Follower
from rerund.runtime.reconcile.incidents import Incidents
from rerund.runtime.reconcile.index import RerunIndex, RerunInfo
from rerund.runtime.reconcile.inflight import InFlight
from rerund.runtime.reconcile.issuer import Issuer
from rerund.runtime.reconcile.owed import SEEN_BYTES, SEEN_CAPACITY, OwedWork, Waiting
from rerund.runtime.reconcile.recorder import DecisionRecorder
from rerund.runtime.reconcile.windows import DEEP_LISTING_EVERY, ListingWindows
from rerund.runtime.relaunch import TaskVersions, task_key

__all__ = ["DEEP_LISTING_EVERY", "DEFAULT_LOOKBACK", "Reconciler", "SyncReport"]

log = logging.getLogger("rerund.reconcile")
decisions_log = logging.getLogger("rerund.decisions")

Decide = Callable[[Failure, PolicySet, datetime], Decision]

DEFAULT_LOOKBACK = timedelta(hours=1)
_RETRY_INITIAL = 0.5
_RETRY_MAX = 30.0
# Decisions made from cached facts cost CPU only (no RPC, no await): a pass that makes many of
# them (after a policy reload, or a backlog of due items) yields to the event loop after every
# this many, so /healthz, the stream and the HTTP routes are served while it works.
_DECISIONS_PER_YIELD = 64
_SLICE_S = 0.02  # ... or after this long deciding, whichever comes first (``_redecide_due``)


@dataclass(frozen=True)
class SyncReport:
    """What one resync pass saw (for logs and tests)."""

    ok: bool
    failed_runs: int
    reruns_listed: int
    errors: tuple[str, ...] = ()


class Reconciler:
    """The reconcile loop of one daemon. Call ``sync`` (a resync pass), ``on_watch`` (a stream
    event) and ``drain`` (wait for spawned issue/notify tasks); ``stop`` makes it refuse work.

    It owns only the wiring and the pass state (the indexed policy generation, the last
    sync); what is owed, in flight, indexed, recorded and spawned is each its own object's,
    changed only through that object's methods."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        scopes: Sequence[tuple[str, str]],
        policies: Callable[[], PolicySet],
        metrics: Metrics,
        ledger: DecisionLedger | None = None,
        scheduler: Scheduler | None = None,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
        on_put: Callable[[], None] = lambda: None,
        fence: Callable[[], Awaitable[None]] | None = None,
        decide: Decide = core_decide,
        clock: Callable[[], datetime] = utcnow,
        dry_run: bool = False,
        max_concurrent_reruns: int = 8,
        lookback: timedelta = DEFAULT_LOOKBACK,
        overlap: timedelta = timedelta(minutes=5),
        seen_capacity: int = SEEN_CAPACITY,
        seen_bytes: int = SEEN_BYTES,
        recent_capacity: int = 200,
        retry_initial: float = _RETRY_INITIAL,
        retry_max: float = _RETRY_MAX,
        error_wait: timedelta = timedelta(seconds=60),
        error_recheck: timedelta = timedelta(seconds=2),
    ) -> None:
        self._cp = control_plane
        # Scopes may be patterns (``*/*``, ``ml/*``): those are listed and watched org-wide
        # (one ListRuns with ``org``, key ``*/*``) and filtered by ``coverage``.
        coverage = Coverage(tuple((p, d) for p, d in scopes))
        self._policies = policies
        self._metrics = metrics
        self._scheduler = scheduler
        self._decide = decide
        self._clock = clock
        self._reads = asyncio.Semaphore(max(8, max_concurrent_reruns))
        self._stopping = asyncio.Event()
        self._tasks = TaskSet(log, on_error=metrics.internal_errors.labels("reconcile task").inc)
        self._inflight = InFlight()
        self._owed = OwedWork(
            lookback=lookback,
            overlap=overlap,
            seen_capacity=seen_capacity,
            seen_bytes=seen_bytes,
            coverage=coverage,
            error_wait=error_wait,
            error_recheck=error_recheck,
        )
        self._issuer = Issuer(
            metrics, stopping=self._stopping, clock=clock, initial=retry_initial, maximum=retry_max
        )
        self._recorder = DecisionRecorder(
            metrics=metrics,
            log=log,
            spawn=self._tasks.spawn,
            ledger=ledger,
            notifier=notifier,
            outbox=outbox,
            on_put=on_put,
            recent_capacity=recent_capacity,
        )
        self._incidents = Incidents(self._recorder, self._tasks.spawn, clock())
        self._index = RerunIndex(
            control_plane,
            reads=self._reads,
            count_error=self._issuer.count_error,
            coverage=coverage,
            issued_as=self._recorder.issued_as,
            on_forged=lambda ref, labels: self._recorder.forged(ref, labels),
        )
        metrics.track_caches((self._owed.seen, *self._index.caches, *self._recorder.caches))
        # The policy generation the reruns index was last listed for (-1: never). Until a
        # listing covers the current generation, watch events leave failed runs to the next
        # pass: deciding them against an index that may not know their reruns would count
        # budgets wrong and send CreateRuns the name guard then refuses.
        self._indexed_generation = -1
        # The scopes whose reruns this process has listed once. Budgets count the listed
        # reruns: a scope not listed yet (a new leader, a restart, its first listing failed)
        # decides nothing while budgets are in force, or it would count none and spend them again.
        self._reruns_listed: set[str] = set()
        # The policies the failures were decided under (set at the first pass): a reload to a
        # set that decides alike decides nothing again.
        self._decided_under: PolicySet | None = None
        self._versions = TaskVersions(control_plane)
        self._creates = Creates(
            control_plane,
            index=self._index,
            recorder=self._recorder,
            issuer=self._issuer,
            inflight=self._inflight,
            metrics=metrics,
            clock=clock,
            stopping=self._stopping,
            fence=fence,
            dry_run=dry_run,
            max_concurrent=max_concurrent_reruns,
        )
        self._follow = Follower(
            control_plane,
            reads=self._reads,
            issuer=self._issuer,
            recorder=self._recorder,
            index=self._index,
            incidents=self._incidents,
        )
        self._windows = ListingWindows(coverage, self._owed, self._recorder)
        self.last_sync: datetime | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def recent(self) -> tuple[dict[str, Any], ...]:
        """The latest decisions (``/decisions``), oldest first."""
        return self._recorder.recent

    @property
    def incidents(self) -> Incidents:
        """The outage breaker's incidents (``rerund incidents``, ``/status``)."""
        return self._incidents

    def count_error(self, exc: ControlPlaneError, *, rpc: str = "unknown") -> None:
        """Count a failed control-plane call the daemon made outside the loop (a watch)."""
        self._issuer.count_error(exc, rpc=rpc)

    def stop(self) -> None:
        """Refuse new work; issue loops stop retrying (what they owe stays pending)."""
        self._stopping.set()

    def policies_changed(self) -> None:
        """Policies were reloaded. When they decide as those in force did
        (``PolicySet.decides_like``: a comment, a moved line), nothing changes. Otherwise the
        failures still owed something are decided again under them at the next pass, from
        cached facts (no RPC), in chunks that yield to the event loop (``_redecide_due``);
        settled failures (a rerun issued, given up, ignored) are not: their decisions were
        carried out and are final (``OwedWork.policies_changed``)."""
        policies = self._policies()
        if self._decided_under is not None and policies.decides_like(self._decided_under):
            log.info("the reloaded policies decide as those in force did: no failure is decided again")
            return
        self._decided_under = policies
        owed = self._owed.policies_changed()
        log.info("policies changed: %d failure(s) still owed are decided again at the next pass", owed)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for spawned tasks (issues, notifications). True when all finished in time."""
        return await self._tasks.drain(timeout)

    async def cancel(self) -> None:
        """Cancel the spawned tasks still running (the daemon stops): what they owe stays owed."""
        await self._tasks.stop()

    def pending(self) -> dict[str, datetime | None]:
        """Failures still owed an action -> when they are due (None: at the next pass)."""
        return {str(ref): due for ref, due in self._owed.due_times().items()}

    def cached_failures(self) -> int:
        """How many failures the seen-cache holds: within ``seen_capacity`` and ``seen_bytes``,
        more only while the resync window still lists them (what this process's memory grows
        with)."""
        return len(self._owed.seen)

    def listed_reruns(self) -> list[ListedRerun]:
        """The reruns of known lineages as last listed, plus this process's creates (no RPC)."""
        return self._index.listed()

    def watermark(self, project: str, domain: str) -> datetime | None:
        return self._owed.watermark(f"{project}/{domain}")

    async def sync(self) -> SyncReport:
        """One resync pass over every scope: list existing reruns (index, outcomes, budget
        counts), list failed runs since the watermark minus the overlap, reconcile each, re-decide
        pending items that are due, advance the watermark. ``ok`` when every list succeeded."""
        now = self._clock()
        errors: list[str] = []
        generation = self._owed.generation
        policies = self._policies()
        if self._decided_under is None:
            self._decided_under = policies
        await self._release(self._incidents.configure(policies.incidents, now))
        reruns = 0
        self._index.start_pass()
        for project, domain in self._windows.scopes:
            try:
                reruns += await self._refresh_reruns(project, domain, now, policies)
                self._reruns_listed.add(f"{project}/{domain}")
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                errors.append(f"{project}/{domain}: {exc}")
        if not errors and not self._index.unlearned:
            # Only a listing that read every rerun's lineage covers these policies: one failed
            # GetRunDetails leaves watch events to the next pass.
            self._indexed_generation = generation
        await self._follow.canaries(now, self._release)
        failed_total = 0
        for project, domain in self._windows.scopes:
            scope = f"{project}/{domain}"
            if scope not in self._reruns_listed and policies.budgets():
                continue  # its failures wait for a listing of its reruns (the pass is not ok)
            self._windows.floor(scope, now)
            since = self._windows.since(scope, now)
            self._owed.listed(scope, since)
            listing, deep = self._windows.failed_start(scope, since, now)
            try:
                failed = await self._cp.list_failed(project, domain, since=listing)
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                errors.append(f"{scope}: {exc}")
                self._windows.failed_listing_lost(scope)
                continue
            self._windows.failed_listed(scope, now, deep=deep)
            failed = [s for s in failed if self._owed.finds(scope, s.ref)]
            failed_total += len(failed)
            for summary in failed:
                self._recorder.observe(summary, now)
            await self._handle_many([s for s in failed if s.phase in FAILED_PHASES], now)
            self._recorder.save_watermark(scope, self._owed.durable(scope, self._owed.advance(scope, now)))
        await self._relaunch_fixed()
        await self._redecide_due(now)
        self._incidents.save(self._clock())
        if not errors:
            # When the pass finished, not when it began: a pass over a large backlog (thousands
            # of deferred failures listed again) must not read as an old sync when it ends.
            done = self._clock()
            self.last_sync = done
            self._metrics.last_sync.set(done.timestamp())
        else:
            log.warning("resync pass incomplete (will retry next poll): %s", "; ".join(errors))
        return SyncReport(ok=not errors, failed_runs=failed_total, reruns_listed=reruns, errors=tuple(errors))

    async def on_watch(self, summary: RunSummary) -> None:
        """A WatchRuns event: follow rerun outcomes; reconcile a failed run."""
        handle = self.watch_event(summary)
        if handle is not None:
            await handle

    def watch_event(self, summary: RunSummary) -> Coroutine[Any, Any, None] | None:
        """A WatchRuns event, at once: the outcome of a rerun followed here is recorded; a failed
        run to reconcile is returned as the coroutine that does it (to run as a task), anything
        else as None — most events are a run queued or running, and cost no task."""
        if self.stopping or not summary.terminal:
            return None
        now = self._clock()
        if not self._windows.covers(summary.ref):
            return None  # an org-wide stream also carries runs of projects no scope names
        self._recorder.observe(summary, now)
        if self._incidents.is_canary(summary.ref):
            released = self._incidents.run_ended(summary, now)
            if released:
                return self._release(released)
        if summary.phase not in FAILED_PHASES:
            return None
        if summary.ended_at is not None and summary.ended_at < self._windows.floor(
            self._windows.key_of(summary.ref), now
        ):
            return None  # older than the lookback (e.g. in the stream's first snapshot)
        if self._indexed_generation != self._owed.generation:
            return None  # the reruns index is not listed yet for these policies: the pass decides it
        return self._handle_read(summary, now)

    async def _handle_read(self, summary: RunSummary, now: datetime) -> None:
        async with self._reads:
            await self._handle(summary, now)

    # -- reading -----------------------------------------------------------------------------

    async def _refresh_reruns(self, project: str, domain: str, now: datetime, policies: PolicySet) -> int:
        budgets = policies.budgets()
        scope = f"{project}/{domain}"
        since = self._windows.reruns_since(scope, now, budgets)
        listed = await self._index.refresh(
            project,
            domain,
            since=since,
            budgets=budgets,
            now=now,
            on_listed=lambda r: self._recorder.observe(r, now),
        )
        await self._follow.alone(scope, since, now)
        return listed

    # -- deciding ----------------------------------------------------------------------------

    async def _handle_many(self, summaries: Iterable[RunSummary], now: datetime) -> None:
        """Decide each failed run: those decided already cost a lookup; those with cached facts
        (re-decided after a reload) are decided here in turn, yielding to the event loop every
        ``_DECISIONS_PER_YIELD``; the rest are read concurrently (at most ``_reads`` at once)."""

        async def one(s: RunSummary) -> None:
            async with self._reads:
                await self._handle(s, now)

        to_read: list[RunSummary] = []
        cached = 0
        for s in summaries:
            marker = (s.phase, s.ended_at)
            if self._owed.decided(s.ref, marker):
                continue
            if self._owed.cached_facts(s.ref, marker) is None:
                to_read.append(s)
                continue
            await self._handle(s, now)
            cached += 1
            if cached % _DECISIONS_PER_YIELD == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*(one(s) for s in to_read))

    async def _handle(self, summary: RunSummary, now: datetime) -> None:
        ref = summary.ref
        if self._inflight.busy(ref) or self.stopping:
            return
        marker = (summary.phase, summary.ended_at)
        if self._owed.decided(ref, marker):
            return  # decided already under these policies: costs nothing
        with self._inflight.handling(ref):
            facts = self._owed.cached_facts(ref, marker)
            if facts is None:
                try:
                    facts = await self._index.vouched_facts(await self._cp.read_failure(summary))
                except NotFoundError as exc:
                    self._issuer.count_error(exc)
                    self._owed.remember(ref, marker, None, settled=True)
                    return
                except ControlPlaneError as exc:
                    # Not settled: stays pending, so the watermark holds and the next pass retries.
                    self._issuer.count_error(exc)
                    if not isinstance(exc, CredentialsError):  # reported once a minute, not per run
                        log.warning("run %s: reading its failure failed, retrying next pass: %s", ref, exc)
                    self._owed.owe_unread(summary, summary.ended_at or now)
                    return
                checked = facts_to_decide(summary, facts, self._owed, now)
                if isinstance(checked, ReadAgain):
                    if self._scheduler is not None:
                        self._scheduler.schedule(str(ref), checked.due, lambda: self._redecide(ref))
                    return
                if checked is None:
                    self._settle(ref)
                    return
                facts = checked
                self._recorder.failure(facts, now)
            self._owed.remember(ref, marker, facts, settled=False)
            await self._decide_and_act(facts, now)

    async def _decide_and_act(self, facts: FailureFacts, now: datetime) -> None:
        policies = self._policies()
        budgets = policies.budgets()
        used, oldest = self._index.budget_counts(now, budgets) if budgets else ({}, {})
        failure = failure_from(facts, used, oldest, self._versions.latest(task_key(facts)))
        failure = self._incidents.with_evidence(failure, policies, now)  # give_up_below's history
        decision = self._decide(failure, policies, now)
        ref = facts.summary.ref
        if isinstance(decision, Rerun):
            target = RunRef(ref.project, ref.domain, decision.name)
            if self._index.has(target, failure.root, decision.attempt):
                # Carried out before (by this daemon before a restart, or another replica):
                # not a new decision — no decision line, record or metric, so a restart with a
                # fresh ledger does not look like a retry storm.
                self._creates.found(ref, failure, decision, target, now)
                self._settle(ref)
                return
        decision = self._incidents.gate(failure, decision, ref, now)  # held, canary, or as it is
        novel = self._recorder.decision(facts, failure, decision, now)
        match decision:
            case Rerun(not_before=due) if due > now:
                self._defer(facts, due)
            case Rerun():
                # Stays pending (holding the watermark) until the issue task settles it.
                self._owed.owe(facts, decision.not_before)
                target = RunRef(ref.project, ref.domain, decision.name)
                self._index.reserve(
                    RerunInfo(target, now, decision.policy, failure.root, decision.attempt, trusted=True)
                )
                self._spawn_issue(ref, self._issue(facts, failure, decision))
            case WaitForVersion():
                self._defer(facts, decision.not_before, waiting=(task_key(facts), decision.failed_version))
            case Defer():
                self._defer(facts, decision.not_before)
            case GiveUp():
                if novel:
                    self._recorder.exhausted(
                        facts,
                        failure,
                        decision,
                        lineage=lambda: lineage_names(failure.root, ref.name, self._index.members()),
                        console_url=self._cp.console_url,
                        now=now,
                    )
                self._settle(ref)
            case Ignore():
                self._settle(ref)
            case _:
                assert_never(decision)

    def _defer(self, facts: FailureFacts, due: datetime | None, waiting: Waiting | None = None) -> None:
        ref = facts.summary.ref
        self._owed.owe(facts, due, waiting)
        if due is not None and self._scheduler is not None:
            self._scheduler.schedule(str(ref), due, lambda: self._redecide(ref))

    async def _redecide(self, ref: RunRef) -> None:
        """A scheduled item is due: decide again from the cached facts (fresh budgets, no read),
        under the policies in force (so a listing or a stream event does not decide it again)."""
        pending = self._owed.owed(ref)
        if pending is None or self._inflight.busy(ref) or self.stopping:
            return
        if pending.facts is None:
            await self._handle(pending.summary, self._clock())
            return
        with self._inflight.handling(ref):
            summary = pending.facts.summary
            self._owed.remember(ref, (summary.phase, summary.ended_at), pending.facts, settled=False)
            await self._decide_and_act(pending.facts, self._clock())

    async def _release(self, refs: Sequence[RunRef]) -> None:
        """Decide again now the failures an incident held (it closed): each reruns, paced by
        the concurrency of creates and the control plane's rate gate."""
        for i, ref in enumerate(refs, start=1):
            await self._redecide(ref)
            if i % _DECISIONS_PER_YIELD == 0:
                await asyncio.sleep(0)

    async def _relaunch_fixed(self) -> None:
        """List the latest version of every task a failure waits on (one ListTasks per task)
        and decide again each waiting failure whose task now has another version."""
        waits = self._owed.waiting()
        for exc in await self._versions.refresh(key for key, _ in waits.values()):
            self._issuer.count_error(exc)
            log.warning("listing task versions failed, retrying next pass: %s", exc)
        busy = self._inflight.busy_runs()
        decided = 0
        for ref, (key, failed) in waits.items():
            latest = self._versions.latest(key)
            if latest is not None and latest != failed and ref not in busy:
                await self._redecide(ref)
                decided += 1
                if decided % _DECISIONS_PER_YIELD == 0:
                    await asyncio.sleep(0)
        still = {key for key, _ in self._owed.waiting().values()}
        self._versions.forget({key for key, _ in waits.values()} - still)

    async def _redecide_due(self, now: datetime) -> None:
        """Decide again each pending failure that is due (after a reload, every failure still
        owed) and still due when its turn comes, yielding to the event loop after every
        ``_DECISIONS_PER_YIELD`` decisions or ``_SLICE_S`` seconds, whichever comes first (a slow
        ledger must not make a chunk long)."""
        loop = asyncio.get_running_loop()
        chunk, started = 0, loop.time()
        for ref in self._owed.due(now, self._inflight.busy_runs()):
            pending = self._owed.owed(ref)
            if pending is None or (pending.due is not None and pending.due > now):
                # Decided since the list was taken (the pass yields between chunks): by the
                # stream, a timer or a release. Settled, or owed later: not decided twice.
                continue
            await self._redecide(ref)
            chunk += 1
            if chunk >= _DECISIONS_PER_YIELD or loop.time() - started >= _SLICE_S:
                await asyncio.sleep(0)
                chunk, started = 0, loop.time()

    # -- acting ------------------------------------------------------------------------------

    async def _issue(self, facts: FailureFacts, failure: Failure, decision: Rerun) -> None:
        match await self._creates.issue(facts, failure, decision):
            case Issued.DONE:
                self._settle(facts.summary.ref)
            case Issued.REFUSED:  # rejected, or every name taken: not retried until the policies change
                self._settle(facts.summary.ref, final=False)
            case Issued.PENDING:
                pass  # stays owed (the watermark holds it): decided again at the next pass

    def _settle(self, ref: RunRef, *, final: bool = True) -> None:
        self._owed.settle(ref, final=final)
        if self._scheduler is not None:
            self._scheduler.cancel(str(ref))

    def _spawn_issue(self, ref: RunRef, coro: Awaitable[None]) -> None:
        def failed(exc: Exception) -> None:
            self._metrics.internal_errors.labels("issue").inc()
            log.error("internal error while issuing the rerun of %s; it stays pending", ref, exc_info=exc)

        self._tasks.spawn(self._inflight.issuing(ref, coro), failed=failed)
