"""``--rate-limit`` answers RESOURCE_EXHAUSTED beyond the bucket (set at start or at runtime);
ListRuns and WatchRuns with ``org`` span every project and domain; ProjectService lists the
projects, including one a new run creates."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl2.common import identifier_pb2, list_pb2
from flyteidl2.project import project_service_pb2 as pj
from flyteidl2.project.project_service_connect import ProjectServiceClientSync
from flyteidl2.workflow import run_service_pb2 as rs
from flyteidl2.workflow.run_service_connect import RunServiceClient, RunServiceClientSync
from hypothesis import given
from hypothesis import strategies as st

from rerund.sandbox.ratelimit import TokenBucket, parse_rate

WORKLOAD = {
    "tasks": {"t": {"behaviour": ["fail"]}},
    "runs": [
        {"task": "t", "count": 2},
        {"task": "t", "count": 1, "project": "ml", "domain": "production"},
    ],
}


# --- the token bucket ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/s", 100.0), ("6000/min", 100.0), ("2.5/s", 2.5), ("0", 0.0), (50, 50.0)],
    ids=["per-second", "per-minute", "fraction", "unlimited", "number"],
)
def test_rates_parse_to_requests_per_second(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "-1/s", "10/h"], ids=["word", "negative", "per-hour"])
def test_bad_rates_say_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"rate limit .* (use N/s|must be a finite number >= 0)"):
        parse_rate(text)


@given(
    rate=st.floats(min_value=0.5, max_value=500),
    gaps=st.lists(st.floats(min_value=0, max_value=0.2), min_size=1, max_size=300),
)
def test_bucket_never_grants_more_than_capacity_plus_rate_times_time(rate, gaps):
    bucket = TokenBucket(rate)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        granted += bucket.take(now)
    assert granted <= bucket.capacity + rate * now + 1e-6


def test_bucket_refills_after_a_pause():
    bucket = TokenBucket(2.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) is True
    assert bucket.take(0.5) is False


# --- served --------------------------------------------------------------------------------


def _list_runs(client, sb) -> None:
    client.list_runs(
        rs.ListRunsRequest(
            project_id=identifier_pb2.ProjectIdentifier(
                organization=sb.org, name=sb.project, domain=sb.domain
            )
        )
    )


def test_rpcs_beyond_the_rate_limit_answer_resource_exhausted(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, rate_limit=3)
    with RunServiceClientSync(sb.endpoint) as client:
        for _ in range(3):
            _list_runs(client, sb)
        with pytest.raises(ConnectError) as info:
            _list_runs(client, sb)

    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.message == (
        "rate limit exceeded: ListRuns refused at 3/s; slow down and retry after a backoff"
    )
    stats = sb.stats()
    assert stats["rate_limited"] == 1
    assert stats["faults"]["rate_limit"] == "3/s"


def test_rate_limit_is_set_and_lifted_at_runtime_through_the_admin_endpoint(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD)
    resp = httpx.post(f"{sb.endpoint}/_sandbox/faults", json={"rate_limit": "1/s"})
    assert resp.status_code == 200
    assert resp.json()["rate_limit"] == "1/s"
    with RunServiceClientSync(sb.endpoint) as client:
        _list_runs(client, sb)
        with pytest.raises(ConnectError) as info:
            _list_runs(client, sb)
        assert info.value.code == Code.RESOURCE_EXHAUSTED

        assert httpx.post(f"{sb.endpoint}/_sandbox/faults", json={"rate_limit": 0}).json()["rate_limit"] == (
            "unlimited"
        )
        for _ in range(5):
            _list_runs(client, sb)


def test_admin_refuses_a_bad_rate_limit(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD)

    resp = httpx.post(f"{sb.endpoint}/_sandbox/faults", json={"rate_limit": "lots"})

    assert resp.status_code == 400
    assert resp.json()["error"] == (
        "rate limit 'lots' is not a rate; use N/s or N/min, e.g. 100/s (0 = unlimited)"
    )


def test_list_runs_with_org_spans_every_project_and_domain(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    sb.launch("t", project="data", domain="staging")
    sb.wait_idle()
    with RunServiceClientSync(sb.endpoint) as client:
        names, token = [], ""
        while True:
            resp = client.list_runs(
                rs.ListRunsRequest(org=sb.org, request=list_pb2.ListRequest(limit=2, token=token))
            )
            names += [
                (r.action.id.run.project, r.action.id.run.domain, r.action.id.run.name) for r in resp.runs
            ]
            token = resp.token
            if not token:
                break
        other_org = client.list_runs(rs.ListRunsRequest(org="elsewhere"))

    assert sorted((p, d) for p, d, _ in names) == [
        ("data", "staging"),
        ("demo", "development"),
        ("demo", "development"),
        ("ml", "production"),
    ]
    assert len(set(names)) == 4
    assert list(other_org.runs) == []


def test_watch_runs_with_org_sees_a_new_project(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    sb.wait_idle()

    async def watch() -> set[str]:
        async with RunServiceClient(sb.endpoint) as client:
            seen: set[str] = set()
            async for msg in client.watch_runs(rs.WatchRunsRequest(org=sb.org)):
                seen |= {r.action.id.run.project for r in msg.runs}
                if len(seen) == 1 or seen == {"demo", "ml"}:
                    await asyncio.to_thread(sb.launch, "t", project="brand-new", domain="development")
                if "brand-new" in seen:
                    return seen
        return seen

    seen = asyncio.run(asyncio.wait_for(watch(), 30))

    assert seen == {"demo", "ml", "brand-new"}


def test_project_service_lists_projects_including_one_a_run_created(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    httpx.post(f"{sb.endpoint}/_sandbox/runs", json={"task": "t", "project": "vision", "domain": "staging"})
    with ProjectServiceClientSync(sb.endpoint) as client:
        resp = client.list_projects(pj.ListProjectsRequest(limit=100, filters="eq(state, 0)"))
        bad = None
        try:
            client.list_projects(pj.ListProjectsRequest(filters="contains(name, x)"))
        except ConnectError as exc:
            bad = exc

    projects = {p.name: [d.name for d in p.domains] for p in resp.projects.projects}
    assert projects == {
        "demo": ["development", "staging", "production"],
        "ml": ["development", "staging", "production"],
        "vision": ["development", "staging", "production"],
    }
    assert bad is not None and bad.code == Code.INVALID_ARGUMENT
    assert bad.message == (
        "ListProjects: filter 'contains(name, x)' is not supported; the sandbox filters by eq(state, N) only"
    )


def test_sdk_project_listall_reads_the_projects(sandbox_factory):
    import flyte.remote

    from rerund.sandbox.testing import flyte_init

    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    flyte_init(sb)

    names = sorted(p.pb2.name for p in flyte.remote.Project.listall())

    assert names == ["demo", "ml"]


def test_rates_report_rpcs_per_whole_second_and_the_peak(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD)
    with RunServiceClientSync(sb.endpoint) as client:
        for _ in range(4):
            _list_runs(client, sb)

    rates = httpx.get(f"{sb.endpoint}/_sandbox/rates").json()

    assert sum(rates["per_second"]) == 4
    assert rates["peak_rpc_per_s"] == max(rates["per_second"])
