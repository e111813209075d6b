"""Which replica acts: the daemon's side of the leadership (``ports.Leadership``).

Replicas sharing a PostgreSQL state elect one leader; only it watches, decides, issues,
notifies and fires reproduction checks. A follower serves HTTP (``/healthz`` ok, ``/readyz``
ready and saying who leads), keeps its database connection warm by trying the lock every
``retry_interval``, and takes over when the leader's lock goes.

A leader that loses the lead — its lock's session ended, the database went away, a fenced write
was refused — stops acting at once and the daemon exits with ``EXIT_LOST_LEAD`` (3) for its
supervisor (Kubernetes, systemd) to restart it as a follower: the controller-runtime way, and
the simplest that is robust: no path in the process has to undo half a leader. Between its loss
and its noticing (at most ``check_interval``) every write that matters is fenced: a rerun's
create is preceded by ``fence()`` (``Leadership.confirm``: the state's term is still ours), an
outbox claim checks the term in its own transaction.

With a file state there is one replica, which leads from the start (``shared=False``): no
fencing round trip, no campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from rerund.errors import FencedError, StateUnavailableError
from rerund.ports import Leadership
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.issuer import Stopped

__all__ = ["EXIT_LOST_LEAD", "Lead"]

log = logging.getLogger("rerund.leadership")

EXIT_LOST_LEAD = 3
_ERROR_EVERY_S = 60.0  # one ERROR a minute while the state database is unreachable


class Lead:
    """This replica's role: campaign until leading, keep checking while leading, fence writes."""

    def __init__(
        self,
        leadership: Leadership,
        metrics: Metrics,
        *,
        shared: bool,
        retry_interval: float = 1.0,
        check_interval: float = 1.0,
    ) -> None:
        self._leadership = leadership
        self._metrics = metrics
        self.shared = shared
        self._retry = retry_interval
        self._check = check_interval
        self.leading = False
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._state_error: str | None = None
        self._last_error_log = 0.0
        self._leader_seen: tuple[str, int] | None = None
        # ``fence``'s single flight: the check the next callers wait for, and its runner.
        self._next_check: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None
        metrics.leader.set(0)

    @property
    def identity(self) -> str:
        return self._leadership.identity

    async def campaign(self, stopping: asyncio.Event) -> bool:
        """Try the lead every ``retry_interval`` until this replica leads (True) or ``stopping``
        is set (False)."""
        said_following = False
        while not stopping.is_set():
            try:
                led = await asyncio.to_thread(self._leadership.acquire)
                if not led:
                    self._leader_seen = await asyncio.to_thread(self._leadership.leader)
            except StateUnavailableError as exc:
                self._unavailable(str(exc))
            else:
                self._available()
                if led:
                    self._became_leader()
                    return True
                if not said_following and self._leader_seen is not None:
                    log.info(
                        "following: %s leads (term %d); this replica (%s) takes over when its lock goes",
                        self._leader_seen[0],
                        self._leader_seen[1],
                        self.identity,
                    )
                    said_following = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._retry)
        return False

    def _became_leader(self) -> None:
        self.leading = True
        self._metrics.leader.set(1)
        self._metrics.leader_changes.inc()
        term = self._leadership.term
        self._leader_seen = (self.identity, term if term is not None else 0)
        if self.shared:
            log.info("this replica (%s) leads (term %s): it acts from now on", self.identity, term)

    async def keep(self, stopping: asyncio.Event) -> None:
        """While leading: check the lead every ``check_interval``; lose it on the first failed
        check (a check that hangs past ``4 * check_interval + 5`` s counts as failed)."""
        while not stopping.is_set() and not self.lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._check)
            if stopping.is_set():
                return
            try:
                held = await asyncio.wait_for(
                    asyncio.to_thread(self._leadership.held), timeout=4 * self._check + 5
                )
            except TimeoutError:
                held = False
            if not held:
                self.lose("its lock's session ended or the state database did not answer")
                return

    def lose(self, why: str) -> None:
        """Stop leading now (idempotent): the daemon stops acting and exits ``EXIT_LOST_LEAD``."""
        if self.lost.is_set():
            return
        self.leading = False
        self.lost_reason = why
        self._metrics.leader.set(0)
        log.error(
            "this replica (%s) lost the lead (%s); it stops acting now and exits with status %d for its "
            "supervisor to restart it as a follower",
            self.identity,
            why,
            EXIT_LOST_LEAD,
        )
        self.lost.set()

    async def fence(self) -> None:
        """Before a write only the leader may make (a rerun's create): raises ``Stopped`` (the
        write is not made, what is owed stays owed) unless the state confirms this replica
        still leads. A refusal counts in ``rerund_fenced_writes_total`` (once per check) and
        loses the lead.

        Single flight: the callers waiting at the same time (a storm's creates) share one
        check, the next one to *begin* after each asked — a check already under way when a
        caller arrives does not answer it. So every create is still preceded by a check of
        the term, at the cost of one transaction per batch of creates, not one per create."""
        if not self.shared:
            return
        if not self.leading:
            raise Stopped
        check = self._next_check
        if check is None:
            check = self._next_check = asyncio.get_running_loop().create_future()
            check.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
            if self._checking is None:
                self._checking = asyncio.ensure_future(self._check_terms())
        try:
            await asyncio.shield(check)
        except (FencedError, StateUnavailableError) as exc:
            raise Stopped from exc

    async def _check_terms(self) -> None:
        """Run the checks the callers of ``fence`` wait for, one after the other, until none
        is wanted."""
        try:
            while (check := self._next_check) is not None:
                self._next_check = None
                try:
                    await asyncio.to_thread(self._leadership.confirm)
                except FencedError as exc:
                    self.fenced(exc)
                    check.set_exception(exc)
                except StateUnavailableError as exc:
                    self._unavailable(str(exc))
                    check.set_exception(exc)
                except BaseException:  # cancelled (the stop): so are the checks waited for
                    check.cancel()
                    if self._next_check is not None:
                        self._next_check.cancel()
                        self._next_check = None
                    raise
                else:
                    check.set_result(None)
        finally:
            self._checking = None

    def fenced(self, exc: FencedError) -> None:
        """A fenced write was refused: count it and lose the lead."""
        self._metrics.fenced_writes.inc()
        log.error("%s", exc)
        self.lose("a fenced write was refused: another replica leads")

    async def release(self) -> None:
        """On a clean stop: let a follower take over at once."""
        if self.shared:
            with contextlib.suppress(StateUnavailableError):
                await asyncio.to_thread(self._leadership.release)
        self.leading = False
        self._metrics.leader.set(0)

    def _unavailable(self, why: str) -> None:
        now = time.monotonic()
        if self._state_error is None or now - self._last_error_log >= _ERROR_EVERY_S:
            log.error("%s", why)
            self._last_error_log = now
        self._state_error = why

    def _available(self) -> None:
        if self._state_error is not None:
            log.info("the state database answers again")
        self._state_error = None

    def ready(self) -> tuple[bool, str] | None:
        """A follower's readiness (a leader's is the daemon's own: None)."""
        if self.leading:
            return None
        if self.lost.is_set():
            return False, f"this replica lost the lead ({self.lost_reason}) and is stopping"
        if self._state_error is not None:
            return False, self._state_error
        if self._leader_seen is None:
            return True, "follower: no replica leads yet; this one is trying the lock"
        holder, term = self._leader_seen
        return True, f"follower: {holder} leads (term {term}); this replica takes over when its lock goes"

    def info(self) -> dict[str, Any]:
        """What ``/readyz`` and ``/status`` say about the lead."""
        leader = self._leader_seen
        return {
            "shared": self.shared,
            "role": "leader" if self.leading else "follower",
            "identity": self.identity,
            "leader": leader[0] if leader else None,
            "term": leader[1] if leader else None,
        }
