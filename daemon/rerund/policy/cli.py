"""``rerund check``, ``rerund explain``, ``rerund test`` and ``rerund schema``.

Exit codes: 0 = fine, 1 = the command ran and found problems (invalid policies, a failing
policy test), 2 = it could not run (bad arguments, unreadable input; printed without a
traceback by the dispatcher).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rerund.errors import ConfigError, PolicyError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the policy tooling sub-commands to the ``rerund`` parser."""
    check = sub.add_parser(
        "check",
        help="validate policy files (every problem as file:line:col: path: message)",
        description="Validate policy files. A directory contributes its *.yaml files (not recursively).",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="a policy file or a directory of *.yaml")
    check.set_defaults(func=_check)

    explain = sub.add_parser(
        "explain",
        help="the decision for one failure, and why",
        description=(
            "Explain the decision for a failure: offline from --policies and --failure, or live for "
            "a RUN on the control plane with --config."
        ),
    )
    explain.add_argument(
        "run", nargs="?", metavar="RUN", help="a run on the control plane (live; needs --config)"
    )
    explain.add_argument(
        "--policies", action="append", metavar="PATH", help="policy file or directory (repeatable)"
    )
    explain.add_argument("--failure", metavar="FILE", help="a failure document (YAML or JSON)")
    explain.add_argument("--config", metavar="FILE", help="daemon settings, for a live explain of RUN")
    explain.add_argument("--project", help="project of RUN (live explain)")
    explain.add_argument("--domain", help="domain of RUN (live explain)")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.add_argument("--now", metavar="ISO8601", help="decide as of this time (default: now)")
    explain.set_defaults(func=_explain)

    test = sub.add_parser(
        "test",
        help="run policy tests (*.test.yaml)",
        description="Run policy test files; directories are searched recursively for *.test.yaml.",
    )
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.set_defaults(func=_test)

    schema = sub.add_parser("schema", help="print the JSON Schema of policy files")
    schema.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    from rerund.policy.loader import load_policies

    try:
        policies = load_policies(args.paths)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 1
    files = len(policies.sources)
    checks = [c.name for c in policies.reproductions]
    print(
        f"ok: {len(policies)} polic{'ies' if len(policies) != 1 else 'y'} in "
        f"{files} file{'s' if files != 1 else ''}: {', '.join(policies.names()) or '(none)'}"
        + (
            f"; {len(checks)} reproduction check{'s' if len(checks) != 1 else ''}: {', '.join(checks)}"
            if checks
            else ""
        )
    )
    return 0


def parse_now(text: str | None) -> datetime:
    """``--now`` as an aware UTC datetime; the wall clock when not given."""
    if text is None:
        from rerund.clock import utcnow

        return utcnow()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--now {text!r} is not an ISO-8601 time; write e.g. 2026-11-24T10:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"--now {text!r} has no timezone; add Z for UTC, e.g. 2026-11-24T10:00:00Z")
    return when.astimezone(UTC)


def _explain(args: argparse.Namespace) -> int:
    if args.run is not None:
        if not args.config:
            raise ConfigError(f"a live explain of run {args.run!r} needs --config FILE (the daemon settings)")
        try:
            live = importlib.import_module("rerund.runtime.live")
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "live explain is not available in this build (rerund.runtime.live is missing)"
            ) from exc
        return int(live.explain_run(args))
    if not args.policies or not args.failure:
        raise ConfigError(
            "explain needs --policies PATH and --failure FILE (or a RUN and --config for a live explain)"
        )
    from rerund.core.decide import explain
    from rerund.policy.failures import load_failure
    from rerund.policy.loader import load_policies

    now = parse_now(args.now)
    policies = load_policies(args.policies)
    failure = load_failure(args.failure)
    result = explain(failure, policies, now)
    if args.format == "json":
        print(json.dumps({**result.decision.to_json(), "trace": result.trace}, indent=2, sort_keys=False))
        return 0
    print(render_text(result.decision.to_json(), result.trace))
    return 0


def render_text(decision: dict[str, Any], trace: list[str]) -> str:
    """The text form of an explanation (shared with the live explain)."""
    lines = [f"{'decision:':<12}{decision['decision']}", f"{'reason:':<12}{decision['reason']}"]
    for key in ("name", "scope", "action", "not_before"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}{decision[key]}")
    for key in ("env", "labels", "inputs"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}" + ", ".join(f"{k}={v}" for k, v in decision[key].items()))
    lines.append("trace:")
    lines.extend(f"  {i}. {step}" for i, step in enumerate(trace, 1))
    return "\n".join(lines)


def _test(args: argparse.Namespace) -> int:
    from rerund.policy.casefiles import run_files

    outcome = run_files(args.paths, sys.stdout)
    return 0 if outcome.ok else 1


def _schema(args: argparse.Namespace) -> int:
    from rerund.policy.schema import policy_schema

    print(json.dumps(policy_schema(), indent=2))
    return 0
