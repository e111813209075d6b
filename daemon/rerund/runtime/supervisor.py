"""No background task dies silently: every long-running task of the daemon runs supervised.

An ``asyncio`` task that raises ends quietly ("Task exception was never retrieved" at best): a
policy watcher that hit a ``RecursionError`` stopped hot reload for good, with no log line and
no metric. ``Supervisor.run(name, body)`` runs ``body()`` until the daemon stops and, when it
raises (or returns early):

- logs the exception once, with its traceback, at the first failure of a streak (a failure
  that repeats logs one line per restart, not the traceback again);
- counts it in ``rerund_internal_errors_total{task}``;
- keeps the last good state: the task's objects (the policies in force, the reconciler's
  caches) live outside ``body`` and survive its restart;
- restarts ``body`` after a capped exponential backoff (1 s, 2 s, ... 60 s), reset once the
  task has run a minute without failing;
- reports the task as down (``down()``) until it runs again, which ``/readyz`` shows.

Cancellation (the daemon stopping) is never a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rerund.aiotasks import TaskSet

__all__ = ["Supervisor"]

log = logging.getLogger("rerund.supervisor")


class Supervisor:
    """Runs named background tasks; see the module docstring for what happens on failure."""

    def __init__(
        self,
        errors: Any,
        *,
        stopping: Callable[[], bool],
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        healthy_after: float = 60.0,
    ) -> None:
        """``errors`` is the ``rerund_internal_errors_total`` counter (label ``task``);
        ``stopping()`` says the daemon is stopping (a task ending then is no failure); ``clock``
        and ``sleep`` are how it sees time (tests pass fake ones)."""
        self._errors = errors
        self._stopping = stopping
        self._clock = clock or time.monotonic
        self._sleep = sleep
        self._initial = backoff_initial
        self._max = backoff_max
        self._healthy_after = healthy_after
        self._down: dict[str, str] = {}
        self._tasks = TaskSet(log, what="a supervised task")
        self.restarts: dict[str, int] = {}

    def down(self) -> dict[str, str]:
        """Tasks that failed and are waiting to restart: name -> what happened."""
        return dict(self._down)

    def start(self, name: str, body: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """``run(name, body)`` as an asyncio task named ``name``."""
        self._errors.labels(name)  # the series exists at 0 from the start
        return self._tasks.spawn(self.run(name, body), name=name)

    async def stop(self, timeout: float | None = None) -> bool:
        """Cancel every task started here and wait for them (True when all ended in time)."""
        return await self._tasks.stop(timeout)

    async def run(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body()`` until the daemon stops, restarting it after every failure."""
        delay = self._initial
        streak = 0
        while not self._stopping():
            started = self._clock()
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                what = f"{type(exc).__name__}: {exc}"[:300]
                failure: BaseException | None = exc
            else:
                if self._stopping():
                    return
                what, failure = "returned while the daemon was running", None
            if self._clock() - started >= self._healthy_after:
                delay, streak = self._initial, 0
            streak += 1
            self._errors.labels(name).inc()
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._down[name] = what
            if streak == 1:
                log.error(
                    "background task %r failed (%s); the last good state stays in force, it restarts "
                    "in %.0fs and /readyz reports it until then",
                    name,
                    what,
                    delay,
                    exc_info=failure,
                )
            else:
                log.error(
                    "background task %r failed again (%d in a row: %s); restarting in %.0fs",
                    name,
                    streak,
                    what,
                    delay,
                )
            await self._sleep(delay)
            delay = min(delay * 2, self._max)
            self._down.pop(name, None)
