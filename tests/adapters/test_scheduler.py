"""The timers of reruns not yet due fire on this host's clock at the control plane's due time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from rerund.adapters.scheduler import AsyncScheduler
from rerund.clock import ControlPlaneClock

DUE = datetime(2099, 12, 5, 10, 5, tzinfo=UTC)  # on the control plane's clock


async def _nothing() -> None:
    return None


def test_a_due_time_on_the_control_planes_clock_is_scheduled_on_the_hosts():
    clock = ControlPlaneClock(wall=lambda: datetime(2099, 12, 5, 9, 50, tzinfo=UTC))  # host 10 min behind
    clock.observe(datetime(2099, 12, 5, 10, 0, tzinfo=UTC))

    async def go() -> dict[str, datetime]:
        scheduler = AsyncScheduler(local=clock.local)
        scheduler.start()
        try:
            scheduler.schedule("ml/production/abc", DUE, _nothing)
            return scheduler.jobs()
        finally:
            scheduler.shutdown()

    assert asyncio.run(go()) == {"ml/production/abc": DUE - timedelta(minutes=10)}


def test_without_a_clock_the_due_time_is_taken_as_it_is():
    async def go() -> dict[str, datetime]:
        scheduler = AsyncScheduler()
        scheduler.start()
        try:
            scheduler.schedule("k", DUE, _nothing)
            return scheduler.jobs()
        finally:
            scheduler.shutdown()

    assert asyncio.run(go()) == {"k": DUE}


def test_a_key_scheduled_again_for_the_same_time_fires_once_and_once_fired_can_be_scheduled_again():
    fired: list[str] = []

    async def record() -> None:
        fired.append("k")

    async def until(n: int) -> None:
        for _ in range(500):
            if len(fired) >= n:
                return
            await asyncio.sleep(0.01)

    async def go() -> tuple[dict[str, datetime], int, int]:
        scheduler = AsyncScheduler()
        scheduler.start()
        try:
            past = datetime.now(UTC) - timedelta(seconds=1)  # fires at once
            scheduler.schedule("k", DUE, record)
            scheduler.schedule("k", DUE, record)
            jobs = scheduler.jobs()
            scheduler.schedule("k", past, record)
            scheduler.schedule("k", past, record)
            await until(1)
            await asyncio.sleep(0.1)
            once = len(fired)
            scheduler.schedule("k", past, record)  # fired already: a new job
            await until(2)
            return jobs, once, len(fired)
        finally:
            scheduler.shutdown()

    assert asyncio.run(go()) == ({"k": DUE}, 1, 2)
