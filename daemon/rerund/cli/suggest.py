"""``rerund suggest``: a starter policy file and a ``rerund test`` case file from the real
failures of a window (``rerund.policy.suggest`` says how; ``rerund.runtime.suggestions`` what
it reads). Both files are written side by side; ``rerund check`` and ``rerund test`` pass on
them as written (the expectations are the decisions of the written policies)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from rerund.cli.common import (
    add_connection_arguments,
    add_format_argument,
    connection_settings,
    has_ledger,
    reaching,
    say,
    state_ledger,
)
from rerund.clock import ControlPlaneClock
from rerund.core.decide import decide
from rerund.core.durations import parse_duration
from rerund.core.model import Failure
from rerund.policy.loader import load_policies
from rerund.policy.suggest import Seen, Suggestion, case_file, suggest
from rerund.runtime.suggestions import gather_failures

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``suggest`` to the ``rerund`` parser."""
    p = sub.add_parser(
        "suggest",
        help="a starter policy file and a test case file from the real failures of a window",
        description=(
            "Reads the failed runs of the window (and the ledger, when there is one), groups them by "
            "fingerprint, finds which recovered on rerun (a rerun by hand or by rerund: a run whose RunSpec "
            "relation names the failed run), and writes DIR/suggested.yaml (policies, the "
            "evidence as comments) and DIR/suggested.test.yaml (the real failures, messages redacted). "
            "`rerund check` and `rerund test` pass on both as written; review them before use."
        ),
    )
    p.add_argument(
        "--since", metavar="DURATION", type=_duration, default=timedelta(days=30), help="default 30d"
    )
    p.add_argument(
        "--out", metavar="DIR", default="suggested", help="where to write the two files (./suggested)"
    )
    p.add_argument("--limit", type=int, default=1000, help="read at most this many failures (default 1000)")
    add_connection_arguments(p, scope_help="scope to read (repeatable; default: the settings' scopes)")
    add_format_argument(p, what="summary")
    p.set_defaults(func=_suggest)


def _duration(text: str) -> timedelta:
    return parse_duration(text)


_duration.__name__ = "duration (e.g. 30d)"


def _suggest(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    settings.require_runnable()
    scopes = [(s.project, s.domain) for s in settings.scopes]
    ledger = state_ledger(settings) if has_ledger(settings) else None
    history = (
        (lambda fp, since: ledger.fingerprint_recoveries(since=since, fingerprint=fp).get(fp, (0, 0)))
        if ledger is not None
        else None
    )

    async def go() -> tuple[list[Seen], Any]:
        from rerund.app import connect_control_plane  # the flyte SDK: only when it reads runs

        clock = ControlPlaneClock()
        cp = await connect_control_plane(settings, clock)
        now = clock.now()
        found = await gather_failures(cp, scopes, since=now - args.since, limit=args.limit, history=history)
        return found, now

    with reaching(settings, "suggest"):
        seen, now = asyncio.run(go())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = suggest(seen, now=now, since=args.since, scopes=[f"{p}/{d}" for p, d in scopes])
    policy_path = out / "suggested.yaml"
    policy_path.write_text(result.policies)
    written = load_policies([policy_path])
    expectations = []
    for case in result.cases:
        decision = decide(Failure.model_validate(case["failure"]), written, now)
        expectations.append({"decision": decision.decision, "policy": decision.policy})
    cases_path = out / "suggested.test.yaml"
    if result.cases:
        cases_path.write_text(case_file(result.cases, expectations, now))
    if args.format == "json":
        print(json.dumps(_summary(seen, result, policy_path, cases_path), indent=2))
        return 0
    say(
        f"{sum(s.failures for s in seen)} failure(s) of {result.fingerprints} fingerprint(s) -> "
        f"{result.policy_count} polic{'ies' if result.policy_count != 1 else 'y'} in {policy_path}"
        + (f", {len(result.cases)} case(s) in {cases_path}" if result.cases else " (no case: no failure)")
    )
    say(f"next: rerund check {policy_path} && rerund test {cases_path}")
    return 0


def _summary(seen: list[Seen], result: Suggestion, policies: Path, cases: Path) -> dict[str, Any]:
    """What ``--format json`` prints: per fingerprint, its failures (the original runs), the
    reruns of them that ended and how many recovered (by hand or by rerund), and its policy."""
    groups = sorted(seen, key=lambda s: (-s.failures, s.fingerprint))
    return {
        "failures": sum(s.failures for s in seen),
        "fingerprints": [
            {
                "fingerprint": s.fingerprint,
                "task": s.example.task,
                "error": {"kind": s.example.error.kind, "code": s.example.error.code},
                "failures": s.failures,
                "runs": s.runs,
                "reruns": s.reruns,
                "recovered": s.recovered,
                "policy": result.policy_of[s.fingerprint],
            }
            for s in groups
        ],
        "policies": str(policies),
        "cases": str(cases) if result.cases else None,
    }
