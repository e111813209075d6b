"""``rerund incidents``: the outage breaker's open and recent incidents, from the ledger.

An incident is many failures of one fingerprint within ``incidents.open.within``: their reruns
are held while one canary at a time probes the cause (``rerund.core.incidents``). This command
reads the daemon's ledger only (no control plane), so it works wherever the ledger file is.
The example message was redacted before it was stored (URLs reduced to their host, values of
secret-looking ``key=value`` pairs masked) and every cell is escaped for a terminal.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from rerund.cli.common import (
    add_connection_arguments,
    add_format_argument,
    connection_settings,
    open_ledger,
    say,
)
from rerund.clock import utcnow
from rerund.core.durations import parse_duration
from rerund.core.encode import for_terminal
from rerund.core.incidents import IncidentRecord
from rerund.core.times import iso

__all__ = ["incident_lines", "register"]


def register(sub: Any) -> None:
    """Add ``incidents`` to the ``rerund`` parser."""
    p = sub.add_parser(
        "incidents",
        help="open and recent incidents of the outage breaker (reruns held by one failure)",
        description=(
            "Open and recent incidents: many failures of one fingerprint that opened the outage "
            "breaker, with state, failures, lineages, tasks, projects, first and last seen, reruns "
            "held, canaries and an example message (redacted). Reads the daemon's ledger."
        ),
    )
    add_connection_arguments(p)
    p.add_argument(
        "--since",
        metavar="DURATION",
        type=_duration,
        default=timedelta(days=7),
        help="closed incidents of this span are shown too (default 7d); open ones always",
    )
    add_format_argument(p, human="table")
    p.set_defaults(func=_incidents)


def _duration(text: str) -> timedelta:
    return parse_duration(text)


_duration.__name__ = "duration (e.g. 30m, 7d)"


def _incidents(args: argparse.Namespace) -> int:
    settings = connection_settings(args)
    state = settings.public()["state"]
    ledger = open_ledger(settings)
    try:
        records = ledger.incidents(since=utcnow() - args.since)
    finally:
        ledger.close()
    if args.format == "json":
        print(json.dumps({"incidents": [r.to_json() for r in records]}, indent=2))
        return 0
    if not records:
        say(f"no incident open or closed in the last {args.since} in {state}")
        return 0
    for line in incident_lines(records):
        print(line)
    return 0


def _when(value: Any) -> str:
    return "-" if value is None else iso(value.replace(microsecond=0))


def incident_lines(records: Sequence[IncidentRecord], indent: str = "") -> list[str]:
    """Incidents as aligned columns, then each one's example message (pure, escaped for a
    terminal: the message came from a failed task)."""
    headers = ["FINGERPRINT", "STATE", "OPENED (UTC)", "CLOSED (UTC)", "FAILURES", "LINEAGES", "HELD"]
    headers += ["CANARIES", "TASKS"]
    rows = [
        [
            r.fingerprint,
            r.state,
            _when(r.opened_at),
            _when(r.closed_at),
            str(r.failures),
            str(r.lineages),
            str(r.held),
            str(r.canaries)
            + (f" (out: {r.canary.rsplit('/', 1)[-1]})" if r.canary and r.state == "open" else ""),
            ", ".join(r.tasks) or "-",
        ]
        for r in records
    ]
    rows = [[for_terminal(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    out = [
        indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [headers, *rows]
    ]
    for r in records:
        first = _when(r.first_seen)
        last = _when(r.last_seen)
        projects = ", ".join(r.projects) or "-"
        out.append(
            for_terminal(
                f"{indent}{r.fingerprint}: first seen {first}, last seen {last}, in {projects}; "
                f"example: {r.example}"
            )
        )
    return out
