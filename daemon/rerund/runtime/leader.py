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

A leader that cannot prove its lead exits without a stop sequence (``exit_process``, the CLI's
``os._exit``): the **watchdog**, a thread of its own, sees when the last successful check is
older than ``UNPROVEN_EXIT_S`` (12 s) — the database is black-holed, or the event loop itself is
stuck in a database call that never answers (a partition leaves no error to raise) — or when a
lost lead's stop sequence has not ended ``_LOST_STOP_GRACE_S`` after the loss, and exits
``EXIT_LOST_LEAD`` at once. PostgreSQL frees that leader's lock only after its lock session was
idle for ``IDLE_SESSION_TIMEOUT_S`` (15 s; ``adapters.sqlstate.leadership``), so the old leader
is gone before another replica can lead, even when no TCP error ever reaches it.

With a file state there is one replica, which leads from the start (``shared=False``): no
fencing round trip, no campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rerund.errors import FencedError, StateUnavailableError
from rerund.lograte import EveryMinute
from rerund.ports import Leadership
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile.issuer import Stopped

__all__ = ["EXIT_LOST_LEAD", "UNPROVEN_EXIT_S", "Lead"]

log = logging.getLogger("rerund.leadership")

EXIT_LOST_LEAD = 3
# The watchdog: a leader whose last successful check is older than this exits at once. Longer
# than a check that hangs (``keep``: 4 * check_interval + 5 s) takes to fail; shorter than the
# lock session's idle timeout after which PostgreSQL frees the lock (15 s).
UNPROVEN_EXIT_S = 12.0
_LOST_STOP_GRACE_S = 5.0  # a lost lead's stop sequence has this long before the watchdog exits
_WATCH_EVERY_S = 0.5


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
        exit_process: Callable[[int], object] | None = None,
        unproven_exit_s: float = UNPROVEN_EXIT_S,
    ) -> None:
        """``exit_process``: how the watchdog ends the process (``os._exit``; None: no watchdog,
        for a daemon run inside another process, e.g. a test's)."""
        self._leadership = leadership
        self._metrics = metrics
        self.shared = shared
        self._retry = retry_interval
        self._check = check_interval
        self.leading = False
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._state_error: str | None = None
        self._state_errors = EveryMinute(log)  # one ERROR a minute while the database is away
        self._leader_seen: tuple[str, int] | None = None
        # ``fence``'s single flight: the check the next callers wait for, and its runner.
        self._next_check: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None
        self._exit_process = exit_process
        self._unproven_exit_s = unproven_exit_s
        self._proved_at = 0.0  # time.monotonic() of the last successful check
        self._lost_at: float | None = None
        self._watchdog_done = threading.Event()
        self._watchdog: threading.Thread | None = None
        metrics.leader.set(0)

    @property
    def identity(self) -> str:
        return self._leadership.identity

    def _try_lead(self) -> tuple[bool, tuple[str, int] | None]:
        """In a worker thread: try the lock; when another replica holds it, who leads."""
        led = self._leadership.acquire()
        return led, (None if led else self._leadership.leader())

    async def campaign(self, stopping: asyncio.Event) -> bool:
        """Try the lead every ``retry_interval`` until this replica leads (True) or ``stopping``
        is set (False). A try that has not answered after ``4 * retry_interval + 5`` s (a
        black-holed database gives no error) makes ``ready()`` say so; that same try is waited
        for, never started again beside it (it holds the lock's session)."""
        said_following = False
        timeout = 4 * self._retry + 5
        pending: asyncio.Future[tuple[bool, tuple[str, int] | None]] | None = None
        while not stopping.is_set():
            if pending is None:
                pending = asyncio.ensure_future(asyncio.to_thread(self._try_lead))
            stop_wait = asyncio.ensure_future(stopping.wait())
            waiters: set[asyncio.Future[Any]] = {pending, stop_wait}
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
            if stopping.is_set():
                break
            if not pending.done():
                self._unavailable(
                    f"the state database cannot be reached (trying the leader lock: no answer within "
                    f"{timeout:g}s); rerund keeps trying and acts only while it leads"
                )
                continue
            done, pending = pending, None
            try:
                led, seen = done.result()
            except StateUnavailableError as exc:
                self._unavailable(str(exc))
            else:
                self._available()
                if led:
                    self._became_leader()
                    return True
                self._leader_seen = seen
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
        self._proved_at = time.monotonic()
        if self.shared:
            log.info("this replica (%s) leads (term %s): it acts from now on", self.identity, term)
            if self._exit_process is not None and self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="rerund-lead-watchdog", daemon=True
                )
                self._watchdog.start()

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
            self._proved_at = time.monotonic()

    def lose(self, why: str) -> None:
        """Stop leading now (idempotent): the daemon stops acting and exits ``EXIT_LOST_LEAD``."""
        if self.lost.is_set():
            return
        self.leading = False
        self.lost_reason = why
        self._lost_at = time.monotonic()
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

    def _watch(self) -> None:
        """The watchdog's thread (see the module): exits the process when the lead can no longer
        be proved, or a lost lead's stop sequence does not end."""
        while not self._watchdog_done.wait(_WATCH_EVERY_S):
            now = time.monotonic()
            lost_at = self._lost_at
            if lost_at is not None:
                if now - lost_at <= _LOST_STOP_GRACE_S:
                    continue
                why = f"it lost the lead {now - lost_at:.0f}s ago and its stop sequence has not ended"
            elif now - self._proved_at > self._unproven_exit_s:
                why = (
                    f"it could not confirm its lead for {now - self._proved_at:.0f}s (limit "
                    f"{self._unproven_exit_s:g}s): the state database does not answer, or its own event "
                    "loop is stuck waiting for it"
                )
            else:
                continue
            self._metrics.leader.set(0)
            log.error(
                "this replica (%s) exits with status %d at once: %s; another replica leads once PostgreSQL "
                "ends this replica's lock session, and the supervisor restarts this one as a follower",
                self.identity,
                EXIT_LOST_LEAD,
                why,
            )
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            assert self._exit_process is not None
            self._exit_process(EXIT_LOST_LEAD)
            return

    async def release(self) -> None:
        """On a clean stop: let a follower take over at once."""
        self._watchdog_done.set()
        if self.shared:
            with contextlib.suppress(StateUnavailableError):
                await asyncio.to_thread(self._leadership.release)
        self.leading = False
        self._metrics.leader.set(0)

    def _unavailable(self, why: str) -> None:
        self._state_errors.error(why)
        self._state_error = why

    def _available(self) -> None:
        if self._state_error is not None:
            log.info("the state database answers again")
        self._state_error = None
        self._state_errors.reset()

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
