"""``rerund sweep``: the shell around ``rerund.core.sweep`` — read, plan, record, issue, follow.

A sweep is the daemon's decision core run once over a window of past failures, with the
daemon's own parts: its reruns index (``reconcile.index``), its issuer (``reconcile.issuer``:
one retry-with-backoff for every control-plane call) and its recorder (``reconcile.recorder``:
ledger and metrics). Its steps, each a method, so the CLI can show a preview and ask before
anything is created (RPC costs: those of the ``rerund.ports.ControlPlane`` methods):

0. ``check_scopes``: a scope the control plane does not know is refused.
1. ``plan(window)``: per scope, list the reruns that exist (the index: one paged ListRuns;
   open-source Flyte lists them without labels, so their lineage labels are read once each)
   and the runs that failed in the window (one paged ListRuns), read each failure,
   and ask the pure ``plan_sweep``. Reads are retried for at most ``patience``. Nothing is
   written.
2. ``record(plan)``: every decision of the plan goes to the ledger (opened with
   ``source="sweep"``: ``rerund history --source sweep``) and to the metrics (exposed with
   ``source="sweep"``, ``rerund.runtime.metrics.sweep_metrics``).
3. ``refresh(plan)`` looks again (one ListRuns per scope: a daemon or another sweep may have
   issued some since the preview), then ``issue`` creates each rerun at most ``max_rps`` per
   second, transient errors retried by the issuer. A create answered ALREADY_EXISTS is
   *already issued*; one the control plane rejects is *refused*, with its message. ``stop()``
   (Ctrl-C) lets the creates in flight finish and starts no other.
4. ``follow(results)``: poll the reruns (one ListRuns per scope and poll) until each is
   terminal: *recovered* (SUCCEEDED) or *still failing*.

Why a sweep never issues a rerun twice — with itself, a second sweep, or a running daemon:
the rerun's name is the core's deterministic name for (root, attempt), the plan leaves out
every (root, attempt) that already has a rerun (found by its lineage labels, whatever its
name), and CreateRun of an existing name answers ALREADY_EXISTS. So running the same sweep
again after an interruption continues where it stopped: what was created is found, the rest
is issued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar

from aiolimiter import AsyncLimiter

from rerund.aiotasks import TaskSet
from rerund.core.lineage import decided_as, failure_from, issue_request
from rerund.core.names import MAX_SALT, rerun_name
from rerund.core.records import IssueResult as IssueKind
from rerund.core.records import RerunIssue
from rerund.core.redact import redact_url
from rerund.core.rules import PolicySet
from rerund.core.runs import FAILED_PHASES, FailureFacts, RelaunchRequest, RerunRequest, RunRef, RunSummary
from rerund.core.sweep import PlannedRerun, SweepPlan, Window, plan_sweep
from rerund.errors import (
    AlreadyExistsError,
    ConfigError,
    ControlPlaneError,
    NotFoundError,
    PermanentControlPlaneError,
    UnsupportedError,
)
from rerund.ports import ControlPlane, DecisionLedger, Deployments
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.index import RerunIndex
from rerund.runtime.reconcile.issuer import DeadlineExceeded, Issuer, Stopped
from rerund.runtime.reconcile.recorder import DecisionRecorder, Tracked
from rerund.runtime.relaunch import TaskVersions, send, task_key

__all__ = ["IssueResult", "SweepOutcome", "Sweeper", "unreachable"]

log = logging.getLogger("rerund.sweep")

T = TypeVar("T")
_PATIENCE = timedelta(seconds=10)
_ERROR_WAIT = timedelta(seconds=60)  # the daemon's default error_details_wait

Result = Literal["created", "already_issued", "refused", "not_issued"]


@dataclass(frozen=True)
class IssueResult:
    """What issuing one planned rerun came to, and why (``message``)."""

    item: PlannedRerun
    result: Result
    message: str = ""
    taken_name: str = ""  # the salted name used when the planned one was another run's

    @property
    def name(self) -> str:
        """The rerun's name: the planned one, or the salted one used instead."""
        return self.taken_name or self.item.name

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.item.failure.run,
            "project": self.item.failure.project,
            "domain": self.item.failure.domain,
            "rerun": self.name,
            "policy": self.item.policy,
            "attempt": self.item.attempt,
            "result": self.result,
            "message": self.message,
        }


@dataclass
class SweepOutcome:
    """The end of a sweep: the plan, what each planned rerun came to, and (``--follow``) the
    terminal phase of each rerun by name."""

    plan: SweepPlan
    results: list[IssueResult] = field(default_factory=list)
    interrupted: bool = False
    phases: dict[str, str] = field(default_factory=dict)
    followed: int = 0  # reruns --follow waited for (those not in ``phases`` were still running)

    def count(self, result: Result) -> int:
        return sum(1 for r in self.results if r.result == result)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "issued": self.count("created"),
            "already_issued": self.count("already_issued")
            + sum(1 for s in self.plan.skipped if s.kind in ("already_issued", "duplicate")),
            "skipped": sum(1 for s in self.plan.skipped if s.kind not in ("already_issued", "duplicate")),
            "refused": [r.to_json() for r in self.results if r.result == "refused"],
            "not_issued": self.count("not_issued"),
            "interrupted": self.interrupted,
            "results": [r.to_json() for r in self.results],
        }
        if self.followed:
            body["outcomes"] = dict(sorted(self.phases.items()))
            body["recovered"] = sum(1 for p in self.phases.values() if p == "SUCCEEDED")
            body["still_failing"] = sum(1 for p in self.phases.values() if p in FAILED_PHASES)
            body["still_running"] = self.followed - len(self.phases)
        return body


def unreachable(exc: ControlPlaneError, endpoint: str) -> ControlPlaneError:
    """The error a sweep reports when the control plane cannot be read (nothing was rerun)."""
    detail = str(exc).removesuffix("; retrying with backoff")
    shown = redact_url(endpoint) if endpoint else "(from the API key)"
    return type(exc)(
        f"the control plane at {shown} cannot be read ({detail}); "
        "nothing was rerun: check --endpoint, the network and the credentials, then run the sweep again",
        rpc=exc.rpc,
        code=exc.code,
    )


class Sweeper:
    """One sweep over ``scopes`` with ``policies`` (see the module docstring).

    It is built from the daemon's own parts: the ``RerunIndex`` (what exists, by lineage), the
    ``Issuer`` (one retry-with-backoff for every control-plane call) and the
    ``DecisionRecorder`` (ledger, metrics), so a sweep decides, looks and issues exactly as
    the daemon does. ``patience`` bounds how long a read is retried before the sweep gives up
    (nothing was created by then); creates are retried until they succeed or ``stop()``.
    """

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        scopes: Sequence[tuple[str, str]],
        policies: PolicySet,
        clock: Callable[[], datetime],
        metrics: Metrics,
        ledger: DecisionLedger | None = None,
        max_rps: float | None = None,
        concurrency: int = 4,
        reads: int = 8,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        patience: timedelta = _PATIENCE,
        error_wait: timedelta = _ERROR_WAIT,
        error_recheck: float = 1.0,
    ) -> None:
        self._cp = control_plane
        self._scopes = list(scopes)
        self._policies = policies
        self._clock = clock
        self._metrics = metrics
        # One create per 1/max_rps seconds, no burst: "at most N per second" holds in any second.
        self._limiter = AsyncLimiter(1, 1.0 / max_rps) if max_rps else None
        self._creates = asyncio.Semaphore(concurrency)
        self._reads = asyncio.Semaphore(reads)
        self._patience = patience
        self._error_wait = error_wait
        self._error_recheck = error_recheck
        self._stop = asyncio.Event()
        self._tasks = TaskSet(log)
        self._issuer = Issuer(
            metrics, stopping=self._stop, clock=clock, initial=retry_initial, maximum=retry_max
        )
        self._recorder = self._recording(ledger)
        self._index = RerunIndex(
            control_plane,
            reads=self._reads,
            count_error=self._issuer.count_error,
            issued_as=lambda ref: self._recorder.issued_as(ref),
            on_forged=lambda ref, labels: self._recorder.forged(ref, labels),
        )
        self._facts: dict[RunRef, FailureFacts] = {}  # what the plan was made from, by run
        self._versions = TaskVersions(control_plane)  # latest task versions, for fixes waited for

    def _recording(self, ledger: DecisionLedger | None) -> DecisionRecorder:
        return DecisionRecorder(metrics=self._metrics, log=log, spawn=self._tasks.spawn, ledger=ledger)

    def use_ledger(self, ledger: DecisionLedger) -> None:
        """Record into ``ledger`` from now on (the CLI opens it once the sweep is confirmed, so a
        preview, a dry run or a refusal writes nothing)."""
        self._recorder = self._recording(ledger)

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no further create; the ones in flight finish (Ctrl-C)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _read(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` with the issuer's retries for at most ``patience``; then its last error."""

        def retrying(exc: ControlPlaneError, delay: float) -> None:
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)

        try:
            return await self._issuer.call(fn, on_retry=retrying, until=self._clock() + self._patience)
        except DeadlineExceeded as exc:
            raise exc.last from None

    # -- 0. check ----------------------------------------------------------------------------

    async def check_scopes(self, directory: Deployments) -> None:
        """Raise ``ConfigError`` for a scope the control plane does not know (1 GetProject per
        scope). A control plane that cannot say (no ProjectService, or no scopes at all:
        ``UnsupportedError``) is not checked."""
        for project, domain in self._scopes:
            try:
                known = await self._read(
                    f"checking scope {project}/{domain}", partial(directory.scope_exists, project, domain)
                )
            except UnsupportedError:
                return
            if known is False:
                raise ConfigError(
                    f"unknown scope {project}/{domain}: the control plane has no project {project!r} "
                    f"with domain {domain!r} in this org; nothing was swept: check --scope (or scopes in "
                    "the settings file), written project/domain"
                )

    # -- 1. plan -----------------------------------------------------------------------------

    async def plan(self, window: Window, *, on_read: Callable[[int, int], None] | None = None) -> SweepPlan:
        """List, read and plan (nothing is written). ``on_read(done, total)`` reports reading."""
        now = self._clock()
        await self._look(window, now)
        summaries: list[RunSummary] = []
        for project, domain in self._scopes:
            listed = await self._read(
                f"listing the failures of {project}/{domain}",
                partial(self._cp.list_failed, project, domain, since=window.since),
            )
            summaries.extend(
                s
                for s in listed
                if s.phase in FAILED_PHASES
                and (s.ended_at is None or window.contains(s.ended_at))
                and (s.created_at is None or s.created_at <= window.until)
            )
        done = 0

        async def read(s: RunSummary) -> FailureFacts | None:
            nonlocal done
            async with self._reads:
                try:
                    return await self._read(f"reading run {s.ref}", partial(self._read_vouched, s))
                except NotFoundError:
                    return None  # deleted since it was listed: nothing to recover
                finally:
                    done += 1
                    if on_read is not None:
                        on_read(done, len(summaries))

        read_facts = [f for f in await asyncio.gather(*(read(s) for s in summaries)) if f is not None]
        read_facts = await self._await_errors(read_facts)
        # a run aborted after it had finished is decided as what it was, or not at all
        read_facts = [d for d in map(decided_as, read_facts) if d is not None]
        self._facts = {f.summary.ref: f for f in read_facts}
        used, oldest = self._index.budget_counts(now, self._policies.budgets())

        def planned() -> SweepPlan:
            return plan_sweep(
                [failure_from(f, latest_version=self._versions.latest(task_key(f))) for f in read_facts],
                self._policies,
                window=window,
                now=now,
                existing=self._index.lineages(),
                budget_used=used,
                budget_oldest=oldest,
            )

        plan = planned()
        # A failure that waits for a fix (task_version: newer) is decided on its task's latest
        # version: list it (1 ListTasks per task, as the daemon does) and decide again.
        waiting = {
            task_key(self._facts[RunRef(s.failure.project, s.failure.domain, s.failure.run)])
            for s in plan.skipped
            if s.kind == "waiting_for_fix"
        }
        if not waiting:
            return plan
        for exc in await self._versions.refresh(waiting):
            self._issuer.count_error(exc)
            log.warning("listing task versions failed; those failures keep waiting for a fix: %s", exc)
        return planned()

    async def _read_vouched(self, summary: RunSummary) -> FailureFacts:
        """The failure of ``summary`` as the daemon decides it: lineage labels nobody vouches
        for ignored (``RerunIndex.vouched_facts``)."""
        return await self._index.vouched_facts(await self._cp.read_failure(summary))

    async def _await_errors(self, facts: list[FailureFacts]) -> list[FailureFacts]:
        """Read again, every ``error_recheck`` seconds, the FAILED runs whose error details have
        not arrived yet (open-source Flyte fills them once the last attempt's events arrived),
        each until ``error_wait`` after it failed — the daemon's rule; after that it is decided
        without them, as the daemon does."""
        by_ref = {f.summary.ref: f for f in facts}
        while not self.stopping:
            now = self._clock()
            waiting = [f for f in by_ref.values() if f.error_pending and now - f.failed_at < self._error_wait]
            if not waiting:
                break
            log.info("%d failed run(s) have no error details yet: reading them again", len(waiting))
            await self._issuer.pause(self._error_recheck)
            for again in await asyncio.gather(
                *(
                    self._read(f"reading run {f.summary.ref}", partial(self._read_vouched, f.summary))
                    for f in waiting
                )
            ):
                by_ref[again.summary.ref] = again
        for f in by_ref.values():
            if f.error_pending:
                log.warning(
                    "run %s: its error details did not arrive within %ss of the failure; deciding "
                    "without them",
                    f.summary.ref,
                    f"{self._error_wait.total_seconds():g}",
                )
        return list(by_ref.values())

    async def _look(self, window: Window, now: datetime) -> None:
        """List the reruns that exist (the daemon's reruns index, lineages learned): back to the
        window's start, and as far back as the longest budget window counts.

        A rerun whose lineage labels could not be read is known by name only; the listing is
        repeated (within ``patience``) until every lineage is read. If one still is not, the
        sweep goes on — a rerun's name is a function of (root, attempt), so its create would
        be answered ALREADY_EXISTS — but the preview may show it as to be issued."""
        budgets = self._policies.budgets()
        since = min([window.since, *(now - w for w in budgets.values())])
        deadline = self._clock() + self._patience
        while True:
            self._index.start_pass()
            for project, domain in self._scopes:
                await self._read(
                    f"listing the reruns of {project}/{domain}",
                    partial(self._index.refresh, project, domain, since=since, budgets=budgets, now=now),
                )
            if not self._index.unlearned or self._clock() >= deadline or self.stopping:
                break
            await self._issuer.pause(self._error_recheck)
        if self._index.unlearned:
            log.warning(
                "%d rerun(s) were listed whose lineage labels could not be read; they are known by name "
                "only (a create of the same name is answered ALREADY_EXISTS)",
                self._index.unlearned,
            )

    # -- 2. record ---------------------------------------------------------------------------

    def record(self, plan: SweepPlan) -> int:
        """Every decision of ``plan`` to the ledger and the metrics (the daemon's recorder);
        returns how many were new (a decision recorded before, by the daemon or an earlier
        sweep, is not counted again)."""
        now = self._clock()
        new = 0
        for failure, decision in plan.decisions():
            facts = self._facts[RunRef(failure.project, failure.domain, failure.run)]
            self._recorder.failure(facts, now)
            new += self._recorder.decision(facts, failure, decision, now)
        return new

    # -- 3. issue ----------------------------------------------------------------------------

    async def refresh(self, plan: SweepPlan) -> tuple[list[PlannedRerun], list[IssueResult]]:
        """Look again before creating: the planned reruns still to create, and those found to
        exist now (issued by someone else since the plan was made)."""
        await self._look(plan.window, self._clock())
        lineages = self._index.lineages()
        todo: list[PlannedRerun] = []
        found: list[IssueResult] = []
        for item in plan.reruns:
            there = lineages.get((item.scope_key, item.failure.root, item.attempt))
            if there is None:
                todo.append(item)
                continue
            result = IssueResult(item, "already_issued", f"found on the control plane as {there!r}")
            self._record_issue(result)
            found.append(result)
        return todo, found

    def request(self, item: PlannedRerun) -> RerunRequest | RelaunchRequest:
        """The CreateRun of ``item``: the daemon's ``issue_request`` (a rerun, or a relaunch for
        scope relaunch), from the facts the plan was made from."""
        f = item.failure
        return issue_request(self._facts[RunRef(f.project, f.domain, f.run)], item.decision)

    async def issue(
        self, items: Iterable[PlannedRerun], *, on_result: Callable[[IssueResult], None] | None = None
    ) -> list[IssueResult]:
        """Create each rerun (rate limited, transient errors retried by the issuer); after
        ``stop()`` the rest come back ``not_issued``. Every result is recorded in the ledger."""
        results: list[IssueResult] = []

        async def one(item: PlannedRerun) -> None:
            result = await self._issue_one(item)
            self._record_issue(result)
            results.append(result)
            if on_result is not None:
                on_result(result)

        await asyncio.gather(*(one(i) for i in items))
        return results

    async def _issue_one(self, item: PlannedRerun) -> IssueResult:
        """Create ``item``'s rerun under its name, or (when a run that is not this rerun holds
        it) under the lineage attempt's next salted name, as the daemon does."""
        planned = self.request(item)
        f = item.failure
        for salt in range(MAX_SALT + 1):
            req = (
                planned
                if not salt
                else replace(planned, name=rerun_name(root=f.root, attempt=item.attempt, salt=salt))
            )
            result = await self._create_named(item, req)
            if result is not None:
                return replace(result, taken_name=req.name if salt else "")
        return IssueResult(
            item, "refused", f"every name of the rerun ({MAX_SALT + 1}) is taken by another run"
        )

    async def _create_named(
        self, item: PlannedRerun, req: RerunRequest | RelaunchRequest
    ) -> IssueResult | None:
        """Create ``req``; None when its name is held by a run that is not this rerun."""
        f = item.failure
        held = self._index.holder(req.target)
        if (
            held is not None
            and held.trusted is not None
            and (not held.trusted or held.claim != (f.root, item.attempt))
        ):
            self._recorder.name_taken(
                req.source, req.target, f.root, item.attempt, held.claim if held.trusted else None
            )
            return None

        async def create() -> None:
            async with self._creates:
                if self._limiter is not None:
                    await self._limiter.acquire()
                if self.stopping:
                    raise Stopped
                await send(self._cp, req)

        def retrying(exc: ControlPlaneError, delay: float) -> None:
            log.warning("creating rerun %s failed, retrying in %.1fs: %s", item.name, delay, exc)

        try:
            await self._issuer.call(create, on_retry=retrying)
        except Stopped:
            return IssueResult(item, "not_issued", "the sweep was interrupted before this rerun was created")
        except AlreadyExistsError:
            try:
                holder = await self._issuer.call(partial(self._holder_of, req.target), on_retry=retrying)
            except Stopped:
                return IssueResult(
                    item, "not_issued", "the sweep was interrupted before this rerun was created"
                )
            if holder != (f.root, item.attempt):
                self._recorder.name_taken(req.source, req.target, f.root, item.attempt, holder)
                return None
            return IssueResult(item, "already_issued", "the control plane answered ALREADY_EXISTS")
        except PermanentControlPlaneError as exc:
            return IssueResult(item, "refused", f"{exc.code}: {exc}")
        now = self._clock()
        self._metrics.reruns_issued.labels(item.policy, item.decision.scope.value).inc()
        self._recorder.track(Tracked(req.target, item.policy, item.failure.root, item.attempt, now))
        return IssueResult(item, "created")

    async def _holder_of(self, target: RunRef) -> tuple[str, int] | None:
        """The vouched lineage attempt of the run named ``target`` (None: none)."""
        return await self._index.identity(await self._cp.get_run(target))

    def _record_issue(self, r: IssueResult) -> None:
        if r.result == "not_issued":
            return
        f = r.item.failure
        result: dict[str, IssueKind] = {
            "created": "created",
            "already_issued": "already_exists",
            "refused": "invalid",
        }
        self._recorder.issue(
            RerunIssue(
                RunRef(f.project, f.domain, f.run),
                r.name,
                f.root,
                r.item.attempt,
                r.item.policy,
                r.item.decision.scope.value,
                result[r.result],
                r.message,
            ),
            self._clock(),
        )

    # -- 4. follow ---------------------------------------------------------------------------

    async def follow(
        self,
        results: Iterable[IssueResult],
        *,
        poll: float = 1.0,
        on_update: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """Wait until every created or already-issued rerun is terminal (or ``stop()``); returns
        rerun name -> terminal phase for those that finished. The outcome of a rerun this sweep
        created goes to the ledger and the metrics (the daemon's recorder)."""
        results = list(results)
        wanted = {r.name: r.item for r in results if r.result in ("created", "already_issued")}
        phases: dict[str, str] = {}
        since = min((r.item.failure.failed_at for r in results), default=self._clock())
        scopes = sorted({i.scope_key for i in wanted.values()})

        def retrying(exc: ControlPlaneError, delay: float) -> None:
            log.warning("following the reruns failed, retrying in %.1fs: %s", delay, exc)

        while len(phases) < len(wanted) and not self.stopping:
            for scope in scopes:
                project, _, domain = scope.partition("/")
                try:
                    listed = await self._issuer.call(
                        partial(self._cp.list_reruns, project, domain, since=since), on_retry=retrying
                    )
                except Stopped:
                    break
                now = self._clock()
                for s in listed:
                    item = wanted.get(s.ref.name)
                    if item is None or item.scope_key != scope or not s.terminal or s.ref.name in phases:
                        continue
                    phases[s.ref.name] = s.phase
                    self._recorder.observe(s, now)
            if on_update is not None:
                on_update(dict(phases))
            if len(phases) < len(wanted):
                await self._issuer.pause(poll)
        return phases
