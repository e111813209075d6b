"""The outbox's sender: the leader delivers the notifications waiting in the state.

Events are put in the outbox where they are decided (``Recorder.notify``); only the leader
runs the sender. Each pass takes the events that are due, claims each (a fenced write: a replica
that lost the lead gets ``FencedError`` and sends nothing), sends it through the notifier and
marks it delivered — or failed, to be tried again after ``rerund.core.outbox.RETRY``'s backoff,
by whichever replica leads then. ``rerund_notifications_total{result}`` counts the sends this
process made; ``rerund_outbox_pending`` the events not delivered yet (the same number on every
replica: the dashboard takes ``max``).

The outbox calls block on the database: they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from rerund.core.outbox import OutboxItem, retry_at
from rerund.errors import FencedError, NotificationError, StateUnavailableError
from rerund.ports import Notifier, Outbox
from rerund.runtime.metrics import Metrics

__all__ = ["OutboxSender"]

log = logging.getLogger("rerund.outbox")

# A claimed event is not taken by another sender for this long: longer than one send with all
# its retries (the webhook's timeout and backoff), so a live sender is never overtaken.
DEFAULT_LEASE = timedelta(minutes=2)


class OutboxSender:
    """Delivers ``outbox``'s due events through ``notifier``; ``wake()`` after a ``put``."""

    def __init__(
        self,
        outbox: Outbox,
        notifier: Notifier,
        *,
        metrics: Metrics,
        clock: Callable[[], datetime],
        on_fenced: Callable[[FencedError], None] | None = None,
        poll_interval: float = 5.0,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self._outbox = outbox
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock
        self._on_fenced = on_fenced or self._count_fenced
        self._poll = poll_interval
        self._lease = lease
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._state_error: str | None = None

    def _count_fenced(self, exc: FencedError) -> None:
        self._metrics.fenced_writes.inc()
        log.error("%s", exc)

    def wake(self) -> None:
        """An event was put: send it now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Send passes until ``stop`` (the leader's task)."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.send_due()
            except FencedError as exc:
                self._on_fenced(exc)  # the lead's: counted, and the lead is lost
                return
            except StateUnavailableError as exc:
                if self._state_error is None:
                    log.error("outbox: %s", exc)
                self._state_error = str(exc)
            else:
                if self._state_error is not None:
                    log.info("outbox: the state database answers again; sending what is due")
                self._state_error = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def prune(self, older_than: datetime) -> int:
        """Forget the events delivered before ``older_than`` (the pruner's, with the ledger)."""
        return await asyncio.to_thread(self._outbox.prune, older_than)

    async def last_pass(self, *, timeout: float) -> int:
        """The stop sequence's pass, after ``stop`` and while this replica still leads: send
        what is due once (an event put just before the stop would otherwise wait for the next
        leader), within ``timeout`` seconds; how many were delivered. What is not sent by then
        stays in the outbox (a send cut short keeps its claim until the lease ends) for the
        next leader or start. Never raises."""
        try:
            return await asyncio.wait_for(self.send_due(last=True), timeout=max(0.0, timeout))
        except TimeoutError:
            log.warning(
                "outbox: the stop's deadline came before every due event was sent; "
                "the next leader sends the rest"
            )
        except FencedError as exc:
            self._on_fenced(exc)
        except StateUnavailableError as exc:
            log.error("outbox: %s; the next leader sends what is due", exc)
        return 0

    async def send_due(self, *, last: bool = False) -> int:
        """One pass: send every due event; how many were delivered. Raises ``FencedError``
        (another replica leads: nothing more is sent) and ``StateUnavailableError``. A pass
        ends early on ``stop``, unless it is the ``last`` (``last_pass``)."""
        now = self._clock()
        items = await asyncio.to_thread(self._outbox.due, now)
        sent = 0
        for item in items:
            if self._stopping.is_set() and not last:
                break
            sent += await self._send(item)
        self._metrics.outbox_pending.set(await asyncio.to_thread(self._outbox.pending))
        return sent

    async def _send(self, item: OutboxItem) -> int:
        now = self._clock()
        if not await asyncio.to_thread(self._outbox.claim, item.key, now=now, until=now + self._lease):
            return 0  # delivered or claimed meanwhile
        try:
            await self._notifier.notify({**item.payload, "event_id": item.key})
        except NotificationError as exc:
            self._metrics.notifications.labels("failed").inc()
            when = retry_at(item.attempts + 1, self._clock())
            log.error("%s; outbox event %s is sent again at %s", exc, item.key, when.isoformat())
            await asyncio.to_thread(self._outbox.failed, item.key, str(exc), retry_at=when, now=self._clock())
            return 0
        self._metrics.notifications.labels("sent").inc()
        await asyncio.to_thread(self._outbox.delivered, item.key, now=self._clock())
        return 1
