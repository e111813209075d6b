"""``rerund sweep``: recover what an outage broke, once — preview, confirm, issue, summarise.

The command is a thin shell over ``rerund.runtime.sweep.Sweeper`` (reading, issuing) and
``rerund.core.sweep`` (the plan). What the user sees:

- a preview: the reruns it would create (run, task, error, scope, new name, changes), the
  counts by policy and error, and what is skipped and why — as tables (``--format table``)
  or one JSON document (``--format json``);
- ``--dry-run`` stops after the preview; on a terminal the command asks before creating;
  ``--yes`` skips the question; without a terminal and without ``--yes`` it refuses;
- a progress bar with the rate and the time left while creating (on stderr, with ``rich``),
  at most ``--max-rps`` creates per second; Ctrl-C stops cleanly (the creates in flight finish)
  and running the same command again continues without repeating anything;
- a summary: issued, already issued, skipped, refused with the reasons; with ``--follow`` it
  waits for the reruns and reports recovered / still failing.

Exit status: 0 done (or nothing to do, or a dry run); 1 some reruns were refused, some
followed reruns still fail, or the confirmation was declined; 2 bad input (window, policies,
settings, an unreachable control plane, no terminal and no ``--yes``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, write_to_textfile
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text

from rerund.cli.common import add_connection_arguments, add_format_argument, connection_settings, state_ledger
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.encode import for_terminal
from rerund.core.rules import PolicySet
from rerund.core.sweep import SKIP_KINDS, SweepPlan, Window, parse_window
from rerund.errors import ConfigError, ControlPlaneError, PolicyError
from rerund.policy.loader import load_policies
from rerund.runtime.metrics import sweep_metrics
from rerund.runtime.settings import Settings

if TYPE_CHECKING:
    from rerund.adapters.state import StateLedger
    from rerund.runtime.sweep import Sweeper, SweepOutcome

__all__ = ["register"]

_WIDE = 200  # columns when the output is not a terminal: names are never cut

_EPILOG = """\
examples:
  rerund sweep --config rerund.example.yaml --policies policies/outage/ --since 2h --dry-run
  rerund sweep --config rerund.example.yaml --policies policies/outage/registry-outage.yaml --since 3h \\
               --until 2026-11-30T14:00:00Z
  rerund sweep --endpoint http://127.0.0.1:8090 --org sandbox --scope demo/development \\
               --policies policies/outage/ --since 1h --yes --max-rps 5 --follow

The policies given are the outage policy, usually a small file written for the occasion:
failures they do not match are left alone. max_attempts, budgets and name rules apply;
backoff does not (the outage is over). A rerun's name is the daemon's name for that attempt
of that lineage: a sweep and a running daemon, or a second sweep, never issue one twice.
"""


# A sweep's creates run at a fixed concurrency (no adaptive limit, unlike the daemon's): the
# daemon's default ceiling (64, safe only because it adapts) does not apply; a value the user
# set does.
SWEEP_CONCURRENCY = 8


def sweep_concurrency(settings: Settings) -> int:
    """Creates in flight for a sweep: ``max_concurrent_reruns`` when the user set it (file,
    environment or flag), else ``SWEEP_CONCURRENCY``."""
    if "max_concurrent_reruns" in settings.model_fields_set:
        return settings.max_concurrent_reruns
    return SWEEP_CONCURRENCY


def register(sub: Any) -> None:
    """Add ``sweep`` to the ``rerund`` parser."""
    p = sub.add_parser(
        "sweep",
        help="rerun, once, the failures an outage caused in a time window (preview, confirm, progress)",
        description="Rerun, once, every failure of a time window that the outage policies match.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(p, scope_help="scope to sweep (repeatable)")
    p.add_argument(
        "--policies",
        action="append",
        required=True,
        metavar="PATH",
        help="the outage policy file or directory (repeatable); the daemon's policies are not used",
    )
    p.add_argument("--since", required=True, metavar="DURATION", help="start of the window, e.g. 2h ago")
    p.add_argument(
        "--until",
        metavar="TIME",
        help="end of the window: 2026-11-30T14:00:00Z (UTC without a zone) or a duration ago; default now",
    )
    p.add_argument("--dry-run", action="store_true", help="show the preview and stop: nothing is created")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_format_argument(p, human="table", what="preview and summary")
    p.add_argument(
        "--max-rps", type=_positive, metavar="N", default=None, help="at most N reruns created per second"
    )
    p.add_argument("--follow", action="store_true", help="wait for the reruns and report their outcomes")
    p.add_argument(
        "--metrics-file",
        metavar="FILE",
        help='write the sweep\'s metrics (source="sweep") there in the Prometheus text format at the end',
    )
    p.set_defaults(func=_sweep)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. --max-rps 5") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0, e.g. --max-rps 5")
    return value


class _Rate(ProgressColumn):
    """Reruns per second of a progress task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-.- /s" if speed is None else f"{speed:.1f} /s", style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class _PlainConsole(Console):
    """A console that prints every string as it is: never read as rich markup (``[/]`` in an
    error message would raise, ``[bold]`` would vanish) and with its control characters
    escaped (``rerund.core.encode.for_terminal``: run names, errors and reasons come from
    outside). Table cells go through ``_cell`` for the same reasons."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_cell(o) if isinstance(o, str) else o for o in objects), **kwargs)


def _cell(value: object) -> Text:
    return Text(for_terminal(value))


def _console(file: IO[str]) -> Console:
    tty = file.isatty()
    return _PlainConsole(file=file, width=None if tty else _WIDE, soft_wrap=not tty, highlight=False)


def _sweep(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    settings.require_runnable()
    now = utcnow()
    try:
        window = parse_window(args.since, args.until, now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        policies = load_policies(list(args.policies))
    except PolicyError as exc:
        raise PolicyError(
            exc.problems,
            f"the outage policies have {len(exc.problems)} problem(s), as `rerund check` shows; "
            "nothing was swept:",
        ) from None
    out = _console(sys.stdout)
    err = _console(sys.stderr)
    return asyncio.run(_main(args, settings, policies, window, out, err))


async def _main(
    args: argparse.Namespace,
    settings: Settings,
    policies: PolicySet,
    window: Window,
    out: Console,
    err: Console,
) -> int:
    from rerund.app import connect_control_plane  # the flyte SDK and the issuer: only when sweeping
    from rerund.runtime.sweep import Sweeper, SweepOutcome, unreachable

    scopes = [(s.project, s.domain) for s in settings.scopes]
    clock = ControlPlaneClock()  # decisions on the control plane's time (its answers' HTTP Date)
    try:
        cp = await connect_control_plane(settings, clock)
    except ControlPlaneError as exc:
        raise unreachable(exc, settings.endpoint or "") from None
    ledger: StateLedger | None = None  # opened once the sweep goes ahead: a preview writes nothing
    metrics, exposed = sweep_metrics()
    sweeper = Sweeper(
        cp,
        scopes=scopes,
        policies=policies,
        clock=clock.now,
        metrics=metrics,
        max_rps=args.max_rps,
        concurrency=sweep_concurrency(settings),
        error_wait=settings.error_details_wait,
    )
    try:
        err.print(
            f"sweeping {', '.join(f'{p}/{d}' for p, d in scopes)}: failures from {window.describe()}, "
            f"policies {', '.join(policies.names()) or '(none)'}"
        )
        with _progress(err) as bar:
            task = bar.add_task("reading failures", total=None)
            try:
                await sweeper.check_scopes(cp)
                plan = await sweeper.plan(
                    window, on_read=lambda done, n: bar.update(task, completed=done, total=n)
                )
            except ControlPlaneError as exc:
                raise unreachable(exc, settings.endpoint) from None
        if args.format == "json" and args.dry_run:
            print(json.dumps({"plan": plan.to_json(), "dry_run": True}, indent=2))
        elif args.format != "json":
            _preview(out, plan)
        if args.dry_run:
            err.print(
                f"dry run: nothing was created; {len(plan.reruns)} rerun(s) would be issued "
                "(run again without --dry-run to issue them)"
            )
            return 0
        if not plan.reruns:
            ledger = state_ledger(settings, source="sweep", create=True)
            sweeper.use_ledger(ledger)
            sweeper.record(plan)
            if args.format == "json":
                print(json.dumps({"plan": plan.to_json(), **SweepOutcome(plan=plan).to_json()}, indent=2))
            err.print("nothing to rerun: no failure in the window is owed a rerun by these policies")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError(
                    f"refusing to create {len(plan.reruns)} rerun(s) without confirmation: standard input "
                    "is not a terminal, so nobody can answer; pass --yes to confirm, or --dry-run to only "
                    "preview"
                )
            if args.format == "json":
                _preview(err, plan)
            if not _confirm(err, len(plan.reruns)):
                err.print("not confirmed: nothing was created")
                return 1
        ledger = state_ledger(settings, source="sweep", create=True)
        sweeper.use_ledger(ledger)
        sweeper.record(plan)
        outcome = SweepOutcome(plan=plan)
        try:
            todo, found = await sweeper.refresh(plan)
        except ControlPlaneError as exc:
            raise unreachable(exc, settings.endpoint) from None
        outcome.results.extend(found)
        # One Ctrl-C handler spans creating and following, so no signal falls between the two;
        # its message follows the phase, switched before the creating bar is printed.
        interrupt = ["stopping: the creates in flight finish, no other starts"]
        with _interrupt(sweeper, err, interrupt):
            with _progress(err) as bar:
                task = bar.add_task("creating reruns", total=len(plan.reruns), completed=len(found))
                outcome.results.extend(await sweeper.issue(todo, on_result=lambda r: bar.advance(task)))
                outcome.interrupted = sweeper.stopping
                interrupt[0] = "stopped following: the reruns go on"
            if args.follow and not outcome.interrupted:
                followed = [r for r in outcome.results if r.result in ("created", "already_issued")]
                outcome.followed = len(followed)
                with _progress(err) as bar:
                    task = bar.add_task("waiting for the reruns", total=len(followed))
                    outcome.phases = await sweeper.follow(
                        followed, on_update=lambda phases: bar.update(task, completed=len(phases))
                    )
        if args.format == "json":
            print(json.dumps({"plan": plan.to_json(), **outcome.to_json()}, indent=2))
        else:
            _summary(out, outcome, args.follow)
        if sweeper.stopping:  # Ctrl-C while creating, or while following
            return 130
        refused = outcome.count("refused")
        failing = sum(1 for p in outcome.phases.values() if p != "SUCCEEDED")
        return 1 if refused or failing else 0
    finally:
        if ledger is not None:
            ledger.close()
            if args.metrics_file:
                _write_metrics(args.metrics_file, exposed, err)


def _write_metrics(path: str, registry: CollectorRegistry, console: Console) -> None:
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        console.print(
            f"the sweep's metrics could not be written to {path!r}: {exc.strerror}; the sweep itself is done"
        )


def _confirm(console: Console, n: int) -> bool:
    return Confirm.ask(f"create {n} rerun(s)?", console=console, default=False)


@contextlib.contextmanager
def _interrupt(sweeper: Sweeper, console: Console, message: list[str]) -> Iterator[None]:
    """Ctrl-C (SIGINT) calls ``sweeper.stop()`` once and prints ``message[0]`` as it is then;
    a second Ctrl-C interrupts at once."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        console.print(message[0] + " (Ctrl-C again to quit at once)")
        sweeper.stop()
        loop.remove_signal_handler(signal.SIGINT)

    installed = True
    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
        installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


# -- rendering ---------------------------------------------------------------------------------


def _preview(console: Console, plan: SweepPlan) -> None:
    """The preview tables: reruns, counts by policy and error, skipped and why."""
    scopes = sorted({f"{r.failure.project}/{r.failure.domain}" for r in plan.reruns})
    table = Table(
        title=f"{len(plan.reruns)} rerun(s) to issue — failures {plan.window.describe()}",
        title_justify="left",
    )
    for name in ("run", "task", "error", "scope", "new name", "changes"):
        table.add_column(name, overflow="fold", no_wrap=name in ("run", "new name"))
    if len(scopes) > 1:
        table.add_column("project/domain", no_wrap=True)
    for r in plan.reruns:
        d, f = r.decision, r.failure
        scope = (d.scope.value if d.scope else "run") + (f" {d.action}" if d.action else "")
        error = f"{f.error.kind} {f.error.code}".strip()
        row = [f.run, f.task, error, scope, r.name, "; ".join(r.changes()) or "-"]
        if len(scopes) > 1:
            row.append(f"{f.project}/{f.domain}")
        table.add_row(*map(_cell, row))
    if plan.reruns:
        console.print(table)
        groups = Table(title="by policy and error", title_justify="left")
        groups.add_column("policy", no_wrap=True)
        groups.add_column("error")
        groups.add_column("reruns", justify="right")
        for g in plan.groups():
            groups.add_row(_cell(g.policy), _cell(g.error), str(g.count))
        console.print(groups)
    else:
        console.print(f"no rerun to issue — failures {plan.window.describe()}")
    counts = plan.skipped_counts()
    if counts:
        skipped = Table(title=f"{sum(counts.values())} failure(s) skipped", title_justify="left")
        skipped.add_column("why")
        skipped.add_column("count", justify="right")
        skipped.add_column("runs (first 5)", overflow="fold")
        for kind, n in counts.items():
            runs = [s.failure.run for s in plan.skipped if s.kind == kind]
            skipped.add_row(
                SKIP_KINDS[kind], str(n), _cell(", ".join(runs[:5]) + (", ..." if len(runs) > 5 else ""))
            )
        console.print(skipped)


def _summary(console: Console, outcome: SweepOutcome, follow: bool) -> None:
    body = outcome.to_json()
    console.print(
        f"issued {body['issued']}, already issued {body['already_issued']}, skipped {body['skipped']}, "
        f"refused {len(body['refused'])}"
        + (f", not issued {body['not_issued']}" if body["not_issued"] else "")
    )
    for r in body["refused"]:
        console.print(f"refused: rerun {r['rerun']!r} of run {r['run']!r}: {r['message']}")
    if outcome.interrupted and body["not_issued"]:
        console.print(
            f"interrupted: {body['not_issued']} planned rerun(s) were not created; run the same command "
            "again to continue (what was created is found, nothing is issued twice)"
        )
    if follow and outcome.followed:
        running = body["still_running"]
        console.print(
            f"recovered {body['recovered']}, still failing {body['still_failing']}"
            + (f", still running {running} (no longer followed: they go on)" if running else "")
        )
        for name, phase in sorted(outcome.phases.items()):
            if phase != "SUCCEEDED":
                console.print(f"still failing: {name} ({phase})")
