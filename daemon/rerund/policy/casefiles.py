"""Policy tests: ``*.test.yaml`` files of failures and the decisions they must get.

A test file names the policies it tests (paths relative to the test file), an optional
``now``, an optional base ``failure`` merged under every case's failure, and the cases::

    policies: ../rerund.yaml
    now: 2026-11-24T10:00:00Z
    failure: {project: demo, domain: development, failed_at: 2026-11-24T10:00:00Z}
    cases:
      - name: a connection reset is rerun
        failure: {run: r1, error: {kind: SYSTEM, message: "Connection reset by peer"}}
        expect: {decision: rerun, policy: transient-network, attempt: 1}

``expect`` is a subset of the decision JSON (nested mappings compare as subsets too), plus
``reason_matches`` (a regular expression searched in the reason) and ``changes`` (lines that
must be among the rerun's RunSpec changes, as ``rerund explain`` prints them, e.g.
``"queue: 'spot-pool' -> 'ondemand-pool'"``). ``rerund test`` prints one
``PASSED``/``FAILED`` line per case, expected vs actual for a failure, and a summary line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field

from rerund.core.decide import decide, iso, rerun_changes
from rerund.core.encode import for_terminal
from rerund.core.model import Defer, Rerun
from rerund.core.rules import PolicySet
from rerund.errors import PolicyError, PolicyProblem
from rerund.policy.failures import failure_from
from rerund.policy.loader import load_policies
from rerund.policy.source import Document, locate, read_document, validate

__all__ = ["EXPECT_KEYS", "CaseResult", "Outcome", "collect", "discover", "run_files"]

EXPECT_KEYS = (
    "decision",
    "policy",
    "reason",
    "reason_matches",
    "attempt",
    "scope",
    "source_run",
    "action",
    "name",
    "env",
    "labels",
    "inputs",
    "overrides",
    "changes",
    "not_before",
    "relaunch",
    "waiting_for",
)


class _Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    failure: dict[str, Any]
    now: datetime | None = None
    expect: dict[str, Any] = Field(min_length=1)


class _TestFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    policies: str | list[str]
    now: datetime | None = None
    failure: dict[str, Any] = Field(default_factory=dict)
    cases: list[_Case] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    """One case (or a file that could not run: ``name`` empty): passed, failed or error."""

    file: str
    name: str
    result: str  # passed | failed | error
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "case": self.name, "result": self.result, "details": list(self.details)}


@dataclass
class Outcome:
    """Counts of one ``rerund test`` run, its text lines and each case's result (for JSON/JUnit)."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    lines: list[str] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    files: int = 0

    @property
    def summary(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed"
        if self.errors:
            text += f", {self.errors} error{'s' if self.errors != 1 else ''}"
        return text

    def add(self, file: str, name: str, result: str, details: Sequence[str] = ()) -> None:
        """Count one result and write its lines (``file::name RESULT`` then indented details)."""
        if result == "passed":
            self.passed += 1
        elif result == "failed":
            self.failed += 1
        else:
            self.errors += 1
        self.lines.append(f"{file}::{name} {result.upper()}" if name else f"{file} {result.upper()}")
        self.lines.extend(details)
        self.results.append(CaseResult(file, name, result, tuple(d.strip() for d in details)))

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Test files: files as given; directories searched recursively for ``*.test.yaml``."""
    files: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.test.yaml") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(str(path))
    return files, missing


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if expected == actual:
        return True
    if isinstance(actual, str) and isinstance(expected, (int, float, bool)):
        text = ("true" if expected else "false") if isinstance(expected, bool) else str(expected)
        return text == actual
    return False


def _diff(expected: Any, actual: Any, path: str) -> list[str]:
    """Why ``actual`` is not a superset of ``expected`` (empty = it is)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key, value in expected.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: expected {value!r}, but the decision has no {key!r}")
            else:
                out.extend(_diff(value, actual[key], sub))
        return out
    if _same(expected, actual):
        return []
    return [f"{path}: expected {expected!r}, got {actual!r}"]


def _check(expect: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    expected = _normalise(dict(expect))
    pattern = expected.pop("reason_matches", None)
    changes = expected.pop("changes", None)
    problems = _diff(expected, actual, "")
    if changes is not None:
        wanted = changes if isinstance(changes, list) else [changes]
        for line in wanted:
            if str(line) not in actual.get("changes", []):
                problems.append(f"changes: expected {line!r} among {actual.get('changes', [])!r}")
    if pattern is not None and not re.search(str(pattern), actual.get("reason") or ""):
        problems.append(f"reason: expected to match {pattern!r}, got {actual.get('reason')!r}")
    return problems


def _case_node(doc: Document, index: int, key: str) -> yaml.Node | None:
    node = doc.node
    for part in ("cases", index, key):
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node


def _problem_lines(problems: Sequence[PolicyProblem]) -> list[str]:
    return [f"    {p}" for p in problems]


def _run_file(path: Path, outcome: Outcome, cache: dict[tuple[str, ...], PolicySet | PolicyError]) -> None:
    doc, problems = read_document(path)
    if doc is not None and doc.data is None:
        problems = [PolicyProblem(str(path), 1, 1, "", "empty test file; it needs policies and cases")]
    spec: _TestFile | None = None
    if doc is not None and not problems:
        allowed = {"": list(_TestFile.model_fields), "cases": list(_Case.model_fields)}
        spec, problems = validate(_TestFile, doc, allowed=allowed)
    if spec is None or doc is None:
        outcome.add(str(path), "", "error", _problem_lines(problems))
        return
    policy_paths = [spec.policies] if isinstance(spec.policies, str) else spec.policies
    resolved = tuple(str(path.parent / p) for p in policy_paths)
    if resolved not in cache:
        try:
            cache[resolved] = load_policies(list(resolved))
        except PolicyError as exc:
            cache[resolved] = exc
    policies = cache[resolved]
    if isinstance(policies, PolicyError):
        line, column, _ = locate(doc.node, ("policies",))
        details = [f"    {path}:{line}:{column}: policies: the policies do not load:"]
        outcome.add(str(path), "", "error", details + _problem_lines(policies.problems))
        return
    for index, case in enumerate(spec.cases):
        merged = {**spec.failure, **case.failure}
        if isinstance(spec.failure.get("error"), dict) and isinstance(case.failure.get("error"), dict):
            merged["error"] = {**spec.failure["error"], **case.failure["error"]}
        failure, fproblems = failure_from(
            doc, merged, _case_node(doc, index, "failure"), base=("cases", index, "failure")
        )
        unknown = sorted(set(case.expect) - set(EXPECT_KEYS))
        if unknown:
            line, column, _ = locate(doc.node, ("cases", index, "expect", unknown[0]), at_key=True)
            fproblems.append(
                PolicyProblem(
                    str(path),
                    line,
                    column,
                    f"cases[{index}].expect.{unknown[0]}",
                    f"unknown decision field {unknown[0]!r}; use {', '.join(EXPECT_KEYS)}",
                )
            )
        if failure is None or fproblems:
            outcome.add(str(path), case.name, "error", _problem_lines(fproblems))
            continue
        now = case.now or spec.now or failure.failed_at
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        decision = decide(failure, policies, now)
        actual = decision.to_json()
        actual["changes"] = rerun_changes(failure, decision) if isinstance(decision, Rerun | Defer) else []
        diffs = _check(case.expect, actual)
        if diffs:
            details = [f"    {d}" for d in diffs]
            details.append(f"    actual decision: {actual['decision']}: {actual['reason']}")
            outcome.add(str(path), case.name, "failed", details)
        else:
            outcome.add(str(path), case.name, "passed")


def run_files(paths: Sequence[str | Path], out: TextIO | None) -> Outcome:
    """Run every case of the test files at ``paths``, printing pytest-like lines to ``out``
    (nothing when None: the caller prints ``Outcome.results`` in another format)."""
    outcome = collect(paths)
    if out is None:
        return outcome
    for line in outcome.lines:  # case names, reasons and details come from the YAML: escaped
        print(for_terminal(line), file=out)
    if outcome.files == 0 and not outcome.errors:
        print(for_terminal(f"no *.test.yaml files under {', '.join(str(p) for p in paths)}"), file=out)
    print(f"==== {outcome.summary} ====", file=out)
    return outcome


def collect(paths: Sequence[str | Path]) -> Outcome:
    """Run every case of the test files at ``paths`` (nothing printed)."""
    files, missing = discover(paths)
    outcome = Outcome()
    for name in missing:
        outcome.add(name, "", "error", [f"    {name}: no such file or directory; check the path"])
    cache: dict[tuple[str, ...], PolicySet | PolicyError] = {}
    for path in files:
        _run_file(path, outcome, cache)
    outcome.files = len(files)
    return outcome
