"""Deployed tasks in the sandbox: TaskService as the real flyte SDK calls it (``Task.get``,
``Task.listall``, running a deployed task), versions and their behaviour, ``oom_below``,
``max_resources``, deploys at runtime (``POST /_sandbox/tasks``) and workload validation."""

from __future__ import annotations

import re
import textwrap

import flyte
import flyte.errors
import flyte.remote
import httpx
import pytest

from rerund.errors import WorkloadError
from rerund.sandbox.testing import flyte_init
from rerund.sandbox.workload import load_workload

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "max_resources": {"memory": "32Gi", "cpu": "8"},
    "tasks": {
        "train.big": {
            "resources": {"memory": "4Gi", "cpu": "1"},
            "limits": {"memory": "4Gi"},
            "oom_below": "8Gi",
            "inputs": {"lr": 0.1},
            "outputs": {"accuracy": 0.9},
            "versions": ["v1", {"version": "v2", "oom_below": "2Gi"}],
        },
        "report": {
            "behaviour": ["fail"],
            "error": {"kind": "USER", "code": "KeyError", "message": "KeyError: 'x'"},
            "versions": ["v1"],
        },
        "plain": {},
    },
    "runs": [{"task": "train.big", "version": "v1", "inputs": {"lr": 0.3}}, {"task": "train.big"}],
}


@pytest.fixture
def sb(sandbox_factory):
    handle = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    flyte_init(handle)
    handle.wait_idle()
    return handle


def test_a_run_executes_the_version_it_names_and_oom_below_kills_it_for_memory(sb):
    v1, v2 = sb.runs()
    assert (v1["version"], v1["phase"]) == ("v1", "FAILED")
    assert v1["error"] == {
        "kind": "USER",
        "code": "OOMKilled",
        "message": "[OOMKilled] the container of train.big exceeded its memory limit (4Gi; memory request "
        "4Gi) and was killed by the kernel; this task needs at least 8Gi",
    }
    assert v1["resources"] == {"requests": {"memory": "4Gi", "cpu": "1"}, "limits": {"memory": "4Gi"}}
    # v2 (the latest, run by default) needs only 2Gi
    assert (v2["version"], v2["phase"]) == ("v2", "SUCCEEDED")


def test_task_get_and_listall_see_the_deployed_versions_latest_last(sb):
    latest = flyte.remote.Task.get(
        "train.big", project=sb.project, domain=sb.domain, auto_version="latest"
    ).fetch()
    assert latest.version == "v2"
    v1 = flyte.remote.Task.get("train.big", project=sb.project, domain=sb.domain, version="v1").fetch()
    requests, limits = v1.resources
    assert {(e.name, e.value) for e in requests} == {(3, "4Gi"), (1, "1")}  # MEMORY, CPU
    assert [(e.name, e.value) for e in limits] == [(3, "4Gi")]
    listed = [
        t.version for t in flyte.remote.Task.listall(by_task_name="train.big", sort_by=("created_at", "asc"))
    ]
    assert listed == ["v1", "v2"]
    assert [t.version for t in flyte.remote.Task.listall(by_task_name="plain")] == ["sandbox"]


def test_an_unknown_task_or_version_is_not_found(sb):
    with pytest.raises(flyte.errors.RemoteTaskNotFoundError, match="No versions found for Task nope"):
        flyte.remote.Task.get("nope", project=sb.project, domain=sb.domain, auto_version="latest").fetch()
    with pytest.raises(flyte.errors.RemoteTaskNotFoundError, match=r"Task train\.big, version v9 not found"):
        flyte.remote.Task.get("train.big", project=sb.project, domain=sb.domain, version="v9").fetch()


def test_a_deployed_task_runs_with_overridden_resources_and_the_source_inputs(sb):
    source = sb.runs()[0]
    task = flyte.remote.Task.get("train.big", project=sb.project, domain=sb.domain, version="v1").fetch()
    bigger = task.override(resources=flyte.Resources(memory=("8Gi", "8Gi"), cpu="1"))
    inputs = dict(flyte.remote.Run.get(name=source["name"]).inputs())
    flyte.with_runcontext(name="bigger-1", labels={"by": "test"}).run(bigger, **inputs)
    run = sb.wait_for("bigger-1")
    assert (run["phase"], run["version"], run["inputs"]) == ("SUCCEEDED", "v1", {"lr": 0.3})
    assert run["resources"] == {"requests": {"memory": "8Gi", "cpu": "1"}, "limits": {"memory": "8Gi"}}
    assert run["relation"] is None
    # by reference (not overridden): the deployed version's own spec
    flyte.with_runcontext(name="byref-1").run(task, **inputs)
    assert sb.wait_for("byref-1")["error"]["code"] == "OOMKilled"


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        (
            flyte.Resources(memory="64Gi"),
            "memory request 64Gi exceeds the platform's task resource limit 32Gi",
        ),
        (flyte.Resources(memory=("8Gi", "4Gi")), "memory limit 4Gi is below its request 8Gi"),
        (flyte.Resources(cpu="lots"), "cpu request 'lots' is not a Kubernetes quantity"),
        (
            flyte.Resources(disk="8Ei"),
            "ephemeral_storage request '8Ei' is above 9223372036854775.807, "
            "the largest quantity Kubernetes holds",
        ),
    ],
    ids=["above-max", "limit-below-request", "not-a-quantity", "above-what-kubernetes-holds"],
)
def test_resources_the_platform_refuses_are_invalid_arguments(sb, resources, problem):
    task = flyte.remote.Task.get("train.big", project=sb.project, domain=sb.domain, version="v1").fetch()
    with pytest.raises(flyte.errors.RuntimeUserError, match=f"the task's resources are refused: {problem}"):
        flyte.with_runcontext(name="refused-1").run(task.override(resources=resources), lr=0.1)
    assert "refused-1" not in {r["name"] for r in sb.runs()}


def test_a_version_deployed_at_runtime_is_the_latest_and_behaves_as_deployed(sb):
    resp = httpx.post(
        f"{sb.endpoint}/_sandbox/tasks", json={"task": "report", "version": "v2", "behaviour": "succeed"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"] == "v2"
    latest = flyte.remote.Task.get(
        "report", project=sb.project, domain=sb.domain, auto_version="latest"
    ).fetch()
    assert latest.version == "v2"
    [v1] = sb.launch(task="report", version="v1")
    [v2] = sb.launch(task="report")
    assert sb.wait_for(v1)["phase"] == "FAILED"
    assert sb.wait_for(v2)["phase"] == "SUCCEEDED"
    listed = httpx.get(f"{sb.endpoint}/_sandbox/tasks").json()
    assert [(t["version"], t["latest"]) for t in listed if t["task"] == "report"] == [
        ("v1", False),
        ("v2", True),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"task": "report", "version": "v1"},
            "task 'report' version 'v1' is already deployed in demo/development",
        ),
        (
            {"task": "nope", "version": "v2"},
            "task 'nope' is not in the sandbox workload; known tasks: plain, report",
        ),
        ({"task": "report", "version": "v2", "behaviour": "explode"}, "behaviour.0: Input should be"),
        (
            {"task": "report", "version": "bad version"},
            "version: version 'bad version' is not a version name",
        ),
    ],
    ids=["already-deployed", "unknown-task", "bad-field", "bad-version"],
)
def test_a_bad_deploy_is_refused_with_the_reason(sb, body, error):
    resp = httpx.post(f"{sb.endpoint}/_sandbox/tasks", json=body)
    assert resp.status_code == 400
    assert error in resp.json()["error"]


def test_a_scheduled_deploy_happens_after_its_delay(sandbox_factory):
    sb = sandbox_factory(
        workload={
            "tasks": {"t": {"versions": ["v1"]}},
            "deploys": [{"task": "t", "version": "v2", "after": "1s", "behaviour": "fail"}],
        },
        time_scale=0.01,
    )
    flyte_init(sb)
    sb.wait_idle()  # the deploy schedule is pending work too
    assert [t["version"] for t in sb.tasks()] == ["v1", "v2"]
    [name] = sb.launch(task="t")
    assert sb.wait_for(name)["phase"] == "FAILED"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "tasks: {t: {versions: [v1]}}\nruns: [{task: t, version: v2}]\n",
            "2:27: runs[0].version: task 't' has no version 'v2'; its versions: v1",
        ),
        (
            "tasks: {t: {versions: [v1, v1]}}\n",
            "1:12: tasks.t: version 'v1' is listed twice; each version of a task is deployed once",
        ),
        ("tasks: {t: {oom_below: 8GB}}\n", "1:24: tasks.t.oom_below: '8GB' is not a Kubernetes quantity"),
        (
            "tasks: {t: {resources: {memory: lots}}}\n",
            "1:33: tasks.t.resources.memory: 'lots' is not a Kubernetes quantity; use e.g. 4Gi, 512Mi, 2 "
            "or 500m",
        ),
        (
            "tasks: {t: {versions: [v1]}}\ndeploys: [{task: t, version: v1}]\n",
            "2:30: deploys[0].version: task 't' already has version 'v1'; deploy a new version",
        ),
        (
            "tasks: {t: {}}\ndeploys: [{task: u, version: v1}]\n",
            "2:18: deploys[0].task: unknown task 'u'; known tasks: ['t']",
        ),
    ],
    ids=[
        "unknown-version",
        "duplicate-version",
        "bad-oom-below",
        "bad-resource",
        "deploy-existing",
        "deploy-unknown",
    ],
)
def test_a_bad_versions_or_resources_entry_is_refused_located(tmp_path, text, problem):
    path = tmp_path / "workload.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert any(str(p).startswith(f"{path}:{problem}") for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]


@pytest.mark.parametrize("token", ["-1", "-100", "+1", " 1", "1_0", "\u0661"], ids=repr)
def test_list_tasks_refuses_a_page_token_it_did_not_issue(sb, token):
    """Only the offsets the sandbox hands out are tokens: a negative one used to slice from the
    end (a page of the wrong tasks), and int() took '+1', ' 1', '1_0' and non-ASCII digits."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError
    from flyteidl2.common import identifier_pb2, list_pb2
    from flyteidl2.task import task_service_pb2 as ts
    from flyteidl2.task.task_service_connect import TaskServiceClientSync

    with TaskServiceClientSync(sb.endpoint) as client:
        first = client.list_tasks(
            ts.ListTasksRequest(
                request=list_pb2.ListRequest(limit=1),
                org=sb.org,
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=sb.org, name=sb.project, domain=sb.domain
                ),
            )
        )
        assert first.token == "1"
        with pytest.raises(
            ConnectError, match=re.escape(f"page token {token!r} is not one this sandbox issued")
        ) as info:
            client.list_tasks(
                ts.ListTasksRequest(
                    request=list_pb2.ListRequest(limit=1, token=token),
                    org=sb.org,
                    project_id=identifier_pb2.ProjectIdentifier(
                        organization=sb.org, name=sb.project, domain=sb.domain
                    ),
                )
            )
    assert info.value.code == Code.INVALID_ARGUMENT
