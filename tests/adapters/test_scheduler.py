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
