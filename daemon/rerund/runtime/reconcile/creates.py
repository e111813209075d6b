"""Carrying out a ``Rerun`` decision: create the rerun (or relaunch) once, under a name no other
run holds, and record how it went. What is owed is the loop's: ``issue`` returns an ``Issued``
outcome and the loop settles the failure, or leaves it owed, accordingly.

Contract (*never twice*):

- A create is first looked up in the reruns index; a name the index knows to be another run's
  (another lineage attempt's, or nobody's) is skipped for the next salted name, at most
  ``MAX_SALT`` times.
- The control plane answers ALREADY_EXISTS to a second create of a name: taken as this rerun
  only when the run's labels and relation (or the ledger) vouch for it, else the next name.
- Two failures of a lineage decided for the same rerun in one pass send one create: the second
  waits for the first (``InFlight.creating``) and then looks again.
- Transient errors are retried (``Issuer``); a stop ends the retries with the failure still
  owed. Every create first checks ``fence`` (this replica still leads).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from rerund.core.lineage import claimed_lineage, issue_request
from rerund.core.model import Failure, Rerun
from rerund.core.names import MAX_SALT, rerun_name
from rerund.core.records import IssueResult, RerunIssue
from rerund.core.runs import FailureFacts, RelaunchRequest, RerunRequest, RunRef, RunSummary
from rerund.errors import AlreadyExistsError, ControlPlaneError, CredentialsError, PermanentControlPlaneError
from rerund.ports import ControlPlane
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.index import RerunIndex, RerunInfo
from rerund.runtime.reconcile.inflight import InFlight
from rerund.runtime.reconcile.issuer import Issuer, Stopped
from rerund.runtime.reconcile.recorder import DecisionRecorder, Tracked
from rerund.runtime.relaunch import send

__all__ = ["Creates", "Issued"]

log = logging.getLogger("rerund.reconcile")
decisions_log = logging.getLogger("rerund.decisions")

IssueRecord = Callable[[IssueResult, str], None]


class Issued(enum.Enum):
    """How carrying out a ``Rerun`` ended, for the loop to settle the failure or not."""

    DONE = "done"  # created, found already created, or a dry run: settled
    REFUSED = "refused"  # the control plane rejected it, or every name is taken: settled
    PENDING = "pending"  # stopping, or the run holding its name could not be read: still owed


def held_by_another(holder: RerunInfo, ours: tuple[str, int], *, relaunch: bool) -> bool:
    """Whether the index knows the run named like this rerun is another run (no RPC): another
    lineage attempt's, or one nobody vouches for (for a relaunch, one with other labels:
    ``unvouched_relaunch``). Unknown, or not checked yet: the create finds out. No side effects."""
    if holder.trusted is None:
        return False
    if holder.claim != ours:
        return True
    return not holder.trusted and not relaunch


def unvouched_relaunch(req: RerunRequest | RelaunchRequest, there: RunSummary, ours: tuple[str, int]) -> bool:
    """Whether ``there``, the run holding the name of relaunch ``req``, is taken as that
    relaunch although nothing vouches for it: a relaunch is a fresh run (no relation), so only
    the ledger of the replica that created it vouches for it. A run of the relaunch's name, with
    its lineage labels and no relation, is taken as the relaunch by another replica (or before a
    restart that lost the ledger): a second relaunch would be worse than trusting it. No side
    effects."""
    return (
        isinstance(req, RelaunchRequest) and there.relation is None and claimed_lineage(there.labels) == ours
    )


class Creates:
    """The creates of one reconcile loop: at most ``max_concurrent`` at once."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        index: RerunIndex,
        recorder: DecisionRecorder,
        issuer: Issuer,
        inflight: InFlight,
        metrics: Metrics,
        clock: Callable[[], datetime],
        stopping: asyncio.Event,
        fence: Callable[[], Awaitable[None]] | None,
        dry_run: bool,
        max_concurrent: int,
    ) -> None:
        self._cp = control_plane
        self._index = index
        self._recorder = recorder
        self._issuer = issuer
        self._inflight = inflight
        self._metrics = metrics
        self._clock = clock
        self._stopping = stopping
        # Called before every create: raises ``Stopped`` unless this replica still leads.
        self._fence = fence
        self._dry_run = dry_run
        self._sem = asyncio.Semaphore(max_concurrent)

    def found(self, ref: RunRef, failure: Failure, decision: Rerun, target: RunRef, now: datetime) -> None:
        """Record that the rerun of ``decision`` exists already (the reruns listing shows it)."""
        self._recorder.issue(
            RerunIssue(
                ref,
                target.name,
                failure.root,
                decision.attempt,
                decision.policy,
                decision.scope.value,
                "already_exists",
                "found in the reruns listing",
            ),
            now,
        )
        decisions_log.debug(
            "exists  %s: rerun %s (attempt %d) was already issued; nothing to do",
            ref,
            target,
            decision.attempt,
            extra={
                "run": str(ref),
                "lineage": failure.root,
                "policy": decision.policy,
                "decision": "exists",
                "attempt": decision.attempt,
                "rerun": target.name,
                "fingerprint": decision.fingerprint or None,
            },
        )

    async def issue(self, facts: FailureFacts, failure: Failure, decision: Rerun) -> Issued:
        """Carry out ``decision`` for the failure of ``facts`` (its target was reserved in the
        index; released here however it ends)."""
        req = issue_request(facts, decision)
        try:
            return await self._create(facts, failure, decision, req)
        finally:
            self._index.release(req.target)

    async def _create(
        self, facts: FailureFacts, failure: Failure, decision: Rerun, req: RerunRequest | RelaunchRequest
    ) -> Issued:
        ref = facts.summary.ref
        attempt, policy, scope = decision.attempt, decision.policy, decision.scope.value

        def issue_record(result: IssueResult, message: str) -> None:
            issue = RerunIssue(ref, req.name, failure.root, attempt, policy, scope, result, message)
            self._recorder.issue(issue, self._clock())

        if self._index.has(req.target, failure.root, attempt):
            issue_record("already_exists", "found in the reruns listing")
            return Issued.DONE
        for salt in range(MAX_SALT + 1):
            if salt:
                req = replace(req, name=rerun_name(root=failure.root, attempt=attempt, salt=salt))
            holder = self._index.holder(req.target)
            if holder is not None and held_by_another(
                holder, (failure.root, attempt), relaunch=isinstance(req, RelaunchRequest)
            ):
                self._recorder.name_taken(
                    ref, req.target, failure.root, attempt, holder.claim if holder.trusted else None
                )
                continue
            outcome = await self._create_named(facts, failure, decision, req, issue_record)
            if outcome is not None:
                return outcome
        issue_record("invalid", f"every name of the rerun ({MAX_SALT + 1}) is taken by another run")
        log.error(
            "run %s: rerun attempt %d of lineage %r not created: its %d names are all taken by other runs "
            "(last %s); not retried until the policies change",
            ref,
            attempt,
            failure.root,
            MAX_SALT + 1,
            req.target,
        )
        return Issued.REFUSED

    async def _create_named(
        self,
        facts: FailureFacts,
        failure: Failure,
        decision: Rerun,
        req: RerunRequest | RelaunchRequest,
        issue_record: IssueRecord,
    ) -> Issued | None:
        """Create ``req`` under its name; None when that name turned out to be another run's."""
        ref = facts.summary.ref
        attempt = decision.attempt
        # A second failure of the lineage decided for the same (root, attempt) — e.g. an
        # operator's copy of a rerun, decided in the same pass — waits for the first create.
        other = self._inflight.create_of(req.target)
        if other is not None:
            await asyncio.shield(other)
            if self._index.has(req.target, failure.root, attempt):
                issue_record("already_exists", "created for another failure of the lineage in this pass")
                decisions_log.info(
                    "exists  %s: rerun %s was already issued (for another failed run of lineage %r, "
                    "attempt %d)",
                    ref,
                    req.target,
                    failure.root,
                    attempt,
                )
                return Issued.DONE
            # The other create did not succeed (stopping, rejected, or another lineage's): try ours.
        with self._inflight.creating(req.target):
            return await self._create_once(ref, failure, decision, req, issue_record)

    async def _create_once(
        self,
        ref: RunRef,
        failure: Failure,
        decision: Rerun,
        req: RerunRequest | RelaunchRequest,
        issue_record: IssueRecord,
    ) -> Issued | None:
        """Create ``req``; None when its name is another run's (the caller tries the next)."""
        attempt, policy, scope = decision.attempt, decision.policy, decision.scope.value
        if self._dry_run:
            issue_record("dry_run", "--dry-run: not created")
            decisions_log.info("dry-run %s: would create %s", ref, req.target)
            return Issued.DONE

        async def create() -> None:
            async with self._sem:
                if self._stopping.is_set():
                    raise Stopped
                if self._fence is not None:
                    await self._fence()
                await send(self._cp, req)

        def retrying(exc: ControlPlaneError, delay: float) -> None:
            if isinstance(exc, CredentialsError):
                return  # refused credentials are reported once a minute, not per call
            log.warning("run %s: creating rerun %s failed, retrying in %.1fs: %s", ref, req.name, delay, exc)

        try:
            await self._issuer.call(create, on_retry=retrying)
        except Stopped:
            return Issued.PENDING  # the watermark holds it for the next start
        except AlreadyExistsError:
            # A run of that name exists: this rerun only if its labels and relation say so.
            try:
                there = await self._cp.get_run(req.target)
                holder = await self._index.identity(there)
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                log.warning(
                    "run %s: rerun name %s exists and reading it failed; retrying next pass: %s",
                    ref,
                    req.target,
                    exc,
                )
                return Issued.PENDING  # decided again on the next pass
            if holder != (failure.root, attempt) and not unvouched_relaunch(
                req, there, (failure.root, attempt)
            ):
                self._recorder.name_taken(ref, req.target, failure.root, attempt, holder)
                return None
            issue_record("already_exists", "the control plane answered ALREADY_EXISTS")
            self._index.add(RerunInfo(req.target, self._clock(), policy, failure.root, attempt, trusted=True))
            decisions_log.info("exists  %s: rerun %s was already issued", ref, req.target)
            return Issued.DONE
        except PermanentControlPlaneError as exc:
            issue_record("invalid", str(exc))
            log.error(
                "run %s: the control plane rejected rerun %s (%s); not retried until the policies change: %s",
                ref,
                req.name,
                exc.code,
                exc,
            )
            return Issued.REFUSED
        now = self._clock()
        self._metrics.reruns_issued.labels(policy, scope).inc()
        self._metrics.issue_latency.observe(max(0.0, (now - decision.not_before).total_seconds()))
        issue_record("created", "")
        self._index.add(RerunInfo(req.target, now, policy, failure.root, attempt, trusted=True))
        self._recorder.track(Tracked(req.target, policy, failure.root, attempt, now))
        kind = "relaunch" if isinstance(req, RelaunchRequest) else "rerun"
        decisions_log.info(
            "created %s: %s %s (attempt %d, policy %s)",
            ref,
            kind,
            req.target,
            attempt,
            policy,
            extra={
                "run": str(ref),
                "lineage": failure.root,
                "policy": policy,
                "decision": "created",
                "attempt": attempt,
                "rerun": req.name,
                "fingerprint": decision.fingerprint or None,
            },
        )
        return Issued.DONE
