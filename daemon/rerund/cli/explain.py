"""``rerund explain``: offline from ``--policies`` and ``--failure``, or live for a RUN.

``rerund explain RUN --config rerund.yaml`` explains a live run with its real lineage. It reads
exactly what the daemon reads — the run, its failing action and error, its lineage
labels, and the reruns on the control plane (for budget counts) — and asks the same pure core,
so the answer is the daemon's answer. Nothing is recorded or created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from rerund.clock import utcnow
from rerund.core.decide import Explanation, explain
from rerund.core.lineage import failure_from
from rerund.core.model import Failure
from rerund.core.rules import PolicySet
from rerund.core.runs import FAILED_PHASES, RunRef
from rerund.errors import ConfigError
from rerund.policy.failures import load_failure
from rerund.policy.loader import load_policies
from rerund.ports import ControlPlane
from rerund.runtime.daemon import connect_control_plane
from rerund.runtime.reconcile import DEFAULT_LOOKBACK
from rerund.runtime.reconcile.index import RerunIndex
from rerund.runtime.settings import load_settings

__all__ = ["explain_live", "explain_run", "parse_now", "render_text", "run_explain"]


def _scope(args: argparse.Namespace, scopes: list[tuple[str, str]]) -> tuple[str, str]:
    if args.project and args.domain:
        return args.project, args.domain
    if len(scopes) == 1 and not (args.project or args.domain):
        return scopes[0]
    matching = [
        s
        for s in scopes
        if (not args.project or s[0] == args.project) and (not args.domain or s[1] == args.domain)
    ]
    if len(matching) == 1:
        return matching[0]
    known = ", ".join(f"{p}/{d}" for p, d in scopes) or "none"
    raise ConfigError(
        f"which project/domain is run {args.run!r} in? pass --project and --domain "
        f"(the settings watch: {known})"
    )


async def explain_live(
    cp: ControlPlane, ref: RunRef, policies: PolicySet, now: datetime
) -> tuple[Explanation, Failure] | None:
    """The decision the daemon would make about run ``ref`` at ``now``, with its trace, from its
    real lineage labels and the budget counts of the reruns on the control plane (listed as a
    daemon's first pass would list them).

    Read-only: nothing is recorded, scheduled or created. None when the run has not failed
    (rerund decides only about FAILED, TIMED_OUT and ABORTED runs).
    """
    budgets = policies.budgets()
    since = min([now - DEFAULT_LOOKBACK, *(now - window for window in budgets.values())])
    index = RerunIndex(cp, reads=asyncio.Semaphore(8), count_error=lambda _exc: None)
    await index.refresh(ref.project, ref.domain, since=since, budgets=budgets, now=now)
    summary = await cp.get_run(ref)
    if summary.phase not in FAILED_PHASES:
        return None
    facts = await cp.read_failure(summary)
    used, oldest = index.budget_counts(now, budgets)
    failure = failure_from(facts, used, oldest)
    return explain(failure, policies, now), failure


def explain_run(args: argparse.Namespace) -> int:
    """Print the live explanation of ``args.run``; exit 0, or 1 when the run has not failed."""

    settings = load_settings(args.config)
    now = parse_now(args.now)
    scopes = [(s.project, s.domain) for s in settings.scopes]
    project, domain = _scope(args, scopes)
    policies = load_policies(list(settings.policies))
    ref = RunRef(project, domain, args.run)

    async def go() -> int:
        cp = await connect_control_plane(settings)
        result = await explain_live(cp, ref, policies, now)
        if result is None:
            summary = await cp.get_run(ref)
            print(
                f"run {ref} is {summary.phase}, not failed: rerund decides only about FAILED, "
                "TIMED_OUT and ABORTED runs"
            )
            return 1
        explanation, failure = result
        body = explanation.decision.to_json()
        facts = {
            "run": str(ref),
            "root": failure.root,
            "attempt": failure.attempt,
            "task": failure.task,
            "phase": failure.phase.value,
            "action": failure.action,
            "action_task": failure.action_task,
            "error": failure.error.model_dump(exclude_none=True),
            "failed_at": failure.failed_at.isoformat(),
            "budget_used": dict(failure.budget_used),
        }
        if args.format == "json":
            print(
                json.dumps(
                    {**body, "changes": explanation.changes, "trace": explanation.trace, "failure": facts},
                    indent=2,
                )
            )
            return 0
        err = failure.error
        print(f"{'run:':<12}{ref} ({failure.phase.value}, task {failure.task})")
        print(f"{'lineage:':<12}root {failure.root!r}, {failure.attempt} rerun(s) issued before this one")
        print(f"{'failed:':<12}action {failure.action} ({failure.action_task}) at {facts['failed_at']}")
        print(f"{'error:':<12}{err.kind} {err.code}: {err.message[:300]}")
        print(render_text(body, explanation.trace, explanation.changes, exact=failure.spec is not None))
        return 0

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
        if not args.config:
            raise ConfigError(f"a live explain of run {args.run!r} needs --config FILE (the daemon settings)")
        return explain_run(args)
    if not args.policies or not args.failure:
        raise ConfigError(
            "explain needs --policies PATH and --failure FILE (or a RUN and --config for a live explain)"
        )

    now = parse_now(args.now)
    policies = load_policies(args.policies)
    failure = load_failure(args.failure)
    result = explain(failure, policies, now)
    if args.format == "json":
        body = {**result.decision.to_json(), "changes": result.changes, "trace": result.trace}
        print(json.dumps(body, indent=2, sort_keys=False))
        return 0
    print(
        render_text(result.decision.to_json(), result.trace, result.changes, exact=failure.spec is not None)
    )
    return 0


def render_text(
    decision: dict[str, Any], trace: list[str], changes: list[str] | None = None, *, exact: bool = True
) -> str:
    """The text form of an explanation (shared with the live explain). ``changes`` is the diff
    of the rerun's RunSpec against the source run's, one ``~`` line per field that changes."""
    lines = [f"{'decision:':<12}{decision['decision']}", f"{'reason:':<12}{decision['reason']}"]
    for key in ("name", "scope", "action", "not_before"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}{decision[key]}")
    for key in ("env", "labels", "inputs"):
        if decision.get(key):
            lines.append(f"{key + ':':<12}" + ", ".join(f"{k}={v}" for k, v in decision[key].items()))
    overrides = decision.get("overrides") or {}
    if overrides:
        lines.append(f"{'overrides:':<12}" + ", ".join(f"{k}={_plain(v)}" for k, v in overrides.items()))
    if decision["decision"] in ("rerun", "defer"):
        head = "the rerun's RunSpec against the source run's" + (
            "" if exact else " (the source's spec is not known: give the failure a spec: to see values)"
        )
        lines.append(f"changes:    {head}")
        lines.extend(f"  ~ {line}" for line in changes or ["nothing besides the relation"])
    lines.append("trace:")
    lines.extend(f"  {i}. {step}" for i, step in enumerate(trace, 1))
    return "\n".join(lines)


def _plain(value: Any) -> str:
    """An override value as the policy file spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
