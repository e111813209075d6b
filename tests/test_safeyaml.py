"""Hostile YAML (issue 11.2): one safe loader for every file rerund reads.

Each loader — policies, policy tests, failure documents, settings, sandbox workloads — answers
an alias bomb and a deeply nested document with a located problem of its own error class, and
Hypothesis feeds each of them arbitrary YAML-like text: the only exception allowed out is the
loader's documented error class (never a traceback, never a hang).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hang_guard import hang_guard
from rerund.errors import ConfigError, FailureInputError, PolicyError, WorkloadError
from rerund.policy import load_policies
from rerund.policy.casefiles import run_files
from rerund.policy.failures import load_failure
from rerund.runtime.settings import load_settings
from rerund.safeyaml import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_VALUES, duplicate_keys, load_text
from rerund.sandbox.workload import load_workload


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": ``width ** levels`` values in well under a kilobyte."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"policies: *a{levels - 1}")
    return "\n".join(lines) + "\n"


DEEP = "policies: " + "[" * 990 + "]" * 990 + "\n"
BOMB = alias_bomb()

BUDGET_MESSAGE = f"aliases expand the document by more than {MAX_ALIAS_VALUES} values; write the values out"
DEPTH_MESSAGE = f"values nested more than {MAX_DEPTH} levels deep; rerund reads at most {MAX_DEPTH} levels"


def _policies(path: Path) -> None:
    load_policies([path])


def _policy_tests(path: Path) -> None:
    out = io.StringIO()
    outcome = run_files([path], out)
    if not outcome.ok:
        raise PolicyError([], out.getvalue())


def _failure(path: Path) -> None:
    load_failure(path)


def _settings(path: Path) -> None:
    load_settings(path, environ={})


def _workload(path: Path) -> None:
    load_workload(path)


LOADERS: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "policies": (_policies, PolicyError, "policy.yaml"),
    "policy tests": (_policy_tests, PolicyError, "policy.test.yaml"),
    "failure documents": (_failure, FailureInputError, "failure.yaml"),
    "settings": (_settings, ConfigError, "settings.yaml"),
    "sandbox workloads": (_workload, WorkloadError, "workload.yaml"),
}


@pytest.mark.parametrize(("load", "error", "name"), LOADERS.values(), ids=list(LOADERS))
@pytest.mark.parametrize(
    ("text", "where", "message"),
    [(BOMB, ":6:10: ", BUDGET_MESSAGE), (DEEP, ":1:74: ", DEPTH_MESSAGE)],
    ids=["alias bomb", "990 levels deep"],
)
def test_every_loader_refuses_a_hostile_file_with_a_located_problem(
    tmp_path, load, error, name, text, where, message
):
    path = tmp_path / name
    path.write_text(text)

    with hang_guard(30, f"loading {name}"), pytest.raises(error) as info:
        load(path)

    assert f"{path}{where}" in str(info.value)
    assert message in str(info.value)


def test_the_bomb_is_tiny_and_would_name_a_billion_values():
    assert len(BOMB.encode()) < 600
    assert 9**9 > 10**8


def test_the_duplicate_key_walk_visits_an_aliased_value_once():
    """Composed without the budget, the bomb is a DAG; the walk must not expand it."""
    node = yaml.compose(BOMB.replace("policies:", "a0:"), Loader=yaml.SafeLoader)

    with hang_guard(30, "the duplicate-key walk over an alias bomb"):
        problems = duplicate_keys(node, "bomb.yaml")

    assert [str(p) for p in problems] == ["bomb.yaml:10:1: a0: duplicate key 'a0'; keep one"]


def test_a_document_at_the_depth_limit_still_loads():
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    doc, problems = load_text(text, "ok.yaml")

    assert problems == []
    assert doc is not None and isinstance(doc.data, list)


def test_aliases_within_the_budget_still_load():
    doc, problems = load_text("base: &b {x: 1}\none: *b\ntwo: *b\n", "ok.yaml")

    assert problems == []
    assert doc is not None and doc.data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when: 2026-02-30\n", "ok.yaml:1:7: invalid YAML: '2026-02-30' cannot be read: day is out of range"),
        ("n: " + "1" * 5000 + "\n", "ok.yaml:1:4: invalid YAML: '1111111111111111111111111111111111111111"),
        (
            "? [a]\n: b\n",
            "ok.yaml:1:3: invalid YAML: while constructing a mapping found unhashable key "
            "(write keys as plain text)",
        ),
    ],
    ids=["impossible date", "5000-digit integer", "a list as a key"],
)
def test_values_python_cannot_build_are_located_problems(text, message):
    doc, problems = load_text(text, "ok.yaml")

    assert doc is None
    assert str(problems[0]).startswith(message)


TOKENS = st.sampled_from(
    [
        "&a ", "&b ", "*a", "*b", "*z", "[", "]", "{", "}", ", ", ": ", "- ", "? ", "\n", "\n  ", "\n    ",
        "policies", "name", "x", "'q'", '"d\\x"', "|\n  t", ">\n  t", "#c", "~", "null", "true", "1",
        "1e999", "0x1F", "2026-02-30", "2026-01-01T00:00:00Z", "<<: *a", "---\n", "...\n", "!!str ",
        "!!python/object:os.system ", "!t ", "%YAML 1.1\n", "\t", "\ufeff", "\x00", "é", "9" * 60,
    ]
)  # fmt: skip
YAMLISH = st.one_of(st.lists(TOKENS, max_size=60).map("".join), st.text(max_size=200))


@pytest.mark.parametrize(("load", "error", "name"), LOADERS.values(), ids=list(LOADERS))
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=YAMLISH)
def test_no_yaml_text_makes_a_loader_raise_anything_but_its_error(load, error, name, text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with hang_guard(30, f"loading {name}"):
            try:
                load(path)
            except error:
                pass


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=YAMLISH)
def test_the_loader_never_raises_and_every_problem_is_located(text):
    with hang_guard(30, "load_text"):
        doc, problems = load_text(text, "f.yaml")

    assert (doc is None) == bool(problems)
    for problem in problems:
        assert problem.line >= 1 and problem.column >= 1
        assert str(problem).startswith(f"f.yaml:{problem.line}:{problem.column}: ")


# --- issue 22.8: the alias budget counts what aliases add; size has a limit of its own --------


def plain_policies(count: int) -> str:
    """A policy file of ``count`` distinct policies (each its own task and pattern), no alias."""
    lines = ["apiVersion: rerund/v1", "policies:"]
    for i in range(count):
        lines += [
            f"  - name: p{i:05d}",
            "    match:",
            f"      tasks: [train.t{i:05d}]",
            f"      error: {{kinds: [SYSTEM], patterns: ['step {i:05d} failed']}}",
            "    retry: {max_attempts: 2}",
        ]
    return "\n".join(lines) + "\n"


def test_a_file_of_10001_plain_policies_is_no_alias_problem_and_loads(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(plain_policies(10_001))

    policies = load_policies([path])

    assert len(policies) == 10_001


def test_aliases_are_budgeted_by_what_they_add_not_by_the_size_of_the_document():
    many = [f"k{i}: {i}" for i in range(MAX_ALIAS_VALUES)]  # plain values well over the alias budget
    text = "base: &b {x: 1}\none: *b\n" + "\n".join(many) + "\n"

    doc, problems = load_text(text, "ok.yaml")

    assert problems == []
    assert doc is not None and doc.data["one"] == {"x": 1}


def test_a_document_over_the_size_limit_is_refused_with_a_message_of_its_own():
    text = "values: [" + "1, " * MAX_VALUES + "1]\n"

    doc, problems = load_text(text, "big.yaml")

    assert doc is None
    [problem] = problems
    assert str(problem).startswith(
        f"big.yaml:1:{10 + 3 * (MAX_VALUES - 3)}: the document has more than {MAX_VALUES} values; "
        f"rerund reads at most {MAX_VALUES} values from one file: split it into several files"
    )
    assert "alias" not in problem.message
