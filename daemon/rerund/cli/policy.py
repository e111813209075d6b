"""``rerund check``, ``rerund explain`` (``rerund.cli.explain``), ``rerund test`` and ``rerund schema``.

Exit codes: 0 = fine, 1 = the command ran and found problems (invalid policies, a failing
policy test), 2 = it could not run (bad arguments, unreadable input; printed without a
traceback by the dispatcher).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rerund.cli.common import add_connection_arguments, add_format_argument, junit_xml, say
from rerund.cli.explain import run_explain
from rerund.core.durations import format_duration
from rerund.errors import PolicyError, PolicyProblem
from rerund.policy.casefiles import collect, run_files
from rerund.policy.loader import expand_paths, load_policies_and_warnings
from rerund.policy.schema import policy_schema

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the policy tooling sub-commands to the ``rerund`` parser."""
    check = sub.add_parser(
        "check",
        help="validate policy files (every problem as file:line:col: path: message)",
        description=(
            "Validate policy files. A directory contributes its *.yaml and *.yml files (not "
            "recursively). Exit 0 when valid, 1 with every problem. Warnings (settings that can "
            "never apply, e.g. an escalate step after max_attempts) are printed and fail only "
            "with --strict."
        ),
    )
    _add_paths_and_format(check, "a policy file or a directory of *.yaml / *.yml", junit_case="file")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too (for CI)")
    check.add_argument(
        "--backend",
        choices=("auto", "union", "oss"),
        default=None,
        help="the control plane the policies run against (default: $RERUND_BACKEND, else auto); "
        "oss warns about matches on error codes and gpu_fault, which open-source Flyte never serves",
    )
    check.set_defaults(func=_check)

    explain = sub.add_parser(
        "explain",
        help="the decision for one failure, and why",
        description=(
            "Explain the decision for a failure: offline from --policies and --failure, or live for "
            "a RUN on the control plane, reached as `rerund run` reaches it: --config, the connection "
            "flags below, or the RERUND_* environment variables."
        ),
    )
    explain.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run on the control plane (live): PROJECT/DOMAIN/RUN as the daemon's logs print it, "
        "or its bare name, looked up across the settings' scopes (org-wide under */*; a name in "
        "several scopes lists them), optionally narrowed with --project and --domain",
    )
    explain.add_argument(
        "--policies", action="append", metavar="PATH", help="policy file or directory (repeatable)"
    )
    explain.add_argument(
        "--failure",
        metavar="FILE",
        help="a failure document (YAML or JSON; only run is required, failed_at defaults to --now; "
        "example: policies/failures/connection-reset.yaml)",
    )
    add_connection_arguments(
        explain,
        scope_help="scope of the runs (live; repeatable)",
        state_help="the daemon's ledger (live; where the lineage stands)",
    )
    explain.add_argument(
        "--project", help="project of RUN (live; default: the one project of the settings' scopes)"
    )
    explain.add_argument(
        "--domain", help="domain of RUN (live; default: the one domain of the settings' scopes)"
    )
    add_format_argument(explain)
    explain.add_argument("--now", metavar="ISO8601", help="decide as of this time (default: now)")
    explain.set_defaults(func=run_explain)

    test = sub.add_parser(
        "test",
        help="run policy tests (*.test.yaml)",
        description=(
            "Run policy test files: each case gives a failure and the decision expected for it "
            "(see policies/tests/). Exit 0 when every case passes, 1 otherwise."
        ),
    )
    _add_paths_and_format(
        test, "a *.test.yaml file, or a directory searched recursively for *.test.yaml", junit_case="case"
    )
    test.set_defaults(func=_test)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of policy files (for editors)",
        description=(
            "Print the JSON Schema of policy files, e.g. `rerund schema > rerund.schema.json`, for "
            "completion and validation in editors (yaml-language-server)."
        ),
    )
    schema.set_defaults(func=_schema)


def _add_paths_and_format(parser: argparse.ArgumentParser, paths_help: str, *, junit_case: str) -> None:
    """The PATH arguments and the text/json/junit ``--format`` of ``check`` and ``test``."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help=paths_help)
    add_format_argument(
        parser, extra=("junit",), what=f"output (junit: JUnit XML for CI, one test case per {junit_case})"
    )


def _check(args: argparse.Namespace) -> int:
    files, _ = expand_paths(args.paths)
    try:
        backend = args.backend or os.environ.get("RERUND_BACKEND", "auto")
        policies, warnings = load_policies_and_warnings(args.paths, backend=backend)
    except PolicyError as exc:
        problems = list(exc.problems)
        if args.format == "json":
            print(json.dumps({"ok": False, "problems": [_problem_json(p) for p in problems]}, indent=2))
        elif args.format == "junit":
            print(_check_junit([str(f) for f in files] or list(map(str, args.paths)), problems))
        else:
            say(*problems)
            n = len(problems)
            sys.stdout.flush()  # the problems first, whole lines, even when both streams share a pipe
            print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 1
    checks = [c.name for c in policies.reproductions]
    failed = bool(warnings) and args.strict
    if args.format == "json":
        print(
            json.dumps(
                {
                    "ok": not failed,
                    "files": list(policies.sources),
                    "policies": list(policies.names()),
                    "reproductions": checks,
                    "incidents": None
                    if policies.incidents is None
                    else {
                        "failures": policies.incidents.failures,
                        "within": format_duration(policies.incidents.within),
                        "probe_every": format_duration(policies.incidents.probe_every),
                    },
                    "problems": [],
                    "warnings": [_problem_json(w) for w in warnings],
                },
                indent=2,
            )
        )
        return 1 if failed else 0
    if args.format == "junit":
        print(_check_junit(list(policies.sources), list(warnings) if args.strict else []))
        return 1 if failed else 0
    for warning in warnings:
        print(_warning_line(warning))
    if warnings:
        n = len(warnings)
        sys.stdout.flush()
        strict = " (an error with --strict)" if args.strict else ""
        print(f"{n} warning{'s' if n != 1 else ''}{strict}", file=sys.stderr)
    if failed:
        return 1
    files_n = len(policies.sources)
    say(
        f"ok: {len(policies)} polic{'ies' if len(policies) != 1 else 'y'} in "
        f"{files_n} file{'s' if files_n != 1 else ''}: {', '.join(policies.names()) or '(none)'}"
        + (
            f"; {len(checks)} reproduction check{'s' if len(checks) != 1 else ''}: {', '.join(checks)}"
            if checks
            else ""
        )
        + (f"; incidents: {policies.incidents.describe()}" if policies.incidents is not None else "")
    )
    return 0


def _warning_line(w: PolicyProblem) -> str:
    """``file:line:col: path: warning: message``."""
    return str(PolicyProblem(w.file, w.line, w.column, w.path, f"warning: {w.message}"))


def _problem_json(p: PolicyProblem) -> dict[str, Any]:
    return {"file": p.file, "line": p.line, "column": p.column, "path": p.path, "message": p.message}


def _check_junit(files: list[str], problems: list[PolicyProblem]) -> str:
    """One test case per file (and per path given that is not a file): its problems, or none."""
    names = list(dict.fromkeys([*files, *(p.file for p in problems)]))
    cases = []
    for name in names:
        mine = [str(p) for p in problems if p.file == name]
        cases.append(("rerund check", name, "\n".join(mine) if mine else None))
    return junit_xml("rerund check", cases)


def _test(args: argparse.Namespace) -> int:
    if args.format == "text":
        outcome = run_files(args.paths, sys.stdout)
        return 0 if outcome.ok else 1
    outcome = collect(args.paths)
    if outcome.files == 0 and not outcome.errors:
        # The text format says so in a line; a CI report must carry it too, or it reads as green.
        where = ", ".join(str(p) for p in args.paths)
        outcome.add(
            where,
            "",
            "error",
            [f"no *.test.yaml files under {where}; point rerund test at policy tests (NAME.test.yaml)"],
        )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "ok": outcome.ok,
                    "passed": outcome.passed,
                    "failed": outcome.failed,
                    "errors": outcome.errors,
                    "cases": [r.to_json() for r in outcome.results],
                },
                indent=2,
            )
        )
    else:
        cases = [
            (r.file, r.name or r.file, None if r.result == "passed" else "\n".join(r.details) or r.result)
            for r in outcome.results
        ]
        print(junit_xml("rerund test", cases))
    return 0 if outcome.ok else 1


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(policy_schema(), indent=2))
    return 0
