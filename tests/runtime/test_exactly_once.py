"""Exactly once through the reconcile shell (issue 11.3, 11.10): two failed runs of one lineage
at one attempt get one rerun, and a decision whose rerun exists says so in its log line."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from rerund.adapters.ledger import Ledger

from .fake_control_plane import T0
from .test_reconcile import World

LINEAGE = {"rerund-root": "abc123", "rerund-attempt": "1", "rerund-policy": "transient"}


def test_two_failed_runs_at_one_lineage_attempt_decided_in_one_pass_send_one_create(tmp_path, caplog) -> None:
    """A rerund rerun and an operator's copy of it (the labels are inherited) both failed."""
    caplog.set_level(logging.INFO, logger="rerund.decisions")
    world = World(tmp_path)
    world.cp.create_latency = 0.05  # both issue tasks run while the first create is in flight
    world.cp.add_failed("abc123-retry-1", labels=dict(LINEAGE), at=T0, rerun_of="abc123")
    world.cp.add_failed("operator-copy", labels=dict(LINEAGE), at=T0, rerun_of="abc123-retry-1")
    world.clock.advance(600)  # the second attempt is due for both at once

    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-2"]
    assert world.cp.calls_by_run[("create_rerun", "abc123-retry-2")] == 1
    assert world.rec.pending() == {}
    assert world.metric("rerund_reruns_issued_total", policy="transient", scope="run") == 1
    assert any(
        r.getMessage().endswith(
            "rerun ml/production/abc123-retry-2 was already issued "
            "(for another failed run of lineage 'abc123', attempt 2)"
        )
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_a_replica_whose_decision_finds_the_rerun_issued_says_already_issued_not_rerun(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="rerund.decisions")
    world = World(tmp_path)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(600)
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    caplog.clear()

    # Another replica (its own ledger) decides the same failure.
    world.rec = world.new_reconciler(ledger=Ledger(tmp_path / "replica-b.db"))
    world.clock.advance(timedelta(seconds=1).total_seconds())
    world.sync()

    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    lines = [r.getMessage() for r in caplog.records]
    assert not [m for m in lines if m.startswith("rerun ")], lines  # never "rerun ... as abc123-retry-1"
    assert (
        "exists  ml/production/abc123: rerun ml/production/abc123-retry-1 (attempt 1) was already issued; "
        "nothing to do"
    ) in lines
    assert world.metric("rerund_decisions_total", policy="transient", decision="rerun") == 0


def test_a_listing_whose_lineages_could_not_all_be_read_leaves_watch_events_to_the_next_pass(
    tmp_path,
) -> None:
    from rerund.errors import TransientControlPlaneError

    world = World(tmp_path)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(600)
    world.sync()
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]

    # A restart against a control plane that lists runs without labels; one lineage read fails.
    world.cp.labels_in_listings = False
    world.rec = world.new_reconciler()
    world.cp.fail_next["get_run"].append(
        TransientControlPlaneError("down", rpc="GetRunDetails", code="unavailable")
    )
    world.clock.advance(1)
    assert world.sync().ok
    world.cp.add_failed("new1", at=world.clock())
    reads = world.cp.calls["read_failure"]

    async def watch() -> None:
        await world.rec.on_watch(world.cp.runs[world.cp.ref("new1")].summary())
        assert await world.rec.drain(timeout=10)

    asyncio.run(watch())
    assert world.cp.calls["read_failure"] == reads  # left to the next pass

    world.clock.advance(1)
    world.sync()  # the lineage is learned now: the pass decides new1
    assert world.cp.calls["read_failure"] == reads + 1
    assert world.cp.calls_by_run[("get_run", "abc123-retry-1")] == 2
