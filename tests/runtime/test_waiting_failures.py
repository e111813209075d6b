"""A failure waiting for a fix (``task_version: newer``, ``max_wait``) is tracked on its own: it
does not hold the failed-runs listing back for up to ``max_wait`` (issue 22.7), and it is still
relaunched when the newer version appears — in the same process or after a restart.

One reconcile pass at a time against the in-memory control plane (plus what relaunches need:
deployed task versions, ``create_relaunch``), a real SQLite ledger and an injected clock.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

from rerund.core.model import ErrorInfo
from rerund.core.runs import FailureFacts, RelaunchRequest, RunRef, RunSummary
from rerund.errors import AlreadyExistsError

from .fake_control_plane import T0, Clock, FakeControlPlane, FakeRun
from .test_reconcile import World

POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: wait-for-fix
    match: {error: {codes: [KeyError]}}
    retry: {scope: relaunch, task_version: newer, max_wait: 30d, max_attempts: 1}
  - name: transient
    match: {error: {kinds: [SYSTEM]}}
    retry: {scope: run}
"""

BUG = ErrorInfo(kind="USER", code="KeyError", message="KeyError: 'revenue'")
TASK = "report.monthly"
OVERLAP = timedelta(minutes=5)  # the reconciler's default


class RelaunchingControlPlane(FakeControlPlane):
    """The in-memory control plane plus deployed task versions and relaunches; it remembers
    where each failed-runs listing began."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.versions = {TASK: "v1"}
        self.failed_on: dict[str, str] = {}
        self.listed_since: list[datetime] = []

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        self.listed_since.append(since)
        return await super().list_failed(project, domain, since=since)

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        facts = await super().read_failure(run)
        return dataclasses.replace(facts, task_version=self.failed_on.get(run.ref.name, "v1"))

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        self._call("latest_task_version")
        return self.versions.get(task)

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        self._call("create_relaunch", request.name)
        target = request.target
        if target in self.runs:
            raise AlreadyExistsError(f"run {target} exists", rpc="CreateRun", code="already_exists")
        self.runs[target] = FakeRun(
            target, "QUEUED", task=TASK, labels=dict(request.labels), created_at=self.clock()
        )
        return target


def waiting_world(tmp_path: Path) -> tuple[World, RelaunchingControlPlane]:
    world = World(tmp_path, POLICIES)
    cp = RelaunchingControlPlane(world.clock)
    world.cp = cp  # type: ignore[assignment]
    world.rec = world.new_reconciler()
    return world, cp


def a_day_of_other_failures(world: World, cp: RelaunchingControlPlane, day: int) -> None:
    """A day passes: a transient failure every 6 hours (each rerun at once), a pass each hour."""
    for hour in range(24):
        world.clock.advance(3600)
        if hour % 6 == 0:
            cp.add_failed(f"etl-{day}-{hour}", task="etl.load")
        world.sync()


def test_the_failed_listing_moves_on_while_a_failure_waits_and_the_fix_is_relaunched(tmp_path: Path) -> None:
    world, cp = waiting_world(tmp_path)
    cp.add_failed("report-1", task=TASK, error=BUG, at=T0)
    world.clock.advance(60)
    world.sync()
    assert "ml/production/report-1" in world.rec.pending()  # waits for a newer version

    for day in range(3):
        a_day_of_other_failures(world, cp, day)

    # Day 3 of max_wait: 30d. The listing starts at the last pass minus the overlap, not at the
    # waiting failure (which would list three days of failures on every pass).
    since = cp.listed_since[-1]
    assert since >= world.clock() - timedelta(hours=1) - OVERLAP
    assert "ml/production/report-1" in world.rec.pending()
    assert RunRef("ml", "production", "report-1-retry-1") not in cp.runs

    cp.versions[TASK] = "v2"
    world.clock.advance(60)
    world.sync()

    assert RunRef("ml", "production", "report-1-retry-1") in cp.runs
    assert cp.calls_by_run[("create_relaunch", "report-1-retry-1")] == 1
    assert world.rec.pending() == {}


def test_a_failure_waiting_across_a_restart_is_relaunched_when_the_fix_appears(tmp_path: Path) -> None:
    world, cp = waiting_world(tmp_path)
    cp.add_failed("report-1", task=TASK, error=BUG, at=T0)
    world.clock.advance(60)
    world.sync()
    for day in range(2):
        a_day_of_other_failures(world, cp, day)
    assert cp.listed_since[-1] > T0 + timedelta(days=1)  # the listing moved on

    world.rec = world.new_reconciler()  # a restart: new memory, the same ledger file
    world.clock.advance(60)
    world.sync()
    assert "ml/production/report-1" in world.rec.pending()  # recomputed: still waiting
    world.clock.advance(3600)
    world.sync()
    assert cp.listed_since[-1] >= world.clock() - timedelta(hours=1) - OVERLAP

    cp.versions[TASK] = "v2"
    world.clock.advance(60)
    world.sync()

    assert cp.calls_by_run[("create_relaunch", "report-1-retry-1")] == 1
    assert world.rec.pending() == {}
