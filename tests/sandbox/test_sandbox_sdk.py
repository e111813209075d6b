"""The real flyte SDK against the sandbox over HTTP: listing, failures, waiting, aborting and
every kind of rerun, each running to the phase its workload behaviour says."""

from __future__ import annotations

import flyte
import flyte.errors
import flyte.remote as remote
import pytest

from rerund.sandbox.testing import flyte_init

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "train.fit": {
            "duration": "1s",
            "behaviour": ["fail", "fail", "succeed"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "ConnectionResetError: [Errno 104] Connection reset by peer",
            },
            "inputs": {"lr": 0.1, "epochs": 3},
            "outputs": {"accuracy": 0.93},
        },
        "etl.pipeline": {"children": ["etl.extract", "etl.load"]},
        "etl.extract": {"behaviour": ["succeed"], "duration": "0.5s"},
        "etl.load": {
            "behaviour": ["fail", "succeed"],
            "duration": "0.5s",
            "error": {"kind": "USER", "code": "ValueError", "message": "ValueError: bad row 17"},
        },
        "sleepy": {"duration": "1h"},
    }
}


@pytest.fixture
def sb(sandbox_factory):
    handle = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    flyte_init(handle)
    return handle


def test_listall_in_phase_failed_returns_only_failed_runs(sb):
    failed = sb.launch("train.fit", count=2, labels={"team": "ml"})
    ok = sb.launch("etl.extract")
    sb.wait_idle()

    names = {r.name for r in remote.Run.listall(in_phase=("failed",))}
    succeeded = {r.name for r in remote.Run.listall(in_phase=("succeeded",))}

    assert names == set(failed)
    assert succeeded == set(ok)


def test_run_details_carry_labels_and_task(sb):
    [name] = sb.launch("train.fit", labels={"team": "ml"})
    sb.wait_idle()

    details = remote.RunDetails.get(name=name)

    assert dict(details.pb2.run_spec.labels.values) == {"team": "ml"}
    assert details.task_name == "train.fit"
    assert details.action_details.phase == flyte.models.ActionPhase.FAILED


def test_first_failure_names_the_failing_child_with_kind_code_and_message(sb):
    [name] = sb.launch("etl.pipeline")
    sb.wait_idle()

    failure = remote.Run.get(name).first_failure()

    assert failure.name == "a2"
    assert failure.task_name == "etl.load"
    assert failure.error_info.kind == failure.error_info.KIND_USER
    assert failure.error_info.code == "ValueError"
    assert failure.error_info.message == "ValueError: bad row 17"


def test_first_failure_of_a_single_task_run_is_the_root_action(sb):
    [name] = sb.launch("train.fit")
    sb.wait_idle()

    failure = remote.Run.get(name).first_failure()

    assert failure.name == "a0"
    assert failure.error_info.kind == failure.error_info.KIND_SYSTEM
    assert failure.error_info.code == "ConnectionResetError"


def test_wait_returns_when_the_run_is_terminal(sb):
    [name] = sb.launch("train.fit")
    run = remote.Run.get(name)

    run.wait(quiet=True)

    assert run.phase == flyte.models.ActionPhase.FAILED


def test_abort_stops_a_running_run(sb):
    [name] = sb.launch("sleepy")
    run = remote.Run.get(name)

    run.abort(reason="test says stop")
    run.wait(quiet=True)

    snap = sb.run(name)
    assert snap["phase"] == "ABORTED"
    assert remote.RunDetails.get(name=name).action_details.pb2.abort_info.reason == "test says stop"


def test_rerun_with_name_env_and_labels_records_provenance_and_follows_the_lineage(sb):
    [name] = sb.launch("train.fit")
    sb.wait_idle()

    first = flyte.with_runcontext(
        name=f"{name[:10]}-retry-1", env_vars={"FLYTE_RETRY": "true"}, labels={"retried-by": "rerund"}
    ).rerun(name)
    first.wait(quiet=True)
    second = flyte.with_runcontext(name=f"{name[:10]}-retry-2").rerun(first.name)
    second.wait(quiet=True)

    one, two = sb.run(first.name), sb.run(second.name)
    assert one["phase"] == "FAILED"  # the 2nd execution of [fail, fail, succeed]
    assert two["phase"] == "SUCCEEDED"  # the 3rd
    assert one["relation"] == {"run": name, "type": "RERUN"}
    assert one["action_name"] == "a0"
    assert one["envs"]["FLYTE_RETRY"] == "true"
    assert one["labels"] == {"retried-by": "rerund"}
    assert one["inputs"] == {"lr": 0.1, "epochs": 3}
    assert remote.Run.get(first.name).action.relation.related_to.name == name


def test_rerun_of_a_failed_child_action_executes_only_that_task(sb):
    [name] = sb.launch("etl.pipeline")
    sb.wait_idle()

    run = flyte.with_runcontext(name="etl-load-retry").rerun(name, action_name="a2")
    run.wait(quiet=True)

    snap = sb.run("etl-load-retry")
    assert snap["phase"] == "SUCCEEDED"
    assert snap["task"] == "etl.load"
    assert snap["action_name"] == "a2"
    assert [a["name"] for a in snap["actions"]] == ["a0"]


def test_recover_rerun_reuses_succeeded_actions_and_reexecutes_the_failed_one(sb):
    [name] = sb.launch("etl.pipeline")
    sb.wait_idle()

    run = flyte.with_runcontext(name="etl-recover").rerun(name, recover=True)
    run.wait(quiet=True)

    snap = sb.run("etl-recover")
    assert snap["phase"] == "SUCCEEDED"
    assert snap["relation"] == {"run": name, "type": "RECOVER"}
    assert {a["name"]: a["phase"] for a in snap["actions"]} == {
        "a0": "SUCCEEDED",
        "a1": "RECOVERED",
        "a2": "SUCCEEDED",
    }


def test_rerun_with_changed_inputs_keeps_the_others(sb):
    [name] = sb.launch("train.fit")
    sb.wait_idle()

    run = flyte.with_runcontext(name="changed-lr").rerun(name, lr=0.5)
    run.wait(quiet=True)

    assert sb.run("changed-lr")["inputs"] == {"lr": 0.5, "epochs": 3}


def test_rerun_with_a_taken_name_raises_run_already_exists(sb):
    [name] = sb.launch("train.fit")
    sb.wait_idle()
    flyte.with_runcontext(name="taken").rerun(name)

    with pytest.raises(flyte.errors.RuntimeUserError, match="already exists") as info:
        flyte.with_runcontext(name="taken").rerun(name)

    assert info.value.code == "RunAlreadyExistsError"


def test_rerun_with_a_31_character_name_raises_invalid_argument(sb):
    [name] = sb.launch("train.fit")
    sb.wait_idle()

    with pytest.raises(flyte.errors.RuntimeUserError, match="has 31 characters") as info:
        flyte.with_runcontext(name="a" * 31).rerun(name)

    assert info.value.code == "InvalidArgumentError"


def test_outputs_are_real_literals_the_sdk_reads_back(sb):
    [train] = sb.launch("train.fit")
    sb.wait_idle()
    second = flyte.with_runcontext(name="second").rerun(train)
    second.wait(quiet=True)

    third = flyte.with_runcontext(name="third").rerun("second")
    third.wait(quiet=True)

    assert remote.Run.get("third").outputs()[0] == pytest.approx(0.93)
