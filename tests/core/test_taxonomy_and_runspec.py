"""Failure classes (flyte's error taxonomy as data), the built-in never-rerun rule for
``NonRecoverableError``, and the rerun invariant on ``RunSpecView`` — pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.decide import decide, explain
from rerund.core.model import ErrorInfo, GpuFault, Phase, RunOverrides, RunSpecView
from rerund.core.runspec import expected_rerun_spec, spec_changes
from rerund.core.taxonomy import FAILURE_CLASSES, classify, user_code

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

CLASSES = [
    ("oom", ErrorInfo(kind="USER", code="OOMKilled"), Phase.FAILED, {"oom", "user"}),
    ("oom-any-case", ErrorInfo(kind="USER", code="CudaOom"), Phase.FAILED, {"oom", "user"}),
    ("gpu-code", ErrorInfo(kind="SYSTEM", code="GpuEccUncorrectable"), Phase.FAILED, {"gpu_fault", "system"}),
    (
        "gpu-fault-field",
        ErrorInfo(kind="SYSTEM", code="RuntimeError", gpu_fault=GpuFault(kind="XID", code=79)),
        Phase.FAILED,
        {"gpu_fault", "system"},
    ),
    ("interrupted", ErrorInfo(kind="USER", code="Interrupted"), Phase.FAILED, {"interrupted", "user"}),
    (
        "interrupted-system",
        ErrorInfo(kind="SYSTEM", code="TaskInterrupted"),
        Phase.FAILED,
        {"interrupted", "system"},
    ),
    ("image-pull", ErrorInfo(kind="USER", code="ImagePullBackOff"), Phase.FAILED, {"image", "user"}),
    ("invalid-image", ErrorInfo(kind="USER", code="InvalidImageName"), Phase.FAILED, {"image", "user"}),
    (
        "queued-timeout",
        ErrorInfo(code="MaxQueuedTimeExceededError"),
        Phase.TIMED_OUT,
        {"timeout", "queued_timeout"},
    ),
    (
        "server-queued-code",
        ErrorInfo(code="QUEUED_TIMEOUT_EXCEEDED"),
        Phase.FAILED,
        {"timeout", "queued_timeout"},
    ),
    (
        "runtime-timeout",
        ErrorInfo(code="MAX_RUNTIME_EXCEEDED"),
        Phase.TIMED_OUT,
        {"timeout", "runtime_timeout"},
    ),
    ("deadline", ErrorInfo(code="DeadlineExceededError"), Phase.FAILED, {"timeout", "deadline"}),
    ("timed-out-phase", ErrorInfo(), Phase.TIMED_OUT, {"timeout"}),
    (
        "retries-exhausted-prefix",
        ErrorInfo(kind="USER", code="RetriesExhaustedError|OOMKilled"),
        Phase.FAILED,
        {"retries_exhausted", "oom", "user"},
    ),
    (
        "resource-exhausted",
        ErrorInfo(kind="USER", code="ResourceExhausted"),
        Phase.FAILED,
        {"resource_exhausted", "user"},
    ),
    ("slow-down", ErrorInfo(kind="USER", code="SlowDownError"), Phase.FAILED, {"resource_exhausted", "user"}),
    (
        "non-recoverable",
        ErrorInfo(kind="USER", code="NonRecoverableError"),
        Phase.FAILED,
        {"non_recoverable", "user"},
    ),
    ("plain", ErrorInfo(kind="USER", code="ValueError"), Phase.FAILED, {"user"}),
]


@pytest.mark.parametrize(
    ("error", "phase", "expected"), [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES]
)
def test_classify_follows_the_flyte_taxonomy(error: ErrorInfo, phase: Phase, expected: set[str]) -> None:
    assert classify(error, phase) == expected


@given(
    kind=st.sampled_from(["USER", "SYSTEM", "UNSPECIFIED"]),
    code=st.text(max_size=40),
    phase=st.sampled_from(list(Phase)),
    fault=st.booleans(),
)
def test_classify_is_total_and_names_only_known_classes(
    kind: Any, code: str, phase: Phase, fault: bool
) -> None:
    error = ErrorInfo(kind=kind, code=code, gpu_fault=GpuFault() if fault else None)
    assert classify(error, phase) <= set(FAILURE_CLASSES)


def test_the_user_code_is_the_part_after_the_server_prefix() -> None:
    assert user_code("RetriesExhausted|NonRecoverableError") == "NonRecoverableError"
    assert user_code(" OOMKilled ") == "OOMKilled"


NON_RECOVERABLE_POLICIES = """\
policies:
  - name: everything
    match: {phases: [FAILED, TIMED_OUT, ABORTED]}
    retry: {max_attempts: 5}
"""


@pytest.mark.parametrize("code", ["NonRecoverableError", "RetriesExhausted|NonRecoverableError"])
def test_a_non_recoverable_error_is_never_rerun_whatever_the_policies(
    policies, make_failure, code: str
) -> None:
    ps = policies(NON_RECOVERABLE_POLICIES)
    failure = make_failure(error={"kind": "USER", "code": code, "message": "config is wrong"})

    d = decide(failure, ps, T0)
    e = explain(failure, ps, T0)

    assert (d.decision, d.policy) == ("ignore", None)
    assert d.reason == (
        f"run 'abc123' failed with NonRecoverableError (code {code!r}): the task declared that retries "
        "are irrelevant; a built-in rule ahead of every policy never reruns it"
    )
    assert e.decision == d and len(e.trace) == 1 and e.trace[0].startswith("built-in rule non_recoverable")


SOURCES = st.builds(
    RunSpecView,
    env=st.dictionaries(
        st.sampled_from(["A", "B", "LOG_LEVEL", "LOG_FORMAT"]), st.text(max_size=5), max_size=4
    ),
    labels=st.dictionaries(st.sampled_from(["team", "rerund-attempt"]), st.text(max_size=5), max_size=2),
    annotations=st.dictionaries(st.sampled_from(["owner", "cost"]), st.text(max_size=5), max_size=2),
    queue=st.sampled_from(["", "spot-pool"]),
    interruptible=st.sampled_from([None, True, False]),
    service_account=st.sampled_from(["", "trainer"]),
    overwrite_cache=st.booleans(),
    cache_lookup_scope=st.sampled_from(["", "global", "project-domain"]),
    max_action_concurrency=st.sampled_from([0, 4]),
)
OVERRIDES = st.builds(
    RunOverrides,
    queue=st.sampled_from([None, "ondemand-pool"]),
    interruptible=st.sampled_from([None, True, False]),
    service_account=st.sampled_from([None, "other"]),
    overwrite_cache=st.sampled_from([None, True]),
    annotations=st.dictionaries(st.sampled_from(["owner", "why"]), st.text(max_size=5), max_size=2),
    max_action_concurrency=st.sampled_from([None, 2, 8]),
)


@given(
    source=SOURCES, overrides=OVERRIDES, env=st.dictionaries(st.sampled_from(["A", "C"]), st.text(max_size=3))
)
def test_a_rerun_keeps_every_source_value_the_policy_does_not_set(
    source: RunSpecView, overrides: RunOverrides, env: dict[str, str]
) -> None:
    after = expected_rerun_spec(source, env=env, labels={"rerund-attempt": "1"}, overrides=overrides)

    assert after.env == {**source.env, **env}
    assert after.cache_lookup_scope == source.cache_lookup_scope
    assert after.annotations == {**source.annotations, **overrides.annotations}
    for key in ("queue", "interruptible", "service_account", "overwrite_cache", "max_action_concurrency"):
        set_to = getattr(overrides, key)
        assert getattr(after, key) == (getattr(source, key) if set_to is None else set_to)
    # The diff names exactly the fields that differ, and nothing when nothing does.
    changed = spec_changes(source, after)
    assert (changed == []) == (source == after)
    assert all("LOG_" not in line or line.startswith("env LOG_") for line in changed)


def test_spec_changes_never_show_env_values() -> None:
    before = RunSpecView(env={"TOKEN": "old-secret"})
    after = RunSpecView(env={"TOKEN": "new-secret", "NEW": "also-secret"})

    changed = spec_changes(before, after)

    assert changed == [
        "env NEW: added <value not shown>",
        "env TOKEN: <value not shown> -> <value not shown>",
    ]
    assert not any("secret" in line for line in changed)
