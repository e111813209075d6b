"""Exactly once needs the right identity (issue 22.1, 22.2).

A run found under a rerun's name is that rerun only when its lineage labels and relation say so;
otherwise the lineage takes its next salted name (logged, counted), and a restart finds the
salted rerun again by its labels. Lineage labels nobody vouches for (no relation to the
lineage's previous run, not in the ledger) are ignored: such runs fill no budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rerund.adapters.ledger import Ledger
from rerund.core.names import rerun_name
from rerund.core.records import RerunIssue
from rerund.core.runs import RunRef

from .fake_control_plane import T0, FakeRun
from .test_reconcile import POLICIES, World

SALTED = rerun_name(root="abc123", attempt=1, salt=1)


def _created(world: World) -> list[str]:
    return [r.ref.name for r in world.cp.reruns()]


def test_a_squatted_rerun_name_gets_the_lineage_a_salted_name_once_across_a_restart(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="rerund.reconcile")
    world = World(tmp_path)
    squat = world.cp.ref("abc123-retry-1")
    world.cp.runs[squat] = FakeRun(squat, "SUCCEEDED", created_at=T0, ended_at=T0)  # someone named it so
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()

    assert _created(world) == [SALTED]
    assert world.metric("rerund_rerun_name_conflicts_total") == 1
    assert any(
        "rerun name ml/production/abc123-retry-1 is taken by a run of no lineage" in r.getMessage()
        and "takes the next salted name" in r.getMessage()
        for r in caplog.records
    )
    # A restart with a fresh ledger: the index learns the salted rerun from its labels.
    world.ledger = Ledger(tmp_path / "fresh.db")
    world.rec = world.new_reconciler(ledger=world.ledger)
    world.clock.advance(60)
    world.sync()
    world.sync()
    assert _created(world) == [SALTED]
    assert world.cp.calls_by_run[("create_rerun", SALTED)] == 1


def test_a_name_held_by_another_lineages_rerun_is_not_taken_for_this_one(tmp_path) -> None:
    """What a hash collision looks like: the name is a vouched rerun of lineage 'zzz'."""
    world = World(tmp_path)
    world.cp.add_failed("zzz", at=T0, phase="SUCCEEDED")
    world.cp.add_failed(
        "abc123-retry-1",
        at=T0,
        phase="SUCCEEDED",
        labels={"rerund-root": "zzz", "rerund-attempt": "1", "rerund-policy": "transient"},
        rerun_of="zzz",
    )
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()
    world.sync()

    assert _created(world) == [SALTED]
    assert world.metric("rerund_rerun_name_conflicts_total") == 1
    assert world.cp.runs[world.cp.ref(SALTED)].labels["rerund-root"] == "abc123"


def test_a_squatter_forging_the_lineage_labels_on_a_fresh_run_does_not_take_the_rerun(tmp_path) -> None:
    world = World(tmp_path)
    world.cp.add_failed(
        "abc123-retry-1",
        at=T0,
        phase="RUNNING",
        labels={"rerund-root": "abc123", "rerund-attempt": "1", "rerund-policy": "transient"},
    )
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()

    assert _created(world) == [SALTED]
    assert world.metric("rerund_forged_lineage_labels_total") == 1


def test_forged_lineage_labels_fill_no_budget(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="rerund.reconcile")
    world = World(tmp_path, POLICIES + "budgets:\n  global: {max_reruns: 5, per: 1h}\n")
    for i in range(5):  # anyone can launch runs carrying rerund's labels
        world.cp.add_failed(
            f"forged{i}",
            at=T0,
            phase="SUCCEEDED",
            labels={"rerund-root": f"victim{i}", "rerund-attempt": "1", "rerund-policy": "transient"},
        )
    world.cp.add_failed("real", at=T0)
    world.clock.advance(60)

    world.sync()
    world.sync()

    assert _created(world) == ["real-retry-1"]
    assert world.metric("rerund_budget_deferrals_total", budget="global") == 0
    assert world.metric("rerund_forged_lineage_labels_total") == 5
    forged = [
        r.getMessage() for r in caplog.records if "neither its relation nor the ledger" in r.getMessage()
    ]
    assert len(forged) == 5  # once per run, not per pass
    assert "run ml/production/forged0 carries rerund lineage labels" in forged[0]


def test_a_rerun_vouched_for_by_its_relation_counts_against_the_budget(tmp_path: Path) -> None:
    world = World(tmp_path, POLICIES + "budgets:\n  global: {max_reruns: 1, per: 1h}\n")
    world.cp.add_failed("orig", at=T0, phase="SUCCEEDED")
    world.cp.add_failed(
        "orig-retry-1",
        at=T0,
        phase="SUCCEEDED",
        labels={"rerund-root": "orig", "rerund-attempt": "1", "rerund-policy": "transient"},
        rerun_of="orig",
    )
    world.cp.add_failed("real", at=T0)
    world.clock.advance(60)

    world.sync()

    assert _created(world) == []
    assert world.metric("rerund_budget_deferrals_total", budget="global") == 1
    assert world.metric("rerund_forged_lineage_labels_total") == 0


def test_a_relaunch_without_relation_is_vouched_for_by_the_ledger(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.ledger.record_issue(
        RerunIssue(
            RunRef("ml", "production", "abc123"),
            "abc123-retry-1",
            "abc123",
            1,
            "transient",
            "relaunch",
            "created",
        ),
        now=T0,
    )
    world.cp.add_failed(
        "abc123-retry-1",
        at=T0,
        labels={"rerund-root": "abc123", "rerund-attempt": "1", "rerund-policy": "transient"},
    )
    world.clock.advance(60)

    world.sync()

    assert _created(world) == ["abc123-retry-2"]
    assert world.metric("rerund_forged_lineage_labels_total") == 0


def test_a_lineage_whose_every_name_is_taken_is_not_rerun_and_says_so(tmp_path, caplog) -> None:
    from rerund.core.names import MAX_SALT

    caplog.set_level(logging.ERROR, logger="rerund.reconcile")
    world = World(tmp_path)
    for salt in range(MAX_SALT + 1):
        squat = world.cp.ref(rerun_name(root="abc123", attempt=1, salt=salt))
        world.cp.runs[squat] = FakeRun(squat, "SUCCEEDED", created_at=T0, ended_at=T0)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)

    world.sync()

    assert _created(world) == []
    assert world.metric("rerund_rerun_name_conflicts_total") == MAX_SALT + 1
    assert any(
        "rerun attempt 1 of lineage 'abc123' not created: its 9 names are all taken by other runs"
        in r.getMessage()
        for r in caplog.records
    )
    [issue] = world.ledger.issues()
    assert (issue["result"], issue["message"]) == (
        "invalid",
        "every name of the rerun (9) is taken by another run",
    )


def test_many_failures_whose_previous_runs_must_be_read_are_decided_without_a_deadlock(tmp_path) -> None:
    """Each failed rerun's relation names a run the reruns listing did not list: vouching reads
    it while the failure's own read holds a permit of the shared read limit."""
    world = World(tmp_path)
    world.cp.read_latency = 0.01  # the reads overlap: every permit is held at once
    for i in range(20):
        previous = world.cp.add_lineage(f"root{i}", 1, at=T0)
        world.cp.add_failed(
            f"root{i}-retry-2",
            at=T0,
            labels={"rerund-root": f"root{i}", "rerund-attempt": "2"},  # no policy label: not listed
            rerun_of=previous,
        )
    world.clock.advance(120)

    world.sync()

    assert sorted(_created(world)) == sorted(f"root{i}-retry-3" for i in range(20))
    assert world.metric("rerund_forged_lineage_labels_total") == 0
