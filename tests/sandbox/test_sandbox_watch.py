"""Watch streams: WatchRuns sends one snapshot then one message per updated run of its scope;
WatchActionDetails and WatchRunDetails follow one action until it is terminal."""

from __future__ import annotations

import pytest
from flyteidl2.common import identifier_pb2, phase_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "ok": {"behaviour": ["succeed"]},
        "bad": {"behaviour": ["fail"]},
        "pipe": {"children": ["ok", "bad"]},
        "paced": {"duration": "0.3s"},
    }
}


@pytest.fixture
def sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


def pid(sb, project=None, domain=None):
    return identifier_pb2.ProjectIdentifier(
        organization=sb.org, name=project or sb.project, domain=domain or sb.domain
    )


def phases_of(messages, name):
    return [r.action.status.phase for m in messages for r in m.runs if r.action.id.run.name == name]


def watch_until(sb, project_id, after_snapshot, name, phase):
    """WatchRuns of ``project_id``: call ``after_snapshot`` once the first message (the snapshot)
    arrived, and stop when run ``name`` reached ``phase``; every message received, in order."""
    messages = []
    with RunServiceClientSync(sb.endpoint) as client:
        for msg in client.watch_runs(rs.WatchRunsRequest(project_id=project_id)):
            messages.append(msg)
            if len(messages) == 1:
                after_snapshot()
            if phases_of(messages, name)[-1:] == [phase]:
                break
    return messages


def test_watch_runs_sends_a_snapshot_then_one_message_per_update(sb):
    sb.launch("ok", name="existing")
    sb.wait_idle()

    messages = watch_until(
        sb, pid(sb), lambda: sb.launch("bad", name="fresh"), "fresh", phase_pb2.ACTION_PHASE_FAILED
    )

    assert [r.action.id.run.name for r in messages[0].runs] == ["existing"]
    assert all(len(m.runs) == 1 for m in messages[1:])
    assert phases_of(messages, "fresh") == [
        phase_pb2.ACTION_PHASE_QUEUED,
        phase_pb2.ACTION_PHASE_RUNNING,
        phase_pb2.ACTION_PHASE_FAILED,
    ]


def test_watch_runs_only_sends_runs_of_its_project_and_domain(sb):
    def launch_both() -> None:
        sb.launch("ok", name="elsewhere")
        sb.wait_idle()
        sb.launch("ok", name="here", domain="production")

    messages = watch_until(
        sb, pid(sb, domain="production"), launch_both, "here", phase_pb2.ACTION_PHASE_SUCCEEDED
    )

    names = {r.action.id.run.name for m in messages for r in m.runs}
    assert names == {"here"}


def test_watch_runs_reports_child_action_progress_as_run_updates(sb):
    messages = watch_until(
        sb, pid(sb), lambda: sb.launch("pipe", name="pipe-1"), "pipe-1", phase_pb2.ACTION_PHASE_FAILED
    )

    # queued, running, then one update per child transition (a1 x3, a2 x3), then failed
    assert len(phases_of(messages, "pipe-1")) == 9


def test_watch_action_details_follows_an_action_until_terminal(sb):
    [name] = sb.launch("paced")
    action = identifier_pb2.ActionIdentifier(
        run=identifier_pb2.RunIdentifier(org=sb.org, project=sb.project, domain=sb.domain, name=name),
        name="a0",
    )

    with RunServiceClientSync(sb.endpoint) as client:
        seen = [
            m.details.status.phase
            for m in client.watch_action_details(rs.WatchActionDetailsRequest(action_id=action))
        ]

    assert seen[-1] == phase_pb2.ACTION_PHASE_SUCCEEDED
    assert seen == sorted(seen)


def test_watch_run_details_follows_the_run_until_terminal(sb):
    [name] = sb.launch("bad")
    run_id = identifier_pb2.RunIdentifier(org=sb.org, project=sb.project, domain=sb.domain, name=name)

    with RunServiceClientSync(sb.endpoint) as client:
        seen = [
            m.details.action.status.phase
            for m in client.watch_run_details(rs.WatchRunDetailsRequest(run_id=run_id))
        ]

    assert seen[-1] == phase_pb2.ACTION_PHASE_FAILED


# The 100 ms delivery latency of WatchRuns is measured by bench/bench_watch.py (make bench):
# pass/fail tests never assert on timings.
