"""Policy directories as people fill them: ``.yml`` files count, and a file that is not a
policy file at all gets one problem saying what it looks like instead of one per key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerund.errors import FailureInputError, PolicyError
from rerund.policy import load_policies
from rerund.policy.failures import load_failure

POLICY = (
    "apiVersion: rerund/v1\npolicies:\n  - name: {name}\n    match: {{tasks: [{name}.*]}}\n"
    "    retry: {{max_attempts: 1}}\n"
)
REPO = Path(__file__).resolve().parents[2]


def test_yml_files_in_a_directory_are_loaded_in_name_order_with_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(POLICY.format(name="second"))
    (tmp_path / "a.yaml").write_text(POLICY.format(name="first"))
    (tmp_path / "notes.txt").write_text("not yaml")
    assert load_policies([tmp_path]).names() == ["first", "second"]


def test_a_directory_without_policy_files_names_what_it_has(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "rules.json").write_text("{}")
    with pytest.raises(PolicyError) as err:
        load_policies([tmp_path])
    assert [str(p) for p in err.value.problems] == [
        f"{tmp_path}:1:1: no *.yaml or *.yml policy files in this directory (it has: README.md, rules.json)"
    ]


@pytest.mark.parametrize(
    ("name", "text", "looks_like"),
    [
        ("daemon.yaml", "endpoint: http://x\nscopes: [a/b]\n", "a settings file: pass it with --config"),
        ("workload.yaml", "tasks: {t: {}}\nruns: []\n", "a sandbox workload file"),
        ("x.test.yaml", "policies: ../p.yaml\ncases: []\n", None),
        ("x2.test.yaml", "cases: []\n", "a policy test file: run it with `rerund test`"),
        ("failure.yaml", "run: abc\nerror: {kind: USER}\n", "a failure document"),
        ("other.yaml", "hello: world\n", None),
    ],
    ids=["settings", "workload", "test-file-with-policies-key", "test-file", "failure", "unknown"],
)
def test_a_file_that_is_not_a_policy_file_is_one_clear_problem(
    tmp_path: Path, name: str, text: str, looks_like: str | None
) -> None:
    (tmp_path / "good.yaml").write_text(POLICY.format(name="good"))
    (tmp_path / name).write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policies([tmp_path])
    problems = [str(p) for p in err.value.problems]
    if name == "x.test.yaml":  # has a policy key: validated as a policy file missing apiVersion
        assert any("apiVersion: missing required key 'apiVersion'" in p for p in problems)
        return
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / name}:1:1: not a policy file (no apiVersion)")
    if looks_like:
        assert f"it looks like {looks_like}" in problems[0]
    else:
        assert (
            "add 'apiVersion: rerund/v1' if it is one, or move it out of the policy directory" in problems[0]
        )


def test_a_failure_document_may_leave_failed_at_to_now(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    failure = load_failure(REPO / "policies" / "failures" / "connection-reset.yaml", now=now)
    assert (
        failure.failed_at == now
        and failure.run == "trainfit1"
        and failure.error.code == "ConnectionResetError"
    )


def test_a_policy_test_file_given_as_a_failure_says_so() -> None:
    with pytest.raises(FailureInputError) as err:
        load_failure(REPO / "policies" / "tests" / "rerund.test.yaml")
    [problem] = err.value.problems
    assert (
        "this is a policy test file (it has cases:), not a failure document; run it with `rerund test"
        in str(problem)
    )
