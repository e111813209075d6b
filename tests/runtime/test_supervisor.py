"""No background task dies silently (issue 11): the supervisor logs a failure once, counts it in
``rerund_internal_errors_total{task}``, restarts the task with backoff and reports it down
until it runs again."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from rerund.runtime.metrics import Metrics
from rerund.runtime.supervisor import Supervisor


def test_a_failing_task_is_logged_once_counted_restarted_and_reported_down_meanwhile(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="rerund.supervisor")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    stop = asyncio.Event()
    seen_down: list[dict[str, str]] = []
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RecursionError("maximum recursion depth exceeded")
        seen_down.append(sup.down())  # running again: no longer down
        await stop.wait()

    async def main() -> None:
        task = sup.start("policies", body)
        while runs < 2:
            await asyncio.sleep(0.001)
        seen_down.append(sup.down())
        while runs < 4:
            await asyncio.sleep(0.001)
        stop.set()
        await asyncio.wait_for(task, 5)

    sup = Supervisor(metrics.internal_errors, stopping=stop.is_set, backoff_initial=0.01, backoff_max=0.02)
    asyncio.run(main())

    assert registry.get_sample_value("rerund_internal_errors_total", {"task": "policies"}) == 3
    assert sup.restarts == {"policies": 3}
    assert seen_down[0] == {"policies": "RecursionError: maximum recursion depth exceeded"}
    assert seen_down[-1] == {}
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "background task 'policies' failed (RecursionError: maximum recursion depth exceeded); the last "
        "good state stays in force, it restarts in 0s and /readyz reports it until then"
    )
    assert caplog.records[0].exc_info is not None  # the traceback, once
    assert [m.split(" (")[0] for m in messages[1:]] == ["background task 'policies' failed again"] * 2
    assert all(r.exc_info is None for r in caplog.records[1:])


def test_a_task_that_returns_while_the_daemon_runs_is_restarted_and_one_that_stops_is_not() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    sup = Supervisor(Metrics(registry).internal_errors, stopping=stop.is_set, backoff_initial=0.001)
    asyncio.run(asyncio.wait_for(sup.run("pruner", body), 5))

    assert runs == 3
    assert registry.get_sample_value("rerund_internal_errors_total", {"task": "pruner"}) == 2


def test_the_series_of_a_supervised_task_exists_at_zero_from_its_start() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()

    async def main() -> None:
        task = sup.start("poller", stop.wait)
        await asyncio.sleep(0)
        stop.set()
        await task

    sup = Supervisor(Metrics(registry).internal_errors, stopping=stop.is_set)
    asyncio.run(main())

    assert registry.get_sample_value("rerund_internal_errors_total", {"task": "poller"}) == 0


def test_the_restart_backoff_doubles_to_its_cap_and_starts_again_after_a_healthy_minute() -> None:
    # Fake time: the injected sleep advances the clock, so the default 1 s .. 60 s backoff is
    # checked without waiting for it.
    now = 0.0
    slept: list[float] = []
    stop = asyncio.Event()
    runs = 0

    async def sleep(seconds: float) -> None:
        nonlocal now
        slept.append(seconds)
        now += seconds
        await asyncio.sleep(0)

    async def body() -> None:
        nonlocal runs, now
        runs += 1
        if runs == 9:
            now += 61.0  # this run stayed up over a minute before it failed
        if runs == 11:
            stop.set()
            return
        raise ConnectionError("the socket closed")

    sup = Supervisor(
        Metrics(CollectorRegistry()).internal_errors, stopping=stop.is_set, clock=lambda: now, sleep=sleep
    )
    asyncio.run(asyncio.wait_for(sup.run("watcher", body), 5))

    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 1.0, 2.0]
