"""The reconcile loop: read facts from the control plane, call the pure core, record, act.

Why it is level-triggered
    Nothing the daemon must do is remembered only locally. What a failed run is owed is a pure
    function (``rerund.core.decide``) of facts that live on the control plane: the run's error,
    its lineage labels (``rerund-root``, ``rerund-attempt``) and the reruns that already exist.
    After a crash, a restart or on a second replica the same facts give the same decision, so
    the daemon simply recomputes it. Local state (the seen-cache, the ledger, the scheduler's
    jobs) only saves RPCs and records history.

Why every rerun is issued exactly once
    - *Never twice.* A rerun's name is deterministic and distinct per (lineage root, attempt).
      Before creating it, the daemon looks it up in the index of existing reruns it lists each
      pass (one ListRuns per scope, amortised); and the create itself is idempotent: the control
      plane answers ALREADY_EXISTS to a second CreateRun of the same name (whoever sent the
      first — this process before a crash, or another replica), which the adapter turns into
      ``AlreadyExistsError`` and this loop records as "already issued". Attempt numbers come
      from the failed run's own labels, so a lineage advances one attempt per failed run.
    - *Never missed.* Failed runs are found twice over: a WatchRuns stream per scope (low
      latency) and a ListRuns resync every poll interval (``updated_at >= watermark -
      overlap``). The watermark never moves past a failure that is still owed something
      (scheduled, deferred by a budget, or whose rerun could not be created yet): it is the
      minimum of the pass time and the failure time of every pending item. A transient error
      never settles a failure — it stays pending and is retried with backoff until it
      succeeds. Only a decision that has been carried out (rerun created or found to exist,
      ignore, give up, or a create the control plane rejected as invalid) settles a failure.

Cost (the RPC budget, see ``ports.ControlPlane``): a failure read is 3 RPCs; the seen-cache
(keyed by run and its end time) makes a failure already settled cost nothing on the next
resync; the reruns index makes an already-issued rerun cost nothing either. Budget counts
come from the same reruns listing.

No policy ``if`` lives here: the loop maps the four decision kinds to four actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from rerund.clock import utcnow
from rerund.core.decide import Explanation, explain
from rerund.core.decide import decide as core_decide
from rerund.core.lineage import (
    attempt_of,
    budget_counts,
    exhausted_notice,
    failure_from,
    lineage_names,
    policy_budgets,
    rerun_request,
)
from rerund.core.model import Decision, Defer, Failure, GiveUp, Ignore, Rerun
from rerund.core.rules import PolicySet
from rerund.core.runs import (
    FAILED_PHASES,
    LABEL_ATTEMPT,
    LABEL_POLICY,
    LABEL_REPRO,
    LABEL_ROOT,
    FailureFacts,
    RerunRequest,
    RunRef,
    RunSummary,
)
from rerund.errors import (
    AlreadyExistsError,
    ControlPlaneError,
    LedgerError,
    NotFoundError,
    NotificationError,
    PermanentControlPlaneError,
)
from rerund.ports import ControlPlane, DecisionLedger, Notifier, Scheduler
from rerund.runtime.metrics import Metrics

__all__ = ["Reconciler", "SyncReport"]

log = logging.getLogger("rerund.reconcile")
decisions_log = logging.getLogger("rerund.decisions")

Decide = Callable[[Failure, PolicySet, datetime], Decision]

_SECRET_KEY = re.compile(r"(?i)(key|token|secret|passw|credential|auth)")
_RETRY_INITIAL = 0.5
_RETRY_MAX = 30.0


@dataclass(frozen=True)
class SyncReport:
    """What one resync pass saw (for logs and tests)."""

    ok: bool
    failed_runs: int
    reruns_listed: int
    errors: tuple[str, ...] = ()


@dataclass
class _Seen:
    marker: tuple[str, datetime | None]
    generation: int
    facts: FailureFacts | None
    settled: bool


@dataclass
class _Pending:
    """A failure still owed an action: scheduled, deferred, or whose create must be retried."""

    facts: FailureFacts | None
    summary: RunSummary
    failed_at: datetime
    due: datetime | None


@dataclass
class _RerunInfo:
    ref: RunRef
    created_at: datetime | None
    policy: str | None = None
    root: str | None = None
    attempt: int | None = None


@dataclass
class _Tracked:
    """A rerun this process created (or its ledger remembers), followed to its terminal phase."""

    ref: RunRef
    policy: str
    root: str
    attempt: int
    created_at: datetime


@dataclass
class _Index:
    """Reruns known to exist on the control plane, from the last listing plus local creates."""

    by_name: dict[RunRef, _RerunInfo] = field(default_factory=dict)
    # (scope, root, attempt) of every indexed rerun, built on the first ``has`` (after a listing
    # has learned its lineages) and kept up to date by ``add``: a create checks it in O(1).
    _lineages: set[tuple[str, str | None, int | None]] | None = None

    def add(self, info: _RerunInfo) -> None:
        old = self.by_name.get(info.ref)
        if old is not None:
            info.policy = info.policy or old.policy
            info.root = info.root or old.root
            info.attempt = info.attempt if info.attempt is not None else old.attempt
            info.created_at = info.created_at or old.created_at
        self.by_name[info.ref] = info
        if self._lineages is not None:
            self._lineages.add((info.ref.scope, info.root, info.attempt))

    def has(self, ref: RunRef, root: str, attempt: int) -> bool:
        if ref in self.by_name:
            return True
        if self._lineages is None:
            self._lineages = {(i.ref.scope, i.root, i.attempt) for i in self.by_name.values()}
        return (ref.scope, root, attempt) in self._lineages


def _redact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if _SECRET_KEY.search(k) else v) for k, v in values.items()}


def public_decision(decision: Decision) -> dict[str, Any]:
    """``Decision.to_json()`` with secret-looking env values and inputs masked (for records)."""
    body = decision.to_json()
    body["env"] = _redact(body["env"])
    body["inputs"] = _redact(body["inputs"])
    return body


class Reconciler:
    """The reconcile loop of one daemon. Call ``sync`` (a resync pass), ``on_watch`` (a stream
    event) and ``drain`` (wait for spawned issue/notify tasks); ``stop`` makes it refuse work."""

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
        decide: Decide | None = None,
        clock: Callable[[], datetime] | None = None,
        dry_run: bool = False,
        max_concurrent_reruns: int = 8,
        lookback: timedelta = timedelta(hours=1),
        overlap: timedelta = timedelta(minutes=5),
        seen_capacity: int = 20_000,
        recent_capacity: int = 200,
        retry_initial: float = _RETRY_INITIAL,
        retry_max: float = _RETRY_MAX,
    ) -> None:
        if decide is None:
            decide = core_decide
        if clock is None:
            clock = utcnow
        self._cp = control_plane
        self._scopes = [(p, d) for p, d in scopes]
        self._policies = policies
        self._metrics = metrics
        self._ledger = ledger
        self._scheduler = scheduler
        self._notifier = notifier
        self._decide = decide
        self._clock = clock
        self._dry_run = dry_run
        self._sem = asyncio.Semaphore(max_concurrent_reruns)
        self._reads = asyncio.Semaphore(max(8, max_concurrent_reruns))
        self._lookback = lookback
        self._overlap = overlap
        self._seen: OrderedDict[RunRef, _Seen] = OrderedDict()
        self._seen_capacity = seen_capacity
        self._pending: dict[RunRef, _Pending] = {}
        self._inflight: set[RunRef] = set()  # being read or decided right now
        self._issuing: set[RunRef] = set()  # an issue task is running for it
        self._index = _Index()
        # Reruns decided and being created right now: they count against budgets until the
        # create settles (then the index has them), so two failures decided in one pass cannot
        # both take the last slot.
        self._reserved: dict[RunRef, _RerunInfo] = {}
        self._tracked: dict[RunRef, _Tracked] = {}
        self._watermarks: dict[str, datetime] = {}
        self._floors: dict[str, datetime] = {}
        self._listed_since: dict[str, datetime] = {}  # per scope: where the last listing began
        self._generation = 0
        # The policy generation the reruns index was last listed for (-1: never). Until a
        # listing covers the current generation, watch events leave failed runs to the next
        # pass: deciding them against an index that may not know their reruns could issue an
        # attempt again under another name (after a reload or restart that renamed reruns).
        self._indexed_generation = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._novel_fallback: set[tuple[Any, ...]] = set()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_capacity)
        self.last_sync: datetime | None = None
        self._load_tracked()

    # -- public API --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Refuse new work; issue loops stop retrying (what they owe stays pending)."""
        self._stopping.set()

    def policies_changed(self) -> None:
        """New policies are in force: settled failures are re-decided (from cached facts, no
        RPC) the next time they are seen or on the next pass."""
        self._generation += 1
        for ref, seen in list(self._seen.items()):
            if seen.facts is not None and ref not in self._pending:
                self._pending[ref] = _Pending(
                    facts=seen.facts, summary=seen.facts.summary, failed_at=seen.facts.failed_at, due=None
                )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for spawned tasks (issues, notifications). True when all finished in time."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                return False
            _done, pending = await asyncio.wait(set(self._tasks), timeout=remaining)
            if pending and remaining is not None:
                return False
        return True

    def pending(self) -> dict[str, datetime | None]:
        """Failures still owed an action -> when they are due (None: at the next pass)."""
        return {str(ref): p.due for ref, p in self._pending.items()}

    def watermark(self, project: str, domain: str) -> datetime | None:
        return self._watermarks.get(f"{project}/{domain}")

    async def sync(self) -> SyncReport:
        """One resync pass over every scope: list existing reruns (index, outcomes, budget
        counts), list failed runs since the watermark minus the overlap, reconcile each, re-decide
        pending items that are due, advance the watermark. ``ok`` when every list succeeded."""
        now = self._clock()
        errors: list[str] = []
        generation = self._generation
        policies = self._policies()
        reruns = 0
        for project, domain in self._scopes:
            try:
                reruns += await self._refresh_reruns(project, domain, now, policies)
            except ControlPlaneError as exc:
                self._count_error(exc)
                errors.append(f"{project}/{domain}: {exc}")
        if not errors:
            self._indexed_generation = generation
        failed_total = 0
        for project, domain in self._scopes:
            scope = f"{project}/{domain}"
            self._floor(scope, now)
            since = self._since(scope, now)
            self._listed_since[scope] = since
            try:
                failed = await self._cp.list_failed(project, domain, since=since)
            except ControlPlaneError as exc:
                self._count_error(exc)
                errors.append(f"{scope}: {exc}")
                continue
            failed_total += len(failed)
            for summary in failed:
                self._observe_rerun(summary, now)
            await self._handle_many([s for s in failed if s.phase in FAILED_PHASES], now)
            self._advance_watermark(scope, now)
        await self._redecide_due(now)
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
        if self.stopping:
            return
        now = self._clock()
        self._observe_rerun(summary, now)
        if summary.phase in FAILED_PHASES:
            if summary.ended_at is not None and summary.ended_at < self._floor(summary.ref.scope, now):
                return  # older than the lookback (e.g. in the stream's first snapshot)
            if self._indexed_generation != self._generation:
                return  # the reruns index is not listed yet for these policies: the pass decides it
            async with self._reads:
                await self._handle(summary, now)

    async def explain_run(self, ref: RunRef) -> tuple[Explanation, Failure] | None:
        """The decision the daemon would make about run ``ref`` now, with its trace, from its
        real lineage labels and the budget counts of the reruns on the control plane.

        Read-only: nothing is recorded, scheduled or created. None when the run has not failed
        (rerund decides only about FAILED, TIMED_OUT and ABORTED runs).
        """
        now = self._clock()
        policies = self._policies()
        await self._refresh_reruns(ref.project, ref.domain, now, policies)
        summary = await self._cp.get_run(ref)
        if summary.phase not in FAILED_PHASES:
            return None
        facts = await self._cp.read_failure(summary)
        used, oldest = self._budget_counts(now, policies.budgets())
        failure = failure_from(facts, used, oldest)
        return explain(failure, policies, now), failure

    # -- reading -----------------------------------------------------------------------------

    def _since(self, scope: str, now: datetime) -> datetime:
        wm = self._watermarks.get(scope)
        if wm is None:
            stored = self._ledger_call(lambda lg: lg.watermark(scope))
            if isinstance(stored, datetime):
                wm = stored
                self._watermarks[scope] = wm
        if wm is None:
            # First start: look back --lookback and no further.
            return now - self._lookback
        return wm - self._overlap

    def _floor(self, scope: str, now: datetime) -> datetime:
        """The oldest failure time this process considers in ``scope`` (set on first use)."""
        if scope not in self._floors:
            self._floors[scope] = self._since(scope, now)
        return self._floors[scope]

    def _advance_watermark(self, scope: str, now: datetime) -> None:
        owed = [p.failed_at for ref, p in self._pending.items() if ref.scope == scope]
        wm = min([now, *owed])
        self._watermarks[scope] = wm
        self._ledger_call(lambda lg: lg.set_watermark(scope, wm))

    async def _refresh_reruns(self, project: str, domain: str, now: datetime, policies: PolicySet) -> int:
        budgets = policies.budgets()
        scope = f"{project}/{domain}"
        since = self._since(scope, now)
        if budgets:
            since = min(since, now - max(budgets.values()))
        for tracked in self._tracked.values():
            if tracked.ref.scope == scope and tracked.created_at < since:
                since = tracked.created_at
        # A failure still owed a decision (deferred, retried, or re-decided after a policy
        # reload) may already have its rerun, created after it failed: list back that far so
        # the index finds it by (root, attempt) whatever name the policies now give it.
        for ref, pending in self._pending.items():
            if ref.scope == scope and pending.failed_at < since:
                since = pending.failed_at
        listed = await self._cp.list_reruns(project, domain, since=since)
        by_policy: dict[RunRef, str] = {}
        if any(LABEL_POLICY not in r.labels for r in listed):
            # Open-source Flyte does not return labels in ListRuns: ask per budgeted policy.
            for name, window in policy_budgets(budgets).items():
                for r in await self._cp.list_reruns(project, domain, since=now - window, policy=name):
                    by_policy[r.ref] = name
        fresh = _Index()
        unknown: list[_RerunInfo] = []
        for r in listed:
            labels = r.labels
            info = _RerunInfo(
                ref=r.ref,
                created_at=r.created_at,
                policy=labels.get(LABEL_POLICY) or by_policy.get(r.ref),
                root=labels.get(LABEL_ROOT),
                attempt=attempt_of(labels) if LABEL_ATTEMPT in labels else None,
            )
            known = self._index.by_name.get(r.ref)
            if info.root is None and known is not None and known.root is not None:
                info.root, info.attempt = known.root, known.attempt
                info.policy = info.policy or known.policy
            if info.root is None:
                unknown.append(info)
            fresh.add(info)
            self._observe_rerun(r, now)
        await self._learn_lineages(unknown)
        # Keep other scopes, and what this listing cannot know yet (created by us while it ran).
        for ref, info in self._index.by_name.items():
            if ref.scope != scope or (
                ref not in fresh.by_name and info.created_at is not None and info.created_at >= now
            ):
                fresh.add(info)
        self._index = fresh
        return len(listed)

    async def _learn_lineages(self, infos: Sequence[_RerunInfo]) -> None:
        """Read the lineage labels of listed reruns this process does not know yet (one
        GetRunDetails each, once: the index keeps what it learned). Open-source Flyte lists
        runs without labels, and a rerun must be recognised by (root, attempt), not only by
        name: after a policy reload or a restart the policies may name that attempt
        differently. A failed read leaves the rerun known by name only until the next pass."""

        async def learn(info: _RerunInfo) -> None:
            async with self._reads:
                try:
                    run = await self._cp.get_run(info.ref)
                except ControlPlaneError as exc:
                    self._count_error(exc)
                    return
            # "" = read, and not part of a lineage (a reproduction rerun inherits the labels of
            # the run it reruns): never read again
            info.root = "" if LABEL_REPRO in run.labels else run.labels.get(LABEL_ROOT, "")
            info.attempt = attempt_of(run.labels) if LABEL_ATTEMPT in run.labels else None
            info.policy = info.policy or run.labels.get(LABEL_POLICY)

        await asyncio.gather(*(learn(i) for i in infos))

    def _budget_counts(
        self, now: datetime, budgets: Mapping[str, timedelta]
    ) -> tuple[dict[str, int], dict[str, datetime]]:
        """Budget counts over the indexed reruns and those being created right now."""
        reserved = (i for ref, i in self._reserved.items() if ref not in self._index.by_name)
        reruns = ((i.policy, i.created_at) for i in (*self._index.by_name.values(), *reserved))
        return budget_counts(reruns, budgets, now)

    # -- deciding ----------------------------------------------------------------------------

    async def _handle_many(self, summaries: Iterable[RunSummary], now: datetime) -> None:
        async def one(s: RunSummary) -> None:
            async with self._reads:
                await self._handle(s, now)

        await asyncio.gather(*(one(s) for s in summaries))

    async def _handle(self, summary: RunSummary, now: datetime) -> None:
        ref = summary.ref
        if ref in self._inflight or ref in self._issuing or self.stopping:
            return
        marker = (summary.phase, summary.ended_at)
        seen = self._seen.get(ref)
        if (
            seen is not None
            and seen.marker == marker
            and (seen.generation == self._generation or seen.facts is None)
        ):
            return  # decided already under these policies: costs nothing
        self._inflight.add(ref)
        try:
            facts = seen.facts if seen is not None and seen.marker == marker else None
            if facts is None:
                try:
                    facts = await self._cp.read_failure(summary)
                except NotFoundError as exc:
                    self._count_error(exc)
                    self._remember(ref, marker, None, settled=True)
                    return
                except ControlPlaneError as exc:
                    # Not settled: stays pending, so the watermark holds and the next pass retries.
                    self._count_error(exc)
                    log.warning("run %s: reading its failure failed, retrying next pass: %s", ref, exc)
                    failed_at = summary.ended_at or now
                    self._pending[ref] = _Pending(facts=None, summary=summary, failed_at=failed_at, due=None)
                    return
                if self._novel(
                    "failure",
                    ref,
                    lambda lg: lg.record_failure(
                        project=ref.project,
                        domain=ref.domain,
                        run=ref.name,
                        failed_at=facts.failed_at,
                        now=now,
                    ),
                ):
                    self._metrics.failures_observed.labels(ref.project, ref.domain).inc()
            self._remember(ref, marker, facts, settled=False)
            await self._decide_and_act(facts, now)
        finally:
            self._inflight.discard(ref)

    async def _decide_and_act(self, facts: FailureFacts, now: datetime) -> None:
        policies = self._policies()
        budgets = policies.budgets()
        used, oldest = self._budget_counts(now, budgets) if budgets else ({}, {})
        failure = failure_from(facts, used, oldest)
        decision = self._decide(failure, policies, now)
        novel = self._record(facts, failure, decision, now)
        ref = facts.summary.ref
        match decision:
            case Rerun(not_before=due) if due > now:
                self._defer(facts, due)
            case Rerun():
                # Stays pending (holding the watermark) until the issue task settles it.
                self._pending[ref] = _Pending(
                    facts=facts, summary=facts.summary, failed_at=facts.failed_at, due=decision.not_before
                )
                target = RunRef(ref.project, ref.domain, decision.name)
                self._reserved[target] = _RerunInfo(
                    target, now, decision.policy, failure.root, decision.attempt
                )
                self._spawn_issue(ref, self._issue(facts, failure, decision))
            case Defer():
                self._defer(facts, decision.not_before)
            case GiveUp():
                if novel:
                    self._exhausted(facts, failure, decision, now)
                self._settle(ref)
            case Ignore():
                self._settle(ref)
            case _:
                assert_never(decision)

    def _defer(self, facts: FailureFacts, due: datetime | None) -> None:
        ref = facts.summary.ref
        self._pending[ref] = _Pending(facts=facts, summary=facts.summary, failed_at=facts.failed_at, due=due)
        if due is not None and self._scheduler is not None:
            self._scheduler.schedule(str(ref), due, lambda: self._redecide(ref))

    async def _redecide(self, ref: RunRef) -> None:
        """A scheduled item is due: decide again from the cached facts (fresh budgets, no read)."""
        pending = self._pending.get(ref)
        if pending is None or ref in self._inflight or ref in self._issuing or self.stopping:
            return
        if pending.facts is None:
            await self._handle(pending.summary, self._clock())
            return
        self._inflight.add(ref)
        try:
            await self._decide_and_act(pending.facts, self._clock())
        finally:
            self._inflight.discard(ref)

    async def _redecide_due(self, now: datetime) -> None:
        due = [
            ref
            for ref, p in self._pending.items()
            if (p.due is None or p.due <= now) and ref not in self._inflight and ref not in self._issuing
        ]
        for ref in due:
            await self._redecide(ref)

    def _record(self, facts: FailureFacts, failure: Failure, decision: Decision, now: datetime) -> bool:
        """Ledger, metrics, log line and /decisions entry, once per distinct decision. True when new."""
        ref = facts.summary.ref
        body = public_decision(decision)
        novel = self._novel(
            "decision",
            (ref, decision.decision, decision.policy, body["attempt"]),
            lambda lg: lg.record_decision(
                project=ref.project,
                domain=ref.domain,
                run=ref.name,
                root=failure.root,
                decision=body,
                now=now,
            ),
        )
        if not novel:
            return False
        self._metrics.decisions.labels(decision.policy or "", decision.decision).inc()
        self._metrics.detection_latency.observe(max(0.0, (now - facts.failed_at).total_seconds()))
        if isinstance(decision, Defer):
            self._metrics.budget_deferrals.labels(decision.budget).inc()
        entry = {
            "at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "project": ref.project,
            "domain": ref.domain,
            "run": ref.name,
            "root": failure.root,
            **body,
        }
        self.recent.append(entry)
        decisions_log.info("%-7s %s: %s", decision.decision, ref, decision.reason)
        return True

    def _exhausted(self, facts: FailureFacts, failure: Failure, decision: GiveUp, now: datetime) -> None:
        self._metrics.lineages_exhausted.labels(decision.policy).inc()
        if self._notifier is None:
            return
        ref = facts.summary.ref
        members = ((i.ref.name, i.root, i.attempt) for i in self._index.by_name.values())
        payload = exhausted_notice(
            facts,
            failure,
            decision,
            lineage=lineage_names(failure.root, ref.name, members),
            console_url=self._cp.console_url(ref),
            now=now,
        )
        self._spawn(self._notify(payload))

    async def _notify(self, payload: Mapping[str, Any]) -> None:
        assert self._notifier is not None
        try:
            await self._notifier.notify(payload)
        except NotificationError as exc:
            self._metrics.notifications.labels("failed").inc()
            log.error("%s", exc)
            return
        self._metrics.notifications.labels("sent").inc()

    # -- acting ------------------------------------------------------------------------------

    async def _issue(self, facts: FailureFacts, failure: Failure, decision: Rerun) -> None:
        req = rerun_request(facts, decision)
        try:
            await self._create(facts, failure, decision, req)
        finally:
            self._reserved.pop(req.target, None)

    async def _create(
        self, facts: FailureFacts, failure: Failure, decision: Rerun, req: RerunRequest
    ) -> None:
        ref = facts.summary.ref
        attempt, policy, scope, due = (
            decision.attempt,
            decision.policy,
            decision.scope.value,
            decision.not_before,
        )

        def issue_record(result: str, message: str) -> None:
            now = self._clock()
            self._ledger_call(
                lambda lg: lg.record_issue(
                    source_key=str(ref),
                    project=ref.project,
                    domain=ref.domain,
                    target=req.name,
                    root=failure.root,
                    attempt=attempt,
                    policy=policy,
                    scope=scope,
                    result=result,
                    message=message,
                    now=now,
                )
            )

        if self._index.has(req.target, failure.root, attempt):
            issue_record("already_exists", "found in the reruns listing")
            self._settle(ref)
            return
        if self._dry_run:
            issue_record("dry_run", "--dry-run: not created")
            decisions_log.info("dry-run %s: would create %s", ref, req.target)
            self._settle(ref)
            return
        delay = self._retry_initial
        while not self.stopping:
            try:
                async with self._sem:
                    if self.stopping:
                        break
                    await self._cp.create_rerun(req)
            except AlreadyExistsError:
                issue_record("already_exists", "the control plane answered ALREADY_EXISTS")
                self._index.add(_RerunInfo(req.target, self._clock(), policy, failure.root, attempt))
                decisions_log.info("exists  %s: rerun %s was already issued", ref, req.target)
                self._settle(ref)
                return
            except PermanentControlPlaneError as exc:
                self._count_error(exc)
                issue_record("invalid", str(exc))
                log.error(
                    "run %s: the control plane rejected rerun %s (%s); not retried until the policies "
                    "change: %s",
                    ref,
                    req.name,
                    exc.code,
                    exc,
                )
                self._settle(ref)
                return
            except ControlPlaneError as exc:
                self._count_error(exc)
                log.warning(
                    "run %s: creating rerun %s failed, retrying in %.1fs: %s", ref, req.name, delay, exc
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(delay * 2, self._retry_max)
                continue
            now = self._clock()
            self._metrics.reruns_issued.labels(policy, scope).inc()
            self._metrics.issue_latency.observe(max(0.0, (now - due).total_seconds()))
            issue_record("created", "")
            self._index.add(_RerunInfo(req.target, now, policy, failure.root, attempt))
            self._tracked[req.target] = _Tracked(req.target, policy, failure.root, attempt, now)
            decisions_log.info(
                "created %s: rerun %s (attempt %d, policy %s)", ref, req.target, attempt, policy
            )
            self._settle(ref)
            return
        # Stopping: what is owed stays pending (the watermark holds it for the next start).

    def _settle(self, ref: RunRef) -> None:
        self._pending.pop(ref, None)
        if self._scheduler is not None:
            self._scheduler.cancel(str(ref))
        seen = self._seen.get(ref)
        if seen is not None:
            seen.settled = True
            seen.generation = self._generation

    def _observe_rerun(self, summary: RunSummary, now: datetime) -> None:
        tracked = self._tracked.get(summary.ref)
        if tracked is None or not summary.terminal:
            return
        del self._tracked[summary.ref]
        phase = summary.phase
        ref = summary.ref
        novel = self._novel(
            "outcome",
            ref,
            lambda lg: lg.record_outcome(
                project=ref.project,
                domain=ref.domain,
                target=ref.name,
                policy=tracked.policy,
                root=tracked.root,
                attempt=tracked.attempt,
                phase=phase,
                now=now,
            ),
        )
        if not novel:
            return
        self._metrics.rerun_outcomes.labels(tracked.policy, phase.lower()).inc()
        if phase == "SUCCEEDED":
            self._metrics.lineages_recovered.labels(tracked.policy).inc()
            decisions_log.info(
                "recovered %s: lineage %r succeeded at attempt %d", ref, tracked.root, tracked.attempt
            )

    # -- plumbing ----------------------------------------------------------------------------

    def _load_tracked(self) -> None:
        records = self._ledger_call(lambda lg: lg.created_without_outcome())
        for r in records or ():
            ref = RunRef(r.project, r.domain, r.target)
            self._tracked[ref] = _Tracked(ref, r.policy, r.root, r.attempt, r.at)

    def _remember(
        self, ref: RunRef, marker: tuple[str, datetime | None], facts: FailureFacts | None, settled: bool
    ) -> None:
        self._seen[ref] = _Seen(marker=marker, generation=self._generation, facts=facts, settled=settled)
        self._seen.move_to_end(ref)
        if len(self._seen) <= self._seen_capacity:
            return
        # Evict the least recently seen, but never a failure the next resync lists again (it
        # would be read again, 3 RPCs each, on every pass): past the capacity the cache grows
        # to hold the resync window, and shrinks back as failures fall out of it.
        cutoff = min(self._listed_since.values(), default=None)
        while len(self._seen) > self._seen_capacity:
            _, oldest = next(iter(self._seen.items()))
            ended = oldest.marker[1]
            if cutoff is not None and ended is not None and ended >= cutoff:
                break
            self._seen.popitem(last=False)

    def _spawn_issue(self, ref: RunRef, coro: Awaitable[None]) -> None:
        self._issuing.add(ref)

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("internal error while issuing the rerun of %s; it stays pending", ref)
            finally:
                self._issuing.discard(ref)

        self._spawn(run())

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("internal error in a background task")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count_error(self, exc: ControlPlaneError) -> None:
        self._metrics.control_plane_errors.labels(exc.rpc or "unknown", exc.code or "unknown").inc()

    def _ledger_call(self, fn: Callable[[DecisionLedger], Any]) -> Any:
        if self._ledger is None:
            return None
        try:
            return fn(self._ledger)
        except LedgerError as exc:
            log.error("%s", exc)
            return None

    def _novel(self, kind: str, key: Any, fn: Callable[[DecisionLedger], bool]) -> bool:
        """True when the fact is new: the ledger decides (across restarts); without a working
        ledger, this process remembers."""
        result = self._ledger_call(fn)
        if isinstance(result, bool):
            return result
        token = (kind, key)
        if token in self._novel_fallback:
            return False
        self._novel_fallback.add(token)
        return True
