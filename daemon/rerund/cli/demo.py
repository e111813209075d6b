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
import threading
from pathlib import Path
from typing import Any

from rerund.cli.daemon import configure_logging
from rerund.errors import ConfigError
from rerund.runtime.daemon import Daemon
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
    demo.add_argument("--workload", default="policies/demo/workload.yaml", metavar="FILE")
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
            configure_logging(settings.log_level)

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
                            f"  metrics                {url}/metrics",
                            f"  decisions              {url}/decisions",
                            f"  ledger                 {settings.state}   (rerund history --state ...)",
                            "  Ctrl-C stops both. One line per decision follows:",
                            "",
                        ]
                    ),
                    file=sys.stderr,
                    flush=True,
                )
                if args.duration is not None:
                    threading.Timer(args.duration, daemon.request_stop).start()

            return asyncio.run(Daemon(settings, on_ready=ready).run())
    finally:
        if tmp is not None:
            tmp.cleanup()
