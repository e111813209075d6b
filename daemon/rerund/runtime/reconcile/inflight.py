"""The runs the reconcile loop is working on right now, and the creates it is sending.

A stream event, a resync pass and a scheduled re-decision may all reach the same failed run
at once; a second failure of a lineage may be decided for the same rerun as the first. This
object is the one place that serialises them (no I/O; futures need a running event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from rerund.core.runs import RunRef

__all__ = ["InFlight"]


class InFlight:
    """Runs being handled or issued, and creates in flight by rerun name.

    Invariants:

    - *One task per run.* A run is ``busy`` while ``handling`` (read and decide) and from
      ``issuing`` until the coroutine it returns ends (its rerun is being issued); callers
      skip a busy run. ``issuing`` marks it before the issue task starts, so a run is never
      momentarily free between its decision and its issue.
    - *One create per rerun name.* While ``creating(target)`` is open, ``create_of(target)``
      returns a future that completes when it closes (however it ends); a second create of
      that name awaits it and then checks whether the first succeeded.
    - Everything entered is released on every exit path (exceptions and cancellation too).
    """

    def __init__(self) -> None:
        self._handling: set[RunRef] = set()
        self._issuing: set[RunRef] = set()
        self._creating: dict[RunRef, asyncio.Future[None]] = {}

    def busy(self, ref: RunRef) -> bool:
        """Whether ``ref`` is being read, decided or issued right now."""
        return ref in self._handling or ref in self._issuing

    def busy_runs(self) -> frozenset[RunRef]:
        return frozenset(self._handling | self._issuing)

    @contextmanager
    def handling(self, ref: RunRef) -> Iterator[None]:
        """``ref`` is being read and decided for the duration."""
        self._handling.add(ref)
        try:
            yield
        finally:
            self._handling.discard(ref)

    def issuing(self, ref: RunRef, work: Awaitable[None]) -> Coroutine[Any, Any, None]:
        """``work``, the issue of ``ref``'s rerun, as a coroutine to run as a task: ``ref`` is
        busy from this call (before the task starts) until that coroutine ends."""
        self.begin_issue(ref)

        async def issue() -> None:
            try:
                await work
            finally:
                self.end_issue(ref)

        return issue()

    def begin_issue(self, ref: RunRef) -> None:
        """An issue task for ``ref`` is about to start; it calls ``end_issue`` when it ends."""
        self._issuing.add(ref)

    def end_issue(self, ref: RunRef) -> None:
        self._issuing.discard(ref)

    def create_of(self, target: RunRef) -> asyncio.Future[None] | None:
        """The create of rerun ``target`` in flight (done when it ends), or None."""
        return self._creating.get(target)

    @contextmanager
    def creating(self, target: RunRef) -> Iterator[None]:
        """A create of rerun ``target`` is being sent for the duration."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creating[target] = done
        try:
            yield
        finally:
            if self._creating.get(target) is done:
                del self._creating[target]
            done.set_result(None)
