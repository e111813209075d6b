"""``rerund sweep``: the shell around ``rerund.core.sweep`` — read, plan, record, issue, follow.

A sweep is the daemon's decision core run once over a window of past failures, with the
daemon's issuing rules. Its steps, each a method, so the CLI can show a preview and ask
before anything is created:

1. ``plan(window)``: per scope, list the reruns that exist (one paged ListRuns; open-source
   Flyte lists them without labels, so their lineage labels are read once each) and the runs
   that failed in the window (one paged ListRuns), read each failure (3 RPCs), and ask the
   pure ``plan_sweep``. Nothing is written.
2. ``record(plan)``: every decision of the plan goes to the ledger (opened with
   ``source="sweep"``: ``rerund history --source sweep``) and to the metrics (exposed with
   ``source="sweep"``, ``rerund.runtime.metrics.sweep_metrics``).
3. ``issue(plan)``: look again (one ListRuns per scope: a daemon or another sweep may have
   issued some since the preview), then create each rerun at most ``max_rps`` per second,
   retrying transient errors with backoff. A create answered ALREADY_EXISTS is *already
   issued*; one the control plane rejects is *refused*, with its message. ``stop()`` (Ctrl-C)
   lets the creates in flight finish and starts no other.
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
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiolimiter import AsyncLimiter

from rerund.core.lineage import attempt_of, budget_counts, failure_from, issue_request
from rerund.core.redact import redact_url
from rerund.core.rules import PolicySet
from rerund.core.runs import (
    FAILED_PHASES,
    LABEL_ATTEMPT,
    LABEL_POLICY,
    LABEL_ROOT,
    FailureFacts,
    RelaunchRequest,
    RerunRequest,
    RunRef,
    RunSummary,
)
from rerund.core.sweep import PlannedRerun, SweepPlan, Window, plan_sweep
from rerund.errors import (
    AlreadyExistsError,
    ConfigError,
    ControlPlaneError,
    LedgerError,
    NotFoundError,
    PermanentControlPlaneError,
)
from rerund.ports import ControlPlane, DecisionLedger, ScopeDirectory
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile import public_decision
from rerund.runtime.reconcile.issuer import Issuer, Stopped
from rerund.runtime.relaunch import send

__all__ = ["IssueResult", "SweepOutcome", "Sweeper", "unreachable"]

log = logging.getLogger("rerund.sweep")

Result = Literal["created", "already_issued", "refused", "not_issued"]


@dataclass(frozen=True)
class IssueResult:
    """What issuing one planned rerun came to, and why (``message``)."""

    item: PlannedRerun
    result: Result
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.item.failure.run,
            "project": self.item.failure.project,
            "domain": self.item.failure.domain,
            "rerun": self.item.name,
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
        if self.phases:
            body["outcomes"] = dict(sorted(self.phases.items()))
            body["recovered"] = sum(1 for p in self.phases.values() if p == "SUCCEEDED")
            body["still_failing"] = sum(1 for p in self.phases.values() if p in FAILED_PHASES)
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


@dataclass
class _Existing:
    """Reruns on the control plane: (scope, root, attempt) -> name, and creation times by
    policy (for budget counts)."""

    lineages: dict[tuple[str, str, int], str] = field(default_factory=dict)
    created: list[tuple[str | None, datetime | None]] = field(default_factory=list)


class Sweeper:
    """One sweep over ``scopes`` with ``policies`` (see the module docstring)."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        scopes: Sequence[tuple[str, str]],
        policies: PolicySet,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
        ledger: DecisionLedger | None = None,
        max_rps: float | None = None,
        concurrency: int = 4,
        reads: int = 8,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self._cp = control_plane
        self._scopes = list(scopes)
        self._policies = policies
        self._clock = clock
        self._metrics = metrics
        self._ledger = ledger
        # One create per 1/max_rps seconds, no burst: "at most N per second" holds in any second.
        self._limiter = AsyncLimiter(1, 1.0 / max_rps) if max_rps else None
        self._creates = asyncio.Semaphore(concurrency)
        self._reads = asyncio.Semaphore(reads)
        self._stop = asyncio.Event()
        self._issuer = Issuer(
            metrics, stopping=self._stop, clock=clock, initial=retry_initial, maximum=retry_max
        )
        self._facts: dict[RunRef, FailureFacts] = {}  # what the plan was made from, by run

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no further create; the ones in flight finish (Ctrl-C)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- 0. check ----------------------------------------------------------------------------

    async def check_scopes(self, directory: ScopeDirectory | None) -> None:
        """Raise ``ConfigError`` for a scope the control plane does not know (1 GetProject per
        scope). A control plane that cannot say (no ProjectService) is not checked."""
        for project, domain in self._scopes:
            if directory is None:
                return
            known = await directory.scope_exists(project, domain)
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
        existing = await self._existing(window, now)
        summaries: list[RunSummary] = []
        for project, domain in self._scopes:
            listed = await self._cp.list_failed(project, domain, since=window.since)
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
                    return await self._cp.read_failure(s)
                except NotFoundError:
                    return None  # deleted since it was listed: nothing to recover
                finally:
                    done += 1
                    if on_read is not None:
                        on_read(done, len(summaries))

        read_facts = [f for f in await asyncio.gather(*(read(s) for s in summaries)) if f is not None]
        self._facts = {f.summary.ref: f for f in read_facts}
        failures = [failure_from(f) for f in read_facts]
        used, oldest = budget_counts(existing.created, self._policies.budgets(), now)
        return plan_sweep(
            failures,
            self._policies,
            window=window,
            now=now,
            existing=existing.lineages,
            budget_used=used,
            budget_oldest=oldest,
        )

    async def _existing(self, window: Window, now: datetime) -> _Existing:
        budgets = self._policies.budgets()
        since = min([window.since, *(now - w for w in budgets.values())])
        out = _Existing()
        for project, domain in self._scopes:
            listed = await self._cp.list_reruns(project, domain, since=since)
            unknown = [r for r in listed if LABEL_ROOT not in r.labels]

            async def labels(r: RunSummary) -> RunSummary:
                async with self._reads:
                    return await self._cp.get_run(r.ref)

            learned = {r.ref: r for r in await asyncio.gather(*(labels(r) for r in unknown))}
            for r in listed:
                full = learned.get(r.ref, r)
                root = full.labels.get(LABEL_ROOT)
                if root and LABEL_ATTEMPT in full.labels:
                    out.lineages.setdefault((r.ref.scope, root, attempt_of(full.labels)), r.ref.name)
                out.created.append((full.labels.get(LABEL_POLICY), r.created_at))
        return out

    # -- 2. record ---------------------------------------------------------------------------

    def record(self, plan: SweepPlan) -> int:
        """Every decision of ``plan`` to the ledger (``source="sweep"``) and the metrics; returns
        how many were new to the ledger (a decision recorded before is not counted again)."""
        new = 0
        now = self._clock()
        for failure, decision in plan.decisions():
            novel = True
            if self._ledger is not None:
                try:
                    novel = self._ledger.record_decision(
                        project=failure.project,
                        domain=failure.domain,
                        run=failure.run,
                        root=failure.root,
                        decision=public_decision(decision),
                        now=now,
                    )
                except LedgerError as exc:
                    log.error("%s", exc)
            if novel:
                new += 1
                if self._metrics is not None:
                    self._metrics.decisions.labels(decision.policy or "", decision.decision).inc()
        return new

    # -- 3. issue ----------------------------------------------------------------------------

    async def refresh(self, plan: SweepPlan) -> tuple[list[PlannedRerun], list[IssueResult]]:
        """Look again before creating: the planned reruns still to create, and those found to
        exist now (issued by someone else since the plan was made)."""
        existing = await self._existing(plan.window, self._clock())
        todo: list[PlannedRerun] = []
        found: list[IssueResult] = []
        for item in plan.reruns:
            there = existing.lineages.get((item.scope_key, item.failure.root, item.attempt))
            if there is None:
                todo.append(item)
            else:
                found.append(IssueResult(item, "already_issued", f"found on the control plane as {there!r}"))
        return todo, found

    async def issue(
        self, items: Iterable[PlannedRerun], *, on_result: Callable[[IssueResult], None] | None = None
    ) -> list[IssueResult]:
        """Create each rerun (rate limited, transient errors retried); after ``stop()`` the rest
        come back ``not_issued``. Every result is recorded in the ledger."""
        results: list[IssueResult] = []

        async def one(item: PlannedRerun) -> None:
            result = await self._issue_one(item)
            self._record_issue(result)
            results.append(result)
            if on_result is not None:
                on_result(result)

        await asyncio.gather(*(one(i) for i in items))
        return results

    def request(self, item: PlannedRerun) -> RerunRequest | RelaunchRequest:
        """The CreateRun of ``item``: the daemon's ``issue_request`` (a rerun, or a relaunch for
        scope relaunch), from the facts the plan was made from."""
        f = item.failure
        return issue_request(self._facts[RunRef(f.project, f.domain, f.run)], item.decision)

    async def _issue_one(self, item: PlannedRerun) -> IssueResult:
        req = self.request(item)

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
            return IssueResult(item, "already_issued", "the control plane answered ALREADY_EXISTS")
        except PermanentControlPlaneError as exc:
            return IssueResult(item, "refused", f"{exc.code}: {exc}")
        if self._metrics is not None:
            self._metrics.reruns_issued.labels(item.policy, item.decision.scope.value).inc()
        return IssueResult(item, "created")

    def _record_issue(self, r: IssueResult) -> None:
        if self._ledger is None or r.result == "not_issued":
            return
        f = r.item.failure
        result = {"created": "created", "already_issued": "already_exists", "refused": "invalid"}[r.result]
        try:
            self._ledger.record_issue(
                source_key=f"{f.project}/{f.domain}/{f.run}",
                project=f.project,
                domain=f.domain,
                target=r.item.name,
                root=f.root,
                attempt=r.item.attempt,
                policy=r.item.policy,
                scope=r.item.decision.scope.value,
                result=result,
                message=r.message,
                now=self._clock(),
            )
        except LedgerError as exc:
            log.error("%s", exc)

    # -- 4. follow ---------------------------------------------------------------------------

    async def follow(
        self,
        results: Iterable[IssueResult],
        *,
        poll: float = 1.0,
        on_update: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """Wait until every created or already-issued rerun is terminal (or ``stop()``); returns
        rerun name -> terminal phase for those that finished. Outcomes go to the ledger."""
        wanted = {r.item.name: r.item for r in results if r.result in ("created", "already_issued")}
        phases: dict[str, str] = {}
        since = min((r.item.failure.failed_at for r in results), default=self._clock())
        scopes = sorted({i.scope_key for i in wanted.values()})
        while len(phases) < len(wanted) and not self.stopping:
            for scope in scopes:
                project, _, domain = scope.partition("/")
                try:
                    listed = await self._cp.list_reruns(project, domain, since=since)
                except ControlPlaneError as exc:
                    self._issuer.count_error(exc)
                    log.warning("following the reruns of %s failed, trying again: %s", scope, exc)
                    continue
                for s in listed:
                    item = wanted.get(s.ref.name)
                    if item is None or item.scope_key != scope or not s.terminal or s.ref.name in phases:
                        continue
                    phases[s.ref.name] = s.phase
                    self._record_outcome(item, s.phase)
            if on_update is not None:
                on_update(dict(phases))
            if len(phases) < len(wanted):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=poll)
        return phases

    def _record_outcome(self, item: PlannedRerun, phase: str) -> None:
        f = item.failure
        novel = True
        if self._ledger is not None:
            try:
                novel = self._ledger.record_outcome(
                    project=f.project,
                    domain=f.domain,
                    target=item.name,
                    policy=item.policy,
                    root=f.root,
                    attempt=item.attempt,
                    phase=phase,
                    now=self._clock(),
                )
            except LedgerError as exc:
                log.error("%s", exc)
        if novel and self._metrics is not None:
            self._metrics.rerun_outcomes.labels(item.policy, phase.lower()).inc()
            if phase == "SUCCEEDED":
                self._metrics.lineages_recovered.labels(item.policy).inc()
