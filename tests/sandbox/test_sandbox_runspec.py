"""A workload run's RunSpec and the outcomes that depend on it: what ``runs:`` may declare
(stored where the flyte SDK puts it), ``when:`` rules (preempted only while interruptible,
failing only on one queue), a ``gpu_fault`` on the error, and a task interface that covers
every input its runs are given — each read back through the real flyte SDK."""

from __future__ import annotations

from typing import Any

import pytest

from rerund.errors import WorkloadError
from rerund.sandbox.testing import flyte_init
from rerund.sandbox.workload import load_workload, workload_from_dict

pytestmark = pytest.mark.e2e

SPOT = {
    "tasks": {
        "train.spot": {
            "behaviour": ["succeed"],
            "when": [
                {
                    "spec": {"interruptible": True},
                    "behaviour": "fail",
                    "error": {"kind": "USER", "code": "Interrupted", "message": "node preempted"},
                },
                {
                    "spec": {"queue": "gpu-a"},
                    "behaviour": "fail",
                    "error": {
                        "kind": "SYSTEM",
                        "code": "GpuXidError",
                        "message": "Xid 48: double-bit ECC error",
                        "gpu_fault": {"kind": "XID", "code": 48, "name": "DBE", "severity": "CRITICAL"},
                    },
                },
            ],
        }
    },
    "runs": [
        {
            "task": "train.spot",
            "env": {"LOG_FORMAT": "json"},
            "labels": {"team": "ml"},
            "annotations": {"owner": "ml-platform"},
            "queue": "spot-pool",
            "interruptible": True,
            "cache_lookup_scope": "project-domain",
            "service_account": "trainer",
            "overwrite_cache": True,
            "max_action_concurrency": 3,
            "inputs": {"lr": 0.1},
        }
    ],
}


def _details(sb: Any, name: str) -> Any:
    import flyte.remote

    return flyte.remote.RunDetails.get(name=name)


def test_a_workload_run_stores_its_spec_where_the_sdk_puts_it(sandbox_factory: Any) -> None:
    from flyteidl2.task import run_pb2

    sb = sandbox_factory(workload=SPOT, time_scale=0.01)
    flyte_init(sb)
    sb.wait_idle()
    [run] = sb.runs()

    spec = _details(sb, run["name"]).pb2.run_spec

    # The SDK adds the log settings a run does not give (its own defaults), keeping the ones it does.
    assert {kv.key: kv.value for kv in spec.envs.values} == {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "30",
        "USER_LOG_LEVEL": "20",
    }
    assert dict(spec.labels.values) == {"team": "ml"}
    assert dict(spec.annotations.values) == {"owner": "ml-platform"}
    assert spec.queue == "spot-pool"
    assert spec.HasField("interruptible") and spec.interruptible.value is True
    assert spec.cache_config.cache_lookup_scope == run_pb2.CACHE_LOOKUP_SCOPE_PROJECT_DOMAIN
    assert spec.security_context.run_as.k8s_service_account == "trainer"
    assert spec.overwrite_cache and spec.cache_config.overwrite_cache
    assert spec.max_action_concurrency == 3


def test_a_run_is_preempted_only_while_interruptible(sandbox_factory: Any) -> None:
    import flyte

    sb = sandbox_factory(workload=SPOT, time_scale=0.01)
    flyte_init(sb)
    sb.wait_idle()
    [run] = sb.runs()
    assert (run["phase"], run["error"]["code"]) == ("FAILED", "Interrupted")

    flyte.with_runcontext(name="again-spot").rerun(run["name"])
    flyte.with_runcontext(name="on-demand", interruptible=False, queue="ondemand-pool").rerun(run["name"])

    assert sb.wait_for("again-spot")["phase"] == "FAILED"  # still interruptible: preempted again
    assert sb.wait_for("on-demand")["phase"] == "SUCCEEDED"


def test_a_task_fails_with_a_gpu_fault_only_on_its_queue(sandbox_factory: Any) -> None:
    import flyte
    import flyte.errors
    from flyte._internal.runtime.convert import convert_error_info_to_native

    sb = sandbox_factory(workload={**SPOT, "runs": []}, time_scale=0.01)
    flyte_init(sb)
    [bad] = sb.launch("train.spot", spec={"queue": "gpu-a", "interruptible": False})
    [good] = sb.launch("train.spot", spec={"queue": "gpu-b", "interruptible": False})
    sb.wait_idle()

    assert sb.run(good)["phase"] == "SUCCEEDED"
    failure = flyte.remote.Run.get(name=bad).first_failure()  # type: ignore[attr-defined]
    err = convert_error_info_to_native(failure.pb2.error_info)
    assert isinstance(err, flyte.errors.GPUFaultSystemError)
    assert (err.code, err.fault_code, err.fault_kind, err.severity) == ("GpuXidError", 48, "xid", "critical")


def test_a_task_interface_covers_every_input_its_runs_are_given(sandbox_factory: Any) -> None:
    import flyte

    sb = sandbox_factory(
        workload={
            "tasks": {"train.fit": {"behaviour": ["fail", "succeed"]}},
            "runs": [{"task": "train.fit", "inputs": {"lr": 0.1}}],
        },
        time_scale=0.01,
    )
    flyte_init(sb)
    sb.wait_idle()
    [run] = sb.runs()

    flyte.with_runcontext(name="new-lr").rerun(run["name"], lr=0.2)

    assert sb.wait_for("new-lr")["inputs"] == {"lr": 0.2}


def test_env_and_envs_both_declare_a_run_env() -> None:
    w = workload_from_dict(
        {"tasks": {"t": {}}, "runs": [{"task": "t", "env": {"A": "1"}}, {"task": "t", "envs": {"B": "2"}}]}
    )

    assert [r.envs for r in w.runs] == [{"A": "1"}, {"B": "2"}]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "tasks: {t: {}}\nruns:\n  - {task: t, inputs: {lr: 0.1}}\n  - {task: t, inputs: {lr: 1}}\n",
            ":4:",
            "runs[1].inputs.lr: input 'lr' of task 't' is int here but float at runs[0].inputs.lr; "
            "a task has one interface, give every run the same type",
        ),
        (
            "tasks: {t: {}}\nruns:\n  - {task: t, cache_lookup_scope: everywhere}\n",
            ":3:",
            "runs[0].cache_lookup_scope: Input should be 'global' or 'project-domain'",
        ),
        (
            "tasks:\n  t:\n    when:\n      - spec: {queue: a}\n        behaviour: explode\n",
            ":5:",
            "tasks.t.when[0].behaviour[0]: Input should be 'succeed', 'fail', 'timeout' or 'hang'",
        ),
        (
            "tasks:\n  t:\n    error: {gpu_fault: {kind: PCI}}\n",
            ":3:",
            "tasks.t.error.gpu_fault.kind: Input should be 'XID' or 'SXID'",
        ),
    ],
    ids=["input-type-conflict", "bad-cache-scope", "bad-when-behaviour", "bad-gpu-fault-kind"],
)
def test_a_bad_run_spec_or_when_rule_is_refused_with_its_location(
    tmp_path: Any, text: str, where: str, message: str
) -> None:
    path = tmp_path / "workload.yaml"
    path.write_text(text)

    with pytest.raises(WorkloadError) as info:
        load_workload(path)

    shown = str(info.value) + "\n" + "\n".join(str(p) for p in info.value.problems)
    assert message in shown
    assert f"{path}{where}" in shown
