"""Scheduled reproduction checks, the shell: fire on schedule, rerun, wait, compare, record.

A firing of check C scheduled for time T:

1. finds the reference run (``source.run``, or the latest run of ``source.task`` in
   ``source.phase`` with ``source.labels`` that is not itself a reproduction rerun);
2. creates its rerun under the name ``repro_run_name(C, T)`` with ``env``, ``labels`` and the
   label ``rerund-repro: C``. ALREADY_EXISTS means another replica, or this daemon before a
   restart, already issued it: the firing follows that rerun instead;
3. polls the rerun (GetRunDetails every ``poll_interval``) until it is terminal or
   ``timeout`` has passed since the firing started;
4. reads both runs' outputs when they are compared, calls the pure ``judge``, records the
   result with its field-by-field diff in the ledger, updates the metrics and, on a
   mismatch, sends the webhook with the diff.

Scheduling is computed, not remembered: at each tick the latest cron slot at or before now is
due unless it was already fired (this process) or recorded (the ledger) — so firings missed
while the daemon was down are run once on start, not once per slot (``core.repro.due_firing``).
``tick(now)`` takes the time as an argument; the tests drive it with fixed times.

One firing calls ``find_latest_run`` (task source) or ``get_run`` (run source), ``create_rerun``,
``get_run`` once per poll and ``read_outputs`` for each of the two runs compared; the RPC costs
are those of the ``rerund.ports.ControlPlane`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from rerund.aiotasks import TaskSet
from rerund.core.durations import format_duration
from rerund.core.names import MAX_SALT
from rerund.core.outbox import mismatch_key
from rerund.core.repro import (
    UNSCOPED,
    ReproCheck,
    ReproResult,
    Verdict,
    due_firing,
    judge,
    kept_failing,
    reads_outputs,
    repro_run_name,
    unverifiable,
)
from rerund.core.runs import LABEL_REPRO, TERMINAL_PHASES, RerunRequest, RunRef, RunSummary
from rerund.core.times import iso
from rerund.errors import (
    AlreadyExistsError,
    ControlPlaneError,
    NotFoundError,
    PermanentControlPlaneError,
)
from rerund.ports import ControlPlane, Notifier, Outbox, ReproLedger, Schedule, ScheduleFactory
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.issuer import DeadlineExceeded, Issuer, Stopped
from rerund.runtime.reconcile.recorder import Recorder, Unanswered

__all__ = ["ReproRunner"]

T = TypeVar("T")

log = logging.getLogger("rerund.repro")
decisions_log = logging.getLogger("rerund.decisions")

_TAKEN = "the rerun's name is taken by another run"  # _create's answer (compared by identity)
_MAX_SLEEP_S = 30.0  # the schedule loop re-reads the checks (hot reload) at least this often


class ReproRunner:
    """Fires the reproduction checks of the policies in force. See the module docstring.

    ``checks`` is read at every tick (policies hot-reload); ``default_scope`` is the
    project/domain of a source that names none (the daemon's first scope).
    """

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        checks: Callable[[], Sequence[ReproCheck]],
        schedules: ScheduleFactory,
        metrics: Metrics,
        clock: Callable[[], datetime],
        default_scope: tuple[str, str] | None = None,
        ledger: ReproLedger | None = None,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
        on_put: Callable[[], None] = lambda: None,
        fence: Callable[[], Awaitable[None]] | None = None,
        poll_interval: float = 5.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._cp = control_plane
        self._checks = checks
        self._metrics = metrics
        self._clock = clock
        self._scope = default_scope
        self._recorder: Recorder[ReproLedger] = Recorder(
            metrics=metrics, log=log, ledger=ledger, notifier=notifier, outbox=outbox, on_put=on_put
        )
        self._fence = fence
        self._poll = poll_interval
        self._last: dict[str, datetime | None] = {}
        self._schedule_of = schedules
        self._schedules: dict[tuple[str, str], Schedule] = {}
        self._tasks = TaskSet(log, what="a reproduction firing")
        self._stopping = asyncio.Event()
        self._issuer = Issuer(
            metrics,
            stopping=self._stopping,
            clock=clock,
            initial=retry_initial,
            maximum=retry_max,
            sleep=sleep,
        )
        self._known: set[str] = set()

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop firing; firings in flight end without a result (recomputed on the next start)."""
        self._stopping.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for firings in flight; True when none is left."""
        return await self._tasks.drain(timeout)

    async def cancel(self) -> None:
        """Cancel the firings still in flight (the daemon stops): their slots fire on the next start."""
        await self._tasks.stop()

    # -- schedule ----------------------------------------------------------------------------

    def schedule(self, check: ReproCheck) -> Schedule:
        """The ``Schedule`` of ``check`` (cached)."""
        key = (check.schedule, check.timezone)
        if key not in self._schedules:
            self._schedules[key] = self._schedule_of(check.schedule, check.timezone)
        return self._schedules[key]

    def check(self, name: str) -> ReproCheck:
        """The check named ``name``; ``KeyError`` naming the checks there are."""
        checks = list(self._checks())
        for c in checks:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in checks) or "none are configured"
        raise KeyError(f"no reproduction check named {name!r}; the checks are: {known}")

    def _last_fired(self, name: str) -> datetime | None:
        if name not in self._last:
            found = self._recorder.call(lambda lg: lg.last_reproduction(name))
            self._last[name] = None if isinstance(found, Unanswered) else found
        return self._last[name]

    def due(self, now: datetime) -> list[tuple[ReproCheck, datetime]]:
        """The firings due at ``now`` (at most one per check), marked as fired."""
        out = []
        checks = list(self._checks())
        names = [c.name for c in checks]
        new = [n for n in names if n not in self._known]
        if new:
            self._metrics.init_checks(new)
            self._known.update(new)
        for check in checks:
            latest = self.schedule(check).latest_at_or_before(now)
            slot = due_firing(latest, self._last_fired(check.name), now, check.misfire_grace)
            if slot is not None:
                self._last[check.name] = slot
                out.append((check, slot))
        return out

    def next_wakeup(self, now: datetime) -> datetime | None:
        """When the next firing of any check is scheduled."""
        times = [t for c in self._checks() if (t := self.schedule(c).next_after(now)) is not None]
        return min(times) if times else None

    def tick(self, now: datetime) -> list[asyncio.Task[ReproResult | None]]:
        """Start every firing due at ``now``; returns their tasks."""
        started = []
        for check, slot in self.due(now):
            late = now - slot
            log.info(
                "check %r: firing the slot of %s%s",
                check.name,
                iso(slot),
                f" ({_ago(late)} late: missed slots are run once)" if late > timedelta(minutes=1) else "",
            )
            started.append(self._spawn(self.fire(check, slot)))
        return started

    async def run(self) -> None:
        """Tick until ``stop``: sleep until the next slot (at most 30 s, to pick up reloads)."""
        while not self._stopping.is_set():
            now = self._clock()
            try:
                self.tick(now)
                wake = self.next_wakeup(now)
            except Exception:
                log.exception("reproduction schedule pass failed; trying again shortly")
                wake = None
            delay = _MAX_SLEEP_S if wake is None else min(_MAX_SLEEP_S, (wake - now).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.05, delay))

    def _spawn(self, coro: Coroutine[Any, Any, ReproResult | None]) -> asyncio.Task[ReproResult | None]:
        return self._tasks.spawn(coro, failed=_firing_failed)

    # -- one firing --------------------------------------------------------------------------

    async def fire_now(self, name: str) -> ReproResult | None:
        """Fire check ``name`` now, out of schedule (``rerund repro run``); ``KeyError`` if unknown."""
        check = self.check(name)
        slot = self._clock().astimezone(UTC).replace(second=0, microsecond=0)
        return await self.fire(check, slot, manual=True)

    async def fire(self, check: ReproCheck, slot: datetime, *, manual: bool = False) -> ReproResult | None:
        """Run one firing to its result and record it; None only when stopped mid-way."""
        deadline = self._clock() + check.timeout
        project = check.source.project or (self._scope[0] if self._scope else None)
        domain = check.source.domain or (self._scope[1] if self._scope else None)
        name = repro_run_name(check.name, slot, manual=manual)
        facts: dict[str, Any] = {"rerun": None, "reference": None}
        try:
            judged = await self._firing(check, project, domain, name, deadline, facts, slot, manual)
            if judged is None:
                return None
            verdict, extra = judged
        except _Unverifiable as exc:
            verdict, extra = unverifiable(check, exc.reason), exc.extra
        except DeadlineExceeded as exc:
            verdict = kept_failing(check, str(exc.last), rerun_issued=facts["rerun"] is not None)
            extra = {}
        except Stopped:
            return None
        return self._finish(
            check,
            ReproResult(
                check=check.name,
                scheduled_for=slot,
                manual=manual,
                verdict=verdict,
                project=project or "",
                domain=domain or "",
                **{**facts, **extra},
            ),
        )

    async def _firing(
        self,
        check: ReproCheck,
        project: str | None,
        domain: str | None,
        name: str,
        deadline: datetime,
        facts: dict[str, Any],
        slot: datetime,
        manual: bool,
    ) -> tuple[Verdict, dict[str, Any]] | None:
        """Steps 1-4 of the module docstring: the verdict and the phases to record with it;
        None when stopped while waiting. Raises ``_Unverifiable`` when there is nothing to
        compare, ``DeadlineExceeded`` when the control plane kept failing past the deadline."""
        if project is None or domain is None:
            raise _Unverifiable(UNSCOPED)
        reference = await self._retrying(lambda: self._reference(check, project, domain), deadline)
        facts["reference"] = reference.ref.name
        if reference.phase not in TERMINAL_PHASES:
            raise _Unverifiable(
                f"reference run {reference.ref.name!r} is {reference.phase}, not terminal; "
                "a reference must have finished",
                reference_phase=reference.phase,
            )
        ref_outputs = None
        if reads_outputs(check, reference.phase):
            ref_outputs = await self._retrying(lambda: self._cp.read_outputs(reference.ref), deadline)
        request = RerunRequest(
            source=reference.ref,
            name=name,
            env=dict(check.env),
            labels={**check.labels, LABEL_REPRO: check.name},
        )
        facts["rerun"] = name
        for salt in range(1, MAX_SALT + 2):
            refused = await self._retrying(partial(self._create, request, check), deadline)
            if refused is not _TAKEN:
                break
            # Held by a run that is not this firing: the firing's next name (``core.names``).
            request = replace(request, name=repro_run_name(check.name, slot, manual=manual, salt=salt))
            name = facts["rerun"] = request.name
        else:
            refused = f"every name of the firing ({MAX_SALT + 1}) is taken by other runs"
        if refused is not None:
            raise _Unverifiable(refused, reference_phase=reference.phase)
        decisions_log.info("repro   check %s: rerun %s of %s issued", check.name, name, reference.ref)
        target = request.target
        final = await self._wait(target, deadline, check.timeout)
        if self._stopping.is_set() and final is None:
            return None
        if final is None:
            verdict = judge(
                check,
                reference=reference.ref.name,
                rerun=name,
                reference_phase=reference.phase,
                rerun_phase=None,
                timed_out=True,
            )
            return verdict, {"reference_phase": reference.phase}
        new_outputs = None
        if ref_outputs is not None and reads_outputs(check, reference.phase, final.phase):
            new_outputs = await self._retrying(lambda: self._cp.read_outputs(target), deadline)
        verdict = judge(
            check,
            reference=reference.ref.name,
            rerun=name,
            reference_phase=reference.phase,
            rerun_phase=final.phase,
            reference_outputs=ref_outputs,
            rerun_outputs=new_outputs,
        )
        return verdict, {"reference_phase": reference.phase, "rerun_phase": final.phase}

    async def _reference(self, check: ReproCheck, project: str, domain: str) -> RunSummary:
        src = check.source
        if src.run is not None:
            try:
                return await self._cp.get_run(RunRef(project, domain, src.run))
            except NotFoundError:
                raise _Unverifiable(
                    f"reference run {src.run!r} does not exist in {project}/{domain}; fix source.run"
                ) from None
        assert src.task is not None
        found = await self._cp.find_latest_run(
            project, domain, task=src.task, phase=src.phase, labels=src.labels, without_label=LABEL_REPRO
        )
        if found is None:
            raise _Unverifiable(
                f"no reference: no run in {project}/{domain} matches {src.describe()}; nothing to rerun"
            )
        return found

    async def _create(self, request: RerunRequest, check: ReproCheck) -> str | None:
        """Create the rerun; None when it exists now (created or already issued), ``_TAKEN``
        when its name is held by a run that is not a firing of ``check`` (no ``rerund-repro``
        label naming it, or no relation: launched afresh, not rerun), else why the control
        plane refused it."""
        if self._fence is not None:
            await self._fence()  # raises Stopped unless this replica still leads
        try:
            await self._cp.create_rerun(request)
        except AlreadyExistsError:
            there = await self._cp.get_run(request.target)
            if there.labels.get(LABEL_REPRO) != check.name or there.relation is None:
                self._metrics.name_conflicts.inc()
                log.warning(
                    "check %s: rerun name %s is taken by a run that is not a firing of the check; "
                    "the firing takes its next salted name",
                    check.name,
                    request.target,
                )
                return _TAKEN
            decisions_log.info("exists  rerun %s was already issued; following it", request.target)
            return None
        except PermanentControlPlaneError as exc:
            self._issuer.count_error(exc)
            source = request.source.name
            return f"the control plane refused to create rerun {request.name!r} of {source!r}: {exc}"
        return None

    async def _wait(self, target: RunRef, deadline: datetime, timeout: timedelta) -> RunSummary | None:
        """The rerun once terminal; None when the deadline passes first (or on stop).

        The deadline is ``deadline`` or, when the control plane says when the rerun started
        (a rerun followed after a restart or issued by another replica), that time plus
        ``timeout``, whichever is earlier.
        """
        while not self._stopping.is_set():
            try:
                summary = await self._cp.get_run(target)
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                log.warning("reading rerun %s failed (%s); polling again", target, exc)
            else:
                if summary.terminal:
                    return summary
                if summary.created_at is not None:
                    deadline = min(deadline, summary.created_at + timeout)
            if self._clock() >= deadline:
                return None
            await self._issuer.pause(self._poll)
        return None

    async def _retrying(self, call: Callable[[], Awaitable[T]], deadline: datetime) -> T:
        """``call()`` retried with backoff on transient errors until ``deadline``; a permanent
        error means there is nothing to compare."""
        try:
            return await self._issuer.call(call, on_retry=_log_retry, until=deadline)
        except PermanentControlPlaneError as exc:
            raise _Unverifiable(f"the control plane refused a call: {exc}") from exc

    # -- recording ---------------------------------------------------------------------------

    def _finish(self, check: ReproCheck, res: ReproResult) -> ReproResult:
        now = self._clock()
        body = res.to_json()
        novel = self._recorder.call(lambda lg: lg.record_reproduction(body, now=now)) is not False
        if novel:
            self._metrics.reproduction_runs.labels(check.name, res.result).inc()
        self._metrics.reproduction_last_result.labels(check.name).set(1 if res.result == "match" else 0)
        self._metrics.reproduction_last_run.labels(check.name).set(now.timestamp())
        decisions_log.info("repro   %-8s %s", res.result, res.reason)
        if len(res.verdict.diff) > 3:  # the reason shows the first three
            for d in res.verdict.diff[:20]:
                log.info("  %s", d)
        if res.result == "mismatch" and self._recorder.notifier is not None and novel:
            self._spawn(self._notify(check, res, now))
        return res

    async def _notify(self, check: ReproCheck, res: ReproResult, now: datetime) -> None:
        lines = [str(d) for d in res.verdict.diff[:20]]
        more = len(res.verdict.diff) - len(lines)
        text = f"rerund: reproduction check {check.name!r} did not reproduce — {res.reason}"
        if lines:
            text += "\n" + "\n".join(f"• {line}" for line in lines) + (f"\n… and {more} more" if more else "")
        payload: dict[str, Any] = {
            "text": text,
            "event": "reproduction_mismatch",
            **res.to_json(),
            "console_url": self._cp.console_url(RunRef(res.project, res.domain, res.rerun))
            if res.rerun
            else None,
            "decided_at": iso(now),
        }
        key = mismatch_key(res.check, iso(res.scheduled_for), manual=res.manual)
        await self._recorder.notify(key, payload, now)


class _Unverifiable(Exception):
    """The firing cannot compare anything (``reason``); ``extra`` are facts to record with it."""

    def __init__(self, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.extra = extra


def _firing_failed(exc: Exception) -> None:
    log.error("reproduction firing failed unexpectedly; it runs again at its next slot", exc_info=exc)


def _log_retry(exc: ControlPlaneError, delay: float) -> None:
    log.warning("%s; retrying in %.1fs", exc, delay)


def _ago(delta: timedelta) -> str:
    return format_duration(timedelta(seconds=round(delta.total_seconds())))
