"""Every control-plane call through one gate: adaptive concurrency, a hard RPC rate, a learned
rate, and the state of rerund's credentials.

Production control planes sit behind gateways that limit the request rate (RESOURCE_EXHAUSTED)
and are 20-100 ms away. A fixed concurrency is either too low for the latency or too high for
the limit, so the number of calls in flight adapts (``AdaptiveLimit``, as TCP's congestion
window): while calls succeed and their latency stays near the best seen for their kind it
grows — by one per success until the first overload (slow start: doubling every round), then by
about one per round — and it halves (at most once per ``cooldown``) on RESOURCE_EXHAUSTED or
UNAVAILABLE. It never exceeds ``max_concurrent_reruns``. ``RateSchedule`` keeps the RPC rate
under ``max_rps`` by making calls wait: a call is charged the RPCs it makes (``COST``).
Concurrency alone cannot hold a rate limit when calls are fast (a refusal comes back at once),
so ``AdaptiveRate`` also learns one: on RESOURCE_EXHAUSTED it caps the rate a little under what
the control plane accepted over the last second, then raises the cap slowly until the next
refusal (its fields say by how much).

A RESOURCE_EXHAUSTED answer is retried here first, a few times with a short backoff behind the
learned rate (so a refused read does not wait for the next resync pass); after that it is a
``TransientControlPlaneError`` like any other: the reconcile loop keeps what it owes pending and
retries with backoff, so RESOURCE_EXHAUSTED never loses or duplicates a rerun (deterministic
names make the retried create idempotent).

``CredentialWatch`` remembers whether the control plane refuses rerund's credentials: ``/readyz``
reports it, and one ERROR line per minute says so (not one per call).

``AdaptiveLimit``, ``RateSchedule``, ``AdaptiveRate`` and ``CredentialWatch`` are pure (time comes
in as ``now``); ``Throttle`` and ``GuardedControlPlane`` are the thin asynchronous shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rerund.core.runs import FailureFacts, RelaunchRequest, RerunRequest, RunRef, RunSummary
from rerund.errors import ControlPlaneError, CredentialsError
from rerund.ports import ControlPlane

__all__ = [
    "COST",
    "AdaptiveLimit",
    "AdaptiveRate",
    "CredentialWatch",
    "GuardedControlPlane",
    "RateSchedule",
    "Throttle",
    "guarded",
]

log = logging.getLogger("rerund.throttle")

# RPCs charged per port call (at most what ``ports.ControlPlane`` documents) when the control
# plane has no per-RPC gate (``paced_per_rpc=False``: the in-memory fakes), and what an accepted
# call tells the learned rate. The flyte adapter is built with the ``Throttle`` as its rate gate
# (``ports.RpcGate``, ``paced_per_rpc=True``) and charges every RPC on the wire itself — each
# ListRuns page, each RPC of the SDK's rerun path, each retry — so then nothing is charged here.
COST: Mapping[str, int] = {
    "list_failed": 1,
    "list_reruns": 1,
    "get_run": 1,
    "read_failure": 3,
    "find_latest_run": 1,
    "read_outputs": 2,
    "create_rerun": 5,
    "create_relaunch": 7,
    "latest_task_version": 1,
    "scope_exists": 1,
}

OVERLOAD_CODES = frozenset({"resource_exhausted", "unavailable"})

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class AdaptiveLimit:
    """How many calls may be in flight: additive increase, multiplicative decrease.

    Invariants: ``floor <= current <= ceiling``; a success never lowers the limit, an overload
    never raises it; at most one decrease per ``cooldown`` seconds (one burst of refusals is one
    signal). "Latency flat" means at most ``tolerance`` times the best latency seen for that
    ``kind`` of call (a listing and a 7-RPC rerun differ; the best drifts up slowly, so a
    permanently slower link becomes the new normal).
    """

    ceiling: int
    floor: int = 1
    initial: int = 4
    decrease: float = 0.5
    tolerance: float = 2.0
    cooldown: float = 0.5
    limit: float = field(default=0.0, init=False)
    threshold: float = field(default=math.inf, init=False)  # slow start below it
    best_latency: dict[str, float] = field(default_factory=dict, init=False)
    _last_decrease: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        self.floor = max(1, min(self.floor, self.ceiling))
        self.limit = float(max(self.floor, min(self.initial, self.ceiling)))

    @property
    def current(self) -> int:
        return max(self.floor, min(self.ceiling, int(self.limit)))

    def on_success(self, latency: float, now: float, kind: str = "") -> None:
        """A call of ``kind`` answered in ``latency`` seconds at ``now``."""
        latency = max(0.0, latency)
        seen = self.best_latency.get(kind)
        best = latency if seen is None else min(latency, seen * 1.002 + 1e-5)
        self.best_latency[kind] = best
        if latency <= self.tolerance * best + 0.002:
            step = 1.0 if self.limit < self.threshold else 1.0 / max(1.0, self.limit)
            self.limit = min(float(self.ceiling), self.limit + step)

    def on_overload(self, now: float) -> None:
        """A call was refused (RESOURCE_EXHAUSTED) or the control plane was UNAVAILABLE."""
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self.limit = max(float(self.floor), self.limit * self.decrease)
        self.threshold = self.limit


# The most RPCs per second a sliding window remembers (``max_rps`` is at most 100,000).
_MAX_WINDOW = 100_000


def _admit(times: deque[float], at: float, n: int, window: int) -> float:
    """The earliest moment from ``at`` when ``n`` more RPCs fit a sliding one-second window of
    ``window`` (``times``: the moments of the last ones, never decreasing), recorded in ``times``.
    What is still in the window by then, plus ``n``, must fit; with ``n > window`` no second can
    hold them, so they wait a whole second after the last."""
    if times:
        at = max(at, times[-1])
    keep = window - n
    if keep < 0:
        if times:
            at = max(at, times[-1] + 1.0)
    elif len(times) > keep:
        at = max(at, times[len(times) - keep - 1] + 1.0)
    times.extend([at] * n)
    while len(times) > max(window, n):
        times.popleft()
    return at


@dataclass
class RateSchedule:
    """At most ``rate`` RPCs in any one second: a token bucket (``rate`` per second after a
    burst of ``burst``, default 7: one call of the costliest kind) spreads them evenly, and a
    sliding window over the last ``floor(rate)`` release times makes the cap exact — a bucket
    alone lets ``burst`` more through in the second after an idle moment.

    ``reserve(cost, now)`` books ``cost`` RPCs and returns how long the caller must wait before
    sending them; bookings queue behind each other (release times never decrease). ``hold(at)``
    moves the last booking later (another schedule made it wait longer), so the window counts
    when it is really sent. Invariants: the RPCs released by time ``t`` never exceed
    ``burst + rate * (t - first booking)``, and no window ``[t, t + 1)`` holds more than
    ``max(floor(rate), cost)`` of them. ``rate <= 0`` or not finite: no cap.
    """

    rate: float
    burst: float = 0.0
    _tokens: float = field(default=math.nan, init=False)
    _last: float = field(default=0.0, init=False)
    _released: deque[float] = field(default_factory=deque, init=False)
    _booked: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.burst <= 0:
            self.burst = 7.0

    @property
    def window(self) -> int:
        """How many RPCs one second may hold: ``floor(rate)`` (0: no cap, or under 1 a second)."""
        if self.rate <= 0 or not math.isfinite(self.rate):
            return 0
        return min(int(self.rate), _MAX_WINDOW)

    def reserve(self, cost: float, now: float) -> float:
        if self.rate <= 0 or not math.isfinite(self.rate):
            self._released.clear()
            return 0.0
        if math.isnan(self._tokens):
            self._tokens, self._last = self.burst, now
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        self._tokens -= cost
        release = now + max(0.0, -self._tokens / self.rate)
        released = self._released
        n = max(1, math.ceil(cost))
        if self.window >= 1:
            release = _admit(released, release, n, self.window)
        else:  # under one RPC a second: the bucket alone spaces them
            if released:
                release = max(release, released[-1])
            released.clear()
            released.extend([release] * n)
        self._booked = n
        return release - now

    def retune(self, rate: float, burst: float) -> None:
        """From now on at most ``rate`` RPCs a second after a burst of ``burst`` (> 0); the
        bookings made so far keep their release times."""
        self.rate = rate
        self.burst = burst

    def hold(self, at: float) -> None:
        """The last booking is sent at ``at`` (later than this schedule said)."""
        released = self._released
        for i in range(1, min(self._booked, len(released)) + 1):
            released[-i] = max(released[-i], at)


@dataclass
class AdaptiveRate:
    """A rate cap learned from RESOURCE_EXHAUSTED answers (none until the first one).

    ``reserve(cost, now)`` books ``cost`` RPCs and returns the wait before sending them;
    ``answered(cost, now)`` records RPCs the control plane accepted. ``on_overload(now)`` sets the
    cap to ``decrease`` times the RPCs accepted in the last ``window`` seconds — what the gateway
    let through is its limit — or, when none was accepted, half of those booked (at most once
    per ``cooldown``). Between refusals the cap grows by ``growth`` (relative) per second.
    Invariants: the cap is never below ``floor``; an overload never raises it; a reservation never
    lowers it.
    """

    decrease: float = 0.9
    growth: float = 0.1
    window: float = 1.0
    cooldown: float = 0.5
    floor: float = 1.0
    cap: float = math.inf
    forget_above: float = float(_MAX_WINDOW)
    _booked: deque[tuple[float, float]] = field(default_factory=deque, init=False)
    _accepted: deque[tuple[float, float]] = field(default_factory=deque, init=False)
    _schedule: RateSchedule | None = field(default=None, init=False)
    _grown_at: float = field(default=0.0, init=False)
    _last_decrease: float = field(default=-math.inf, init=False)

    def reserve(self, cost: float, now: float) -> float:
        self._booked.append((now, cost))
        while self._booked and self._booked[0][0] < now - self.window:
            self._booked.popleft()
        if self._schedule is None:
            return 0.0
        if now > self._grown_at:
            self.cap *= (1.0 + self.growth) ** min(now - self._grown_at, 600.0)
            self._grown_at = now
            if self.cap > self.forget_above:
                # Far above anything the gateway refused: the limit it taught is gone (a quiet
                # night, a raised quota). Forget it until the next refusal.
                self.cap = math.inf
                self._schedule = None
                return 0.0
            self._schedule.retune(self.cap, max(1.0, self.cap / 4))
        return self._schedule.reserve(cost, now)

    def hold(self, at: float) -> None:
        """The last booking is sent at ``at`` (see ``RateSchedule.hold``)."""
        if self._schedule is not None:
            self._schedule.hold(at)

    def answered(self, cost: float, now: float) -> None:
        self._accepted.append((now, cost))
        while self._accepted and self._accepted[0][0] < now - self.window:
            self._accepted.popleft()

    def accepted(self, now: float) -> float:
        """The RPCs answered in the ``window`` seconds up to ``now``."""
        return sum(c for t, c in self._accepted if t >= now - self.window)

    def on_overload(self, now: float) -> None:
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        accepted = self.accepted(now) / self.window
        booked = sum(c for t, c in self._booked if t >= now - self.window) / self.window
        target = accepted * self.decrease if accepted > 0 else booked / 2
        self.cap = max(self.floor, min(self.cap, target))
        self._grown_at = now
        if self._schedule is None:
            self._schedule = RateSchedule(self.cap, burst=max(1.0, self.cap / 4))
        else:
            self._schedule.retune(self.cap, max(1.0, self.cap / 4))


@dataclass
class PeakRate:
    """The most RPCs released in one whole second. ``count(cost, second)`` adds ``cost`` RPCs
    released in ``second`` (seconds never go back); True when that made a new peak."""

    peak: int = 0
    _second: int = field(default=-1, init=False)
    _in_second: int = field(default=0, init=False)

    def count(self, cost: int, second: int) -> bool:
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += cost
        if self._in_second <= self.peak:
            return False
        self.peak = self._in_second
        return True


@dataclass
class CredentialWatch:
    """Whether the control plane refuses rerund's credentials, and when to say so.

    ``refused`` returns True when an ERROR line is due: the first refusal, then at most one per
    ``every`` seconds while it lasts. ``accepted`` returns True once, when refused credentials
    work again.
    """

    every: float = 60.0
    since: float | None = None
    reason: str = ""
    _logged: float | None = None
    refusals: int = 0

    def refused(self, reason: str, now: float) -> bool:
        self.refusals += 1
        self.reason = reason
        if self.since is None:
            self.since = now
        if self._logged is None or now - self._logged >= self.every:
            self._logged = now
            return True
        return False

    def accepted(self) -> bool:
        was = self.since is not None
        self.since = None
        self._logged = None
        self.refusals = 0
        return was


class Throttle:
    """The asynchronous gate: ``async with throttle.slot(cost): await call()``.

    ``clock`` and ``sleep`` are the only ways it sees time: tests pass fake ones.
    """

    def __init__(
        self,
        limit: AdaptiveLimit,
        rate: RateSchedule,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_change: Callable[[int], None] | None = None,
        on_release: Callable[[int], None] | None = None,
        on_peak: Callable[[int], None] | None = None,
    ) -> None:
        self.limit = limit
        self.rate = rate
        self.learned = AdaptiveRate()
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self._inflight = 0
        # Calls waiting for a slot, first come first served: a freed slot wakes one of them,
        # not all (a storm queues thousands).
        self._waiters: deque[asyncio.Future[None]] = deque()
        # ``book`` is called from the SDK's loop thread when the daemon runs on another loop.
        self._booking = threading.Lock()
        self._on_release = on_release
        self._on_peak = on_peak
        self._peak = PeakRate()
        self._sent: deque[float] = deque()  # when the last max_rps RPCs left (or will)
        self.overloads = 0
        if on_change is not None:
            on_change(limit.current)

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def peak_rps(self) -> int:
        """The most RPCs released in one whole second of ``clock`` so far."""
        return self._peak.peak

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiters)

    def book(self, cost: int = 1) -> float:
        """Book ``cost`` RPCs against the hard and the learned rate; the seconds to wait before
        sending them. Both schedules record the later of their two times, so each one's window
        counts when the RPCs really go. Thread-safe (the adapter's per-RPC gate calls it from
        the SDK's loop)."""
        with self._booking:
            now = self._clock()
            hard = self.rate.reserve(cost, now)
            learned = self.learned.reserve(cost, now)
            wait = max(hard, learned)
            if wait > hard:
                self.rate.hold(now + wait)
            if wait > learned:
                self.learned.hold(now + wait)
            return wait

    def sent(self, cost: int = 1) -> float:
        """``cost`` booked RPCs are ready to leave, their wait over: the seconds they must still
        wait (0.0: none) — they leave then, and are counted then, in
        ``rerund_control_plane_rpcs_total`` and per whole second of the clock (the peak is
        ``rerund_control_plane_peak_rps``). A sliding window over those moments holds
        ``max_rps`` exactly, whatever a busy loop did to the waits the schedule gave (timers that
        fire late fire together): a late crowd is given successive moments, one window slot
        each, so no caller has to ask twice. Thread-safe."""
        with self._booking:
            now = self._clock()
            window = self.rate.window
            at = _admit(self._sent, now, cost, window) if window >= 1 else now
            self._released(cost, int(at))
            return at - now

    def _released(self, cost: int, second: int) -> None:
        """Count ``cost`` RPCs released in ``second`` (lock held; seconds never go back: the
        moments ``sent`` gives never decrease)."""
        peaked = self._peak.count(cost, second)
        if self._on_release is not None:
            self._on_release(cost)
        if peaked and self._on_peak is not None:
            self._on_peak(self._peak.peak)

    async def pace(self, cost: int = 1) -> None:
        """Wait until ``cost`` more RPCs fit the hard and the learned rate (no slot taken)."""
        wait = self.book(cost)
        if wait > 0:
            await self._sleep(wait)
        wait = self.sent(cost)
        if wait > 0:
            await self._sleep(wait)

    async def _acquire(self) -> None:
        if not self._waiters and self._inflight < self.limit.current:
            self._inflight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by ``_wake``, which counted the slot as ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        self._inflight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._inflight < self.limit.current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._inflight += 1
                waiter.set_result(None)

    @asynccontextmanager
    async def slot(self, cost: int = 1, kind: str = "") -> AsyncIterator[None]:
        """Hold a concurrency slot for one call of ``kind``, charged ``cost`` RPCs of rate before
        it starts and counted as ``cost`` RPCs let through when answered (0: its RPCs are paced
        one by one with ``pace`` and reported with ``answered``)."""
        await self._acquire()
        try:
            # The rate is booked once the call holds its slot, so it is sent right after its
            # wait: waiting for a slot after the booking would release calls in bursts.
            if cost > 0:
                await self.pace(cost)
        except BaseException:
            self._release()
            raise
        started = self._clock()
        before = self.limit.current
        try:
            yield
        except CredentialsError:
            raise  # says nothing about load
        except ControlPlaneError as exc:
            if exc.code in OVERLOAD_CODES:
                self.overloads += 1
                self.limit.on_overload(self._clock())
                if exc.code == "resource_exhausted":
                    with self._booking:
                        self.learned.on_overload(self._clock())
            else:  # answered (NOT_FOUND, ALREADY_EXISTS, ...): the control plane kept up
                self._answered(started, kind, cost)
            raise
        else:
            self._answered(started, kind, cost)
        finally:
            self._release()
            if self._on_change is not None and self.limit.current != before:
                self._on_change(self.limit.current)

    def _answered(self, started: float, kind: str, made: int) -> None:
        now = self._clock()
        self.limit.on_success(now - started, now, kind)
        if made:
            self.answered(made)

    def answered(self, cost: int = 1) -> None:
        """``cost`` RPCs were answered (not refused as overload): what the learned rate counts
        as let through. Thread-safe."""
        with self._booking:
            self.learned.answered(cost, self._clock())


class GuardedControlPlane:
    """A ``ControlPlane`` whose calls pass through ``throttle`` and whose credential refusals
    are tracked in ``credentials`` (watch streams are not throttled: one long call each)."""

    def __init__(
        self,
        inner: ControlPlane,
        throttle: Throttle,
        *,
        credentials: CredentialWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_refused: Callable[[], None] | None = None,
        on_error: Callable[[ControlPlaneError], None] | None = None,
        overload_retries: int = 6,
        overload_backoff: float = 0.1,
        paced_per_rpc: bool = False,
    ) -> None:
        """``paced_per_rpc``: ``inner`` was built with ``throttle`` as its rate gate
        (``ports.RpcGate``) and charges every raw RPC itself, where it makes it. ``sleep`` waits
        out the overload backoff (tests pass a fake one)."""
        self.inner = inner
        self.throttle = throttle
        self.credentials = credentials or CredentialWatch()
        self._clock = clock
        self._sleep = sleep
        self._on_refused = on_refused
        self._on_error = on_error
        self._retries = overload_retries
        self._backoff = overload_backoff
        # Charge every raw RPC where the adapter makes it (each page of a listing included).
        self._per_rpc = paced_per_rpc
        if self._per_rpc:
            # Each booking is one RPC: no burst beyond one, so no second holds more than max_rps.
            throttle.rate.retune(throttle.rate.rate, 1.0)

    def _refused(self, exc: CredentialsError) -> None:
        if self.credentials.refused(str(exc), self._clock()):
            log.error(
                "the control plane refuses rerund's credentials (%s); nothing is created until they "
                "are fixed, what is owed stays pending (rewrite the key or secret file: it is reloaded "
                "without a restart); this line repeats at most once a minute",
                exc,
            )
        if self._on_refused is not None:
            self._on_refused()

    def _accepted(self) -> None:
        if self.credentials.since is not None and self.credentials.accepted():
            log.info("the control plane accepts rerund's credentials again; catching up")

    async def _through(self, name: str, call: Callable[[], Any]) -> Any:
        """``call()`` through the gate; RESOURCE_EXHAUSTED retried ``overload_retries`` times
        (each refused attempt reported to ``on_error``; the last one is raised)."""
        delay = self._backoff
        for attempt in range(self._retries + 1):
            cost = 0 if self._per_rpc else COST.get(name, 1)
            try:
                async with self.throttle.slot(cost, name):
                    result = await call()
            except CredentialsError as exc:
                self._refused(exc)
                raise
            except ControlPlaneError as exc:
                if exc.code != "resource_exhausted" or attempt == self._retries:
                    raise
                if self._on_error is not None:
                    self._on_error(exc)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._accepted()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        result: list[RunSummary] = await self._through(
            "list_failed", lambda: self.inner.list_failed(project, domain, since=since)
        )
        return result

    async def list_ended(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        result: list[RunSummary] = await self._through(
            "list_ended", lambda: self.inner.list_ended(project, domain, since=since)
        )
        return result

    async def list_reruns(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        policy: str | None = None,
        changed_since: datetime | None = None,
    ) -> list[RunSummary]:
        result: list[RunSummary] = await self._through(
            "list_reruns",
            lambda: self.inner.list_reruns(
                project, domain, since=since, policy=policy, changed_since=changed_since
            ),
        )
        return result

    async def get_run(self, ref: RunRef) -> RunSummary:
        result: RunSummary = await self._through("get_run", lambda: self.inner.get_run(ref))
        return result

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        # A stream's events do not show the credentials work now: a gateway checks them when the
        # stream opens, so an open stream outlives a revocation.
        try:
            async for summary in self.inner.watch(project, domain):
                yield summary
        except CredentialsError as exc:
            self._refused(exc)
            raise

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        result: FailureFacts = await self._through("read_failure", lambda: self.inner.read_failure(run))
        return result

    async def find_latest_run(
        self,
        project: str,
        domain: str,
        *,
        task: str,
        phase: str = "SUCCEEDED",
        labels: Mapping[str, str] | None = None,
        without_label: str | None = None,
    ) -> RunSummary | None:
        result: RunSummary | None = await self._through(
            "find_latest_run",
            lambda: self.inner.find_latest_run(
                project, domain, task=task, phase=phase, labels=labels, without_label=without_label
            ),
        )
        return result

    async def read_outputs(self, ref: RunRef) -> dict[str, Any]:
        result: dict[str, Any] = await self._through("read_outputs", lambda: self.inner.read_outputs(ref))
        return result

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        result: RunRef = await self._through("create_rerun", lambda: self.inner.create_rerun(request))
        return result

    def console_url(self, ref: RunRef) -> str:
        return self.inner.console_url(ref)

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        result: RunRef = await self._through("create_relaunch", lambda: self.inner.create_relaunch(request))
        return result

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        result: str | None = await self._through(
            "latest_task_version", lambda: self.inner.latest_task_version(project, domain, task)
        )
        return result

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        result: bool | None = await self._through(
            "scope_exists", lambda: self.inner.scope_exists(project, domain)
        )
        return result


def guarded(inner: ControlPlane, throttle: Throttle, **kwargs: Any) -> GuardedControlPlane:
    """``inner`` behind ``throttle``: a ``GuardedControlPlane``."""
    return GuardedControlPlane(inner, throttle, **kwargs)
