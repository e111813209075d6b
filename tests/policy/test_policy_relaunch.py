# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""The relaunch keys of the policy language (``scope: relaunch``, ``resources``, ``task_version``,
``max_wait``): every mistake located as file:line:col, and what a valid file compiles to."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from rerund.core.model import Scope
from rerund.errors import PolicyError
from rerund.policy import load_policies
from rerund.policy.schema import policy_schema

HEADER = "apiVersion: rerund/v1\npolicies:\n"

BAD = [
    (
        "resources-outside-relaunch",
        "  - name: a\n    retry: {resources: {memory: 2x}}\n",
        [
            "4:24: policies[0].retry.resources: resources only applies with scope: relaunch (a rerun reuses the source action's task spec, so its resources and task version cannot change), but this policy's scope is run; set scope: relaunch or remove resources"
        ],
    ),
    (
        "task-version-in-an-escalation-of-a-rerun",
        "  - name: a\n    retry:\n      scope: recover\n      escalate: {2: {task_version: latest}}\n",
        [
            "6:36: policies[0].retry.escalate[2].task_version: task_version only applies with scope: relaunch (a rerun reuses the source action's task spec, so its resources and task version cannot change), but this policy's scope is recover; set scope: relaunch or remove task_version"
        ],
    ),
    (
        "max-wait-without-newer",
        "  - name: a\n    retry: {scope: relaunch, max_wait: 1h}\n",
        [
            "4:40: policies[0].retry.max_wait: max_wait bounds the wait of task_version: newer, which this policy never uses; set task_version: newer or remove max_wait"
        ],
    ),
    (
        "max-wait-of-a-rerun",
        "  - name: a\n    retry: {max_wait: 1h}\n",
        [
            "4:23: policies[0].retry.max_wait: max_wait only applies with scope: relaunch and task_version: newer, but this policy's scope is run; remove max_wait"
        ],
    ),
    (
        "value-above-its-max",
        "  - name: a\n    retry: {scope: relaunch, resources: {memory: 64Gi, max: {memory: 32Gi}}}\n",
        [
            "4:50: policies[0].retry.resources.memory: memory: 64Gi is above its max 32Gi; a relaunch would be capped at 32Gi: raise max or lower memory"
        ],
    ),
    (
        "multiplier-below-one",
        "  - name: a\n    retry: {scope: relaunch, resources: {cpu: 0.5x}}\n",
        [
            "4:47: policies[0].retry.resources.cpu: multiplier 0.5x would lower the resource; a relaunch never lowers a resource (use at least 1x, e.g. 2x)"
        ],
    ),
    (
        "not-a-quantity",
        "  - name: a\n    retry: {scope: relaunch, resources: {memory: 16GB}}\n",
        [
            "4:50: policies[0].retry.resources.memory: '16GB' is not a Kubernetes quantity; write a number with an optional suffix Ki, Mi, Gi, Ti (binary), k, M, G, T (decimal) or m (milli), e.g. 16Gi, 512Mi, 4 or 500m"
        ],
    ),
    (
        "a-multiplier-as-max",
        "  - name: a\n    retry: {scope: relaunch, resources: {memory: 2x, max: {memory: 4x}}}\n",
        [
            "4:68: policies[0].retry.resources.max.memory: '4x' is not a Kubernetes quantity; write a number with an optional suffix Ki, Mi, Gi, Ti (binary), k, M, G, T (decimal) or m (milli), e.g. 16Gi, 512Mi, 4 or 500m (a max is a quantity, not a multiplier)"
        ],
    ),
    (
        "unknown-task-version",
        "  - name: a\n    retry: {scope: relaunch, task_version: sometimes}\n",
        ["4:44: policies[0].retry.task_version: 'sometimes' is not allowed; use 'same', 'latest' or 'newer'"],
    ),
    (
        "unknown-resource",
        "  - name: a\n    retry: {scope: relaunch, resources: {ram: 2x}}\n",
        [
            "4:42: policies[0].retry.resources.ram: unknown key 'ram'; allowed keys: memory, cpu, gpu, ephemeral_storage, max"
        ],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in BAD], ids=[i for i, _, _ in BAD])
def test_a_misplaced_or_bad_relaunch_key_is_located(tmp_path: Path, body: str, expected: list[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + body)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [str(p) for p in caught.value.problems] == [f"{path}:{e}" for e in expected]


def test_a_relaunch_policy_compiles_its_rules_caps_and_escalation(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        HEADER + "  - name: oom\n"
        "    retry:\n"
        "      scope: relaunch\n"
        "      task_version: newer\n"
        "      max_wait: 2h\n"
        "      resources: {memory: 2x, cpu: 4, max: {memory: 64Gi}}\n"
        "      escalate:\n"
        "        3: {resources: {memory: 48Gi}, task_version: latest}\n"
    )
    [rule] = load_policies([path]).rules
    plan = rule.retry
    assert plan is not None
    assert plan.scope == Scope.RELAUNCH
    assert plan.max_wait == timedelta(hours=2)
    first, version = plan.relaunch_settings(1)
    assert version == "newer"
    assert first.rules["memory"].factor == 2
    assert first.rules["cpu"].value == 4
    assert first.caps == {"memory": Fraction(64 * 2**30)}
    third, version = plan.relaunch_settings(3)
    assert version == "latest"
    assert third.rules["memory"].value == 48 * 2**30
    assert third.rules["cpu"].value == 4  # kept from the policy
    assert third.describe() == "cpu 4, memory 48Gi (max 64Gi)"


def test_the_schema_describes_the_relaunch_keys() -> None:
    schema = policy_schema()
    retry = schema["$defs"]["RetrySpec"]["properties"]
    assert set(retry) >= {"resources", "task_version", "max_wait"}
    assert "relaunch" in json.dumps(schema["$defs"]["Scope"])
    resources = schema["$defs"]["ResourcesSpec"]["properties"]
    assert set(resources) == {"memory", "cpu", "gpu", "ephemeral_storage", "max"}
    assert set(schema["$defs"]["OverrideSpec"]["properties"]) >= {"resources", "task_version"}


def test_check_and_explain_show_a_relaunch_from_the_command_line(tmp_path: Path) -> None:
    policy = tmp_path / "oom.yaml"
    policy.write_text(
        HEADER + "  - name: oom\n    match: {error: {classes: [oom]}}\n"
        "    retry: {scope: relaunch, resources: {memory: 2x, max: {memory: 16Gi}}}\n"
    )
    failure = tmp_path / "f.yaml"
    failure.write_text(
        "run: r1\ntask: train.big\ntask_version: v1\nfailed_at: 2026-11-30T10:00:00Z\n"
        "error: {kind: USER, code: OOMKilled, message: killed}\n"
        "resources: {requests: {memory: 4Gi, cpu: '1'}, limits: {memory: 4Gi}}\n"
    )
    rerund = [sys.executable, "-m", "rerund.cli"]
    check = subprocess.run([*rerund, "check", str(policy)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    out = subprocess.run(
        [
            *rerund,
            "explain",
            "--policies",
            str(policy),
            "--failure",
            str(failure),
            "--now",
            "2026-11-30T10:01:00Z",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "task:       train.big version v1 (task_version: same)\n" in out
    assert "resources:  cpu 1, memory 8Gi (limit 8Gi)\n" in out
    assert "  ~ resources memory request 4Gi -> 8Gi\n" in out
    assert "  ~ task version: v1 (same)\n" in out
