# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""The compiled-policy helpers held exactly: when one match covers another (what makes a later
policy unreachable), RE2's refusals and their hints (said, never logged), how escalation steps
merge, and the explain lines of selectors with several values."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest

from rerund.core.backoff import Backoff
from rerund.core.decide import explain
from rerund.core.model import Phase, RunOverrides, Scope
from rerund.core.resources import ResourceRule, ResourceRules
from rerund.core.rules import (
    SELECTORS,
    Escalation,
    GpuFaultMatch,
    MatchSpec,
    RetryPlan,
    compile_pattern_error,
    merge_overrides,
    subsumes,
)

F = frozenset


def test_every_match_selector_has_exactly_one_row_in_the_selector_table():
    # A MatchSpec field without a row would be ignored by matching: the policy would match
    # whatever that selector says.
    fields = [s.field for s in SELECTORS]
    assert sorted(fields) == sorted(MatchSpec.__dataclass_fields__)
    assert len(set(fields)) == len(fields)


COVERS = [
    ("nothing-covers-everything", MatchSpec(), MatchSpec(projects=F({"ml"})), True),
    ("a-selector-does-not-cover-none", MatchSpec(projects=F({"ml"})), MatchSpec(), False),
    ("projects-superset", MatchSpec(projects=F({"ml", "etl"})), MatchSpec(projects=F({"ml"})), True),
    ("projects-other", MatchSpec(projects=F({"ml"})), MatchSpec(projects=F({"etl"})), False),
    ("domains-superset", MatchSpec(domains=F({"a", "b"})), MatchSpec(domains=F({"a"})), True),
    ("domains-other", MatchSpec(domains=F({"a"})), MatchSpec(domains=F({"b"})), False),
    ("tasks-superset", MatchSpec(tasks=("t.*", "u")), MatchSpec(tasks=("u",)), True),
    ("tasks-other", MatchSpec(tasks=("t.*",)), MatchSpec(tasks=("t.a",)), False),  # a glob covers only itself
    ("action-tasks-superset", MatchSpec(action_tasks=("a", "b")), MatchSpec(action_tasks=("a",)), True),
    ("action-tasks-other", MatchSpec(action_tasks=("a",)), MatchSpec(action_tasks=("b",)), False),
    ("labels-fewer", MatchSpec(labels={"t": "ml"}), MatchSpec(labels={"t": "ml", "x": "y"}), True),
    ("labels-more", MatchSpec(labels={"t": "ml", "x": "y"}), MatchSpec(labels={"t": "ml"}), False),
    (
        "phases-more",
        MatchSpec(phases=F({Phase.FAILED, Phase.ABORTED})),
        MatchSpec(phases=F({Phase.FAILED})),
        True,
    ),
    (
        "phases-fewer",
        MatchSpec(phases=F({Phase.FAILED})),
        MatchSpec(phases=F({Phase.FAILED, Phase.ABORTED})),
        False,
    ),
    ("kinds-superset", MatchSpec(kinds=F({"USER", "SYSTEM"})), MatchSpec(kinds=F({"USER"})), True),
    ("kinds-other", MatchSpec(kinds=F({"USER"})), MatchSpec(kinds=F({"SYSTEM"})), False),
    ("codes-superset", MatchSpec(codes=F({"A", "B"})), MatchSpec(codes=F({"A"})), True),
    ("codes-other", MatchSpec(codes=F({"A"})), MatchSpec(codes=F({"B"})), False),
    ("patterns-superset", MatchSpec(patterns=("x", "y")), MatchSpec(patterns=("x",)), True),
    ("patterns-other", MatchSpec(patterns=("x",)), MatchSpec(patterns=("y",)), False),
    ("exclude-fewer", MatchSpec(exclude=("x",)), MatchSpec(exclude=("x", "y")), True),
    ("exclude-more", MatchSpec(exclude=("x", "y")), MatchSpec(exclude=("x",)), False),
    ("classes-superset", MatchSpec(classes=F({"oom", "image"})), MatchSpec(classes=F({"oom"})), True),
    ("classes-other", MatchSpec(classes=F({"oom"})), MatchSpec(classes=F({"image"})), False),
    (
        "gpu-any",
        MatchSpec(gpu_fault=GpuFaultMatch()),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}))),
        True,
    ),
    ("gpu-not-none", MatchSpec(gpu_fault=GpuFaultMatch()), MatchSpec(), False),
    (
        "gpu-codes-superset",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48, 79}))),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({79}))),
        True,
    ),
    (
        "gpu-codes-other",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}))),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({79}))),
        False,
    ),
    (
        "gpu-codes-vs-any",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}))),
        MatchSpec(gpu_fault=GpuFaultMatch()),
        False,
    ),
    (
        "gpu-codes-equal",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}))),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}))),
        True,
    ),
    (
        "gpu-severities-superset",
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"WARN", "CRITICAL"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"WARN"}))),
        True,
    ),
    (
        "gpu-severities-other",
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"WARN"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"CRITICAL"}))),
        False,
    ),
    (
        "gpu-kinds-superset",
        MatchSpec(gpu_fault=GpuFaultMatch(kinds=F({"XID", "SXID"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(kinds=F({"XID"}))),
        True,
    ),
    (
        "gpu-kinds-other",
        MatchSpec(gpu_fault=GpuFaultMatch(kinds=F({"XID"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(kinds=F({"SXID"}))),
        False,
    ),
    (
        "gpu-codes-hold-kinds-not",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}), kinds=F({"XID"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}), kinds=F({"SXID"}))),
        False,
    ),
    (
        "gpu-severities-hold-kinds-not",
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"WARN"}), kinds=F({"XID"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(severities=F({"WARN"}), kinds=F({"SXID"}))),
        False,
    ),
    (
        "gpu-kinds-hold-codes-not",
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({48}), kinds=F({"XID"}))),
        MatchSpec(gpu_fault=GpuFaultMatch(codes=F({79}), kinds=F({"XID"}))),
        False,
    ),
]


@pytest.mark.parametrize(
    ("earlier", "later", "covers"),
    [(e, later, c) for _, e, later, c in COVERS],
    ids=[i for i, _, _, _ in COVERS],
)
def test_an_earlier_match_covers_a_later_one_only_when_every_selector_does(earlier, later, covers):
    assert subsumes(earlier, later) is covers


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (
            "(a)\\1",
            "invalid escape sequence: \\1 (RE2 has no backreferences or lookaround; rewrite the pattern without them)",
        ),
        (
            "(?<=x)y",
            "invalid perl operator: (?<= (RE2 has no backreferences or lookaround; rewrite the pattern without them)",
        ),
        ("a\\Z", "invalid escape sequence: \\Z (RE2 spells end-of-text \\z)"),
        (
            "(a)(b)\\2",
            "invalid escape sequence: \\2 (RE2 has no backreferences or lookaround; rewrite the pattern without them)",
        ),
        ("(", "missing ): ("),
        ("a**", "bad repetition operator: **"),
        ("(a)", None),
    ],
    ids=[
        "backreference",
        "lookbehind",
        "end-of-text",
        "second-backreference",
        "unbalanced",
        "repetition",
        "fine",
    ],
)
def test_re2_refusals_say_what_to_write_instead_and_log_nothing(capfd, pattern, problem):
    assert compile_pattern_error(pattern) == problem
    assert capfd.readouterr().err == ""  # RE2 would print its own line to stderr


def test_an_escalation_merges_annotations_and_replaces_force_rerun_actions():
    base = RunOverrides(queue="q1", annotations={"a": "1"}, force_rerun_actions=("a1",))
    step = RunOverrides(interruptible=False, annotations={"b": "2"}, force_rerun_actions=("a2", "a3"))
    assert merge_overrides(base, step) == RunOverrides(
        queue="q1", interruptible=False, annotations={"a": "1", "b": "2"}, force_rerun_actions=("a2", "a3")
    )
    assert merge_overrides(base, RunOverrides()).force_rerun_actions == ("a1",)  # an empty list keeps


def test_relaunch_settings_apply_steps_in_attempt_order_whatever_order_they_are_given_in():
    def step(at: int, memory: str) -> Escalation:
        rules = ResourceRules(
            rules={"memory": ResourceRule(text=memory, value=Fraction(int(memory[:-2]) << 30))}
        )
        return Escalation(at=at, resources=rules, task_version="latest" if at == 3 else None)

    plan = RetryPlan(
        scope=Scope.RELAUNCH,
        max_attempts=5,
        backoff=Backoff(initial=timedelta(0), factor=1.0, max=timedelta(0), jitter=0.0),
        escalate=(step(3, "48Gi"), step(2, "32Gi")),
    )
    assert [plan.relaunch_settings(n)[0].rules["memory"].text for n in (2, 3, 4)] == ["32Gi", "48Gi", "48Gi"]
    assert [plan.relaunch_settings(n)[1] for n in (1, 2, 3)] == ["same", "same", "latest"]


SEVERAL = [
    (
        "labels: {team: ml, env: prod}",
        {"labels": {"team": "ml", "env": "prod"}},
        "matches: labels: team=ml, env=prod present; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    (
        "labels: {team: ml, a: b, c: d}",
        {},
        "does not match: labels: missing a=b, c=d; phases: FAILED is in [FAILED, TIMED_OUT]",
    ),
    ("phases: [TIMED_OUT]", {}, "does not match: phases: FAILED is not in [TIMED_OUT]"),
    (
        "error: {classes: [oom, user]}",
        {"error": {"kind": "USER", "code": "OOMKilled", "message": "out of memory"}},
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is oom, user",
    ),
    (
        "error: {classes: [image]}",
        {"error": {"kind": "SYSTEM", "code": "RetriesExhausted|OOMKilled", "message": "x"}},
        "does not match: phases: FAILED is in [FAILED, TIMED_OUT]; error.classes: the failure is oom, retries_exhausted, not any of [image]",
    ),
    (
        "error: {gpu_fault: {kinds: [XID]}}",
        {
            "error": {
                "kind": "SYSTEM",
                "code": "X",
                "message": "m",
                "gpu_fault": {"code": 79, "severity": "CRITICAL", "kind": "XID"},
            }
        },
        "matches: phases: FAILED is in [FAILED, TIMED_OUT]; error.gpu_fault: XID 79, severity CRITICAL is selected",
    ),
]


@pytest.mark.parametrize(
    ("selector", "overrides", "line"),
    SEVERAL,
    ids=[
        "labels-present",
        "labels-missing",
        "phase-not-aborted",
        "two-classes",
        "two-classes-missed",
        "gpu-without-name",
    ],
)
def test_explain_lists_several_values_and_hints_only_where_they_apply(
    policies, make_failure, selector, overrides, line
):
    ps = policies(f"policies: [{{name: p, match: {{{selector}}}}}]\n")
    result = explain(make_failure(**overrides), ps, make_failure().failed_at)
    assert result.trace[0] == f"policy 'p' ({ps.rules[0].origin}) {line}"
