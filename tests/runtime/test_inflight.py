"""The runs the loop is working on, without a control plane: the invariants stated in
``rerund.runtime.reconcile.inflight``."""

from __future__ import annotations

import asyncio

import pytest

from rerund.core.runs import RunRef
from rerund.runtime.reconcile.inflight import InFlight

RUN = RunRef("ml", "prod", "abc")
RERUN = RunRef("ml", "prod", "abc-retry-1")


def test_a_run_is_busy_while_handled_and_free_after_even_when_handling_fails() -> None:
    flight = InFlight()
    with pytest.raises(RuntimeError, match="boom"), flight.handling(RUN):
        assert flight.busy(RUN)
        assert flight.busy_runs() == {RUN}
        raise RuntimeError("boom")
    assert not flight.busy(RUN)
    assert flight.busy_runs() == frozenset()


def test_a_run_stays_busy_from_its_decision_until_its_issue_ends() -> None:
    flight = InFlight()
    with flight.handling(RUN):
        flight.begin_issue(RUN)  # decided: the issue task is spawned
    assert flight.busy(RUN)  # never free between the decision and the issue
    flight.end_issue(RUN)
    assert not flight.busy(RUN)


def test_a_second_create_of_a_name_waits_for_the_first_however_it_ends() -> None:
    async def scenario() -> list[str]:
        flight = InFlight()
        said: list[str] = []
        assert flight.create_of(RERUN) is None
        sent = asyncio.Event()

        async def first() -> None:
            with pytest.raises(RuntimeError), flight.creating(RERUN):
                await sent.wait()
                said.append("first sent")
                raise RuntimeError("rejected")

        task = asyncio.create_task(first())
        await asyncio.sleep(0)  # the first create is open
        other = flight.create_of(RERUN)
        assert other is not None
        sent.set()
        await other
        said.append("second sees the first ended")
        assert flight.create_of(RERUN) is None
        await task
        return said

    assert asyncio.run(scenario()) == ["first sent", "second sees the first ended"]


def test_an_issue_keeps_its_run_busy_from_before_its_task_starts_until_it_ends_however_it_ends() -> None:
    async def scenario() -> list[bool]:
        flight = InFlight()
        seen: list[bool] = []

        async def issue() -> None:
            seen.append(flight.busy(RUN))
            raise RuntimeError("create failed")

        work = flight.issuing(RUN, issue())
        seen.append(flight.busy(RUN))  # spawned, not started yet
        with pytest.raises(RuntimeError, match="create failed"):
            await asyncio.create_task(work)
        seen.append(flight.busy(RUN))
        return seen

    assert asyncio.run(scenario()) == [True, True, False]
