"""``rerund demo`` (``make run``): a sandbox control plane with the demo workload, and the daemon
against it with the example policies — one process, one Ctrl-C stops both.

The sandbox runs in a thread of this process (``rerund.sandbox.testing.start_sandbox``); the
daemon runs on the main thread's event loop exactly as ``rerund run`` would, talking to the
sandbox over real HTTP through the real flyte SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rerund.adapters.state import open_state
from rerund.app import App
from rerund.clock import utcnow
from rerund.core.encode import for_terminal
from rerund.core.status import compute_status
from rerund.errors import ConfigError
from rerund.runtime.daemon import Daemon
from rerund.runtime.logs import configure_logging
from rerund.runtime.settings import load_settings
from rerund.sandbox.testing import start_sandbox

__all__ = ["register", "run_demo"]

_DEFAULT_CONFIG = Path("policies/demo/daemon.yaml")


def register(sub: Any) -> None:
    """Add ``demo`` to the ``rerund`` parser."""
    demo = sub.add_parser(
        "demo",
        help="a sandbox control plane with a demo workload and the daemon against it (make run)",
        description="Start the sandbox with a demo workload and the daemon with the example policies.",
    )
    demo.add_argument(
        "--workload",
        default="policies/demo/workload.yaml",
        metavar="FILE",
        help="the sandbox's workload: tasks, their behaviour, runs started at once (default %(default)s)",
    )
    demo.add_argument("--policies", action="append", metavar="PATH", help="default: policies/")
    demo.add_argument(
        "--config", default=None, metavar="FILE", help="daemon settings (default: policies/demo/daemon.yaml)"
    )
    demo.add_argument(
        "--http", default=None, metavar="HOST:PORT", help="metrics address (default 127.0.0.1:9464)"
    )
    demo.add_argument("--time-scale", type=float, default=1.0, help="sandbox speed factor (0.1 = 10x faster)")
    demo.add_argument("--state", default=None, metavar="PATH", help="ledger (default: a temporary file)")
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.set_defaults(func=run_demo)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# The demo fires each reproduction check once this long after start (then on its schedule),
# so even a short demo shows a result: by then the demo workload's reference runs exist.
_FIRST_FIRING_S = 12.0
_background: set[asyncio.Task[Any]] = set()


def first_firings(daemon: Daemon, *, delay: float) -> None:
    """Fire every reproduction check of the policies once, ``delay`` seconds from now."""
    if daemon.settings.dry_run:
        return
    repro, checks = daemon.repro, [c.name for c in daemon.policies.current.reproductions]

    async def fire() -> None:
        await asyncio.sleep(delay)
        await asyncio.gather(*(repro.fire_now(name) for name in checks), return_exceptions=True)

    task = asyncio.get_running_loop().create_task(fire())
    _background.add(task)
    task.add_done_callback(_background.discard)


def run_demo(args: argparse.Namespace) -> int:
    workload = Path(args.workload)
    if not workload.exists():
        raise ConfigError(
            f"demo workload {str(workload)!r} not found; run from the repository root or pass --workload"
        )
    config = Path(args.config) if args.config else (_DEFAULT_CONFIG if _DEFAULT_CONFIG.exists() else None)
    tmp = None
    state = args.state
    if state is None:
        tmp = tempfile.TemporaryDirectory(prefix="rerund-demo-")
        state = str(Path(tmp.name) / "rerund.db")
    try:
        with start_sandbox(workload, time_scale=args.time_scale) as sb:
            overrides: dict[str, Any] = {
                "endpoint": sb.endpoint,
                "org": sb.org,
                "insecure": True,
                "state": state,
                "scopes": [f"{sb.project}/{sb.domain}"],
            }
            if args.policies:
                overrides["policies"] = args.policies
            elif config is None:
                overrides["policies"] = ["policies"]
            if args.http:
                overrides["http"] = args.http
            settings = load_settings(config, overrides=overrides)
            if settings.http_address is not None:
                host, port = settings.http_address
                if port and not _port_free(host, port):
                    settings = settings.model_copy(update={"http": f"{host}:0"})
            configure_logging(settings.log_level, settings.log_format)
            where = settings.public()["state"]  # a database URL without its password

            first = _FIRST_FIRING_S * args.time_scale

            def ready(daemon: Daemon) -> None:
                url = daemon.http.url if daemon.http else "(HTTP off)"
                print(
                    "\n".join(
                        [
                            "rerund demo",
                            f"  sandbox control plane  {sb.endpoint}  (org {sb.org}, "
                            f"{sb.project}/{sb.domain})",
                            f"  workload               {workload}",
                            f"  policies               {', '.join(str(p) for p in settings.policies)}",
                            f"  operator page          {url}/",
                            f"  metrics                {url}/metrics",
                            f"  decisions              {url}/decisions",
                            "  ledger                 "
                            + (
                                "a temporary file, deleted at exit (pass --state PATH to keep it)"
                                if tmp is not None
                                else f"{where}   (rerund history --state {where})"
                            ),
                            f"  reproduction checks    fired once after {first:g}s, then on their schedules",
                            "  Ctrl-C stops both and prints a summary. One line per decision follows:",
                            "",
                        ]
                    ),
                    file=sys.stderr,
                    flush=True,
                )
                if args.duration is not None:
                    # On the daemon's loop, so it ends with the loop: a timer thread would hold
                    # the interpreter's exit after a Ctrl-C until the duration is over.
                    asyncio.get_running_loop().call_later(args.duration, daemon.request_stop)
                first_firings(daemon, delay=first)

            code = asyncio.run(App(settings, on_ready=ready).run())
            print(summary(settings.state, kept=tmp is None), file=sys.stderr, flush=True)
            return code
    finally:
        if tmp is not None:
            tmp.cleanup()


def summary(state: str | Path, *, kept: bool) -> str:
    """What the demo did, from its ledger: decisions, lineages, reproduction results."""
    ledger = open_state(state)
    try:
        rows = ledger.lineage_rows()
        status = compute_status(
            now=utcnow(),
            decisions=rows["decisions"],
            issues=rows["issues"],
            outcomes=rows["outcomes"],
            reproductions=ledger.latest_reproductions(),
            recent=1_000_000,
        )
    finally:
        ledger.close()
    kinds = Counter(str(d["decision"]) for d in rows["decisions"])
    lines = [
        "rerund demo: summary",
        f"  decisions      {len(rows['decisions'])}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else ""),
        f"  reruns created {sum(1 for i in rows['issues'] if i['result'] == 'created')}",
        f"  lineages       {len(status.recovered)} recovered, {len(status.exhausted)} exhausted, "
        f"{len(status.in_flight)} in flight, {status.ignored} ignored",
    ]
    if status.reproductions:
        for r in status.reproductions:
            lines.append(f"  check          {r.check}: {r.result}" + ("" if r.diff else f" ({r.reason})"))
            lines += [f"      {path}: {message}" for path, message in r.diff]
    else:
        lines.append("  checks         no reproduction result yet (each fires on its schedule; run longer)")
    lines.append(
        f"  ledger         {state} (rerund history --state {state})"
        if kept
        else "  ledger         deleted with the demo (pass --state PATH to keep it)"
    )
    return "\n".join(map(for_terminal, lines))  # check results and diffs come from the runs
