"""Recording: the audit ledger, the metrics, the decision log line, the ``/decisions`` list
and the notifications — what the loop and the reproduction checks do after deciding.

Every fact is recorded once: the ledger says whether a fact is new (across restarts and
replicas sharing a ledger); without a working ledger this process remembers. A ledger error
is logged and never stops the loop: the ledger is an audit log, not needed for correctness.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Generic, TypeVar

from rerund.core import redact
from rerund.core.lineage import exhausted_notice
from rerund.core.model import Decision, Defer, Failure, GiveUp
from rerund.core.outbox import exhausted_key
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.runs import LABEL_POLICY, LABEL_ROOT, FailureFacts, RunRef, RunSummary
from rerund.core.times import iso
from rerund.errors import FencedError, LedgerError, NotificationError, StateUnavailableError
from rerund.lograte import EveryMinute
from rerund.ports import DecisionLedger, Notifier, Outbox
from rerund.runtime.metrics import Metrics
from rerund.sizedcache import ENTRY_BYTES, SizedCache, str_bytes

_NOVEL_TOKEN_BYTES = 250  # a (kind, key) token: a tuple, a kind and a run reference or key tuple

__all__ = ["DecisionRecorder", "Recorder", "Tracked", "Unanswered", "public_decision"]

decisions_log = logging.getLogger("rerund.decisions")

L = TypeVar("L")
T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, None]], object]


def public_decision(decision: Decision) -> dict[str, Any]:
    """``Decision.to_json()`` as public outputs show it (``rerund.core.redact``): env keys
    without values, secret-looking inputs masked, URLs reduced to scheme and host."""
    return redact.public_decision(decision.to_json())


class Unanswered(Enum):
    """Why the ledger gave no answer: there is none, or it failed (the error is logged)."""

    NO_LEDGER = "no ledger"
    FAILED = "ledger failed"


class Recorder(Generic[L]):
    """A ledger (optional), the metrics and a notifier (optional), with errors logged to ``log``.

    With an ``outbox`` a notification is put there under its event key, and the leader's
    sender (``rerund.runtime.outbox``) delivers it once; ``on_put`` wakes that sender. Without
    one it is sent at once (tests, ``rerund repro run``)."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        log: logging.Logger,
        ledger: L | None = None,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
        on_put: Callable[[], None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.notifier = notifier
        self.outbox = outbox
        self._on_put = on_put
        self._log = log
        self._ledger_errors = EveryMinute(log)  # a ledger that is down fails every write
        # Facts found new while no ledger answers: bounded in bytes (a ledger down for hours
        # must not grow the heap); a fact forgotten here may be counted new once more.
        self._novel_fallback: SizedCache[tuple[Any, ...], None] = SizedCache(
            "novel_fallback", 2 * 1024 * 1024, lambda token, _: ENTRY_BYTES + _NOVEL_TOKEN_BYTES
        )

    def call(self, fn: Callable[[L], T]) -> T | Unanswered:
        """``fn(ledger)``, or why there is no answer (a ``LedgerError`` is logged, not raised:
        one line a minute while the ledger keeps failing, with the count of the others)."""
        if self.ledger is None:
            return Unanswered.NO_LEDGER
        try:
            return fn(self.ledger)
        except LedgerError as exc:
            self._ledger_errors.error(str(exc))
            return Unanswered.FAILED

    @property
    def caches(self) -> tuple[SizedCache[Any, None], ...]:
        """The recorder's long-lived caches (``rerund_cache_bytes``)."""
        return (self._novel_fallback,)

    def novel(self, kind: str, key: Any, fn: Callable[[L], bool]) -> bool:
        """True when the fact is new: the ledger decides (across restarts); without a working
        ledger, this process remembers."""
        result = self.call(fn)
        if not isinstance(result, Unanswered):
            return result
        token = (kind, key)
        if token in self._novel_fallback:
            return False
        self._novel_fallback.put(token, None)
        return True

    async def notify(self, key: str, payload: Mapping[str, Any], now: datetime) -> None:
        """Notify event ``key`` (``rerund.core.outbox``): put it in the outbox (sent once, by
        the leader, whoever puts it and however often), or without an outbox send it now;
        ``rerund_notifications_total{result}`` counts the sends."""
        if self.notifier is None:
            return
        if self.outbox is not None:
            outbox = self.outbox
            try:
                if await asyncio.to_thread(outbox.put, key, payload, now=now):
                    self._on_put()
            except (StateUnavailableError, FencedError) as exc:  # fenced: the lead is lost
                self._log.error("%s", exc)
            return
        try:
            await self.notifier.notify(payload)
        except NotificationError as exc:
            self.metrics.notifications.labels("failed").inc()
            self._log.error("%s", exc)
            return
        self.metrics.notifications.labels("sent").inc()


@dataclass
class Tracked:
    """A rerun this process created (or its ledger remembers), followed to its terminal phase."""

    ref: RunRef
    policy: str
    root: str
    attempt: int
    created_at: datetime
    asked_at: datetime | None = None  # when it was last read on its own (``ask_alone``)


class DecisionRecorder(Recorder[DecisionLedger]):
    """What the reconcile loop records: failures, decisions, issues, rerun outcomes; the
    ``recent`` decisions (``/decisions``); and the reruns followed to their outcome."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        log: logging.Logger,
        spawn: Spawn,
        ledger: DecisionLedger | None = None,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
        on_put: Callable[[], None] = lambda: None,
        recent_capacity: int = 200,
    ) -> None:
        super().__init__(
            metrics=metrics, log=log, ledger=ledger, notifier=notifier, outbox=outbox, on_put=on_put
        )
        self._spawn = spawn
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_capacity)
        # The reruns followed to their outcome, read from the ledger at the first use (the first
        # pass), not here: a follower builds its recorder when it starts and first uses it when
        # it takes over, by then with the reruns the replica it replaces created.
        self._followed: dict[RunRef, Tracked] | None = None
        # Reruns by hand seen ended (``_seen_rerun``): one evicted is written again, and the
        # ledger keeps it once (1 MiB: ~4,000 runs).
        self._seen: SizedCache[RunRef, None] = SizedCache(
            "reruns_seen", 1024 * 1024, lambda ref, _: ENTRY_BYTES + str_bytes(ref.name)
        )

    @property
    def caches(self) -> tuple[SizedCache[Any, None], ...]:
        """The recorder's long-lived caches (``rerund_cache_bytes``)."""
        return (*super().caches, self._seen)

    @property
    def _tracked(self) -> dict[RunRef, Tracked]:
        """The reruns followed to their outcome; the first use reads those the ledger holds
        (created, no outcome yet: by this process before a restart, or by a previous leader).
        A ledger that fails then is not asked again (what is owed comes from the listings)."""
        if self._followed is None:
            self._followed = {}
            records = self.call(lambda lg: lg.created_without_outcome())
            for r in () if isinstance(records, Unanswered) else records:
                ref = RunRef(r.project, r.domain, r.target)
                self._followed[ref] = Tracked(ref, r.policy, r.root, r.attempt, r.at)
        return self._followed

    def _seen_rerun(self, summary: RunSummary, now: datetime) -> None:
        """Record an ended run that reruns another (once per process; the ledger keeps it once
        across restarts). Only what the listing or the stream says: a run whose relation is
        not listed (open-source Flyte) is not read for it, so succeeded and failed reruns by
        hand are seen alike (none there), and the evidence is not tilted either way. A run with
        rerund's lineage labels is left out: rerund's reruns count as such (their outcomes),
        and it keeps a restart from writing a row for every rerun of the lookback."""
        if not summary.relation_known or summary.relation is None or summary.ref in self._seen:
            return
        if LABEL_ROOT in summary.labels or LABEL_POLICY in summary.labels:
            return
        self._seen.put(summary.ref, None)
        source, phase = summary.relation, summary.phase
        self.call(lambda lg: lg.record_rerun_seen(summary.ref, source, phase, now=now))

    @property
    def recent(self) -> tuple[dict[str, Any], ...]:
        """The latest decisions as ``/decisions`` lists them, oldest first."""
        return tuple(self._recent)

    # -- watermarks --------------------------------------------------------------------------

    def stored_watermark(self, scope: str) -> datetime | None:
        stored = self.call(lambda lg: lg.watermark(scope))
        return None if isinstance(stored, Unanswered) else stored

    def issued_as(self, ref: RunRef) -> tuple[str, int] | None:
        """(root, attempt) of run ``ref`` when the ledger recorded creating it (None: not, or
        no ledger)."""
        found = self.call(lambda lg: lg.issued_as(ref.project, ref.domain, ref.name))
        return None if isinstance(found, Unanswered) else found

    def name_taken(
        self, ref: RunRef, target: RunRef, root: str, attempt: int, holder: tuple[str, int] | None
    ) -> None:
        """The rerun of ``ref`` (lineage ``root``, ``attempt``) found its name ``target`` held by
        another run (``holder``: that run's vouched lineage attempt, None: none): counted and
        said; the caller takes the next salted name."""
        self.metrics.name_conflicts.inc()
        whose = (
            f"lineage {holder[0]!r} attempt {holder[1]}" if holder else "no lineage (a run merely named so)"
        )
        self._log.warning(
            "run %s: rerun name %s is taken by a run of %s; lineage %r attempt %d takes the next salted name",
            ref,
            target,
            whose,
            root,
            attempt,
        )

    def forged(self, ref: RunRef, labels: Mapping[str, str]) -> None:
        """Run ``ref`` carries rerund-* lineage labels nobody vouches for (said once per run by
        the reruns index): they are ignored; counted and said."""
        self.metrics.forged_labels.inc()
        self._log.warning(
            "run %s carries rerund lineage labels (%s) that neither its relation nor the ledger vouch for; "
            "they are ignored: it counts in no lineage and no budget",
            ref,
            ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k.startswith("rerund-")),
        )

    def save_watermark(self, scope: str, at: datetime) -> None:
        self.call(lambda lg: lg.set_watermark(scope, at))

    # -- failures and decisions --------------------------------------------------------------

    def failure(self, facts: FailureFacts, now: datetime) -> None:
        """A failure read for the first time."""
        ref = facts.summary.ref
        if self.novel(
            "failure",
            ref,
            lambda lg: lg.record_failure(
                project=ref.project, domain=ref.domain, run=ref.name, failed_at=facts.failed_at, now=now
            ),
        ):
            self.metrics.failures_observed.labels(ref.project, ref.domain).inc()

    def decision(self, facts: FailureFacts, failure: Failure, decision: Decision, now: datetime) -> bool:
        """Ledger, metrics, log line and /decisions entry, once per distinct decision. True when new."""
        ref = facts.summary.ref
        body = public_decision(decision)
        novel = self.novel(
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
        self.metrics.decisions.labels(decision.policy or "", decision.decision).inc()
        self.metrics.detection_latency.observe(max(0.0, (now - facts.failed_at).total_seconds()))
        if isinstance(decision, Defer) and decision.budget:  # a WaitForVersion has no budget
            self.metrics.budget_deferrals.labels(decision.budget).inc()
        self._recent.append(
            {
                "at": iso(now),
                "project": ref.project,
                "domain": ref.domain,
                "run": ref.name,
                "root": failure.root,
                **body,
            }
        )
        if not decisions_log.isEnabledFor(logging.INFO):  # its fields are not built for nothing
            return True
        decisions_log.info(
            "%-7s %s: %s",
            decision.decision,
            ref,
            body["reason"],
            extra={
                "run": str(ref),
                "lineage": failure.root,
                "policy": decision.policy,
                "decision": decision.decision,
                "attempt": body["attempt"],
                "fingerprint": decision.fingerprint or None,
            },
        )
        return True

    def exhausted(
        self,
        facts: FailureFacts,
        failure: Failure,
        decision: GiveUp,
        *,
        lineage: Callable[[], list[str]],
        console_url: Callable[[RunRef], str],
        now: datetime,
    ) -> None:
        """A lineage is exhausted: count it, and notify (``lineage`` and ``console_url`` are
        only asked for when there is a notifier)."""
        self.metrics.lineages_exhausted.labels(decision.policy).inc()
        if self.notifier is None:
            return
        notice = exhausted_notice(
            facts, failure, decision, lineage=lineage(), console_url=console_url(facts.summary.ref), now=now
        )
        ref = facts.summary.ref
        self._spawn(self.notify(exhausted_key(ref.project, ref.domain, failure.root), notice, now))

    # -- issues and outcomes -----------------------------------------------------------------

    def issue(self, issue: RerunIssue, now: datetime) -> None:
        """The result of issuing a rerun: created, already_exists, dry_run or invalid."""
        self.call(lambda lg: lg.record_issue(issue, now=now))

    def track(self, tracked: Tracked) -> None:
        """Follow a rerun just created to its outcome."""
        self._tracked[tracked.ref] = tracked

    def untrack(self, ref: RunRef) -> None:
        """Stop following ``ref`` without an outcome (the run was deleted: there is none)."""
        self._tracked.pop(ref, None)

    def tracks(self, ref: RunRef) -> bool:
        return ref in self._tracked

    def oldest_tracked(self, finds: Callable[[RunRef], bool]) -> datetime | None:
        """The creation time of the oldest followed rerun that ``finds`` accepts."""
        return min((t.created_at for t in self._tracked.values() if finds(t.ref)), default=None)

    def ask_alone(self, scope: str, since: datetime, now: datetime, every: timedelta) -> list[RunRef]:
        """The followed reruns of ``scope`` created before ``since`` (a listing from ``since``
        does not reach them) and not read on their own within ``every``: each is marked read
        at ``now``; the caller reads them (and ``observe``s or ``untrack``s each)."""
        due = [
            t
            for t in self._tracked.values()
            if t.ref.scope == scope
            and t.created_at < since
            and (t.asked_at is None or now - t.asked_at >= every)
        ]
        for t in due:
            t.asked_at = now
        return [t.ref for t in due]

    def observe(self, summary: RunSummary, now: datetime) -> None:
        """A run seen in a listing or the stream: the outcome of a rerun followed here, or of a
        rerun by hand (a run whose relation, when the listing says it, names the run it
        reruns: evidence for ``give_up_below``, ``record_rerun_seen``)."""
        tracked = self._tracked.get(summary.ref)
        if not summary.terminal:
            return
        if tracked is None:
            self._seen_rerun(summary, now)
            return
        del self._tracked[summary.ref]
        phase = summary.phase
        ref = summary.ref
        outcome = RerunOutcome(ref, tracked.policy, tracked.root, tracked.attempt, phase)
        novel = self.novel("outcome", ref, lambda lg: lg.record_outcome(outcome, now=now))
        if not novel:
            return
        self.metrics.rerun_outcomes.labels(tracked.policy, phase.lower()).inc()
        if phase == "SUCCEEDED":
            self.metrics.lineages_recovered.labels(tracked.policy).inc()
            decisions_log.info(
                "recovered %s: lineage %r succeeded at attempt %d",
                ref,
                tracked.root,
                tracked.attempt,
                extra={
                    "run": str(ref),
                    "lineage": tracked.root,
                    "policy": tracked.policy,
                    "decision": "recovered",
                    "attempt": tracked.attempt,
                },
            )
