"""A bug of rerund's own while issuing a rerun (an ``AttributeError`` after an SDK change, a
``ValueError`` in our code) is neither settled as the control plane refusing the request nor
retried as an outage: the adapter re-raises it (``rerund.adapters.flyte.errors.translate_error``)
and the loop counts it in ``rerund_internal_errors_total{task="issue"}``, the run staying owed."""

from __future__ import annotations

from pathlib import Path

from runtime.test_reconcile import T0, World


def test_an_internal_bug_inside_a_create_is_counted_and_the_run_stays_owed(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.cp.add_failed("abc123", at=T0)
    world.clock.advance(60)
    world.cp.fail_next["create_rerun"].append(AttributeError("'RunDetails' object has no attribute 'pb2'"))

    world.sync()

    assert world.metric("rerund_internal_errors_total", task="issue") == 1
    assert world.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="invalid_argument") == 0
    assert world.metric("rerund_control_plane_errors_total", rpc="CreateRun", code="unavailable") == 0
    assert "invalid" not in [i["result"] for i in world.ledger.issues()]  # never recorded as refused
    # It stayed owed: the pass's retry at its end issued it.
    assert [r.ref.name for r in world.cp.reruns()] == ["abc123-retry-1"]
    assert world.cp.calls_by_run[("create_rerun", "abc123-retry-1")] == 2
