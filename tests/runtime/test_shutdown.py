"""SIGTERM during in-flight creates (issue 23): the daemon stops taking work, lets the creates
it sent finish within its stop budget, records them in the ledger and closes it; a create still
unanswered at the deadline is cancelled before ``run`` returns, and the next start finds the
rerun it made on the control plane (no second create).

The daemon runs in-process on the test's loop with its real signal handlers; the test sends the
process a real SIGTERM once the creates are in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from rerund.adapters.ledger import Ledger
from rerund.app import App
from rerund.core.runs import RerunRequest, RunRef
from rerund.runtime.daemon import Daemon

from .fake_control_plane import T0, Clock, FakeControlPlane, daemon_settings
from .test_reconcile import POLICIES

FAILED = [f"run{i}" for i in range(5)]


class SlowCreates(FakeControlPlane):
    """Each create takes the name at once (the control plane has the run) and answers only when
    ``answer`` is set: the creates are in flight."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.answer = asyncio.Event()
        self.in_flight = 0
        self.cancelled = 0

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        target = await super().create_rerun(request)
        self.in_flight += 1
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return target


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):  # a hang guard, not a timing assertion
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


def _world(tmp_path: Path) -> tuple[SlowCreates, Clock]:
    clock = Clock(T0 + timedelta(minutes=5))
    cp = SlowCreates(clock)
    for name in FAILED:
        cp.add_failed(name, at=T0 + timedelta(minutes=1))
    return cp, clock


def _app(tmp_path: Path, cp: FakeControlPlane, clock: Clock, *, signals: bool, **kw: object) -> App:
    settings = daemon_settings(tmp_path, POLICIES, http="off", watch=False)
    return App(settings, control_plane=cp, clock=clock, install_signals=signals, **kw)  # type: ignore[arg-type]


def _created(tmp_path: Path) -> list[str]:
    ledger = Ledger(tmp_path / "rerund.db")
    try:
        return sorted(i["target"] for i in ledger.issues() if i["result"] == "created")
    finally:
        ledger.close()


def test_sigterm_during_in_flight_creates_records_every_create_in_the_ledger(tmp_path: Path) -> None:
    cp, clock = _world(tmp_path)

    async def scenario() -> int:
        app = _app(tmp_path, cp, clock, signals=True)
        running = asyncio.create_task(app.run())
        await _until(lambda: cp.in_flight == len(FAILED), "every create in flight")
        os.kill(os.getpid(), signal.SIGTERM)
        await _until(lambda: app.requests.stop.is_set(), "the stop request")
        cp.answer.set()  # the control plane answers while the daemon stops
        code = await running
        assert cp.cancelled == 0
        return code

    assert asyncio.run(scenario()) == 0
    assert _created(tmp_path) == [f"{name}-retry-1" for name in FAILED]
    assert cp.calls["create_rerun"] == len(FAILED)


def test_a_create_unanswered_at_the_stop_deadline_is_cancelled_and_the_next_start_finds_its_rerun(
    tmp_path: Path,
) -> None:
    cp, clock = _world(tmp_path)
    daemons: list[Daemon] = []

    async def first() -> tuple[int, int]:
        app = _app(tmp_path, cp, clock, signals=True, on_ready=daemons.append, stop_budget=0.5)
        running = asyncio.create_task(app.run())
        await _until(lambda: cp.in_flight == len(FAILED), "every create in flight")
        os.kill(os.getpid(), signal.SIGTERM)
        code = await running  # the control plane never answers
        return code, cp.cancelled  # read as run() returns: nothing of the daemon's still runs

    assert asyncio.run(first()) == (0, len(FAILED))
    assert _created(tmp_path) == []  # never answered: not recorded as created

    cp.answer = asyncio.Event()
    cp.answer.set()  # the next start: the control plane answers again

    async def second() -> int:
        app = _app(tmp_path, cp, clock, signals=False, on_ready=daemons.append)
        running = asyncio.create_task(app.run())
        await _until(lambda: len(daemons) == 2 and daemons[1].reconciler.last_sync is not None, "a pass")
        app.request_stop()
        return await running

    assert asyncio.run(second()) == 0
    assert cp.calls["create_rerun"] == len(FAILED)  # found on the control plane: no second create
    ledger = Ledger(tmp_path / "rerund.db")
    try:
        found = sorted((i["target"], i["result"]) for i in ledger.issues())
    finally:
        ledger.close()
    assert found == [(f"{name}-retry-1", "already_exists") for name in FAILED]
