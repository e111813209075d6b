"""The gate every control-plane call passes: adaptive concurrency (AIMD), the hard RPC rate and
the credentials' state — pure rules with Hypothesis, then the asynchronous gate over a fake."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from rerund.core.runs import RunRef
from rerund.errors import CredentialsError, NotFoundError, TransientControlPlaneError
from rerund.runtime.metrics import Metrics
from rerund.runtime.throttle import (
    AdaptiveLimit,
    AdaptiveRate,
    CredentialWatch,
    GuardedControlPlane,
    PeakRate,
    RateSchedule,
    Throttle,
)

events = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.floats(min_value=0.0, max_value=2.0)),
        st.tuples(st.just("overload"), st.just(0.0)),
    ),
    max_size=200,
)


@given(ceiling=st.integers(min_value=1, max_value=64), seq=events)
def test_the_limit_stays_within_floor_and_ceiling_and_moves_the_right_way(ceiling, seq):
    limit = AdaptiveLimit(ceiling=ceiling)
    now = 0.0
    for kind, latency in seq:
        now += 0.3
        before = limit.limit
        if kind == "ok":
            limit.on_success(latency, now)
            assert limit.limit >= before
        else:
            limit.on_overload(now)
            assert limit.limit <= before
        assert 1 <= limit.current <= ceiling


def test_the_limit_grows_while_latency_is_flat_and_halves_on_overload():
    limit = AdaptiveLimit(ceiling=32, initial=4)
    for i in range(28):  # slow start: one more per success until the first overload
        limit.on_success(0.05, i * 0.01)
    assert limit.current == 32
    limit.on_overload(10.0)
    assert limit.current == 16
    limit.on_overload(10.1)  # within the cooldown: one burst of refusals is one signal
    assert limit.current == 16
    limit.on_overload(11.0)
    assert limit.current == 8
    for i in range(7):  # after an overload: about one more per round of `limit` successes
        limit.on_success(0.05, 12.0 + i * 0.01)
    assert limit.current == 8
    for i in range(2):
        limit.on_success(0.05, 13.0 + i * 0.01)
    assert limit.current == 9


def test_the_limit_holds_when_latency_rises():
    limit = AdaptiveLimit(ceiling=32, initial=4)
    limit.on_success(0.05, 0.0)
    assert limit.current == 5
    for i in range(100):
        limit.on_success(0.5, 1.0 + i)  # ten times the best latency: queueing somewhere
    assert limit.current == 5


@given(
    rate=st.floats(min_value=1, max_value=1000),
    calls=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(min_value=1, max_value=7)), max_size=200
    ),
)
def test_the_rate_schedule_never_lets_more_than_burst_plus_rate_times_time_through(rate, calls):
    schedule = RateSchedule(rate)
    now, sent = 0.0, []
    for gap, cost in calls:
        now += gap
        sent.append((now + schedule.reserve(cost, now), cost))
    for t, _ in sent:
        through = sum(c for s, c in sent if s <= t)
        assert through <= schedule.burst + rate * t + 7 + 1e-6
    assert schedule.burst == 7.0


def test_a_learned_rate_caps_below_what_the_gateway_accepted_then_grows():
    learned = AdaptiveRate()
    for i in range(200):  # 200 booked over a second, 100 of them accepted
        assert learned.reserve(1, i / 200) == 0.0  # no cap before a refusal
        if i % 2:
            learned.answered(1, i / 200)
    learned.on_overload(1.0)
    assert learned.cap == pytest.approx(0.9 * 100, rel=0.02)
    waits = [learned.reserve(1, 1.0) for _ in range(100)]
    assert waits[-1] > 0.8  # 100 more at once wait behind the learned cap
    learned.reserve(1, 3.0)
    assert learned.cap == pytest.approx(0.9 * 100 * 1.1**2, rel=0.02)


def test_with_nothing_accepted_the_learned_rate_halves_what_was_sent():
    learned = AdaptiveRate()
    for i in range(100):
        learned.reserve(1, i / 100)
    learned.on_overload(1.0)
    assert learned.cap == pytest.approx(50, rel=0.02)


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["send", "refused"]), st.floats(min_value=0, max_value=0.3)), max_size=300
    )
)
def test_a_learned_rate_never_falls_below_its_floor_and_refusals_never_raise_it(events):
    learned, now = AdaptiveRate(), 0.0
    for kind, gap in events:
        now += gap
        before = learned.cap
        if kind == "send":
            assert learned.reserve(1, now) >= 0.0
            learned.answered(1, now)
            assert learned.cap >= before
        else:
            learned.on_overload(now)
            assert learned.cap <= before
        assert learned.cap >= learned.floor


def test_no_rate_cap_means_no_wait():
    assert RateSchedule(0).reserve(1000, 0.0) == 0.0


def test_credential_refusals_are_reported_once_a_minute_and_recovery_once():
    watch = CredentialWatch()
    assert watch.refused("revoked", 0.0) is True
    assert [watch.refused("revoked", t) for t in (1.0, 30.0, 59.9)] == [False, False, False]
    assert watch.refused("revoked", 60.0) is True
    assert watch.since == 0.0 and watch.refusals == 5
    assert watch.accepted() is True
    assert watch.accepted() is False
    assert watch.since is None


class _Time:
    """A fake clock and sleep: ``sleep`` advances the clock at once (and lets other tasks run);
    each clock reading adds 1 ms besides, so every call's latency is steady."""

    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []
        self._readings = 0

    def clock(self) -> float:
        self._readings += 1
        return self.now + self._readings / 1000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class _Fake:
    """A control plane whose ``get_run`` answers from a script of outcomes."""

    def __init__(self, script, sleep=asyncio.sleep):
        self.script = list(script)
        self.inflight = 0
        self.peak = 0
        self._sleep = sleep

    async def get_run(self, ref):
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await self._sleep(0.001)
            outcome = self.script.pop(0) if self.script else "ok"
            if outcome == "exhausted":
                raise TransientControlPlaneError("refused", rpc="GetRunDetails", code="resource_exhausted")
            if outcome == "unauthenticated":
                raise CredentialsError("revoked", rpc="GetRunDetails", code="unauthenticated")
            if outcome == "missing":
                raise NotFoundError("gone", rpc="GetRunDetails", code="not_found")
            return ref
        finally:
            self.inflight -= 1


def _guarded(script, ceiling=8, retries=0, errors=None, backoff=0.001, time=None, backoff_sleep=None):
    """A guard over ``_Fake`` on fake ``time``: nothing here waits in real time."""
    metrics = Metrics(CollectorRegistry())
    time = time or _Time()
    throttle = Throttle(
        AdaptiveLimit(ceiling=ceiling),
        RateSchedule(0),
        clock=time.clock,
        sleep=time.sleep,
        on_change=metrics.control_plane_concurrency.set,
    )
    fake = _Fake(script, sleep=time.sleep)
    guard = GuardedControlPlane(
        fake,
        throttle,
        clock=time.clock,
        sleep=backoff_sleep or time.sleep,
        overload_retries=retries,
        overload_backoff=backoff,
        on_error=errors.append if errors is not None else None,
    )
    return guard, fake, metrics


def _gauge(metrics):
    return metrics.registry.get_sample_value("rerund_control_plane_concurrency")


def test_resource_exhausted_halves_the_gauge_and_still_reaches_the_caller():
    guard, _, metrics = _guarded(["exhausted"])
    ref = RunRef("p", "d", "r")

    async def go():
        with pytest.raises(TransientControlPlaneError):
            await guard.get_run(ref)
        after = _gauge(metrics)
        return after, [await guard.get_run(ref) for _ in range(3)]

    after, answers = asyncio.run(go())
    assert after == 2  # halved from the initial 4
    assert answers == [ref] * 3
    assert _gauge(metrics) == 3  # and grows again while calls succeed
    assert guard.throttle.overloads == 1


def test_resource_exhausted_is_retried_behind_the_learned_rate_and_each_refusal_reported():
    errors = []
    guard, _, _ = _guarded(["exhausted", "exhausted"], retries=6, errors=errors)
    ref = RunRef("p", "d", "r")

    assert asyncio.run(guard.get_run(ref)) == ref
    assert [e.code for e in errors] == ["resource_exhausted", "resource_exhausted"]
    assert guard.throttle.learned.cap < float("inf")  # a rate was learned from the refusals


def test_the_overload_backoff_doubles_from_its_start_up_to_two_seconds_in_the_injected_sleep():
    backoffs: list[float] = []
    time = _Time()

    async def backoff_sleep(seconds: float) -> None:
        backoffs.append(seconds)
        await time.sleep(seconds)

    guard, _, _ = _guarded(["exhausted"] * 7, retries=7, backoff=0.1, time=time, backoff_sleep=backoff_sleep)
    ref = RunRef("p", "d", "r")

    assert asyncio.run(guard.get_run(ref)) == ref
    assert backoffs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_resource_exhausted_past_the_retries_reaches_the_caller():
    errors = []
    guard, _, _ = _guarded(["exhausted"] * 3, retries=2, errors=errors)

    async def go():
        with pytest.raises(TransientControlPlaneError, match="refused"):
            await guard.get_run(RunRef("p", "d", "r"))

    asyncio.run(go())
    assert len(errors) == 2  # the third, raised, is the caller's to count


def test_concurrency_never_exceeds_the_current_limit():
    guard, fake, metrics = _guarded([], ceiling=3)

    async def go():
        await asyncio.gather(*(guard.get_run(RunRef("p", "d", str(i))) for i in range(40)))

    asyncio.run(go())
    assert fake.peak <= 3
    assert _gauge(metrics) == 3


def test_an_answered_error_counts_as_the_control_plane_keeping_up():
    guard, _, metrics = _guarded(["missing"])

    async def go():
        with pytest.raises(NotFoundError):
            await guard.get_run(RunRef("p", "d", "r"))

    asyncio.run(go())
    assert guard.throttle.overloads == 0
    assert _gauge(metrics) == 5  # answered: grows as after a success


def test_refused_credentials_log_one_error_and_recovery_one_info(caplog):
    guard, _, _ = _guarded(["unauthenticated"] * 5)

    async def go():
        for _ in range(5):
            with pytest.raises(CredentialsError):
                await guard.get_run(RunRef("p", "d", "r"))
        assert guard.credentials.since is not None
        await guard.get_run(RunRef("p", "d", "r"))

    with caplog.at_level(logging.INFO, logger="rerund.throttle"):
        asyncio.run(go())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("the control plane refuses rerund's credentials (revoked)")
    assert "this line repeats at most once a minute" in errors[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "the control plane accepts rerund's credentials again; catching up"
    ]
    assert guard.credentials.since is None


def test_the_guard_passes_relaunches_and_scope_lookups_through_and_an_unsupported_answer_back():
    from rerund.errors import UnsupportedError
    from rerund.runtime.throttle import guarded

    class _Plain(_Fake):
        async def latest_task_version(self, project, domain, task):
            raise UnsupportedError("no deployed tasks here", rpc="ListTasks")

        async def scope_exists(self, project, domain):
            raise UnsupportedError("no projects here", rpc="GetProject")

    class _Relaunching(_Plain):
        async def create_relaunch(self, request):
            return request

        async def latest_task_version(self, project, domain, task):
            return "v2"

    def gate():
        return Throttle(AdaptiveLimit(ceiling=2), RateSchedule(0))

    plain, relaunching = guarded(_Plain([]), gate()), guarded(_Relaunching([]), gate())

    with pytest.raises(UnsupportedError, match=r"^no deployed tasks here$"):
        asyncio.run(plain.latest_task_version("p", "d", "t"))
    with pytest.raises(UnsupportedError, match=r"^no projects here$"):
        asyncio.run(relaunching.scope_exists("p", "d"))
    assert asyncio.run(relaunching.latest_task_version("p", "d", "t")) == "v2"


def test_an_adapter_with_a_per_rpc_gate_is_paced_per_rpc_not_per_call():
    class _Paged(_Fake):
        def __init__(self, runs, rpc_gate):
            super().__init__(runs)
            self.rpc_gate = rpc_gate

        async def get_run(self, ref):
            for _ in range(3):  # three raw RPCs, e.g. three pages of a listing
                await self.rpc_gate.pace(1)
                self.rpc_gate.answered(1)
            return ref

        async def create_rerun(self, request):
            return request

    booked = []
    throttle = Throttle(AdaptiveLimit(ceiling=2), RateSchedule(0), clock=lambda: 0.0)
    original = throttle.rate.reserve
    throttle.rate.reserve = lambda cost, now: booked.append(cost) or original(cost, now)
    inner = _Paged([], rpc_gate=throttle)  # the adapter is built with the gate
    guard = GuardedControlPlane(inner, throttle, paced_per_rpc=True)

    assert asyncio.run(guard.get_run(RunRef("p", "d", "r"))) == RunRef("p", "d", "r")
    assert inner.rpc_gate is throttle
    assert throttle.sent(1) == 0.0  # no max_rps: never held
    assert booked == [1, 1, 1]  # one per raw RPC; the call itself is charged nothing
    # The learned rate counts the RPCs the adapter reports answered, not a per-call estimate.
    assert throttle.learned.accepted(0.0) == 3

    booked.clear()  # the SDK's rerun path is charged per RPC by the adapter too, not per call
    assert asyncio.run(guard.create_rerun("a request")) == "a request"
    assert booked == []
    assert throttle.learned.accepted(0.0) == 3  # (this fake sent none)


@given(
    rate=st.integers(min_value=1, max_value=300),
    burst=st.sampled_from([1.0, 7.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=0.05), min_size=1, max_size=700),
)
def test_no_one_second_window_holds_more_than_max_rps_single_rpc_bookings(rate, burst, gaps):
    # What max_rps promises an operator whose gateway counts RPCs per second: per-RPC bookings
    # (the flyte adapter's gate) are released so that no window [t, t + 1) holds more than rate.
    schedule = RateSchedule(float(rate), burst=burst)
    now, released = 0.0, []
    for gap in gaps:
        now += gap
        released.append(now + schedule.reserve(1, now))
    assert released == sorted(released)
    for i, t in enumerate(released):
        in_window = sum(1 for r in released[i:] if r < t + 1.0 - 1e-9)
        assert in_window <= rate


def test_a_bucket_alone_would_let_a_burst_more_through_than_the_rate():
    # The window is what makes the cap exact: 7 + 10 bookings at once at rate 10 would put 17
    # in the first second with a token bucket alone.
    schedule = RateSchedule(10.0)
    released = [schedule.reserve(1, 0.0) for _ in range(17)]
    assert sum(1 for r in released if r < 1.0) == 10
    assert released[10] == pytest.approx(1.0)


def test_a_freed_slot_goes_to_the_longest_waiting_call_and_a_cancelled_waiter_passes_it_on():
    async def main():
        throttle = Throttle(AdaptiveLimit(ceiling=1, initial=1), RateSchedule(0))
        order: list[str] = []
        release = asyncio.Event()

        async def call(name: str) -> None:
            async with throttle.slot(0, "k"):
                order.append(name)
                await release.wait()

        first = asyncio.create_task(call("first"))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(call(n)) for n in ("second", "third", "fourth")]
        await asyncio.sleep(0)
        assert throttle.inflight == 1 and throttle.waiting == 3
        waiting[0].cancel()  # gives up before its turn: never runs, takes no slot
        release.set()
        await asyncio.gather(first, *waiting[1:])
        assert waiting[0].cancelled()
        assert order == ["first", "third", "fourth"]  # first come, first served
        assert throttle.inflight == 0 and throttle.waiting == 0

    asyncio.run(main())


@given(cancel_at=st.lists(st.booleans(), min_size=1, max_size=30), ceiling=st.integers(1, 4))
def test_slots_are_never_oversubscribed_or_leaked_whatever_is_cancelled(cancel_at, ceiling):
    async def main():
        throttle = Throttle(AdaptiveLimit(ceiling=ceiling, initial=ceiling), RateSchedule(0))
        peak = 0

        async def call() -> None:
            nonlocal peak
            async with throttle.slot(0, "k"):
                peak = max(peak, throttle.inflight)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(call()) for _ in cancel_at]
        await asyncio.sleep(0)
        for task, cancel in zip(tasks, cancel_at, strict=True):
            if cancel:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= ceiling
        assert throttle.inflight == 0 and throttle.waiting == 0

    asyncio.run(main())


def test_a_learned_rate_grown_far_past_any_refusal_is_forgotten_and_never_overflows():
    # One refusal, then hours of quiet: the cap grows 10% a second; past forget_above it is
    # dropped (no cap until the next refusal) instead of growing to infinity.
    learned = AdaptiveRate()
    for i in range(20):
        learned.reserve(1, i / 20)
        learned.answered(1, i / 20)
    learned.on_overload(1.0)
    assert learned.cap < 100
    for t in range(5, 3 * 3600, 5):
        assert learned.reserve(1, float(t)) == 0.0 or t < 200
    assert learned.cap == float("inf")
    learned.on_overload(3 * 3600.0)  # the next refusal teaches a limit again
    assert learned.cap < float("inf")


def test_max_rps_holds_over_every_second_with_the_learned_rate_active():
    # The hard cap and the learned one book separately; each must count the RPCs when they are
    # really sent (the later of the two times), or their windows drift apart and the RPCs one
    # held back go out together with the next ones. 400 seeded scenarios (seed 415 put 9 RPCs in
    # one second at max_rps 5 before the fix).
    for seed in range(400):
        rnd = random.Random(seed)
        now = 0.0
        rate = rnd.choice([2, 3, 5, 10])
        throttle = Throttle(AdaptiveLimit(ceiling=8), RateSchedule(float(rate), burst=1.0), clock=lambda: now)
        for _ in range(rnd.randint(1, 3 * rate)):
            throttle.learned.answered(1, 0.0)
        throttle.learned.on_overload(0.0)
        sends = []
        for _ in range(rnd.randint(5, 60)):
            now += rnd.choice([0.0, 0.0, 0.01, 0.1, 0.3, 1.0])
            sends.append(now + throttle.book(1))
        sends.sort()
        for i, t in enumerate(sends):
            assert sum(1 for r in sends[i:] if r < t + 1.0 - 1e-9) <= rate, (seed, rate, sends)


@given(
    rate=st.integers(min_value=1, max_value=20),
    costs=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=60),
)
def test_a_booking_of_several_rpcs_counts_them_all_at_its_release(rate, costs):
    schedule = RateSchedule(float(rate))
    released = []
    for cost in costs:
        at = schedule.reserve(cost, 0.0)
        released.extend([at] * cost)
    for i, t in enumerate(released):
        in_window = sum(1 for r in released[i:] if r < t + 1.0 - 1e-9)
        assert in_window <= max(rate, max(costs))


@given(
    rate=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=300),
)
def test_rpcs_that_come_late_together_still_never_put_more_than_max_rps_in_a_second(rate, gaps):
    # Whatever the schedule said, a busy loop can wake many waiters at once: sent() is the last
    # word, and gives each of a late crowd its own moment (no caller asks twice).
    now = 0.0
    throttle = Throttle(AdaptiveLimit(ceiling=4), RateSchedule(float(rate), burst=1.0), clock=lambda: now)
    left: list[float] = []
    for gap in gaps:
        now += gap
        wait = throttle.sent(1)
        assert wait >= 0.0
        left.append(now + wait)
    # In send order, within float rounding: now + (slot - now) can differ from the slot by an
    # ulp (Hypothesis found 3.2281712589538247 before 3.2281712589538243).
    assert all(later >= earlier - 1e-9 for earlier, later in itertools.pairwise(left))
    for i, t in enumerate(left):
        assert sum(1 for r in left[i:] if r < t + 1.0 - 1e-9) <= rate
    assert throttle.peak_rps <= rate


def test_a_late_crowd_is_let_through_at_the_rate_and_counted():
    now = 0.0
    throttle = Throttle(AdaptiveLimit(ceiling=4), RateSchedule(10.0), clock=lambda: now)
    waits = [throttle.sent(1) for _ in range(25)]
    assert waits[:10] == [0.0] * 10  # the first ten go now
    assert waits[10:20] == [pytest.approx(1.0)] * 10  # the next ten a second later, each once
    assert waits[20:] == [pytest.approx(2.0)] * 5
    assert throttle.peak_rps == 10


def test_the_peak_rate_counts_per_whole_second_and_says_each_new_peak() -> None:
    peak = PeakRate()
    said = [
        peak.count(cost, second) for cost, second in [(3, 10), (2, 10), (4, 11), (1, 11), (5, 12), (1, 12)]
    ]
    assert said == [True, True, False, False, False, True]
    assert peak.peak == 6
