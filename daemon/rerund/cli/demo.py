"""``rerund demo`` (``make run``): a sandbox control plane with the demo workload, and the daemon
against it with the example policies — one process, one Ctrl-C stops both.

The sandbox runs in a thread of this process (``rerund.sandbox.testing.start_sandbox``); the
daemon runs on the main thread's event loop exactly as ``rerund run`` would, talking to the
sandbox over real HTTP through the real flyte SDK.

The demo hands over its connection: while it runs, ``.rerund/`` in the working directory
(``--handover-dir``) holds ``demo.yaml`` (the daemon's settings: endpoint, org, scopes,
policies, state — what ``rerund status|history|explain --config`` take), ``flyte.yaml`` (what
``flyte --config`` takes) and the ledger ``demo.db``, which a new demo starts afresh and which
is kept after it (``rerund history --config .rerund/demo.yaml`` still works then). The banner
prints the lines to copy.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from rerund.adapters.state import open_state
from rerund.cli.sandbox import flyte_cli_config
from rerund.clock import utcnow
from rerund.core.encode import for_terminal
from rerund.core.status import compute_status
from rerund.errors import ConfigError
from rerund.runtime.logs import configure_logging
from rerund.runtime.settings import Settings, load_settings

if TYPE_CHECKING:
    from rerund.runtime.daemon import Daemon

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
    demo.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="ledger (default: demo.db in --handover-dir, started afresh)",
    )
    demo.add_argument(
        "--handover-dir",
        default=".rerund",
        metavar="DIR",
        help="where the demo writes demo.yaml (settings for rerund status/history/explain --config), "
        "flyte.yaml (for flyte --config) and its ledger demo.db (default %(default)s)",
    )
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
    from rerund.app import App  # the daemon and the sandbox load only when the demo runs
    from rerund.sandbox.testing import start_sandbox

    workload = Path(args.workload)
    if not workload.exists():
        raise ConfigError(
            f"demo workload {str(workload)!r} not found; run from the repository root or pass --workload"
        )
    config = Path(args.config) if args.config else (_DEFAULT_CONFIG if _DEFAULT_CONFIG.exists() else None)
    handover = Path(args.handover_dir)
    try:
        handover.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"the demo cannot write its connection files to {handover}: {exc}; pass --handover-dir DIR"
        ) from None
    state = args.state
    if state is None:
        state = str((handover / "demo.db").absolute())
        for leftover in ("", "-wal", "-shm", "-journal"):  # a new demo, a new ledger
            Path(state + leftover).unlink(missing_ok=True)
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
        wanted = settings.http_address
        if wanted is not None:
            host, port = wanted
            if port and not _port_free(host, port):
                settings = settings.model_copy(update={"http": f"{host}:0"})
        configure_logging(settings.log_level, settings.log_format)
        files = write_handover(handover, settings, project=sb.project, domain=sb.domain)

        first = _FIRST_FIRING_S * args.time_scale

        def ready(daemon: Daemon) -> None:
            url = daemon.http.url if daemon.http else "(HTTP off)"
            moved = (
                f"  (port {wanted[1]} was taken, so another was chosen)"
                if wanted is not None and wanted[1] and daemon.http and not url.endswith(f":{wanted[1]}")
                else ""
            )
            checks = len(daemon.policies.current.reproductions)
            print(
                "\n".join(
                    [
                        "rerund demo",
                        f"  sandbox control plane  {sb.endpoint}  (org {sb.org}, {sb.project}/{sb.domain})",
                        f"  workload               {workload}",
                        f"  policies               {', '.join(str(p) for p in settings.policies)}",
                        f"  operator page          {url}/{moved}",
                        f"  metrics                {url}/metrics",
                        f"  decisions              {url}/decisions",
                        f"  ledger                 {settings.public()['state']}  "
                        "(kept after the demo; a new demo starts afresh)",
                        (
                            f"  reproduction checks    {checks}, fired once after {first:g}s, "
                            "then on their schedules"
                            if checks
                            else "  reproduction checks    none in these policies"
                        ),
                        f"  connection             {files.settings} (rerund --config), "
                        f"{files.flyte} (flyte --config)",
                        "",
                        "  Try, in another terminal, while the demo runs (RUN: a run named in a line below):",
                        *(
                            f"    {line}"
                            for line in handover_commands(files, project=sb.project, domain=sb.domain)
                        ),
                        "",
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
        print(summary(settings, settings_file=files.settings), file=sys.stderr, flush=True)
        return code


class Handover(NamedTuple):
    """The files a running demo hands over, as the user types them (relative to the working
    directory when they are inside it)."""

    settings: str
    flyte: str


def _shown(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def write_handover(directory: Path, settings: Settings, *, project: str, domain: str) -> Handover:
    """Write ``demo.yaml`` (the demo daemon's connection, policies and ledger as a settings
    file; absolute paths, so it works from any directory) and ``flyte.yaml`` (the flyte CLI's
    config for the same control plane) into ``directory``."""
    data = {
        "endpoint": settings.endpoint,
        "insecure": True,
        "org": settings.org,
        "scopes": [s.key for s in settings.scopes],
        "policies": [str(Path(p).absolute()) for p in settings.policies],
        "state": state if "://" in (state := str(settings.state)) else str(Path(state).absolute()),
    }
    head = (
        "# Written by `rerund demo` (make run) while it runs: how to reach its sandbox and ledger.\n"
        "# rerund status --config {0}   (and history, explain, repro)\n"
    )
    directory.mkdir(parents=True, exist_ok=True)
    demo = directory / "demo.yaml"
    flyte = directory / "flyte.yaml"
    demo.write_text(head.format(_shown(demo)) + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    flyte.write_text(
        f"# Written by `rerund demo`: flyte --config {_shown(flyte)} get run -p {project} -d {domain}\n"
        + flyte_cli_config(str(settings.endpoint), org=str(settings.org), project=project, domain=domain),
        encoding="utf-8",
    )
    return Handover(_shown(demo), _shown(flyte))


def handover_commands(files: Handover, *, project: str, domain: str) -> list[str]:
    """The copy-paste lines of the demo's banner (the Day-2 commands against the demo)."""
    return [
        f"rerund status --config {files.settings}",
        f"rerund history --config {files.settings}",
        f"rerund history --config {files.settings} --run RUN",
        f"rerund explain RUN --config {files.settings}",
        f"flyte --config {files.flyte} get run -p {project} -d {domain}",
    ]


def summary(settings: Settings, *, settings_file: str) -> str:
    """What the demo did, from its ledger: decisions, lineages, reproduction results."""
    ledger = open_state(settings.state, password=settings.state_password())
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
    lines.append(f"  ledger         {settings.public()['state']} (rerund history --config {settings_file})")
    return "\n".join(map(for_terminal, lines))  # check results and diffs come from the runs
