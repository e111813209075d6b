"""``rerund explain RUN --config rerund.yaml``: explain a live run with its real lineage.

It reads exactly what the daemon reads — the run, its failing action and error, its lineage
labels, and the reruns on the control plane (for budget counts) — and asks the same pure core,
so the answer is the daemon's answer. Nothing is recorded or created.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from prometheus_client import CollectorRegistry

from rerund.errors import ConfigError
from rerund.policy.cli import parse_now, render_text
from rerund.runtime.ports import RunRef

__all__ = ["explain_run"]


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


def explain_run(args: argparse.Namespace) -> int:
    """Print the live explanation of ``args.run``; exit 0, or 1 when the run has not failed."""
    from rerund.policy import load_policies
    from rerund.runtime.daemon import connect_control_plane
    from rerund.runtime.metrics import Metrics
    from rerund.runtime.reconcile import Reconciler
    from rerund.runtime.settings import load_settings

    settings = load_settings(args.config)
    now = parse_now(args.now)
    scopes = [(s.project, s.domain) for s in settings.scopes]
    project, domain = _scope(args, scopes)
    policies = load_policies(list(settings.policies))
    ref = RunRef(project, domain, args.run)

    async def go() -> int:
        cp = await connect_control_plane(settings)
        rec = Reconciler(
            cp,
            scopes=[(project, domain)],
            policies=lambda: policies,
            metrics=Metrics(CollectorRegistry()),
            clock=lambda: now,
        )
        result = await rec.explain_run(ref)
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
            "error": failure.error.model_dump(),
            "failed_at": failure.failed_at.isoformat(),
            "budget_used": dict(failure.budget_used),
        }
        if args.format == "json":
            print(json.dumps({**body, "trace": explanation.trace, "failure": facts}, indent=2))
            return 0
        err = failure.error
        print(f"{'run:':<12}{ref} ({failure.phase.value}, task {failure.task})")
        print(f"{'lineage:':<12}root {failure.root!r}, {failure.attempt} rerun(s) issued before this one")
        print(f"{'failed:':<12}action {failure.action} ({failure.action_task}) at {facts['failed_at']}")
        print(f"{'error:':<12}{err.kind} {err.code}: {err.message[:300]}")
        print(render_text(body, explanation.trace))
        return 0

    return asyncio.run(go())
