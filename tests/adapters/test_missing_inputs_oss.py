"""Missing input blobs (issue 26.4): open-source Flyte's data proxy answers GetActionData of an
action whose blobs are gone with *empty* inputs (``dataproxy/service/dataproxy_service.go``
``GetActionData``), so the SDK's rerun path would run the task on its defaults. rerund checks
the inputs read against the task's interface first and gives up, saying why."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from adapter_support import connected
from adapter_support import rpc_delta as _delta
from rerund.core.runs import RelaunchRequest, RerunRequest, RunRef
from rerund.errors import PermanentControlPlaneError
from rerund.sandbox.profiles import OSS
from rerund.sandbox.testing import SandboxHandle, flyte_init, start_sandbox

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "train.fit": {
            "duration": "0.1s",
            "behaviour": ["fail", "succeed"],
            "inputs": {"lr": 0.1, "epochs": 3},
        },
    }
}


@pytest.fixture(scope="module", params=["oss", "union"])
def sb(request: pytest.FixtureRequest) -> Iterator[SandboxHandle]:
    profile = OSS.with_error_delay(0) if request.param == "oss" else "union"
    with start_sandbox(WORKLOAD, time_scale=0.5, profile=profile) as handle:
        yield handle


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _failed_and_lost(sb: SandboxHandle) -> RunRef:
    [name] = sb.launch("train.fit", inputs={"lr": 0.4, "epochs": 7})
    assert sb.wait_for(name)["phase"] == "FAILED"
    sb.lose_data(name)
    return RunRef(sb.project, sb.domain, name)


def test_the_oss_data_proxy_answers_a_missing_blob_with_empty_inputs(sb: SandboxHandle) -> None:
    import flyte.remote

    ref = _failed_and_lost(sb)
    flyte_init(sb)

    if sb.profile.name == "oss":
        assert dict(flyte.remote.Run.get(name=ref.name).inputs()) == {}
    else:
        with pytest.raises(Exception, match="no longer in storage"):
            flyte.remote.Run.get(name=ref.name).inputs()


def test_a_rerun_whose_source_inputs_are_gone_gives_up_and_creates_nothing(sb: SandboxHandle) -> None:
    cp = connected(sb, backend=sb.profile.name)
    ref = _failed_and_lost(sb)
    facts = _run(cp.read_failure(_run(cp.get_run(ref))))
    request = RerunRequest(source=ref, name=f"{ref.name[:10]}-retry-1", source_spec=facts.spec)

    with pytest.raises(PermanentControlPlaneError) as info:
        _run(cp.create_rerun(request))

    names = {r["name"] for r in sb.runs()}
    assert request.name not in names  # never run on its defaults
    if sb.profile.name == "oss":
        assert info.value.code == "source_inputs_missing"
        assert str(info.value) == (
            f"'{request.name}' of run {ref} gives up: the inputs of action a0 came back without "
            "'epochs', 'lr', which the task needs (open-source Flyte answers empty inputs when their "
            "blob is gone from storage); rerunning would run the task on its defaults, so it is not "
            "created. Give the inputs in the policy's inputs: to rerun it"
        )
    else:
        assert info.value.code == "not_found"


def test_a_rerun_that_gives_every_input_itself_needs_no_source_inputs(sb: SandboxHandle) -> None:
    cp = connected(sb, backend=sb.profile.name)
    ref = _failed_and_lost(sb)
    facts = _run(cp.read_failure(_run(cp.get_run(ref))))
    request = RerunRequest(
        source=ref, name=f"{ref.name[:10]}-retry-2", source_spec=facts.spec, inputs={"lr": 0.5, "epochs": 2}
    )

    created = _run(cp.create_rerun(request))

    assert sb.wait_for(created.name)["inputs"] == {"lr": 0.5, "epochs": 2}


def test_a_rerun_reads_the_source_inputs_once(sb: SandboxHandle) -> None:
    cp = connected(sb, backend=sb.profile.name)
    [name] = sb.launch("train.fit", inputs={"lr": 0.4, "epochs": 7})
    sb.wait_for(name)
    ref = RunRef(sb.project, sb.domain, name)
    facts = _run(cp.read_failure(_run(cp.get_run(ref))))
    before = sb.request_counts()

    created = _run(
        cp.create_rerun(RerunRequest(source=ref, name=f"{name[:10]}-retry-3", source_spec=facts.spec))
    )

    assert _delta(sb, before).get("GetActionData") == 1  # rerund's check; the SDK reuses it
    assert sb.wait_for(created.name)["inputs"] == {"lr": 0.4, "epochs": 7}


def test_a_relaunch_whose_source_inputs_are_gone_gives_up_too(sb: SandboxHandle) -> None:
    if sb.profile.name != "oss":
        pytest.skip("union answers NOT_FOUND itself")
    cp = connected(sb, backend="oss")
    ref = _failed_and_lost(sb)
    facts = _run(cp.read_failure(_run(cp.get_run(ref))))
    request = RelaunchRequest(
        source=ref, name=f"{ref.name[:10]}-retry-4", task="train.fit", source_spec=facts.spec
    )

    with pytest.raises(PermanentControlPlaneError, match="came back without 'epochs', 'lr'"):
        _run(cp.create_relaunch(request))

    assert request.name not in {r["name"] for r in sb.runs()}


def test_a_rerun_inherits_the_run_start_time_and_raw_data_storage_the_server_stamped(
    sb: SandboxHandle,
) -> None:
    # Issue 26.10: open-source Flyte stamps both only when unset (run_service.go CreateRun) and
    # the SDK's rerun copies the source's RunSpec; docs/open-source-flyte.md says so.
    from flyteidl2.common import identifier_pb2
    from flyteidl2.workflow import run_service_pb2 as rs
    from flyteidl2.workflow.run_service_connect import RunServiceClientSync

    cp = connected(sb, backend=sb.profile.name)
    [name] = sb.launch("train.fit", inputs={"lr": 0.4, "epochs": 7})
    sb.wait_for(name)
    ref = RunRef(sb.project, sb.domain, name)
    rerun = _run(cp.create_rerun(RerunRequest(source=ref, name=f"{name[:10]}-retry-5")))

    def spec(run: str) -> Any:
        run_id = identifier_pb2.RunIdentifier(org=sb.org, project=sb.project, domain=sb.domain, name=run)
        with RunServiceClientSync(sb.endpoint) as client:
            return client.get_run_details(rs.GetRunDetailsRequest(run_id=run_id)).details.run_spec

    source, copy = spec(name), spec(rerun.name)
    if sb.profile.name == "oss":
        assert source.raw_data_storage.raw_data_prefix.endswith(f"/{name}")
        assert copy.raw_data_storage == source.raw_data_storage  # the source's prefix, not its own
        assert copy.run_start_time == source.run_start_time and source.HasField("run_start_time")
    else:
        assert not source.HasField("run_start_time") and not copy.HasField("run_start_time")
