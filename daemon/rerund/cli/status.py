"""``rerund status``: what is in flight and why, what recovered or was exhausted, budgets in use
and the last result of every reproduction check.

It reads the control plane (one ListRuns per scope; a GetRunDetails per rerun whose labels the
listing leaves out) and the ledger file, so it works from any machine that reaches both; without
the ledger it shows what the control plane alone tells. The same model
(``rerund.core.status``) feeds the daemon's operator page and ``/status``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rerund.cli.common import (
    add_connection_arguments,
    add_format_argument,
    connection_settings,
    has_ledger,
    reaching,
    state_ledger,
)
from rerund.cli.incidents import incident_lines
from rerund.clock import ControlPlaneClock
from rerund.core.encode import for_terminal
from rerund.core.redact import redact_url
from rerund.core.rules import PolicySet
from rerund.core.stateurl import is_database_url
from rerund.core.status import LineageState, Status, iso
from rerund.errors import PolicyError, StateUnavailableError
from rerund.policy.loader import load_policies

if TYPE_CHECKING:
    from rerund.adapters.state import StateLedger

__all__ = ["register", "render_status"]


def register(sub: Any) -> None:
    """Add ``status`` to the ``rerund`` parser."""
    p = sub.add_parser(
        "status",
        help="lineages in flight (and why), recovered and exhausted; budgets; reproduction checks",
        description=(
            "Where every lineage stands: in flight (due after a backoff, deferred by a budget, a rerun "
            "running, awaiting a decision) with the next due time and why; recently recovered and "
            "exhausted lineages; each budget's use in its window; the last result of each reproduction "
            "check. Reads the control plane and the ledger (--state or the settings' state)."
        ),
    )
    p.add_argument(
        "--policies",
        action="append",
        metavar="PATH",
        help="the daemon's policy file or directory, for the budgets (default: the settings' policies)",
    )
    add_connection_arguments(p, scope_help="scope to show (repeatable; default: the settings' scopes)")
    add_format_argument(p, human="table")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    settings = connection_settings(args, policies=args.policies)
    settings.require_runnable()
    notes: list[str] = []
    policies: PolicySet | None = None
    try:
        policies = load_policies(list(settings.policies))
    except PolicyError as exc:
        notes.append(
            f"the policies ({', '.join(map(str, settings.policies))}) do not load ({len(exc.problems)} "
            "problem(s), see `rerund check`): budgets are not shown"
        )
    ledger: StateLedger | None = None
    if is_database_url(settings.state):  # replicas share it: name the one that leads
        notes.append(leader_note(str(settings.state), settings.state_password()))
    if has_ledger(settings):
        ledger = state_ledger(settings)
    else:
        notes.append(
            f"no ledger at {settings.state}: lineages come from the control plane alone (no reasons, "
            "no pending due times); pass --state PATH of the daemon's ledger"
        )
    scopes = [(s.project, s.domain) for s in settings.scopes]

    async def go() -> Status:
        from rerund.app import connect_control_plane  # the flyte SDK: only when status runs
        from rerund.runtime.status import status_from_control_plane

        clock = ControlPlaneClock()  # "now" is the control plane's (its answers' HTTP Date)
        cp = await connect_control_plane(settings, clock)
        return await status_from_control_plane(
            cp, scopes, now=clock.now(), ledger=ledger, policies=policies, notes=notes
        )

    with reaching(settings, "status"):
        status = asyncio.run(go())
    if args.format == "json":
        print(json.dumps(status.to_json(), indent=2))
    else:
        shown = ", ".join(f"{p}/{d}" for p, d in scopes)
        where = f"control plane {redact_url(settings.endpoint)}, scopes {shown}"
        print(render_status(status, where))
    return 0


def leader_note(url: str, password: str | None = None) -> str:
    """Which replica leads, as the shared state records it (a line of ``rerund status``);
    ``password``: ``state_password_file``'s."""
    from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine

    engine = postgres_engine(url, password)
    try:
        found = PostgresLeadership(engine, identity="rerund status").leader()
    except StateUnavailableError as exc:
        return f"leader: unknown: {exc}"
    finally:
        engine.dispose()
    if found is None:
        return "leader: no replica has led on this state yet"
    holder, term = found
    return f"leader: {holder} (term {term}); the other replicas follow and take over when its lock goes"


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows as aligned columns; the last column is not padded (it holds the long reason).
    Cells are escaped for a terminal first, so the widths are those printed."""
    rows = [[for_terminal(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=False)), cells[-1]])

    return [line(headers), *(line(r) for r in rows)]


def _when(value: Any) -> str:
    return iso(value.replace(microsecond=0)) or "-" if value is not None else "-"


def _lineages(title: str, states: Sequence[LineageState], *, due: bool, empty: str) -> list[str]:
    out = [f"{title} ({len(states)}):"]
    if not states:
        return [*out, f"  {empty}"]
    rows = [
        [s.key, s.state, str(s.attempt), s.policy or "-", _when(s.due if due else s.at), s.why]
        for s in states
    ]
    return out + _columns(
        ["LINEAGE", "STATE", "ATTEMPT", "POLICY", "DUE (UTC)" if due else "AT (UTC)", "WHY"], rows
    )


def render_status(status: Status, where: str) -> str:
    """The table form of ``rerund status`` (pure); every line escaped for a terminal
    (``for_terminal``): reasons, run names and check results come from outside."""
    out = [f"rerund status at {_when(status.now)} ({where})", *(f"note: {n}" for n in status.notes), ""]
    out += _lineages("In flight", status.in_flight, due=True, empty="nothing is owed")
    out.append("")
    out.append(f"Budgets ({len(status.budgets)}):")
    if status.budgets:
        out += _columns(
            ["BUDGET", "USED", "LIMIT", "WINDOW", "STATE", "A SLOT FREES AT (UTC)"],
            [
                [
                    b.name,
                    str(b.used),
                    str(b.max_reruns),
                    str(b.to_json()["per"]),
                    "full" if b.full else "room",
                    _when(b.frees_at),
                ]
                for b in status.budgets
            ],
        )
    else:
        out.append("  no budget is configured")
    out.append("")
    out.append(f"Incidents ({len(status.incidents)}):")
    if status.incidents:
        out += incident_lines(status.incidents, indent="  ")
    else:
        out.append("  none: no failure opened the outage breaker")
    out.append("")
    for title, rates, empty in (
        ("Flaky fingerprints (reruns recover)", status.flaky, "none seen yet"),
        ("Hopeless fingerprints (reruns never recovered; see give_up_below)", status.hopeless, "none"),
    ):
        out.append(f"{title} ({len(rates)}):")
        if rates:
            out += _columns(
                ["FINGERPRINT", "RERUNS", "RECOVERED"],
                [
                    [r.fingerprint, str(r.reruns), f"{r.recovered} ({r.recovered / r.reruns:.0%})"]
                    for r in rates
                ],
            )
        else:
            out.append(f"  {empty}")
        out.append("")
    out += _lineages("Exhausted", status.exhausted, due=False, empty="none")
    out.append("")
    out += _lineages("Recovered", status.recovered, due=False, empty="none yet")
    out.append("")
    out.append(f"Reproduction checks ({len(status.reproductions)}):")
    if status.reproductions:
        out += _columns(
            ["CHECK", "RESULT", "SCHEDULED FOR (UTC)", "RERUN", "REASON"],
            [
                [r.check, r.result, _when(r.scheduled_for), r.rerun or "-", r.reason]
                for r in status.reproductions
            ],
        )
        for r in status.reproductions:
            out += [f"    {r.check}: {path}: {message}" for path, message in r.diff]
    else:
        out.append("  no result recorded yet")
    if status.ignored:
        out += ["", f"{status.ignored} failed run(s) were ignored (no policy reruns them): `rerund history`"]
    return "\n".join(map(for_terminal, out))
