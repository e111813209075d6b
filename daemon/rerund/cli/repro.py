"""``rerund repro list | run NAME | history NAME``: reproduction checks from the command line.

``list`` reads the checks from the policy files; ``run`` fires one now against the control
plane of a daemon's settings (``--config``), waits for its result and records it in that
daemon's ledger; ``history`` reads the results recorded in the ledger, diffs included.

Exit codes: 0 = fine (``run``: the check reproduced), 1 = ``run`` finished and the check did
not reproduce (mismatch, failed or timeout), 2 = it could not run (printed without a
traceback by the dispatcher).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from prometheus_client import CollectorRegistry

from rerund.adapters.cron import CronSchedule
from rerund.cli.common import (
    add_connection_arguments,
    add_format_argument,
    connection_settings,
    has_ledger,
    positive_int,
    reaching,
    say,
    state_ledger,
)
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.repro import UNSCOPED, repro_run_name
from rerund.core.runs import RunRef
from rerund.core.times import iso
from rerund.errors import ConfigError, NotFoundError
from rerund.policy import load_policies
from rerund.runtime.metrics import Metrics

__all__ = ["register"]

_DESCRIPTION = """\
A reproduction check reruns a reference run on a schedule — same code, same inputs, rerun from
the control plane — and compares the rerun with the reference: the phase, and the outputs
field by field (exactly, or numbers within a tolerance). Checks are declared under
`reproductions:` in the policy files (see `rerund schema`). The daemon (`rerund run`) fires
them on their cron schedules; these commands list them, fire one now, and show the results.

results:
  match     the rerun reproduced the reference
  mismatch  the phase or an output differs (the diff says which field and by how much)
  failed    the rerun did not succeed although the reference did, or there was nothing to
            rerun (no reference run matches the source)
  timeout   the rerun was not terminal when the check's timeout ran out
"""

_EPILOG = """\
examples:
  rerund repro list --policies policies/reproductions.yaml
  rerund repro run daily-metrics --config rerund.example.yaml  # fire now, wait, print the result
  rerund repro history daily-metrics --config rerund.example.yaml --format json
"""


def register(sub: Any) -> None:
    """Add ``repro`` and its sub-commands to the ``rerund`` parser."""
    repro = sub.add_parser(
        "repro",
        help="scheduled reproduction checks: list, fire one now, show results",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    repro.set_defaults(func=lambda args: _usage(repro))
    cmds = repro.add_subparsers(dest="repro_command", metavar="SUBCOMMAND")

    listing = cmds.add_parser(
        "list",
        help="the checks in the policy files, their schedules and next firing",
        description="List the reproduction checks of the policy files: schedule, next firing, "
        "source, what is compared and, when a ledger is found, the last result.",
    )
    _where(listing)
    add_format_argument(listing)
    listing.set_defaults(func=_list)

    run = cmds.add_parser(
        "run",
        help="fire a check now and wait for its result (connects as `rerund run` does)",
        description="Fire check NAME now, out of schedule: rerun its reference run on the control "
        "plane of the daemon settings, wait until the rerun ends (at most the check's timeout), "
        "compare, print and record the result. Exit status 0 when it reproduced, 1 when not.",
        epilog="example:\n  rerund repro run daily-metrics --config rerund.example.yaml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("name", metavar="NAME", help="the check to fire (see `rerund repro list`)")
    _where(run, scope_help="scope of a source that names none (repeatable)")
    add_format_argument(run)
    run.set_defaults(func=_run)

    history = cmds.add_parser(
        "history",
        help="recorded results of a check, newest first, with their diffs",
        description="Show the results of check NAME recorded in the daemon's ledger, newest "
        "first, each with its field-by-field diff.",
        epilog="example:\n  rerund repro history daily-metrics --state rerund.db --format json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("name", metavar="NAME", help="the check (see `rerund repro list`)")
    _where(history)
    history.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="at most N results (default 20)"
    )
    add_format_argument(history)
    history.set_defaults(func=_history)


def _where(parser: argparse.ArgumentParser, **scope_help: str) -> None:
    """The policies and the connection (``add_connection_arguments``) of every repro command."""
    parser.add_argument(
        "--policies", action="append", metavar="PATH", help="policy file or directory (repeatable)"
    )
    add_connection_arguments(parser, **scope_help)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace) -> Any:
    return connection_settings(args, policies=args.policies)


def _checks(args: argparse.Namespace) -> list[Any]:
    settings = _settings(args)
    return list(load_policies(list(settings.policies)).reproductions)


def _ledger(args: argparse.Namespace, *, required: bool) -> Any:
    settings = _settings(args)
    if not has_ledger(settings):
        if required:
            raise ConfigError(
                f"no ledger at {str(settings.state)!r}: pass --state PATH or --config FILE of the daemon "
                "whose results you want (a shared ledger: --state postgresql://…)"
            )
        return None
    return state_ledger(settings)


def _find(checks: list[Any], name: str) -> Any:
    for check in checks:
        if check.name == name:
            return check
    known = ", ".join(c.name for c in checks) or "none (add them under reproductions: in a policy file)"
    raise ConfigError(f"no reproduction check named {name!r}; the checks are: {known}")


def _list(args: argparse.Namespace) -> int:
    checks = _checks(args)
    ledger = _ledger(args, required=False)
    now = utcnow()
    rows = []
    for check in checks:
        nxt = CronSchedule(check.schedule, check.timezone).next_after(now)
        last = ledger.reproduction_history(check.name, limit=1) if ledger is not None else []
        rows.append(
            {
                **check.summary(),
                "next_firing": iso(nxt) if nxt else None,
                "last_result": last[0]["result"] if last else None,
                "last_scheduled_for": last[0]["scheduled_for"] if last else None,
            }
        )
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        say("no reproduction checks (add them under reproductions: in a policy file)")
        return 0
    for r in rows:
        cmp = r["compare"]
        outputs = cmp["outputs"]
        if cmp["tolerance"]:
            outputs += f" (rel {cmp['tolerance']['rel']:g}, abs {cmp['tolerance']['abs']:g})"
        if cmp["ignore"]:
            outputs += f", ignoring {', '.join(cmp['ignore'])}"
        say(f"{r['name']}")
        say(f"  schedule   {r['schedule']} ({r['timezone']}), next {r['next_firing']}")
        say(f"  source     {r['source']}")
        say(f"  compare    phase {'yes' if cmp['phase'] else 'no'}, outputs {outputs}")
        say(f"  timeout    {r['timeout']}")
        if r["last_result"]:
            say(f"  last       {r['last_result']} (slot {r['last_scheduled_for']})")
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = connection_settings(args, policies=args.policies)  # reaches the control plane
    settings.require_runnable()
    checks = list(load_policies(list(settings.policies)).reproductions)
    check = _find(checks, args.name)
    # The daemon's default for a source without project/domain: its first scope naming both.
    scope = next(((sc.project, sc.domain) for sc in settings.scopes if not sc.wildcard), None)
    if scope is None and (check.source.project is None or check.source.domain is None):
        raise ConfigError(f"check {check.name!r} cannot run: {UNSCOPED}")
    project = check.source.project or (scope[0] if scope else "")
    domain = check.source.domain or (scope[1] if scope else "")

    async def go() -> Any:
        from rerund.app import connect_control_plane  # the flyte SDK and the runner: only here
        from rerund.runtime.repro import ReproRunner

        clock = ControlPlaneClock()  # the control plane's time (its answers' HTTP Date)
        cp = await connect_control_plane(settings, clock)
        slot = clock.now().replace(second=0, microsecond=0)
        name = repro_run_name(check.name, slot, manual=True)
        try:
            await cp.get_run(RunRef(project, domain, name))
        except NotFoundError:
            pass
        else:
            # The manual firing of this minute exists (an earlier `repro run`): its name is
            # deterministic so a retried command never duplicates it; say that it is reused.
            say(
                f"note: check {check.name!r} was already fired by hand this minute: its rerun {name!r} "
                "exists and this result is that rerun's; run again after the minute turns for a new "
                "rerun",
                file=sys.stderr,
            )
        ledger = state_ledger(settings, create=True)
        try:
            runner = ReproRunner(
                cp,
                checks=lambda: checks,
                schedules=CronSchedule,
                metrics=Metrics(CollectorRegistry()),
                clock=clock.now,
                default_scope=scope,
                ledger=ledger,
                poll_interval=1.0,
            )
            return await runner.fire_now(check.name)
        finally:
            ledger.close()

    with reaching(settings, "repro run"):
        result = asyncio.run(go())
    if result is None:  # pragma: no cover - only when interrupted
        return 2
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        say(*_render(result.to_json()))
    return 0 if result.result == "match" else 1


def _render(row: dict[str, Any]) -> list[str]:
    lines = [f"{row['result']}: {row['reason']}"]
    lines += [f"  {d['path']}: {d['message']}" for d in row.get("diff") or []]
    return lines


def _history(args: argparse.Namespace) -> int:
    ledger = _ledger(args, required=True)
    rows = ledger.reproduction_history(args.name, limit=args.limit)
    if not rows:
        known: list[Any] = []
        if args.config or args.policies:
            known = _checks(args)
        names = sorted({c.name for c in known} | set(ledger.reproduction_checks()))
        if args.name not in names:
            raise ConfigError(
                f"no reproduction check named {args.name!r}; the checks are: "
                f"{', '.join(names) or 'none recorded in this ledger'}"
            )
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        say(f"no results recorded for check {args.name!r} yet")
        return 0
    for row in rows:
        when = row["scheduled_for"] + (" (manual)" if row.get("manual") else "")
        first, *rest = _render(row)
        say(f"{when}  {first}", *rest)
    return 0
