"""One retry-with-backoff for every control-plane call that must eventually succeed: creating
a rerun, and every step of a reproduction firing.

A transient error (any ``ControlPlaneError`` but a permanent one or ALREADY_EXISTS) is counted
in ``rerund_control_plane_errors_total`` and retried after a capped exponential delay
(``initial``, doubled each time, at most ``maximum``). A
permanent error and ``AlreadyExistsError`` are the caller's to handle (counted, except
ALREADY_EXISTS, which is an answer, not an error). The wait ends early when the daemon stops;
then no further attempt is made (``Stopped``): what was owed stays owed, and is recomputed on
the next start. With ``until``, a transient error past that time ends the retries
(``DeadlineExceeded``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from rerund.errors import AlreadyExistsError, ControlPlaneError, PermanentControlPlaneError
from rerund.runtime.metrics import Metrics

__all__ = ["DeadlineExceeded", "Issuer", "Stopped"]

T = TypeVar("T")


class Stopped(Exception):
    """The daemon is stopping: the call was not made (again)."""


class DeadlineExceeded(Exception):
    """The control plane kept failing transiently until the deadline; ``last`` is its last error."""

    def __init__(self, last: ControlPlaneError) -> None:
        super().__init__(str(last))
        self.last = last


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ControlPlaneError) and not isinstance(
        exc, PermanentControlPlaneError | AlreadyExistsError
    )


class Issuer:
    """Makes control-plane calls with retries; ``stopping`` interrupts them.

    ``sleep`` replaces the wait between attempts (tests pass one that advances a fake clock);
    by default it waits on ``stopping`` with a timeout, so a stop ends it at once.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        *,
        stopping: asyncio.Event,
        clock: Callable[[], datetime],
        initial: float = 0.5,
        maximum: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._stopping = stopping
        self._clock = clock
        self._initial = initial
        self._maximum = maximum
        self._sleep = sleep

    def count_error(self, exc: ControlPlaneError, *, rpc: str = "unknown") -> None:
        """One more ``rerund_control_plane_errors_total{rpc, code}`` (``rpc`` when the error
        does not name its call); nothing without metrics."""
        if self._metrics is not None:
            self._metrics.control_plane_errors.labels(exc.rpc or rpc, exc.code or "unknown").inc()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the daemon stops."""
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[ControlPlaneError, float], None],
        until: datetime | None = None,
    ) -> T:
        """``fn()``, retried on transient errors; ``on_retry(error, delay)`` before each wait.

        Raises ``Stopped`` when the daemon stops before an attempt, ``DeadlineExceeded`` when
        a transient error happens at or after ``until``, and any other error of ``fn``.
        """

        async def attempt() -> T:
            if self._stopping.is_set():
                raise Stopped
            try:
                return await fn()
            except AlreadyExistsError:
                raise
            except ControlPlaneError as exc:
                self.count_error(exc)
                raise

        # One plain loop, no retrier object per call: most calls succeed at once, and a storm
        # makes thousands of them.
        failed = 0
        while True:
            try:
                return await attempt()
            except ControlPlaneError as exc:
                if not _transient(exc):
                    raise
                if until is not None and self._clock() >= until:
                    raise DeadlineExceeded(exc) from exc
                failed += 1
                delay = self._wait_after(failed)
                on_retry(exc, delay)
                await self.pause(delay)

    def _wait_after(self, attempt: int) -> float:
        """The wait after the ``attempt``-th attempt failed."""
        return float(min(self._maximum, self._initial * 2.0 ** min(attempt - 1, 64)))
