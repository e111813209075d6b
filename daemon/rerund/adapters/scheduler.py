"""Timers for reruns that are not yet due (backoff) or deferred by a budget: APScheduler 3.x.

Jobs are in memory on purpose. A job only says "look at this failure again at time T"; after a
restart the daemon recomputes every due time from the runs themselves (failure time + the
policy's deterministic backoff, or the budget window), so persisting jobs would add a second
source of truth that can disagree with the control plane.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

__all__ = ["AsyncScheduler"]

log = logging.getLogger("rerund.scheduler")


class AsyncScheduler:
    """``rerund.ports.Scheduler`` on an APScheduler ``AsyncIOScheduler``.

    ``start`` must be called from the running event loop the callbacks should run on.
    Scheduling the same ``key`` again replaces its job (for the same time, it keeps the waiting
    one: a failure decided again after a reload, deferred to the same time, costs no new job); a
    job that fires late still runs.
    ``at`` is a time on the clock the caller decides by (the control plane's); ``local`` turns
    it into this host's, which APScheduler's timers run on (default: the same).
    """

    def __init__(self, local: Callable[[datetime], datetime] | None = None) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._local = local or (lambda at: at)
        self._waiting: dict[str, datetime] = {}  # key -> when its job, not fired yet, fires

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def schedule(self, key: str, at: datetime, callback: Callable[[], Awaitable[None]]) -> None:
        run_date = self._local(at).astimezone(UTC)
        if self._waiting.get(key) == run_date:
            return

        async def job() -> None:
            if self._waiting.get(key) == run_date:
                del self._waiting[key]
            await callback()

        self._waiting[key] = run_date
        self._scheduler.add_job(
            job,
            trigger="date",
            run_date=run_date,
            id=key,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    def cancel(self, key: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        self._waiting.pop(key, None)
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(key)

    def jobs(self) -> dict[str, datetime]:
        """Scheduled keys -> when they fire."""
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs() if job.next_run_time}
