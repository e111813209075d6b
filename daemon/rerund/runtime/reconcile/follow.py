"""Runs the loop reads one by one when no listing or stream has said how they ended: reruns
followed to their outcome that are older than the reruns listing reaches, and the incidents'
canaries. One GetRunDetails per run asked; what is read goes to the recorder (outcomes) and the
incidents (canaries), never to the loop's own state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from rerund.core.runs import RunRef
from rerund.errors import ControlPlaneError, NotFoundError
from rerund.ports import ControlPlane
from rerund.runtime.reconcile.incidents import Incidents
from rerund.runtime.reconcile.index import RerunIndex
from rerund.runtime.reconcile.issuer import Issuer
from rerund.runtime.reconcile.recorder import DecisionRecorder

__all__ = ["FOLLOW_ALONE_EVERY", "Follower"]

# How often a followed rerun older than the listing reaches is read on its own.
FOLLOW_ALONE_EVERY = timedelta(minutes=5)


class Follower:
    """Reads single runs for the loop (at most ``reads`` at once for the reruns)."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        reads: asyncio.Semaphore,
        issuer: Issuer,
        recorder: DecisionRecorder,
        index: RerunIndex,
        incidents: Incidents,
    ) -> None:
        self._cp = control_plane
        self._reads = reads
        self._issuer = issuer
        self._recorder = recorder
        self._index = index
        self._incidents = incidents

    async def alone(self, scope: str, since: datetime, now: datetime) -> None:
        """Outcomes of the reruns of ``scope`` followed here and created before ``since`` (the
        reruns listing's start): one GetRunDetails each, at most every ``FOLLOW_ALONE_EVERY``
        (only reruns running for hours cost this; the watch stream usually reports their end
        first). A rerun found deleted is no longer followed."""
        await asyncio.gather(
            *(self._one(r, now) for r in self._recorder.ask_alone(scope, since, now, FOLLOW_ALONE_EVERY))
        )

    async def _one(self, ref: RunRef, now: datetime) -> None:
        async with self._reads:
            try:
                summary = await self._cp.get_run(ref)
            except NotFoundError as exc:
                self._issuer.count_error(exc)
                self._recorder.untrack(ref)  # deleted: there is no outcome to wait for
                return
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                return
        self._recorder.observe(summary, now)

    async def canaries(self, now: datetime, release: Callable[[Sequence[RunRef]], Awaitable[None]]) -> None:
        """How each incident's canary ended, when the stream has not said: one GetRunDetails
        per canary out (so per open incident); the failures a closed incident held are passed
        to ``release`` at once, before the next canary is read."""
        for ref in self._incidents.canaries():
            try:
                summary = await self._cp.get_run(ref)
            except NotFoundError:
                if self._index.holder(ref) is None:  # never created (rejected, dry run): probe again
                    self._incidents.canary_gone(ref, now)
                continue
            except ControlPlaneError as exc:
                self._issuer.count_error(exc)
                continue
            self._recorder.observe(summary, now)
            await release(self._incidents.run_ended(summary, now))
