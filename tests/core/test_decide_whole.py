# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""Whole decisions, one per path through ``decide``: every field (the run decided about, its
lineage root, the attempt, the relaunch target) and every line of ``explain``'s trace, held
exactly. The reason is the log line and the audit record; the trace is what an operator reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rerund.core.decide import decide, explain
from rerund.core.fingerprints import failure_fingerprint
from rerund.core.model import (
    GiveUp,
    Ignore,
    RelaunchTarget,
    Rerun,
    RunOverrides,
    RunSpecView,
    Scope,
    WaitForVersion,
)
from rerund.core.resources import ResourcesView

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # as the make_failure fixture's failed_at
FLAT = "backoff: {initial: 10s, factor: 1, max: 10s, jitter: 0}"
NET = f"policies:\n  - name: net\n    retry: {{max_attempts: 2, {FLAT}}}\n"
FOUR = ResourcesView(requests={"memory": "4Gi"}, limits={"memory": "4Gi"})
HEAD = "{origin} matches: phases: FAILED is in [FAILED, TIMED_OUT]"
BACKOFF = "backoff: base = min(10s * 1^0, 10s) = 10s; jitter ±0 -> delay 10s; due at 2026-11-24T10:00:10Z"


def _explain(policies, make_failure, body: str, at: timedelta = timedelta(0), **failure: Any):
    ps = policies(body)
    result = explain(make_failure(**failure), ps, T0 + at)
    assert decide(make_failure(**failure), ps, T0 + at) == result.decision
    # Every decision carries its failure's fingerprint; the rest of each decision is held whole below.
    assert result.decision.fingerprint == failure_fingerprint(make_failure(**failure)) != ""
    origin = f"policy {ps.rules[0].name!r} ({ps.rules[0].origin})" if len(ps) else ""
    return replace(result.decision, fingerprint=""), [
        line.replace(origin, "{origin}") if origin else line for line in result.trace
    ]


IGNORED = [
    (
        "a-reproduction-rerun",
        {"labels": {"rerund-repro": "daily"}, "root": "r0"},
        "run 'abc123' is a rerun of reproduction check 'daily': its failure is the check's result (`rerund repro history`), it is not rerun",
        "r0",
        ["label rerund-repro=daily: a reproduction rerun, never retried: ignore"],
    ),
    (
        "a-long-forged-attempt-label-is-cut-at-40",
        {"labels": {"rerund-attempt": "x" * 50}},
        "run 'abc123' has label rerund-attempt='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..., which rerund never writes (a whole number 0..1000): a forged or damaged lineage is not rerun",
        "abc123",
        ["label rerund-attempt='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not an attempt number: ignore"],
    ),
    (
        "a-forged-attempt-label-of-40-is-shown-whole",
        {"labels": {"rerund-attempt": "y" * 38}},
        "run 'abc123' has label rerund-attempt='yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy', which rerund never writes (a whole number 0..1000): a forged or damaged lineage is not rerun",
        "abc123",
        ["label rerund-attempt='yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' is not an attempt number: ignore"],
    ),
    (
        "non-recoverable",
        {"error": {"kind": "USER", "code": "NonRecoverableError", "message": "bad"}, "root": "r0"},
        "run 'abc123' failed with NonRecoverableError (code 'NonRecoverableError'): the task declared that retries are irrelevant; a built-in rule ahead of every policy never reruns it",
        "r0",
        [
            "built-in rule non_recoverable: the error is flyte's NonRecoverableError, never rerun (checked before any policy): ignore"
        ],
    ),
]


@pytest.mark.parametrize(
    ("failure", "reason", "root", "trace"), [c[1:] for c in IGNORED], ids=[c[0] for c in IGNORED]
)
def test_a_failure_ignored_before_any_policy(policies, make_failure, failure, reason, root, trace):
    decision, lines = _explain(policies, make_failure, NET, **failure)
    assert decision == Ignore(reason=reason, source_run="abc123", root=root, policy=None)
    assert lines == trace


def test_no_match_and_retry_false_are_ignored_with_the_lineage(policies, make_failure):
    decision, lines = _explain(policies, make_failure, "policies: []\n", root="r0")
    assert decision == Ignore(
        reason="no policy matches run 'abc123' (0 tried): it is not rerun", source_run="abc123", root="r0"
    )
    assert lines == ["no policy matched: ignore"]
    decision, lines = _explain(policies, make_failure, "policies: [{name: never, retry: false}]\n", root="r0")
    assert decision == Ignore(
        reason="policy 'never' never reruns run 'abc123' (retry: false)",
        source_run="abc123",
        root="r0",
        policy="never",
    )


def test_a_lineage_at_max_attempts_gives_up(policies, make_failure):
    decision, lines = _explain(policies, make_failure, NET, root="r0", attempt=2)
    assert decision == GiveUp(
        reason="policy 'net' gives up on run 'abc123': attempt 3 would exceed max_attempts=2",
        source_run="abc123",
        root="r0",
        policy="net",
        attempt=3,
    )
    assert lines[-1] == "give up"


def test_failed_action_at_the_root_action_falls_back_to_run(policies, make_failure):
    decision, lines = _explain(
        policies,
        make_failure,
        f"policies:\n  - name: fa\n    retry: {{scope: failed_action, {FLAT}}}\n",
        action="a0",
    )
    assert isinstance(decision, Rerun)
    assert (decision.scope, decision.action, decision.root, decision.source_run) == (
        Scope.RUN,
        None,
        "abc123",
        "abc123",
    )
    assert "scope run (the root action a0 failed)" in decision.reason
    assert (
        lines[3]
        == "scope run; scope failed_action falls back to run: the failing action is the root action a0"
    )


LATEST = f"policies:\n  - name: lat\n    retry: {{scope: relaunch, task_version: latest, {FLAT}}}\n"


def test_latest_before_any_version_is_listed_relaunches_the_latest_deployed(policies, make_failure):
    decision, lines = _explain(policies, make_failure, LATEST, task_version="v1")
    assert isinstance(decision, Rerun)
    assert decision.relaunch == RelaunchTarget(task="train.fit", version="", task_version="latest")
    assert decision.reason == (
        "policy 'lat' relaunches run 'abc123' as 'abc123-retry-1': attempt 1 of max_attempts=3, scope relaunch (task 'train.fit' version 'latest', task_version: latest), due at 2026-11-24T10:00:10Z after a 10s backoff; changes: task version: v1 -> the latest deployed, resources: as deployed with that version"
    )
    assert lines == [
        HEAD,
        "attempt: lineage 'abc123' has 0 rerun(s) so far; the next would be attempt 1 of max_attempts=3",
        "task_version: latest: task 'train.fit' version the latest deployed (not listed yet; resolved when relaunched)",
        "resources: as deployed with that version (no resources: rules)",
        BACKOFF,
        "scope relaunch",
        "name: <root>-retry-<attempt> of lineage 'abc123' -> 'abc123-retry-1'",
        "changes: task version: v1 -> the latest deployed, resources: as deployed with that version",
        "relaunch as 'abc123-retry-1' at 2026-11-24T10:00:10Z",
    ]


def test_latest_of_a_run_whose_version_is_unknown_names_the_listed_one(policies, make_failure):
    decision, lines = _explain(policies, make_failure, LATEST, latest_version="v3")
    assert isinstance(decision, Rerun)
    assert decision.relaunch == RelaunchTarget(task="train.fit", version="v3", task_version="latest")
    assert "changes: task version: unknown -> v3, resources: as deployed with that version" in decision.reason
    assert lines[2] == "task_version: latest: task 'train.fit' version the latest deployed, 'v3'"


NEWER = f"policies:\n  - name: fix\n    retry: {{scope: relaunch, task_version: newer, max_attempts: 2, env: {{A: b}}, queue: q2, {FLAT}}}\n"


def test_newer_without_a_newer_version_waits_with_the_whole_rerun_ready(policies, make_failure):
    decision, lines = _explain(
        policies, make_failure, NEWER, task_version="v1", latest_version="v1", root="r0"
    )
    assert decision == WaitForVersion(
        reason="policy 'fix' waits for a fix of task 'train.fit': run 'abc123' failed on version 'v1'; relaunch 1 runs as 'r0-retry-1' once a newer version is deployed (the daemon lists the task's versions at each resync), at the latest until 2026-11-25T10:00:00Z (max_wait=1d), then gives up",
        source_run="abc123",
        root="r0",
        policy="fix",
        attempt=1,
        scope=Scope.RELAUNCH,
        name="r0-retry-1",
        env={"A": "b"},
        labels={"rerund-root": "r0", "rerund-attempt": "1", "rerund-policy": "fix"},
        inputs={},
        overrides=RunOverrides(queue="q2"),
        not_before=T0 + timedelta(days=1),
        relaunch=RelaunchTarget(task="train.fit", version="", task_version="newer"),
        budget="",
        task="train.fit",
        failed_version="v1",
    )
    assert lines == [
        HEAD,
        "attempt: lineage 'r0' has 0 rerun(s) so far; the next would be attempt 1 of max_attempts=2",
        "task_version: newer: task 'train.fit' failed on version 'v1'; latest deployed: 'v1'; no newer version yet (max_wait=1d, until 2026-11-25T10:00:00Z)",
        "wait for a newer version of 'train.fit' until 2026-11-25T10:00:00Z",
    ]


def test_newer_gives_up_after_max_wait_with_the_lineage(policies, make_failure):
    decision, lines = _explain(
        policies, make_failure, NEWER, at=timedelta(days=2), task_version="v1", root="r0", attempt=1
    )
    assert decision == GiveUp(
        reason="policy 'fix' gives up on run 'abc123': no version of task 'train.fit' newer than 'v1' was deployed within max_wait=1d (until 2026-11-25T10:00:00Z)",
        source_run="abc123",
        root="r0",
        policy="fix",
        attempt=2,
    )
    assert lines[2:] == [
        "task_version: newer: task 'train.fit' failed on version 'v1'; latest deployed: not listed yet; no newer version yet (max_wait=1d, until 2026-11-25T10:00:00Z)",
        "give up: max_wait is over",
    ]


def test_a_relaunch_at_its_cap_on_the_same_version_gives_up(policies, make_failure):
    body = f"policies:\n  - name: oom\n    retry: {{scope: relaunch, resources: {{memory: 2x, max: {{memory: 4Gi}}}}, {FLAT}}}\n"
    decision, lines = _explain(policies, make_failure, body, task_version="v1", resources=FOUR, root="r0")
    assert decision == GiveUp(
        reason="policy 'oom' gives up on run 'abc123': a relaunch on the same task version 'v1' would get no more resources (memory request stays 4Gi: it is already at or above its max 4Gi; memory limit stays 4Gi: it is already at or above its max 4Gi): it would fail the same way",
        source_run="abc123",
        root="r0",
        policy="oom",
        attempt=1,
    )
    assert lines[2:] == [
        "task_version: same: task 'train.fit' version the failed run's version 'v1'",
        "resources: memory 2x (max 4Gi) over the failed run's memory 4Gi (limit 4Gi) -> memory 4Gi (limit 4Gi); memory request stays 4Gi: it is already at or above its max 4Gi; memory limit stays 4Gi: it is already at or above its max 4Gi",
        "give up: the relaunch would change nothing that can help",
    ]


def test_a_relaunch_says_which_rules_could_not_apply(policies, make_failure):
    body = f"policies:\n  - name: oom\n    retry: {{scope: relaunch, resources: {{memory: 2x, gpu: 2x}}, {FLAT}}}\n"
    decision, lines = _explain(policies, make_failure, body, task_version="v1", resources=FOUR)
    assert isinstance(decision, Rerun)
    assert decision.relaunch == RelaunchTarget(
        task="train.fit",
        version="v1",
        task_version="same",
        resources=ResourcesView(requests={"memory": "8Gi"}, limits={"memory": "8Gi"}),
        resource_changes=(
            "memory request 4Gi -> 8Gi",
            "memory limit 4Gi -> 8Gi",
            "gpu 2x cannot apply: the source requests no gpu (set a value instead, e.g. gpu: 2 or 2x)",
        ),
    )
    assert lines[3] == (
        "resources: memory 2x, gpu 2x over the failed run's memory 4Gi (limit 4Gi) -> memory 8Gi (limit 8Gi); gpu 2x cannot apply: the source requests no gpu (set a value instead, e.g. gpu: 2 or 2x)"
    )
    assert lines[-1] == "relaunch as 'abc123-retry-1' at 2026-11-24T10:00:10Z"


def test_a_failure_at_the_end_of_time_is_decided(policies, make_failure):
    body = "policies:\n  - name: net\n    retry: {budget: {max_reruns: 1, per: 1d}}\n"
    end = datetime(9999, 12, 31, 12, tzinfo=UTC)
    d = decide(make_failure(failed_at=end, budget_used={"net": 1}), policies(body), end)
    assert d.decision == "defer"
    assert d.not_before == datetime.max.replace(tzinfo=UTC)


RECOVER = f"policies:\n  - name: rec\n    retry: {{scope: recover, env: {{LOG_LEVEL: debug}}, force_rerun_actions: [a1, a2], {FLAT}}}\n"


def test_with_the_source_spec_known_the_changes_are_exact(policies, make_failure):
    result = explain(make_failure(spec=RunSpecView(env={"LOG_FORMAT": "json"})), policies(RECOVER), T0)
    assert result.changes == [
        "env LOG_LEVEL: added <value not shown>",
        "labels rerund-attempt: added '1'",
        "labels rerund-policy: added 'rec'",
        "labels rerund-root: added 'abc123'",
        "env USER_LOG_LEVEL: added by the flyte SDK (absent from the source run)",
        "force_rerun_actions: a1, a2",
    ]


def test_every_sdk_variable_the_source_lacks_is_named(policies, make_failure):
    body = f"policies:\n  - name: net\n    retry: {{{FLAT}}}\n"
    result = explain(make_failure(spec=RunSpecView()), policies(body), T0)
    assert (
        "env LOG_LEVEL, LOG_FORMAT, USER_LOG_LEVEL: added by the flyte SDK (absent from the source run)"
        in result.changes
    )


def test_a_forged_attempt_label_of_41_characters_shown_is_cut(policies, make_failure):
    decision, _ = _explain(policies, make_failure, NET, labels={"rerund-attempt": "z" * 39})
    assert "rerund-attempt='zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz..., which" in decision.reason


def test_failed_action_reruns_the_action_that_failed_and_says_which(policies, make_failure):
    body = f"policies:\n  - name: fa\n    retry: {{scope: failed_action, {FLAT}}}\n"
    decision, lines = _explain(policies, make_failure, body, action="a3")
    assert isinstance(decision, Rerun)
    assert (decision.scope, decision.action) == (Scope.FAILED_ACTION, "a3")
    assert "scope failed_action (action 'a3')" in decision.reason
    assert lines[3] == "scope failed_action (action 'a3')"
    decision, _ = _explain(policies, make_failure, body, action="")
    assert isinstance(decision, Rerun) and decision.scope == Scope.RUN  # no action known: the run


def test_a_relaunch_deferred_by_its_budget_says_relaunch(policies, make_failure):
    body = f"policies:\n  - name: lat\n    retry: {{scope: relaunch, task_version: latest, budget: {{max_reruns: 1, per: 1h}}, {FLAT}}}\n"
    decision, lines = _explain(policies, make_failure, body, budget_used={"lat": 1})
    assert decision.decision == "defer"
    assert decision.reason.startswith(
        "policy 'lat' defers relaunch 1 of run 'abc123': budget 'lat' has used 1 of 1"
    )
    assert lines[-1] == "defer until 2026-11-24T11:00:00Z"


def test_same_of_a_run_whose_version_and_resources_are_unknown_relaunches_the_latest(policies, make_failure):
    body = f"policies:\n  - name: same\n    retry: {{scope: relaunch, resources: {{memory: 16Gi}}, {FLAT}}}\n"
    decision, lines = _explain(policies, make_failure, body)
    assert isinstance(decision, Rerun)
    assert decision.relaunch == RelaunchTarget(
        task="train.fit",
        version="",
        task_version="same",
        resources=ResourcesView(requests={"memory": "16Gi"}),
        resource_changes=("memory request unset -> 16Gi",),
    )
    assert (
        lines[2] == "task_version: same: task 'train.fit' version the failed run's version is unknown: latest"
    )


def test_a_wait_carries_the_escalated_settings_of_its_attempt(policies, make_failure):
    body = (
        "policies:\n  - name: fix\n    retry:\n      scope: relaunch\n      task_version: newer\n"
        "      max_attempts: 3\n      inputs: {batch: 16}\n"
        "      escalate: {2: {inputs: {batch: 8}, queue: big}, 3: {queue: huge}}\n"
    )
    decision, _ = _explain(policies, make_failure, body, task_version="v1", attempt=1)
    assert isinstance(decision, WaitForVersion)
    assert (decision.attempt, decision.inputs, decision.overrides) == (
        2,
        {"batch": 8},
        RunOverrides(queue="big"),
    )


def test_a_hand_built_policy_set_never_forces_actions_outside_recover(make_failure):
    from rerund.core.backoff import Backoff
    from rerund.core.rules import MatchSpec, Origin, PolicySet, RetryPlan, Rule

    plan = RetryPlan(
        scope=Scope.RUN,
        max_attempts=1,
        backoff=Backoff(initial=timedelta(0), factor=1.0, max=timedelta(0), jitter=0.0),
        run=RunOverrides(queue="q", force_rerun_actions=("a1",)),
    )
    ps = PolicySet([Rule("p", Origin("f", 1, 1), MatchSpec(), plan)])
    decision = decide(make_failure(), ps, T0)
    assert isinstance(decision, Rerun)
    assert decision.overrides == RunOverrides(queue="q")


@pytest.mark.parametrize("phase", ["FAILED", "TIMED_OUT"])
@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("SYSTEM", "ConnectionResetError", "connection reset by peer"),
        ("USER", "NonRecoverableError", "bad input"),
        ("USER", "", "Reason [OOMKilled] exit code 137"),
        ("SYSTEM", "RetriesExhausted|ResourceExhausted", "quota"),
        ("UNSPECIFIED", "", ""),
    ],
)
def test_every_decision_carries_its_failures_fingerprint_classified_once(
    policies, make_failure, phase, kind, code, message
):
    """``decide`` classifies the failure once (the built-in non_recoverable rule and the
    fingerprint read the same classes): the fingerprint is ``failure_fingerprint``'s, whatever
    is decided (an ignore by the built-in rule, a rerun, no policy matching)."""
    failure = make_failure(phase=phase, error={"kind": kind, "code": code, "message": message})
    for body in (
        NET,
        "policies:\n  - name: only-user\n    match: {error: {kinds: [USER]}}\n    retry: false\n",
    ):
        assert decide(failure, policies(body), T0).fingerprint == failure_fingerprint(failure) != ""
