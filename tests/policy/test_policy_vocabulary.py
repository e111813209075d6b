"""The rerun vocabulary through every tool: RunSpec keys in ``retry:`` and ``escalate:``
(queue, interruptible, service_account, overwrite_cache, annotations, max_action_concurrency,
force_rerun_actions) and the failure classes / ``gpu_fault`` of ``match.error`` — each through
``check`` (file:line:col errors), ``explain`` (the diff), ``test`` (policy tests) and
``schema``."""

from __future__ import annotations

import json
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest

from rerund.cli import main
from rerund.core.model import RunOverrides
from rerund.core.taxonomy import FAILURE_CLASSES
from rerund.errors import PolicyError
from rerund.policy import load_policies
from rerund.policy.model import FailureClass
from rerund.policy.schema import policy_schema

SPOT = """\
apiVersion: rerund/v1
policies:
  - name: spot-preemption
    match:
      error: {classes: [interrupted]}
    retry:
      scope: recover
      max_attempts: 3
      backoff: {initial: 10s}
      force_rerun_actions: [a1]
      escalate:
        2:
          queue: ondemand-pool
          interruptible: false
          service_account: trainer-ondemand
          overwrite_cache: true
          annotations: {rerund/capacity: on-demand}
          max_action_concurrency: 8
  - name: gpu-xid
    match:
      error: {gpu_fault: {codes: [48, 79], severities: [CRITICAL]}}
    retry: {scope: recover, queue: gpu-b}
"""

SOURCE_SPEC = {
    "env": {"LOG_LEVEL": "10", "LOG_FORMAT": "json", "USER_LOG_LEVEL": "10"},
    "labels": {"team": "ml"},
    "queue": "spot-pool",
    "interruptible": True,
    "service_account": "trainer",
    "cache_lookup_scope": "project-domain",
    "max_action_concurrency": 4,
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def failure_doc(tmp_path: Path, **fields: Any) -> Path:
    data = {
        "run": "train-1",
        "failed_at": "2026-11-24T10:00:00Z",
        "error": {"kind": "USER", "code": "Interrupted", "message": "node preempted"},
        "spec": SOURCE_SPEC,
        **fields,
    }
    return write(tmp_path, "failure.json", json.dumps(data))


# -- load / compile ---------------------------------------------------------------------------


def test_every_run_spec_key_compiles_into_the_plan_and_its_escalation(tmp_path: Path) -> None:
    policies = load_policies([write(tmp_path, "p.yaml", SPOT)])
    plan = policies.rules[0].retry
    assert plan is not None

    assert plan.run_overrides(1) == RunOverrides(force_rerun_actions=("a1",))
    assert plan.run_overrides(2) == RunOverrides(
        queue="ondemand-pool",
        interruptible=False,
        service_account="trainer-ondemand",
        overwrite_cache=True,
        annotations={"rerund/capacity": "on-demand"},
        max_action_concurrency=8,
        force_rerun_actions=("a1",),
    )


def test_failure_class_names_are_one_list() -> None:
    assert set(typing.get_args(FailureClass)) == set(FAILURE_CLASSES)


# -- check ------------------------------------------------------------------------------------

BAD = [
    (
        "force-outside-recover",
        "policies:\n  - name: a\n    retry: {scope: run, force_rerun_actions: [a1]}\n",
        "4:46: policies[0].retry.force_rerun_actions: force_rerun_actions only applies with scope: recover "
        "(it names succeeded actions a recover rerun re-executes), but this policy's scope is run; set "
        "scope: recover or remove force_rerun_actions",
    ),
    (
        "force-in-an-escalation-outside-recover",
        "policies:\n  - name: a\n    retry:\n      escalate:\n        2: {force_rerun_actions: [a1]}\n",
        "6:34: policies[0].retry.escalate[2].force_rerun_actions: force_rerun_actions only applies with "
        "scope: recover",
    ),
    (
        "overwrite-cache-false",
        "policies:\n  - name: a\n    retry: {overwrite_cache: false}\n",
        "4:30: policies[0].retry.overwrite_cache: overwrite_cache: false cannot be applied: the flyte SDK's "
        "rerun path can only turn overwrite_cache on; remove the key to keep the source run's setting",
    ),
    (
        "concurrency-one",
        "policies:\n  - name: a\n    retry:\n      escalate: {2: {max_action_concurrency: 1}}\n",
        "5:46: policies[0].retry.escalate[2].max_action_concurrency: max_action_concurrency must be at "
        "least 2, got 1: 1 would deadlock the run",
    ),
    (
        "concurrency-above-uint32",
        "policies:\n  - name: a\n    retry: {max_action_concurrency: 4294967296}\n",
        "4:37: policies[0].retry.max_action_concurrency: max_action_concurrency must be at most "
        "4294967295 (RunSpec.max_action_concurrency is a uint32), got 4294967296; remove the key to keep "
        "the source run's setting",
    ),
    (
        "annotation-key-not-kubernetes",
        "policies:\n  - name: a\n    retry: {annotations: {'a b=': x}}\n",
        "4:26: policies[0].retry.annotations: annotation key 'a b=' is not a Kubernetes annotation key "
        "(the rerun's pods carry its annotations); write 1-63 letters, digits, '-', '_' or '.', starting "
        "and ending with a letter or digit, optionally after a DNS prefix and '/' (e.g. example.com/team)",
    ),
    (
        "annotation-key-too-long",
        "policies:\n  - name: a\n    retry: {annotations: {" + "k" * 64 + ": x}}\n",
        "4:26: policies[0].retry.annotations: annotation key '" + "k" * 64 + "' is not a Kubernetes "
        "annotation key",
    ),
    (
        "annotation-reserved",
        "policies:\n  - name: a\n    retry:\n      escalate: {2: {annotations: {rerund-issue: x}}}\n",
        "5:35: policies[0].retry.escalate[2].annotations: annotation 'rerund-issue' is set by rerund "
        "itself; choose a key not starting with 'rerund-'",
    ),
    (
        "annotations-too-large",
        "policies:\n  - name: a\n    retry: {annotations: {big: " + "v" * 262_200 + "}}\n",
        "4:26: policies[0].retry.annotations: the annotations take 262203 bytes; Kubernetes allows 262144 "
        "in all (keys and values): shorten them",
    ),
    (
        "empty-queue",
        "policies:\n  - name: a\n    retry: {queue: ''}\n",
        "4:20: policies[0].retry.queue: String should have at least 1 character",
    ),
    (
        "interruptible-not-a-bool",
        "policies:\n  - name: a\n    retry: {interruptible: maybe}\n",
        "4:28: policies[0].retry.interruptible: expected true or false, got 'maybe'",
    ),
    (
        "unknown-class",
        "policies:\n  - name: a\n    match: {error: {classes: [oom, preempted]}}\n",
        "4:36: policies[0].match.error.classes[1]: 'preempted' is not allowed; use 'oom', 'gpu_fault', "
        "'interrupted', 'image', 'timeout', 'queued_timeout', 'runtime_timeout', 'deadline', "
        "'retries_exhausted', 'resource_exhausted', 'non_recoverable', 'user' or 'system'",
    ),
    (
        "bad-gpu-severity",
        "policies:\n  - name: a\n    match: {error: {gpu_fault: {severities: [FATAL]}}}\n",
        "4:46: policies[0].match.error.gpu_fault.severities[0]: 'FATAL' is not allowed; "
        "use 'USER', 'WARN' or 'CRITICAL'",
    ),
    (
        "unknown-gpu-key",
        "policies:\n  - name: a\n    match: {error: {gpu_fault: {xid: [79]}}}\n",
        "4:33: policies[0].match.error.gpu_fault.xid: unknown key 'xid'; "
        "allowed keys: codes, severities, kinds",
    ),
]


@pytest.mark.parametrize(("body", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_refuses_a_bad_key_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    path = write(tmp_path, "p.yaml", "apiVersion: rerund/v1\n" + body)

    assert main(["check", str(path)]) == 1

    out = capsys.readouterr().out
    assert f"{path}:{expected}" in out, out
    with pytest.raises(PolicyError):
        load_policies([path])


def test_check_accepts_every_new_key_and_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classes = ", ".join(FAILURE_CLASSES)
    path = write(
        tmp_path, "p.yaml", SPOT + f"  - name: all-classes\n    match: {{error: {{classes: [{classes}]}}}}\n"
    )

    assert main(["check", str(path)]) == 0
    assert "ok: 3 policies in 1 file: spot-preemption, gpu-xid, all-classes" in capsys.readouterr().out


# -- explain ----------------------------------------------------------------------------------


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], failure: Path, fmt: str = "text") -> str:
    policies = write(tmp_path, "p.yaml", SPOT)
    now = "2026-11-24T10:00:00Z"
    code = main(
        ["explain", "--policies", str(policies), "--failure", str(failure), "--now", now, "--format", fmt]
    )
    assert code == 0
    return capsys.readouterr().out


def test_explain_shows_the_diff_of_the_escalated_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = failure_doc(
        tmp_path,
        run="train-1-retry-1",
        root="train-1",
        attempt=1,
        spec={**SOURCE_SPEC, "labels": {"team": "ml", "rerund-root": "train-1", "rerund-attempt": "1"}},
    )

    out = explain(tmp_path, capsys, failure)

    assert "overrides:  queue=ondemand-pool, interruptible=false, service_account=trainer-ondemand" in out
    assert "changes:    the rerun's RunSpec against the source run's\n" in out
    for line in [
        "  ~ labels rerund-attempt: '1' -> '2'",
        "  ~ labels rerund-policy: added 'spot-preemption'",
        "  ~ annotations rerund/capacity: added 'on-demand'",
        "  ~ queue: 'spot-pool' -> 'ondemand-pool'",
        "  ~ interruptible: true -> false",
        "  ~ service_account: 'trainer' -> 'trainer-ondemand'",
        "  ~ overwrite_cache: false -> true",
        "  ~ max_action_concurrency: 4 -> 8",
        "  ~ force_rerun_actions: a1",
    ]:
        assert line + "\n" in out, out
    assert "cache_lookup_scope" not in out.split("trace:")[0]  # kept: not a change
    assert "LOG_" not in out  # the source's log settings are kept
    assert "error.classes: the failure is interrupted" in out


def test_explain_json_carries_the_overrides_and_the_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = json.loads(explain(tmp_path, capsys, failure_doc(tmp_path), fmt="json"))

    assert out["overrides"] == {"force_rerun_actions": ["a1"]}
    assert out["changes"] == [
        "labels rerund-attempt: added '1'",
        "labels rerund-policy: added 'spot-preemption'",
        "labels rerund-root: added 'train-1'",
        "force_rerun_actions: a1",
    ]


def test_explain_without_a_source_spec_says_what_the_rerun_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = failure_doc(tmp_path, run="x-1", root="x", attempt=1, spec=None)

    out = explain(tmp_path, capsys, failure)

    assert "(the source's spec is not known: give the failure a spec: to see values)" in out
    assert "  ~ queue: the source's value -> 'ondemand-pool'\n" in out
    assert "  ~ interruptible: the source's value -> false\n" in out


def test_explain_matches_a_gpu_fault_by_code_and_severity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = failure_doc(
        tmp_path,
        error={
            "kind": "SYSTEM",
            "code": "GpuFallenOffBus",
            "gpu_fault": {"kind": "XID", "code": 79, "name": "GPU_FALLEN_OFF_BUS", "severity": "CRITICAL"},
        },
    )

    out = explain(tmp_path, capsys, failure)

    assert "error.classes: the failure is gpu_fault, not any of [interrupted]" in out
    assert "error.gpu_fault: XID 79 (GPU_FALLEN_OFF_BUS), severity CRITICAL is selected" in out
    assert "  ~ queue: 'spot-pool' -> 'gpu-b'\n" in out


def test_explain_says_a_non_recoverable_error_is_never_rerun_before_any_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = failure_doc(
        tmp_path, error={"kind": "USER", "code": "NonRecoverableError", "message": "bad config"}
    )

    out = explain(tmp_path, capsys, failure)

    assert "decision:   ignore\n" in out
    assert (
        "reason:     run 'train-1' failed with NonRecoverableError (code 'NonRecoverableError'): the task "
        "declared that retries are irrelevant; a built-in rule ahead of every policy never reruns it"
    ) in out
    assert "1. built-in rule non_recoverable: the error is flyte's NonRecoverableError, never rerun" in out
    assert "spot-preemption" not in out  # no policy was even tried


# -- test -------------------------------------------------------------------------------------


def test_policy_tests_expect_overrides_and_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "p.yaml", SPOT)
    cases = write(
        tmp_path,
        "p.test.yaml",
        """\
        policies: p.yaml
        failure: {failed_at: 2026-11-24T10:00:00Z, error: {kind: USER, code: Interrupted}}
        cases:
          - name: attempt 2 moves to on-demand
            failure:
              run: t-1
              root: t
              attempt: 1
              spec: {queue: spot-pool, interruptible: true}
            expect:
              decision: rerun
              overrides:
                queue: ondemand-pool
                interruptible: false
                service_account: trainer-ondemand
                overwrite_cache: true
                annotations: {rerund/capacity: on-demand}
                max_action_concurrency: 8
                force_rerun_actions: [a1]
              changes:
                - "queue: 'spot-pool' -> 'ondemand-pool'"
                - "interruptible: true -> false"
                - "service_account: unset -> 'trainer-ondemand'"
                - "overwrite_cache: false -> true"
                - "annotations rerund/capacity: added 'on-demand'"
                - "max_action_concurrency: unset -> 8"
                - "force_rerun_actions: a1"
          - name: a wrong expectation fails
            failure: {run: t}
            expect: {changes: ["queue: 'spot-pool' -> 'ondemand-pool'"]}
        """,
    )

    assert main(["test", str(cases)]) == 1

    out = capsys.readouterr().out
    assert f"{cases}::attempt 2 moves to on-demand PASSED" in out
    assert f"{cases}::a wrong expectation fails FAILED" in out
    assert "    changes: expected \"queue: 'spot-pool' -> 'ondemand-pool'\" among [" in out


# -- schema -----------------------------------------------------------------------------------


def test_the_schema_has_every_key_and_class() -> None:
    defs = policy_schema()["$defs"]
    keys = {
        "queue",
        "interruptible",
        "service_account",
        "overwrite_cache",
        "annotations",
        "max_action_concurrency",
        "force_rerun_actions",
    }

    assert keys <= set(defs["RetrySpec"]["properties"])
    assert keys <= set(defs["OverrideSpec"]["properties"])
    classes = defs["ErrorSelector"]["properties"]["classes"]["anyOf"][0]["items"]["enum"]
    assert set(classes) == set(FAILURE_CLASSES)
    assert set(defs["GpuFaultSelector"]["properties"]) == {"codes", "severities", "kinds"}
    assert defs["RetrySpec"]["properties"]["max_action_concurrency"]["anyOf"][0]["minimum"] == 2
    assert defs["RetrySpec"]["properties"]["overwrite_cache"]["anyOf"][0] == {"const": True}


# -- the library ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_rerund_test_policies_runs_the_library_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(REPO / "policies")]) == 0

    out = capsys.readouterr().out.splitlines()
    library = [line for line in out if "library.test.yaml::" in line]
    assert len(library) == 13 and all(line.endswith(" PASSED") for line in library)
    for case in (
        "preempted again, attempt 2 moves to the on-demand queue without interruptible",
        "a GPU fault the task caused is never rerun",
        "an invalid image name is never rerun",
        "a run queued too long is rerun once on another queue",
    ):
        assert any(f"::{case} PASSED" in line for line in library), case


def test_the_library_loads_ahead_of_the_demo_policies_as_the_demo_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", str(REPO / "policies" / "library"), str(REPO / "policies")]) == 0
    assert capsys.readouterr().out.startswith(
        "ok: 9 policies in 8 files: wait-for-fix, gpu-fault-caused-by-the-task, gpu-fault, image-never, "
        "oom-more-memory, spot-preemption, queued-too-long, never-retry-bad-input, transient-network;"
    )


# -- every class through explain and test ------------------------------------------------------

CLASS_FAILURES: dict[str, dict[str, Any]] = {
    "oom": {"error": {"kind": "USER", "code": "OOMKilled"}},
    "gpu_fault": {"error": {"kind": "SYSTEM", "code": "GpuNvlinkError"}},
    "interrupted": {"error": {"kind": "USER", "code": "Interrupted"}},
    "image": {"error": {"kind": "USER", "code": "ImagePullBackOff"}},
    "timeout": {"phase": "TIMED_OUT", "error": {"kind": "USER", "code": ""}},
    "queued_timeout": {"phase": "TIMED_OUT", "error": {"code": "QUEUED_TIMEOUT_EXCEEDED"}},
    "runtime_timeout": {"phase": "TIMED_OUT", "error": {"code": "MaxRuntimeExceededError"}},
    "deadline": {"error": {"kind": "USER", "code": "DeadlineExceededError"}},
    "retries_exhausted": {"error": {"kind": "USER", "code": "RetriesExhaustedError|ValueError"}},
    "resource_exhausted": {"error": {"kind": "USER", "code": "SlowDownError"}},
    "user": {"error": {"kind": "USER", "code": "ValueError"}},
    "system": {"error": {"kind": "SYSTEM", "code": "ConnectionResetError"}},
}


def test_every_class_but_non_recoverable_has_a_failure_here() -> None:
    assert set(CLASS_FAILURES) == set(FAILURE_CLASSES) - {"non_recoverable"}  # that one: built in


@pytest.mark.parametrize("cls", sorted(CLASS_FAILURES))
def test_each_class_selects_its_failures_through_explain_and_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cls: str
) -> None:
    policy = write(
        tmp_path,
        "p.yaml",
        f"""\
        apiVersion: rerund/v1
        policies:
          - name: by-class
            match: {{phases: [FAILED, TIMED_OUT], error: {{classes: [{cls}]}}}}
            retry: {{scope: run}}
        """,
    )
    plain = failure_doc(tmp_path, error={"kind": "UNSPECIFIED", "code": "Nothing", "message": "x"})
    matching = write(
        tmp_path,
        "matching.json",
        json.dumps({"run": "r1", "failed_at": "2026-11-24T10:00:00Z", **CLASS_FAILURES[cls]}),
    )
    now = "2026-11-24T10:00:00Z"

    assert main(["explain", "--policies", str(policy), "--failure", str(matching), "--now", now]) == 0
    out = capsys.readouterr().out
    assert "decision:   rerun" in out and "error.classes: the failure is " in out and cls in out
    assert main(["explain", "--policies", str(policy), "--failure", str(plain), "--now", now]) == 0
    assert "decision:   ignore" in capsys.readouterr().out

    case = json.dumps({"run": "r1", **CLASS_FAILURES[cls]})
    cases = write(
        tmp_path,
        "p.test.yaml",
        f"""\
        policies: p.yaml
        failure: {{failed_at: 2026-11-24T10:00:00Z}}
        cases:
          - name: the class selects the failure
            failure: {case}
            expect: {{decision: rerun, policy: by-class}}
        """,
    )
    assert main(["test", str(cases)]) == 0
    assert "::the class selects the failure PASSED" in capsys.readouterr().out
