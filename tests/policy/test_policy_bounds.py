# ruff: noqa: E501  (exact user-visible messages are kept on one line to be greppable)
"""Upper bounds of the policy language's numbers, and the escalation steps ``rerund check``
refuses or warns about: every value the control plane would refuse (a 10^24x multiplier, a
10^38-core cpu) is refused here first, located as file:line:col: yaml.path."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from rerund.cli import main
from rerund.core.quantities import MAX_QUANTITY, MAX_QUANTITY_TEXT
from rerund.core.resources import MAX_MULTIPLIER
from rerund.errors import PolicyError
from rerund.policy import load_policies
from rerund.policy.loader import load_policies_and_warnings

HEADER = "apiVersion: rerund/v1\npolicies:\n"
RELAUNCH = "  - name: a\n    retry:\n      scope: relaunch\n"

TOO_BIG = [
    (
        "a-multiplier-of-ten-to-the-24",
        RELAUNCH + "      resources: {memory: 1000000000000000000000000x}\n",
        [
            "6:27: policies[0].retry.resources.memory: multiplier 1000000000000000000000000x is above the maximum of 64x; a relaunch multiplies the failed run's request and limit at most 64 times: write e.g. 2x, and a max: to cap the escalation"
        ],
    ),
    (
        "a-multiplier-just-above-64",
        RELAUNCH + "      resources: {cpu: 64.5x}\n",
        [
            "6:24: policies[0].retry.resources.cpu: multiplier 64.5x is above the maximum of 64x; a relaunch multiplies the failed run's request and limit at most 64 times: write e.g. 2x, and a max: to cap the escalation"
        ],
    ),
    (
        "ten-to-the-38-cores-in-exponent-form",
        RELAUNCH + "      resources: {cpu: 1e38}\n",
        [
            "6:24: policies[0].retry.resources.cpu: quantity '1e38' is above 9223372036854775.807, the largest Kubernetes holds (2^63-1 thousandths of a core, byte or device): ask for what a node has, e.g. 16Gi, 4 or 500m"
        ],
    ),
    (
        "ten-to-the-38-cores-as-a-plain-integer",
        RELAUNCH + "      resources: {cpu: 100000000000000000000000000000000000000}\n",
        [
            "6:24: policies[0].retry.resources.cpu: quantity '100000000000000000000000000000000000000' is above 9223372036854775.807, the largest Kubernetes holds (2^63-1 thousandths of a core, byte or device): ask for what a node has, e.g. 16Gi, 4 or 500m"
        ],
    ),
    (
        "a-cap-of-ten-to-the-30-bytes",
        RELAUNCH + "      resources: {memory: 2x, max: {memory: 1000000000000000000000000000000}}\n",
        [
            "6:45: policies[0].retry.resources.max.memory: quantity '1000000000000000000000000000000' is above 9223372036854775.807, the largest Kubernetes holds (2^63-1 thousandths of a core, byte or device): ask for what a node has, e.g. 16Gi, 4 or 500m"
        ],
    ),
    (
        "an-escalation-step-with-a-huge-multiplier",
        RELAUNCH + "      max_attempts: 3\n      escalate: {2: {resources: {gpu: 100x}}}\n",
        [
            "7:39: policies[0].retry.escalate[2].resources.gpu: multiplier 100x is above the maximum of 64x; a relaunch multiplies the failed run's request and limit at most 64 times: write e.g. 2x, and a max: to cap the escalation"
        ],
    ),
    (
        "a-budget-of-ten-to-the-30-reruns",
        "  - name: a\n    retry: {budget: {max_reruns: 1000000000000000000000000000000, per: 1h}}\n",
        [
            "4:34: policies[0].retry.budget.max_reruns: must be <= 1000000, got 1000000000000000000000000000000"
        ],
    ),
    (
        "a-global-budget-of-ten-to-the-30-reruns",
        "  - name: a\nbudgets: {global: {max_reruns: 1000000000000000000000000000000, per: 1h}}\n",
        ["4:32: budgets.global.max_reruns: must be <= 1000000, got 1000000000000000000000000000000"],
    ),
    (
        "an-escalation-step-past-any-max-attempts",
        "  - name: a\n    retry:\n      escalate: {1001: {env: {A: b}}}\n",
        ["5:24: policies[0].retry.escalate[1001]: must be <= 1000, got 1001"],
    ),
    (
        "a-gpu-fault-code-over-uint32",
        "  - name: a\n    match: {error: {gpu_fault: {codes: [4294967296]}}}\n",
        ["4:41: policies[0].match.error.gpu_fault.codes[0]: must be <= 4294967295, got 4294967296"],
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in TOO_BIG], ids=[i for i, _, _ in TOO_BIG]
)
def test_a_value_the_control_plane_would_refuse_is_refused_and_located(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + body)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [str(p) for p in caught.value.problems] == [f"{path}:{e}" for e in expected]


def test_the_largest_multiplier_and_quantity_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        HEADER
        + RELAUNCH
        + "      resources: {memory: 64x, cpu: 9223372036854775807m, max: {memory: 9223372036854775807m}}\n"
        + "      budget: {max_reruns: 1000000, per: 1h}\n"
    )
    plan = load_policies([path]).rules[0].retry
    assert plan is not None
    assert plan.resources.rules["memory"].factor == MAX_MULTIPLIER == 64
    assert plan.resources.rules["cpu"].value == MAX_QUANTITY == Fraction(2**63 - 1, 1000)
    assert Fraction(MAX_QUANTITY_TEXT) == MAX_QUANTITY
    assert plan.budget is not None and plan.budget.max_reruns == 1_000_000


def test_a_tolerance_of_infinity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: rerund/v1\nreproductions:\n  - name: c\n    schedule: '0 3 * * *'\n"
        "    source: {run: r1}\n    compare: {outputs: tolerance, tolerance: {abs: .inf}}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:6:52: reproductions[0].compare.tolerance.abs: expected a finite number, got inf"
    ]


# --- escalate keys -------------------------------------------------------------------------

BOOL_KEYS = [
    ("true", "true", "6:15: policies[0].retry.escalate[true]"),
    ("yes-is-a-yaml-1-1-bool", "yes", "6:14: policies[0].retry.escalate[true]"),
    ("false", "false", "6:16: policies[0].retry.escalate[false]"),
]


@pytest.mark.parametrize(
    ("key", "where"), [(k, w) for _, k, w in BOOL_KEYS], ids=[i for i, _, _ in BOOL_KEYS]
)
def test_an_escalate_key_that_yaml_reads_as_a_bool_is_refused_not_taken_as_attempt_1(
    tmp_path: Path, key: str, where: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + f"  - name: a\n    retry:\n      escalate:\n        {key}: {{env: {{A: b}}}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    value = "true" if key in ("true", "yes") else "false"
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:{where}: escalate key {value} is not an attempt number (YAML reads true, yes, on, false, "
        "no and off as booleans); write the attempt the step starts at, e.g. 2: {...}"
    ]


def _policy_with_a_step_past_max_attempts(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        HEADER
        + "  - name: a\n    retry:\n      max_attempts: 3\n      escalate:\n"
        + "        3: {env: {A: b}}\n        5: {env: {A: c}}\n"
    )
    return path


def test_an_escalation_step_beyond_max_attempts_is_a_located_warning(tmp_path: Path) -> None:
    path = _policy_with_a_step_past_max_attempts(tmp_path)
    policies, warnings = load_policies_and_warnings([path])
    assert policies.names() == ["a"]
    assert [str(w) for w in warnings] == [
        f"{path}:8:12: policies[0].retry.escalate[5]: step 5 never applies: max_attempts is 3, so the "
        "last rerun is attempt 3; lower the step to at most 3 or raise max_attempts"
    ]


def test_a_step_beyond_max_attempts_from_the_defaults_is_a_warning_too(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: rerund/v1\ndefaults: {max_attempts: 1}\npolicies:\n"
        "  - name: a\n    retry: {escalate: {2: {env: {A: b}}}}\n"
    )
    _, warnings = load_policies_and_warnings([path])
    assert [str(w) for w in warnings] == [
        f"{path}:5:27: policies[0].retry.escalate[2]: step 2 never applies: max_attempts is 1, so the "
        "last rerun is attempt 1; lower the step to at most 1 or raise max_attempts"
    ]


def test_check_prints_a_warning_and_exits_0_or_1_with_strict(tmp_path: Path, capsys) -> None:
    path = _policy_with_a_step_past_max_attempts(tmp_path)
    warning = (
        f"{path}:8:12: policies[0].retry.escalate[5]: warning: step 5 never applies: max_attempts is 3, "
        "so the last rerun is attempt 3; lower the step to at most 3 or raise max_attempts"
    )
    assert main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [warning, "ok: 1 policy in 1 file: a"]
    assert captured.err == "1 warning\n"

    assert main(["check", "--strict", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [warning]
    assert captured.err == "1 warning (an error with --strict)\n"


def test_check_json_lists_warnings_and_strict_makes_them_fail(tmp_path: Path, capsys) -> None:
    path = _policy_with_a_step_past_max_attempts(tmp_path)
    assert main(["check", "--format", "json", str(path)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True
    assert body["warnings"] == [
        {
            "file": str(path),
            "line": 8,
            "column": 12,
            "path": "policies[0].retry.escalate[5]",
            "message": "step 5 never applies: max_attempts is 3, so the last rerun is attempt 3; lower the step to at most 3 or raise max_attempts",
        }
    ]
    assert main(["check", "--strict", "--format", "json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_check_junit_fails_the_file_on_a_warning_only_with_strict(tmp_path: Path, capsys) -> None:
    path = _policy_with_a_step_past_max_attempts(tmp_path)
    assert main(["check", "--format", "junit", str(path)]) == 0
    assert "<failure" not in capsys.readouterr().out
    assert main(["check", "--strict", "--format", "junit", str(path)]) == 1
    assert "step 5 never applies" in capsys.readouterr().out


def test_a_policy_without_warnings_passes_check_strict(tmp_path: Path, capsys) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + "  - name: a\n    retry: {max_attempts: 3, escalate: {3: {env: {A: b}}}}\n")
    assert main(["check", "--strict", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "ok: 1 policy in 1 file: a\n"
    assert captured.err == ""


# --- names that end in a newline ------------------------------------------------------------
# Python's "$" matches before a final newline: a pattern checked with re.match(...$) lets "a\n" in.

NEWLINE_NAMES = [
    (
        "policy-name",
        '  - name: "a\\n"\n',
        "3:11: policies[0].name: invalid policy name 'a\\n': use 1-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    ),
    (
        "annotation-key",
        '  - name: a\n    retry: {annotations: {"team\\n": x}}\n',
        "4:26: policies[0].retry.annotations: annotation key 'team\\n' is not a Kubernetes annotation key (the rerun's pods carry its annotations); write 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS prefix and '/' (e.g. example.com/team)",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in NEWLINE_NAMES], ids=[i for i, _, _ in NEWLINE_NAMES]
)
def test_a_name_ending_in_a_newline_is_refused(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + body)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [str(p) for p in caught.value.problems] == [f"{path}:{expected}"]
