"""RPCs counted per run and method (``RunRequestCounts``), in the test handle and on the admin
endpoint ``GET /_sandbox/requests``: how a benchmark shows that no RPC is repeated for a run."""

from __future__ import annotations

import httpx
import pytest
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

pytestmark = pytest.mark.e2e

WORKLOAD = {"tasks": {"bad": {"behaviour": ["fail"]}}}


def test_unary_rpcs_are_counted_per_run_and_listings_only_per_method(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    first, second = sb.launch("bad", count=2)
    sb.wait_idle()

    def run_id(name: str) -> identifier_pb2.RunIdentifier:
        return identifier_pb2.RunIdentifier(org=sb.org, project=sb.project, domain=sb.domain, name=name)

    with RunServiceClientSync(sb.endpoint) as client:
        client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(first)))
        client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id(first)))
        client.get_action_details(
            rs.GetActionDetailsRequest(
                action_id=identifier_pb2.ActionIdentifier(run=run_id(second), name="a0")
            )
        )
        pid = identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
        client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(limit=10), project_id=pid))

    expected = {first: {"GetRunDetails": 2}, second: {"GetActionDetails": 1}}
    assert sb.request_counts_by_run() == expected
    body = httpx.get(f"{sb.endpoint}/_sandbox/requests").json()
    assert body["by_run"] == expected
    assert body["by_method"] == {"GetRunDetails": 2, "GetActionDetails": 1, "ListRuns": 1}


def test_an_unknown_admin_route_lists_the_requests_route(sandbox):
    resp = httpx.get(f"{sandbox.endpoint}/_sandbox/nothing")

    assert resp.status_code == 404
    assert "GET requests" in resp.json()["error"]
