"""Sandbox admin and wire input is checked as the real service checks it (issue 11.9): typed
admin bodies, valid and unique run names, malformed Connect bodies answered
``invalid_argument``, and a cap on request bodies after decompression."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClientSync

from rerund.sandbox.server import MAX_REQUEST_BYTES

pytestmark = pytest.mark.e2e

WORKLOAD = {"tasks": {"bad": {"behaviour": ["fail"]}}}
LIST_RUNS = "/flyteidl2.workflow.RunService/ListRuns"
WATCH_RUNS = "/flyteidl2.workflow.RunService/WatchRuns"


@pytest.fixture
def sb(sandbox_factory):
    return sandbox_factory(workload=WORKLOAD, time_scale=0.01)


def list_runs(sb):
    pid = identifier_pb2.ProjectIdentifier(organization=sb.org, name=sb.project, domain=sb.domain)
    with RunServiceClientSync(sb.endpoint) as client:
        return client.list_runs(rs.ListRunsRequest(request=list_pb2.ListRequest(limit=10), project_id=pid))


BAD_LAUNCHES = {
    "a number as the name": ({"task": "bad", "name": 5}, "name must be a string, got 5"),
    "an invalid name": (
        {"task": "bad", "name": "Bad_Name"},
        "run name 'Bad_Name' is not a DNS-1035 label: a run name must be 1-30 characters",
    ),
    "a long name": (
        {"task": "bad", "name": "a" * 31},
        "run name '" + "a" * 31 + "' has 31 characters (at most 30)",
    ),
    "a string count": (
        {"task": "bad", "count": "2"},
        'count must be a whole number from 1 to 10000, got "2"',
    ),
    "a huge count": (
        {"task": "bad", "count": 10**9},
        "count must be a whole number from 1 to 10000, got 1000000000",
    ),
    "labels not strings": (
        {"task": "bad", "labels": {"a": 1}},
        "labels must be a mapping of strings to strings",
    ),
    "a task not a string": ({"task": ["bad"]}, 'task must be a string, got ["bad"]'),
    "an unknown field": ({"task": "bad", "nmae": "x"}, "unknown field(s) ['nmae']; known: task, count"),
}


@pytest.mark.parametrize(("body", "error"), BAD_LAUNCHES.values(), ids=list(BAD_LAUNCHES))
def test_a_bad_admin_launch_is_refused_and_listing_still_works(sb, body, error):
    resp = httpx.post(f"{sb.endpoint}/_sandbox/runs", json=body)

    assert resp.status_code == 400
    assert resp.json()["error"].startswith(error)
    assert list(list_runs(sb).runs) == []
    assert httpx.get(f"{sb.endpoint}/_sandbox/runs").json() == []


def test_an_admin_launch_never_replaces_a_run_of_the_same_name(sb):
    first = httpx.post(f"{sb.endpoint}/_sandbox/runs", json={"task": "bad", "name": "same1"})
    sb.wait_idle()
    again = httpx.post(f"{sb.endpoint}/_sandbox/runs", json={"task": "bad", "name": "same1"})

    assert first.json() == {"runs": ["same1"]}
    assert again.status_code == 409
    assert again.json()["error"] == (
        f"run 'same1' already exists in {sb.org}/{sb.project}/{sb.domain}; pick another name "
        "(a run is never replaced)"
    )
    [run] = httpx.get(f"{sb.endpoint}/_sandbox/runs").json()
    assert run["phase"] == "FAILED"


MALFORMED = {
    "bytes that are not a proto": ("application/proto", {}, b"\xff\xff\xff\xff"),
    "json that is not the message": ("application/json", {}, b'{"request": 5}'),
    "json that is not json": ("application/json", {}, b"{"),
    "gzip that is not gzip": ("application/proto", {"content-encoding": "gzip"}, b"not gzip"),
}


@pytest.mark.parametrize(("ctype", "headers", "body"), MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_unary_body_is_answered_invalid_argument(sb, ctype, headers, body):
    resp = httpx.post(sb.endpoint + LIST_RUNS, content=body, headers={"content-type": ctype, **headers})

    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_argument"
    assert resp.json()["message"].startswith(
        "the request is not a valid flyteidl2.workflow.ListRunsRequest"
    ) or resp.json()["message"].startswith("the request body is not valid gzip")


def test_a_malformed_stream_request_ends_the_stream_with_invalid_argument(sb):
    frame = b"\x00" + (4).to_bytes(4, "big") + b"\xff\xff\xff\xff"

    resp = httpx.post(
        sb.endpoint + WATCH_RUNS, content=frame, headers={"content-type": "application/connect+proto"}
    )

    assert resp.status_code == 200
    assert resp.content[0] == 0x02
    end = json.loads(resp.content[5:])
    assert end["error"]["code"] == "invalid_argument"
    assert end["error"]["message"].startswith(
        "the request is not a valid flyteidl2.workflow.WatchRunsRequest"
    )


def test_a_gzip_bomb_is_answered_resource_exhausted_without_inflating_it(sb):
    bomb = gzip.compress(b"\x00" * (64 << 20))
    assert len(bomb) < 100_000

    resp = httpx.post(
        sb.endpoint + LIST_RUNS,
        content=bomb,
        headers={"content-type": "application/proto", "content-encoding": "gzip"},
    )

    assert resp.status_code == 413
    assert resp.json() == {
        "code": "resource_exhausted",
        "message": f"the request decompresses to more than {MAX_REQUEST_BYTES} bytes",
    }


def test_a_raw_body_over_the_cap_is_answered_resource_exhausted(sb):
    resp = httpx.post(
        sb.endpoint + LIST_RUNS,
        content=b"\x00" * (MAX_REQUEST_BYTES + 1),
        headers={"content-type": "application/proto"},
    )

    assert resp.status_code == 413
    assert resp.json()["code"] == "resource_exhausted"


@pytest.mark.parametrize("latency", ["99999999999h", 1e308, "9000h"], ids=["hours", "float", "over a year"])
def test_an_admin_fault_latency_over_a_year_is_refused(sb, latency):
    resp = httpx.post(f"{sb.endpoint}/_sandbox/faults", json={"latency": latency})

    assert resp.status_code == 400
    assert resp.json()["error"] == (
        f"duration {latency!r} is longer than the sandbox's maximum of 8760h; use e.g. 2m"
    )
    assert httpx.get(f"{sb.endpoint}/_sandbox/stats").json()["faults"]["latency"] == "0ms"
