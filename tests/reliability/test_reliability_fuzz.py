"""Bad input fuzzing (Hypothesis) of what reads files users write: the policy loader
(``rerund.policy.load_policies``), the failure reader (``rerund.policy.failures.load_failure``,
what ``rerund explain --failure`` reads) and the policy test runner (``casefiles.run_files``).

Inputs: arbitrary bytes, arbitrary text, valid files mutated (spans deleted, junk inserted,
lines duplicated or swapped, truncated) and YAML built from the real keys with random values.
The invariant: never a crash — either a result, or a ``RerundError`` subclass whose message
locates the problem (``file:line:col``) and says what is wrong.

Each property runs a short example budget in ``make test`` and a long one under
``@pytest.mark.slow`` (``make chaos``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerund.core.decide import decide, explain
from rerund.core.rules import PolicySet
from rerund.errors import FailureInputError, PolicyError, PolicyProblem, RerundError
from rerund.policy import load_policies
from rerund.policy.casefiles import run_files
from rerund.policy.failures import load_failure

REPO = Path(__file__).resolve().parents[2]
POLICY_SEEDS = [
    (REPO / "policies" / "rerund.yaml").read_text(),
    (REPO / "policies" / "examples" / "gpu.yaml").read_text(),
]
FAILURE_SEED = """\
run: ab12cd34ef56gh78ij90
root: ab12cd34ef56gh78ij90
attempt: 0
project: ml
domain: production
task: train.fit
labels: {team: ml}
phase: FAILED
action: a3
action_task: train.load
error: {kind: SYSTEM, code: ConnectionResetError, message: "ConnectionResetError: peer reset"}
failed_at: 2026-11-24T10:00:00Z
budget_used: {global: 12, transient-network: 3}
"""
CASES_SEED = (
    (REPO / "policies" / "tests" / "rerund.test.yaml").read_text().replace("../rerund.yaml", "rerund.yaml")
)

POLICY_KEYS = [
    "apiVersion", "defaults", "budgets", "policies", "global", "name", "match", "retry", "error",
    "kinds", "codes", "patterns", "exclude", "projects", "domains", "tasks", "action_tasks",
    "labels", "phases", "scope", "max_attempts", "backoff", "initial", "factor", "max", "jitter",
    "env", "inputs", "escalate", "budget", "max_reruns", "per",
]  # fmt: skip
FAILURE_KEYS = [
    "run", "root", "attempt", "project", "domain", "task", "labels", "phase", "action",
    "action_task", "error", "kind", "code", "message", "failed_at", "budget_used", "budget_oldest",
]  # fmt: skip

SHORT = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FULL = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies --------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["rerund/v1", "30s", "1h", "-5m", "run", "recover", "failed_action", "FAILED", "SYSTEM", "USER",
         "(?i)timed? ?out", "(a+)+$", "[", "\\", "{root}-retry-{attempt}", "{nope}", "*", "ABORTED"]
    ),
)  # fmt: skip


def _yaml_values(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), children, max_size=5),
        ),
        max_leaves=25,
    )


JUNK = [":", "- ", "  ", "\t", "{", "]", "&a", "*a", "\n---\n", "'", '"', "\x00", "\ufeff"]
JUNK += ["!!python/object:os.system", "!!binary aGk=", "<<: {}", "? [a]", "2026-01-01"]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str]) -> str:
    """A valid seed file with a few random edits."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "dup_line", "swap_lines", "truncate"]))
        n = len(text)
        if op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            text = text[:i] + text[i + draw(st.integers(1, 40)) :]
        elif op == "insert":
            i = draw(st.integers(0, n))
            junk = draw(st.one_of(st.text(max_size=12), st.sampled_from(JUNK)))
            text = text[:i] + junk + text[i:]
        elif op == "replace" and n:
            i = draw(st.integers(0, n - 1))
            text = text[:i] + draw(st.characters()) + text[i + 1 :]
        elif op in ("dup_line", "swap_lines"):
            lines = text.splitlines(keepends=True)
            if len(lines) >= 2:
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                if op == "dup_line":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
                text = "".join(lines)
        elif op == "truncate" and n:
            text = text[: draw(st.integers(0, n - 1))]
    return text


def policy_inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=600),
        st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated(POLICY_SEEDS).map(lambda t: t.encode("utf-8", "surrogatepass")),
        _yaml_values(POLICY_KEYS).map(lambda v: yaml.safe_dump(v).encode()),
        st.fixed_dictionaries(
            {"apiVersion": st.just("rerund/v1"), "policies": st.lists(_yaml_values(POLICY_KEYS), max_size=3)}
        ).map(lambda v: yaml.safe_dump(v).encode()),
    )


def failure_inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=600),
        st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated([FAILURE_SEED]).map(lambda t: t.encode("utf-8", "surrogatepass")),
        _yaml_values(FAILURE_KEYS).map(lambda v: yaml.safe_dump(v).encode()),
        st.dictionaries(st.sampled_from(FAILURE_KEYS), _yaml_values(FAILURE_KEYS), max_size=8).map(
            lambda v: yaml.safe_dump({"run": "r1", "failed_at": "2026-11-24T10:00:00Z", **v}).encode()
        ),
        # well-formed failures at any time, with budgets used and oldest times anywhere
        st.fixed_dictionaries(
            {
                "run": st.just("r1"),
                "failed_at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                "error": st.just({"kind": "SYSTEM", "message": "Connection reset by peer"}),
                "budget_used": st.dictionaries(
                    st.sampled_from(["global", "transient-network"]), st.integers(0, 500)
                ),
                "budget_oldest": st.dictionaries(
                    st.sampled_from(["global", "transient-network"]),
                    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                ),
            }
        ).map(lambda v: yaml.safe_dump(v).encode()),
    )


def case_inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated([CASES_SEED]).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=300),
    )


# -- checks ------------------------------------------------------------------------------------


def _located(problems: tuple[PolicyProblem, ...], file: Path) -> None:
    assert problems, "an error without problems says nothing"
    for p in problems:
        assert p.file == str(file) and p.line >= 1 and p.column >= 1, p
        assert p.message.strip(), p
        assert str(p).startswith(f"{file}:{p.line}:{p.column}: "), str(p)


def check_policy_file(raw: bytes, where: Path) -> None:
    where.write_bytes(raw)
    try:
        result = load_policies([where])
    except PolicyError as exc:
        _located(exc.problems, where)
        return
    except RerundError as exc:  # any other of ours: still a clear message
        assert str(exc).strip()
        return
    assert isinstance(result, PolicySet)


DEMO_POLICIES = load_policies([REPO / "policies" / "rerund.yaml"])


def check_failure_file(raw: bytes, where: Path) -> None:
    """The failure reader, then what ``rerund explain --failure`` does with what it read."""
    where.write_bytes(raw)
    try:
        failure = load_failure(where)
    except FailureInputError as exc:
        _located(exc.problems, where)
        return
    except RerundError as exc:
        assert str(exc).strip()
        return
    decision = decide(failure, DEMO_POLICIES, failure.failed_at)
    assert explain(failure, DEMO_POLICIES, failure.failed_at).decision == decision
    assert decision.reason


def check_case_file(raw: bytes, where: Path) -> None:
    where.write_bytes(raw)
    out = io.StringIO()
    try:
        outcome = run_files([where], out)
    except RerundError as exc:
        assert str(exc).strip()
        return
    text = out.getvalue()
    assert "passed" in text and "failed" in text, text
    if outcome.errors:
        assert "ERROR" in text, text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    # the case files refer to the policies next to them
    (d / "rerund.yaml").write_text(POLICY_SEEDS[0])
    return d


def _property(check: Callable[[bytes, Path], None], inputs: st.SearchStrategy[bytes], name: str) -> Any:
    def run(workdir: Path, profile: settings) -> None:
        @profile
        @given(raw=inputs)
        def prop(raw: bytes) -> None:
            check(raw, workdir / name)

        prop()

    return run


_policies = _property(check_policy_file, policy_inputs(), "fuzzed-policies.yaml")
_failures = _property(check_failure_file, failure_inputs(), "fuzzed-failure.yaml")
_cases = _property(check_case_file, case_inputs(), "fuzzed.test.yaml")

PROFILES = [
    pytest.param(SHORT, id="short"),
    pytest.param(FULL, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
]


@pytest.mark.parametrize("profile", PROFILES)
def test_the_policy_loader_never_crashes_on_bad_input(workdir: Path, profile: settings) -> None:
    _policies(workdir, profile)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_failure_reader_never_crashes_on_bad_input(workdir: Path, profile: settings) -> None:
    _failures(workdir, profile)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_policy_test_runner_never_crashes_on_bad_input(workdir: Path, profile: settings) -> None:
    _cases(workdir, profile)


# -- what the fuzzing found (regressions) ------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "where"),
    [
        ("backoff: {initial: 99999999999999h}", "policies[0].retry.backoff.initial"),
        ("backoff: {initial: 1s, max: 99999999999999999d}", "policies[0].retry.backoff.max"),
        ("backoff: {initial: 3000000d, max: 3000000d}", "policies[0].retry.backoff.initial"),
        ("budget: {max_reruns: 1, per: 999999999999999999d}", "policies[0].retry.budget.per"),
    ],
    ids=["initial-overflows-timedelta", "max-overflows-timedelta", "due-overflows-the-date", "window"],
)
def test_a_duration_too_long_to_add_to_a_date_is_a_located_policy_error(
    retry: str, where: str, tmp_path: Path
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(
        "apiVersion: rerund/v1\npolicies:\n  - name: p\n    match: {error: {kinds: [SYSTEM]}}\n"
        f"    retry: {{{retry}}}\n"
    )
    with pytest.raises(
        PolicyError,
        match=rf"long.yaml:5:\d+: {re.escape(where)}: invalid duration .*: longer than the maximum of 36500d",
    ):
        load_policies([path])


def test_explaining_a_failure_at_the_end_of_time_gives_a_decision_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "late.yaml"
    path.write_text(
        "run: r1\nfailed_at: 9999-12-31T23:59:59Z\nerror: {kind: SYSTEM, message: Connection reset by peer}\n"
    )
    decision = decide(load_failure(path), DEMO_POLICIES, load_failure(path).failed_at)
    assert decision.decision == "rerun"
    assert decision.not_before is not None and decision.not_before.year == 9999
