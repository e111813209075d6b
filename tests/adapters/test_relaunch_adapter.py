"""The flyte-SDK adapter's relaunch path against the sandbox over real HTTP: what
``read_failure`` learns for a relaunch (task version, resources), ``create_relaunch`` (the RPCs
it costs, the run it creates, its errors) and ``latest_task_version``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from adapter_support import connected
from adapter_support import rpc_delta as _delta
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.adapters.flyte.convert import runcontext_for_relaunch
from rerund.core.model import RunOverrides, RunSpecView
from rerund.core.resources import ResourcesView
from rerund.core.runs import RelaunchRequest, RunRef
from rerund.errors import AlreadyExistsError, PermanentControlPlaneError
from rerund.sandbox.testing import SandboxHandle, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "max_resources": {"memory": "32Gi"},
    "tasks": {
        "train.big": {
            "duration": "0.1s",
            "resources": {"memory": "4Gi", "cpu": "1", "ephemeral_storage": "10Gi"},
            "limits": {"memory": "4Gi", "cpu": "2"},
            "oom_below": "8Gi",
            "inputs": {"lr": 0.1},
            "versions": ["v1", "v2"],
        }
    },
}


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with start_sandbox(WORKLOAD, time_scale=0.5) as handle:
        yield handle


def _cp(sb: SandboxHandle) -> FlyteControlPlane:
    return connected(sb, backend="union")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _failed(sb: SandboxHandle, cp: FlyteControlPlane, **launch: Any) -> Any:
    [name] = sb.launch("train.big", version="v1", **launch)
    sb.wait_for(name)
    return _run(cp.read_failure(_run(cp.get_run(RunRef(sb.project, sb.domain, name)))))


def test_read_failure_gives_the_root_task_version_and_resources(sb: SandboxHandle) -> None:
    facts = _failed(sb, _cp(sb))
    assert facts.error.code == "OOMKilled"
    assert facts.task_version == "v1"
    assert facts.resources == ResourcesView(
        requests={"memory": "4Gi", "cpu": "1", "ephemeral_storage": "10Gi"},
        limits={"memory": "4Gi", "cpu": "2"},
    )


def test_create_relaunch_runs_the_deployed_version_with_the_resources_and_source_inputs(
    sb: SandboxHandle,
) -> None:
    cp = _cp(sb)
    facts = _failed(sb, cp, inputs={"lr": 0.4}, labels={"team": "ml"})
    src = facts.summary.ref
    target = ResourcesView(
        requests={"memory": "8Gi", "cpu": "1", "ephemeral_storage": "10Gi"},
        limits={"memory": "8Gi", "cpu": "2"},
    )
    request = RelaunchRequest(
        source=src,
        name=f"{src.name}-retry-1",
        task="train.big",
        version="v1",
        resources=target,
        labels={"rerund-root": src.name, "rerund-attempt": "1", "rerund-policy": "oom"},
        inputs={"lr": 0.5},
        overrides=RunOverrides(queue="big-memory"),
        source_spec=facts.spec,
    )
    before = sb.request_counts()
    created = _run(cp.create_relaunch(request))
    cost = _delta(sb, before)
    assert created == RunRef(src.project, src.domain, f"{src.name}-retry-1")
    # Task.get by version (no ListTasks), the source's inputs (its GetRunDetails answered with the
    # one read_failure made), the upload and the create
    assert cost == {
        "GetTaskDetails": 1,
        "SelectCluster": 2,
        "GetActionData": 1,
        "UploadInputs": 1,
        "CreateRun": 1,
    }
    run = sb.wait_for(created.name)
    assert run["phase"] == "SUCCEEDED"
    assert run["version"] == "v1"
    assert run["resources"] == {
        "requests": {"cpu": "1", "memory": "8Gi", "ephemeral_storage": "10Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    assert run["inputs"] == {"lr": 0.5}  # the policy's inputs over the source's
    assert run["labels"] == {"team": "ml", **request.labels}
    assert run["relation"] is None

    with pytest.raises(AlreadyExistsError):
        _run(cp.create_relaunch(request))


def test_create_relaunch_on_the_latest_lists_the_task_once(sb: SandboxHandle) -> None:
    cp = _cp(sb)
    facts = _failed(sb, cp)
    src = facts.summary.ref
    before = sb.request_counts()
    created = _run(
        cp.create_relaunch(RelaunchRequest(source=src, name=f"{src.name}-retry-1", task="train.big"))
    )
    assert _delta(sb, before)["ListTasks"] == 1
    assert sb.wait_for(created.name)["version"] == "v2"  # the latest, as deployed
    assert _run(cp.latest_task_version(sb.project, sb.domain, "train.big")) == "v2"
    assert _run(cp.latest_task_version(sb.project, sb.domain, "nothing.here")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"version": "v9"},
            "relaunch '{name}' of run '{src}': task 'train.big' version 'v9' in demo/development is not "
            "deployed (Task train.big, version v9 not found in demo development.); not retried",
        ),
        (
            {"resources": ResourcesView(requests={"memory": "64Gi"})},
            "CreateRun rejected the request as invalid: CreateRun: the task's resources are refused: memory "
            "request 64Gi exceeds the platform's task resource limit 32Gi; ask for at most that",
        ),
    ],
    ids=["version-not-deployed", "resources-refused"],
)
def test_a_refused_relaunch_is_a_permanent_error_with_the_reason(
    sb: SandboxHandle, change: dict[str, Any], message: str
) -> None:
    cp = _cp(sb)
    facts = _failed(sb, cp)
    src = facts.summary.ref
    name = f"{src.name}-retry-1"
    request = RelaunchRequest(source=src, name=name, task="train.big", **{"version": "v1", **change})
    with pytest.raises(PermanentControlPlaneError) as caught:
        _run(cp.create_relaunch(request))
    assert str(caught.value) == message.format(name=name, src=src.name)


def test_the_runcontext_of_a_relaunch_is_the_source_spec_changed_as_a_rerun_would_be() -> None:
    source = RunSpecView(
        env={"LOG_FORMAT": "json", "LOG_LEVEL": "10", "A": "1"},
        labels={"team": "ml"},
        annotations={"owner": "x"},
        queue="spot",
        interruptible=True,
        service_account="trainer",
        cache_lookup_scope="project-domain",
        max_action_concurrency=4,
    )
    request = RelaunchRequest(
        source=RunRef("p", "d", "r1"),
        name="r1-retry-1",
        task="t",
        env={"A": "2"},
        labels={"rerund-root": "r1"},
        overrides=RunOverrides(queue="ondemand", interruptible=False, annotations={"cap": "od"}),
    )
    assert runcontext_for_relaunch(request, source) == {
        "name": "r1-retry-1",
        "env_vars": {"LOG_FORMAT": "json", "LOG_LEVEL": "10", "A": "2"},
        "labels": {"team": "ml", "rerund-root": "r1"},
        "annotations": {"owner": "x", "cap": "od"},
        "project": "p",
        "domain": "d",
        "cache_lookup_scope": "project-domain",
        "log_format": "json",
        "queue": "ondemand",
        "interruptible": False,
        "service_account": "trainer",
        "max_action_concurrency": 4,
    }


def test_on_open_source_flyte_a_relaunch_looks_before_creating(tmp_path: Any) -> None:
    """Open-source Flyte answers a CreateRun of an existing name with that run, as a success (and
    enqueues it again): a second relaunch of the same name must be found, not re-sent."""
    with start_sandbox(WORKLOAD, time_scale=0.5, profile="oss") as sb:
        cp = FlyteControlPlane(endpoint=sb.endpoint, org=sb.org, insecure=True, rpc_timeout=10, backend="oss")
        _run(cp.connect())
        facts = _failed(sb, cp)
        src = facts.summary.ref
        request = RelaunchRequest(
            source=src,
            name=f"{src.name}-retry-1",
            task="train.big",
            version="v1",
            resources=ResourcesView(requests={"memory": "8Gi"}),
            source_spec=facts.spec,
        )
        _run(cp.create_relaunch(request))
        creates = sb.request_counts()["CreateRun"]
        with pytest.raises(AlreadyExistsError, match="already exists \\(found before creating it"):
            _run(cp.create_relaunch(request))
        assert sb.request_counts()["CreateRun"] == creates  # looked first: not sent again
        assert sb.wait_for(request.name)["phase"] == "SUCCEEDED"
