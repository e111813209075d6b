"""``rerund check``, ``rerund explain`` (``rerund.cli.explain``), ``rerund test`` and ``rerund schema``.

Exit codes: 0 = fine, 1 = the command ran and found problems (invalid policies, a failing
policy test), 2 = it could not run (bad arguments, unreadable input; printed without a
traceback by the dispatcher).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rerund.cli.explain import run_explain
from rerund.errors import PolicyError
from rerund.policy.casefiles import run_files
from rerund.policy.loader import load_policies
from rerund.policy.schema import policy_schema

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
    explain.set_defaults(func=run_explain)

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


def _test(args: argparse.Namespace) -> int:
    outcome = run_files(args.paths, sys.stdout)
    return 0 if outcome.ok else 1


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(policy_schema(), indent=2))
    return 0
