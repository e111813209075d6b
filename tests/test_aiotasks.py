"""The one task-set helper: spawn, drain, cancel — no I/O."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rerund.aiotasks import TaskSet

log = logging.getLogger("test.aiotasks")


def test_an_error_in_a_task_is_logged_and_counted_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []

    async def scenario() -> bool:
        tasks = TaskSet(log, what="a test task", on_error=lambda: errors.append("counted"))

        async def boom() -> None:
            raise RuntimeError("boom")

        tasks.spawn(boom())
        return await tasks.drain(timeout=5)

    assert asyncio.run(scenario())
    assert errors == ["counted"]
    assert "internal error in a test task" in caplog.text


def test_a_failed_handler_replaces_the_log_and_the_count() -> None:
    seen: list[str] = []

    async def scenario() -> None:
        tasks = TaskSet(log, on_error=lambda: seen.append("counted"))

        async def boom() -> None:
            raise RuntimeError("boom")

        tasks.spawn(boom(), failed=lambda exc: seen.append(str(exc)))
        assert await tasks.drain()

    asyncio.run(scenario())
    assert seen == ["boom"]


def test_drain_waits_for_tasks_spawned_while_draining_and_says_when_time_ran_out() -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        tasks = TaskSet(log)
        done: list[str] = []

        async def second() -> None:
            done.append("second")

        async def first() -> None:
            await asyncio.sleep(0)
            tasks.spawn(second())
            done.append("first")

        tasks.spawn(first())
        drained = await tasks.drain()
        never = asyncio.Event()
        tasks.spawn(never.wait())
        timed_out = not await tasks.drain(timeout=0.01)
        await tasks.stop()
        return drained, timed_out and len(tasks) == 0, done

    assert asyncio.run(scenario()) == (True, True, ["first", "second"])


def test_a_keyed_task_is_cancelled_alone_and_forgotten_at_once() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        tasks = TaskSet(log)
        a, b = asyncio.Event(), asyncio.Event()
        ta = tasks.spawn(a.wait(), key="a")
        tasks.spawn(b.wait(), key="b")
        tasks.cancel("a")
        gone = "a" not in tasks and "b" in tasks
        await asyncio.sleep(0)
        b.set()
        assert await tasks.drain(timeout=5)
        return gone, ta.cancelled(), len(tasks) == 0

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_task_gives_its_coroutines_result_and_stop_says_when_a_task_outlived_its_timeout() -> None:
    async def scenario() -> tuple[object, bool, bool]:
        tasks = TaskSet(log)

        async def answer() -> int:
            return 42

        result = await tasks.spawn(answer())
        release = asyncio.Event()

        async def stubborn() -> None:  # ends only once released, cancelled or not
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue

        tasks.spawn(stubborn())
        await asyncio.sleep(0)
        timed_out = not await tasks.stop(timeout=0.01)
        release.set()
        await asyncio.sleep(0)
        return result, timed_out, await tasks.stop(timeout=5)

    assert asyncio.run(scenario()) == (42, True, True)
