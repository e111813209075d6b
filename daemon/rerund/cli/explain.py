"""``rerund explain``: offline from ``--policies`` and ``--failure``, or live for a RUN.

``rerund explain RUN --config rerund.yaml`` (or the connection flags and ``RERUND_*`` variables
of ``rerund run``) explains a live run with its real lineage. It reads
exactly what the daemon reads — the run, its failing action and error, its lineage
labels, and the reruns on the control plane (for budget counts) — and asks the same pure core,
so the answer is the daemon's answer. Nothing is recorded or created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from rerund.cli.common import (
    connection_settings,
    ensure_policies,
    has_ledger,
    reaching,
    say,
    state_ledger,
)
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core import redact
from rerund.core.decide import Explanation, explain
from rerund.core.encode import for_terminal
from rerund.core.runs import FAILED_PHASES, RunRef
from rerund.core.scopes import is_pattern
from rerund.core.status import decision_lines, explanation_lines, iso, lineage_lines
from rerund.errors import ConfigError
from rerund.policy.failures import load_failure
from rerund.policy.loader import load_policies
from rerund.ports import ControlPlane

__all__ = ["explain_run", "parse_now", "public_explanation", "render_text", "run_explain"]


def _target(args: argparse.Namespace, scopes: list[tuple[str, str]]) -> RunRef | list[tuple[str, str]]:
    """The run ``args.run`` names: ``PROJECT/DOMAIN/RUN`` as it is (the form the daemon's logs
    print), a bare name with ``--project`` and ``--domain``, or a bare name in the one concrete
    scope that can hold it; otherwise the scopes to look it up in (``resolve``): the
    configured ones, narrowed by ``--project`` or ``--domain`` when one is given."""
    run = str(args.run)
    if "/" in run:
        parts = run.split("/")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(
                f"run {run!r} is neither a run name nor PROJECT/DOMAIN/RUN; write e.g. "
                "ml/production/r1a2b3c4 or the bare name with --project and --domain"
            )
        return RunRef(*parts)
    if args.project and args.domain:
        return RunRef(args.project, args.domain, run)
    candidates = [
        (args.project or p, args.domain or d)
        for p, d in scopes
        if (not args.project or fnmatchcase(args.project, p))
        and (not args.domain or fnmatchcase(args.domain, d))
    ]
    if len(candidates) == 1 and not any(map(is_pattern, candidates[0])):
        return RunRef(*candidates[0], run)
    if not candidates:
        known = ", ".join(f"'{p}/{d}'" for p, d in scopes) or "none"
        given = " and ".join(
            f"--{k} {v}" for k, v in (("project", args.project), ("domain", args.domain)) if v
        )
        raise ConfigError(
            f"which project/domain is run {run!r} in? the settings watch {known}, none of them with "
            f"{given or 'a scope'}: write it as PROJECT/DOMAIN/{run} (as the daemon's logs print it) or "
            "pass --project and --domain"
        )
    return candidates


async def resolve(
    cp: ControlPlane, run: str, target: RunRef | list[tuple[str, str]], *, since: datetime
) -> RunRef:
    """The one run ``target`` names: as it is, or the bare name ``run`` looked up in the scopes
    (``find_run``). None found, or several, is a ``ConfigError`` that lists where it looked, or
    the candidates."""
    if isinstance(target, RunRef):
        return target
    from rerund.runtime.live import find_run

    found = await find_run(cp, run, target, since=since)
    if len(found) == 1:
        return found[0]
    where = ", ".join(f"{p}/{d}" for p, d in target)
    if not found:
        wild = any(is_pattern(p) or is_pattern(d) for p, d in target)
        raise ConfigError(
            f"no run named {run!r} in the scopes {where}"
            + (f" (under a wildcard scope: among the runs that failed since {iso(since)})" if wild else "")
            + f"; check the name, or write it as PROJECT/DOMAIN/{run} (as the daemon's logs print it)"
        )
    raise ConfigError(
        f"run name {run!r} is in {len(found)} scopes: {', '.join(map(str, found))}; name one as "
        f"PROJECT/DOMAIN/RUN, e.g. rerund explain {found[0]}"
    )


def explain_run(args: argparse.Namespace) -> int:
    """Print the live explanation of ``args.run``; exit 0, or 1 when the run has not failed.

    Besides the decision (made as if the run had just failed), it says which reruns of the
    lineage already exist and where the lineage stands — recovered, exhausted, or in flight and
    why — from the control plane and, when there is one, the ledger."""
    # The control plane, the daemon's live explanation and the ledger's status load only here:
    # the offline explain (and check, test, schema in this module's group) never uses them.
    from rerund.app import connect_control_plane
    from rerund.runtime.live import SEARCH_BACK, explain_live
    from rerund.runtime.status import gather_status

    settings = connection_settings(args, policies=args.policies)
    settings.require_runnable()
    ensure_policies(settings)
    now = parse_now(args.now)
    scopes = [(s.project, s.domain) for s in settings.scopes]
    target = _target(args, scopes)
    policies = load_policies(list(settings.policies))
    ledger = state_ledger(settings) if has_ledger(settings) else None

    async def go() -> int:
        clock = ControlPlaneClock()  # without --now, "now" is the control plane's (HTTP Date)
        cp = await connect_control_plane(settings, clock)
        when = now if args.now else clock.now()
        ref = await resolve(cp, str(args.run), target, since=when - max(settings.lookback, SEARCH_BACK))
        project, domain = ref.project, ref.domain
        history = (
            (lambda fp, since: ledger.fingerprint_recoveries(since=since, fingerprint=fp).get(fp, (0, 0)))
            if ledger is not None
            else None
        )
        result = await explain_live(cp, ref, policies, when, history)
        if result is None:
            summary = await cp.get_run(ref)
            say(
                f"run {ref} is {summary.phase}, not failed: rerund decides only about FAILED, "
                "TIMED_OUT and ABORTED runs"
            )
            return 1
        explanation, failure, reruns = result.explanation, result.failure, list(result.reruns)
        status = gather_status(now=when, ledger=ledger, policies=policies, reruns=reruns)
        key = f"{project}/{domain}/{failure.root}"
        state = next(
            (s for s in (*status.in_flight, *status.recovered, *status.exhausted) if s.key == key), None
        )
        # The lineage went on after this run: what the daemon decides about its latest rerun
        # is where the lineage really stands (give up, rerun again, ...).
        mine = sorted((r for r in reruns if r.root == failure.root), key=lambda r: r.attempt)
        latest: dict[str, Any] | None = None
        if mine and mine[-1].attempt > failure.attempt and mine[-1].phase in FAILED_PHASES:
            top = mine[-1]
            answer = await explain_live(cp, RunRef(project, domain, top.name), policies, when)
            if answer is not None:
                d = answer.explanation.decision
                latest = {
                    "run": top.name,
                    "attempt": top.attempt,
                    "phase": top.phase,
                    "decision": redact.public_decision(d.to_json()),
                }
                if state is not None and state.state == "awaiting decision":
                    state = None  # the line below says it better
        body = public_explanation(explanation)
        facts = result.facts(ref)
        if args.format == "json":
            lineage = {
                "reruns": [
                    {"name": r.name, "attempt": r.attempt, "phase": r.phase, "policy": r.policy}
                    for r in sorted(reruns, key=lambda r: r.attempt)
                    if r.root == failure.root
                ],
                "state": state.to_json() if state else None,
                "latest": latest,
            }
            print(json.dumps({**body, "failure": facts, "lineage": lineage}, indent=2))
            return 0
        lines = lineage_lines(failure.root, failure.attempt, reruns, state)
        if latest is not None:
            lines.append(
                f"{'latest:':<12}rerun {latest['run']!r} (attempt {latest['attempt']}) ended "
                f"{latest['phase']}; the daemon's decision about it: {latest['decision']['decision']}: "
                f"{latest['decision']['reason']}"
            )
        text = explanation_lines(
            str(ref),
            facts,
            body,
            body["trace"],
            lines,
            body["changes"],
            exact=failure.spec is not None,
        )
        say(*text)
        return 0

    with reaching(settings, "explain"):
        return asyncio.run(go())


def parse_now(text: str | None) -> datetime:
    """``--now`` as an aware UTC datetime; the wall clock when not given."""
    if text is None:
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


def run_explain(args: argparse.Namespace) -> int:
    """``rerund explain``: live for a RUN with --config, else offline from --policies and --failure."""
    if args.run is not None:
        if args.failure:
            raise ConfigError(
                f"explain takes a RUN (live) or --failure FILE (offline), not both: drop {args.run!r} "
                f"or --failure {args.failure}"
            )
        return explain_run(args)
    if not args.policies or not args.failure:
        raise ConfigError(
            "explain needs --policies PATH and --failure FILE (or a RUN, with --config or the connection "
            "flags, for a live explain)"
        )

    now = parse_now(args.now)
    policies = load_policies(args.policies)
    failure = load_failure(args.failure, now=now)
    body = public_explanation(explain(failure, policies, now))
    if args.format == "json":
        print(json.dumps(body, indent=2, sort_keys=False))
        return 0
    print(render_text(body, body["trace"], body["changes"], exact=failure.spec is not None))
    return 0


def public_explanation(explanation: Explanation) -> dict[str, Any]:
    """An explanation as every ``explain`` shows it, live or offline (the one path): the decision
    in its public form (``public_decision``: env values, secret inputs and URL secrets never
    shown), the RunSpec changes and the trace, which the core builds from redacted values."""
    return {
        **redact.public_decision(explanation.decision.to_json()),
        "changes": list(explanation.changes),
        "trace": list(explanation.trace),
    }


def render_text(
    decision: dict[str, Any], trace: list[str], changes: list[str] | None = None, *, exact: bool = True
) -> str:
    """The text form of an explanation (``rerund.core.status.decision_lines``, shared with the
    live explain and the operator page), each line escaped for a terminal (``for_terminal``)."""
    return "\n".join(map(for_terminal, decision_lines(decision, trace, changes, exact=exact)))
