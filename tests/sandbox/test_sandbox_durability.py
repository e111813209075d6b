"""With ``db=PATH`` every run, action, input, output, spec and lineage count survives a restart
of the sandbox; runs that were executing resume. ``:memory:`` keeps nothing."""

from __future__ import annotations

import flyte
import flyte.remote as remote
import pytest

from rerund.sandbox.testing import flyte_init

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "flaky": {
            "behaviour": ["fail", "fail", "succeed"],
            "error": {"kind": "SYSTEM", "code": "ConnectionResetError", "message": "reset"},
            "inputs": {"lr": 0.1},
            "outputs": {"accuracy": 0.93},
        },
        "pipe": {"children": ["step", "flaky"]},
        "step": {"outputs": {"rows": 10}},
        "slow": {"duration": "2s", "outputs": {"done": True}},
    }
}


def test_runs_specs_inputs_and_outputs_survive_a_restart(sandbox_factory, tmp_path):
    sb = sandbox_factory(workload=WORKLOAD, db=tmp_path / "sandbox.db", time_scale=0.01)
    [pipe] = sb.launch("pipe", labels={"team": "ml"}, envs={"A": "1"})
    [flaky] = sb.launch("flaky", inputs={"lr": 0.5})
    sb.wait_idle()
    before = sb.runs()

    sb.restart()

    assert sb.runs() == before
    flyte_init(sb)
    details = remote.RunDetails.get(name=pipe)
    assert dict(details.pb2.run_spec.labels.values) == {"team": "ml"}
    assert remote.Run.get(pipe).first_failure().name == "a2"
    assert sb.run(flaky)["inputs"] == {"lr": 0.5}
    assert sb.run(pipe)["actions"][1]["phase"] == "SUCCEEDED"


def test_lineage_counts_survive_a_restart_so_behaviour_continues(sandbox_factory, tmp_path):
    sb = sandbox_factory(workload=WORKLOAD, db=tmp_path / "sandbox.db", time_scale=0.01)
    flyte_init(sb)
    [name] = sb.launch("flaky")
    sb.wait_idle()
    flyte.with_runcontext(name="retry-1").rerun(name).wait(quiet=True)

    sb.restart()
    flyte_init(sb)
    flyte.with_runcontext(name="retry-2").rerun("retry-1").wait(quiet=True)

    assert sb.run("retry-1")["phase"] == "FAILED"
    assert sb.run("retry-2")["phase"] == "SUCCEEDED"  # the 3rd execution in the lineage
    assert sb.run("retry-2")["relation"] == {"run": "retry-1", "type": "RERUN"}


def test_a_run_executing_during_a_restart_resumes_and_finishes(sandbox_factory, tmp_path):
    sb = sandbox_factory(workload=WORKLOAD, db=tmp_path / "sandbox.db", time_scale=1000)  # 2s -> 33 min
    [name] = sb.launch("slow")
    assert sb.run(name)["phase"] in {"QUEUED", "RUNNING"}

    sb.restart(time_scale=0.01)

    assert sb.wait_for(name)["phase"] == "SUCCEEDED"
    assert sb.run(name)["outputs"] == {"done": True}


def test_uploaded_inputs_survive_a_restart(sandbox_factory, tmp_path):
    sb = sandbox_factory(workload=WORKLOAD, db=tmp_path / "sandbox.db", time_scale=0.01)
    flyte_init(sb)
    [name] = sb.launch("flaky")
    sb.wait_idle()
    flyte.with_runcontext(name="changed").rerun(name, lr=0.7).wait(quiet=True)

    sb.restart()

    assert sb.run("changed")["inputs"] == {"lr": 0.7}


def test_memory_sandbox_forgets_runs_on_restart(sandbox_factory):
    sb = sandbox_factory(workload=WORKLOAD, time_scale=0.01)
    sb.launch("step")
    sb.wait_idle()

    sb.restart()

    assert sb.runs() == []


def test_workload_runs_are_not_started_again_when_the_database_has_runs(tmp_path, sandbox_factory):
    workload = {**WORKLOAD, "runs": [{"task": "step", "count": 2}]}
    sb = sandbox_factory(workload=workload, db=tmp_path / "sandbox.db", time_scale=0.01)
    sb.wait_idle()

    sb.restart()
    sb.wait_idle()

    assert len(sb.runs()) == 2
