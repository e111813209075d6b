"""Injected faults (UNAVAILABLE share, latency, dropped watch streams), RPC counting, and the
``/_sandbox/`` admin endpoint."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from rerund.sandbox.service import Faults

pytestmark = pytest.mark.e2e

WORKLOAD = {"tasks": {"ok": {"duration": "1s"}, "bad": {"behaviour": ["fail"]}}}


@pytest.fixture
def sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


def _run_id(sb, name):
    return identifier_pb2.RunIdentifier(org=sb.org, project=sb.project, domain=sb.domain, name=name)


def list_runs(sb, client):
    pid = identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
    return client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(limit=10), project_id=pid))


def test_every_rpc_is_counted_by_method_name(sb):
    with RunServiceClientSync(sb.endpoint) as client:
        list_runs(sb, client)
        list_runs(sb, client)
        with pytest.raises(ConnectError):
            client.get_run_details(rs.GetRunDetailsRequest())

    assert sb.request_counts() == {"ListRuns": 2, "GetRunDetails": 1}


def test_unavailable_share_of_one_answers_every_rpc_unavailable(sb):
    sb.set_faults(unavailable=1.0)

    with (
        RunServiceClientSync(sb.endpoint) as client,
        pytest.raises(
            ConnectError, match=r"sandbox fault injection: ListRuns answered UNAVAILABLE \(unavailable=1.0\)"
        ) as info,
    ):
        list_runs(sb, client)

    assert info.value.code == Code.UNAVAILABLE
    assert sb.request_counts() == {"ListRuns": 1}


def test_unavailable_share_of_zero_answers_normally(sb):
    sb.set_faults(unavailable=1.0)
    sb.set_faults(unavailable=0.0)

    with RunServiceClientSync(sb.endpoint) as client:
        assert list_runs(sb, client).runs == []


def test_latency_delays_every_rpc_by_at_least_the_configured_time(sb):
    sb.set_faults(latency_s=0.2)

    with RunServiceClientSync(sb.endpoint) as client:
        started = time.monotonic()
        list_runs(sb, client)
        elapsed = time.monotonic() - started

    assert elapsed >= 0.2  # a lower bound from a sleep: never flaky


def test_watch_streams_are_dropped_after_the_configured_number_of_messages(sb):
    sb.set_faults(drop_streams_after=2)
    pid = identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
    received = []

    with RunServiceClientSync(sb.endpoint) as client:
        stream = client.watch_runs(rs.WatchRunsRequest(project_id=pid))
        with pytest.raises(ConnectError, match="WatchRuns stream dropped after 2 messages") as info:
            for msg in stream:
                received.append(msg)
                if len(received) == 1:
                    sb.launch("ok", count=3)

    assert info.value.code == Code.UNAVAILABLE
    assert len(received) == 2


def test_faults_given_at_start_apply_from_the_first_rpc(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, faults=Faults(unavailable=1.0))

    with RunServiceClientSync(sb.endpoint) as client, pytest.raises(ConnectError) as info:
        list_runs(sb, client)

    assert info.value.code == Code.UNAVAILABLE


def test_admin_stats_report_requests_runs_by_phase_and_faults(sb):
    sb.launch("bad", count=2)
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as client:
        list_runs(sb, client)

    stats = httpx.get(f"{sb.endpoint}/_sandbox/stats").json()

    assert stats == {
        "requests": {"ListRuns": 1},
        "runs": {"FAILED": 2},
        "faults": {"unavailable": 0.0, "latency": "0ms", "drop_streams_after": 0},
        "profile": "union",
        "watch_dropped": 0,
        "reexecutions": 0,
    }


@pytest.mark.parametrize("profile", ["oss", "union"])
def test_db_errors_make_get_run_details_not_found_and_list_runs_internal(sandbox_factory, profile):
    # open-source Flyte answers NOT_FOUND for a GetRunDetails the database fails; union INTERNAL
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01, profile=profile)
    [name] = sb.launch("bad")
    sb.wait_idle()
    resp = httpx.post(f"{sb.endpoint}/_sandbox/faults", json={"db_errors": 1.0})
    assert resp.status_code == 200, resp.text
    try:
        with RunServiceClientSync(sb.endpoint) as client:
            shown = "open-source Flyte answers NOT_FOUND" if profile == "oss" else "the database failed"
            with pytest.raises(ConnectError, match=shown) as details:
                client.get_run_details(rs.GetRunDetailsRequest(run_id=_run_id(sb, name)))
            with pytest.raises(ConnectError, match="the database failed the query") as listing:
                list_runs(sb, client)
        found = Code.NOT_FOUND if profile == "oss" else Code.INTERNAL
        assert (details.value.code, listing.value.code) == (found, Code.INTERNAL)
        assert httpx.get(f"{sb.endpoint}/_sandbox/stats").json()["faults"]["db_errors"] == 1.0
    finally:
        sb.set_faults(db_errors=0.0)
    with pytest.raises(ValueError, match=r"db_errors must be a share between 0 and 1, got 2\.0"):
        sb.set_faults(db_errors=2.0)


def test_admin_faults_endpoint_sets_faults_at_runtime(sb):
    resp = httpx.post(
        f"{sb.endpoint}/_sandbox/faults",
        json={"unavailable": 0.2, "latency": "50ms", "drop_streams_after": 50},
    )

    assert resp.status_code == 200
    assert resp.json() == {"unavailable": 0.2, "latency": "50ms", "drop_streams_after": 50}
    assert sb.stats()["faults"] == resp.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"unavailable": 2}, "unavailable must be a share between 0 and 1, got 2.0"),
        ({"latency": "soon"}, "duration 'soon' is not a duration; use e.g. 50ms, 0.5s, 2m, 1h"),
        ({"drop_streams_after": -1}, r"drop_streams_after must be >= 0 \(0 = never\), got -1"),
        ({"explode": True}, r"unknown fault\(s\) \['explode'\]"),
    ],
    ids=["share-above-one", "bad-latency", "negative-drop", "unknown-fault"],
)
def test_admin_faults_endpoint_refuses_bad_values_with_a_reason(sb, body, message):
    resp = httpx.post(f"{sb.endpoint}/_sandbox/faults", json=body)

    assert resp.status_code == 400
    assert re.search(message, resp.json()["error"])


def test_admin_runs_endpoint_starts_and_lists_runs(sb):
    started = httpx.post(
        f"{sb.endpoint}/_sandbox/runs", json={"task": "bad", "count": 2, "labels": {"team": "ml"}}
    ).json()
    sb.wait_idle()

    runs = httpx.get(f"{sb.endpoint}/_sandbox/runs").json()

    assert sorted(r["name"] for r in runs) == sorted(started["runs"])
    assert {r["phase"] for r in runs} == {"FAILED"}
    assert {r["labels"]["team"] for r in runs} == {"ml"}


def test_admin_runs_endpoint_refuses_an_unknown_task(sb):
    resp = httpx.post(f"{sb.endpoint}/_sandbox/runs", json={"task": "nope"})

    assert resp.status_code == 400
    assert resp.json()["error"] == "task 'nope' is not in the sandbox workload; known tasks: bad, ok"


def test_admin_unknown_route_answers_404_with_the_routes(sb):
    resp = httpx.get(f"{sb.endpoint}/_sandbox/nothing")

    assert resp.status_code == 404
    assert "routes: GET stats, POST faults, GET runs, POST runs" in resp.json()["error"]


def test_unknown_services_answer_unimplemented_and_are_counted(sb):
    resp = httpx.post(
        f"{sb.endpoint}/flyteidl2.trigger.TriggerService/ListTriggers",
        content=b"",
        headers={"content-type": "application/proto"},
    )

    assert resp.status_code == 404
    assert resp.json() == {
        "code": "unimplemented",
        "message": "the sandbox does not implement /flyteidl2.trigger.TriggerService/ListTriggers",
    }
    assert sb.request_counts() == {"ListTriggers": 1}
