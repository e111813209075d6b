"""``rerund run`` and ``rerund history``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rerund.adapters.ledger import Ledger
from rerund.errors import ConfigError
from rerund.runtime.daemon import Daemon
from rerund.runtime.settings import load_settings, scopes_from_flags

__all__ = ["configure_logging", "register"]

_SETTINGS_HELP = """\
settings (file < RERUND_* environment < flags):
  endpoint            control plane URL, e.g. http://127.0.0.1:8090      RERUND_ENDPOINT
  org                 the org of the runs (the sandbox uses 'sandbox')     RERUND_ORG
  scopes              project/domain list                                  RERUND_SCOPES=demo/development,...
  policies            policy files or directories                           RERUND_POLICIES
  state               SQLite audit ledger (default ./rerund.db)             RERUND_STATE
  http                metrics/health address (default 127.0.0.1:9464)      RERUND_HTTP ('off' disables)
  dry_run             decide and record, create nothing                    RERUND_DRY_RUN
  poll_interval       resync period (default 30s)                          RERUND_POLL_INTERVAL
  watch               WatchRuns stream per scope (default true; false =    RERUND_WATCH
                      ListRuns polling every poll_interval only)
  lookback            how far back the first start looks (default 1h)      RERUND_LOOKBACK
  overlap             resync overlap behind the watermark (default 5m)     RERUND_OVERLAP
  max_concurrent_reruns  creates in flight at once (default 8)             RERUND_MAX_CONCURRENT_RERUNS
  api_key_file        file holding the API key (or FLYTE_API_KEY)          RERUND_API_KEY_FILE
  notify.webhook      URL for exhausted lineages (Slack-compatible)        RERUND_NOTIFY_WEBHOOK
  ledger_retention    how long the ledger keeps records (default 30d)      RERUND_LEDGER_RETENTION
  backend             union | oss | auto: what the control plane supports  RERUND_BACKEND
                      (default auto: the first label filter finds out)
  error_details_wait  how long to wait for a FAILED run's error details    RERUND_ERROR_DETAILS_WAIT
                      (default 60s; open-source Flyte fills them late)
"""


def register(sub: Any) -> None:
    """Add ``run`` and ``history`` to the ``rerund`` parser."""
    run = sub.add_parser(
        "run",
        help="the daemon: watch failed runs, decide, issue reruns exactly once",
        description="Run the rerund daemon against a Flyte 2 control plane.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", metavar="FILE", help="settings file (YAML), e.g. rerund.yaml")
    run.add_argument("--endpoint", help="control plane URL")
    run.add_argument("--org", help="org of the runs")
    run.add_argument("--insecure", action="store_true", default=None, help="plain HTTP (no TLS)")
    run.add_argument("--scope", action="append", metavar="PROJECT/DOMAIN", help="scope to watch (repeatable)")
    run.add_argument(
        "--policies", action="append", metavar="PATH", help="policy file or directory (repeatable)"
    )
    run.add_argument("--state", metavar="PATH", help="SQLite ledger (default ./rerund.db)")
    run.add_argument("--http", metavar="HOST:PORT", help="metrics/health address, or 'off'")
    run.add_argument("--dry-run", action="store_true", default=None, help="decide and record, create nothing")
    run.add_argument("--poll-interval", metavar="DURATION", help="resync period, e.g. 30s")
    run.add_argument(
        "--backend",
        choices=("auto", "union", "oss"),
        default=None,
        help="what the control plane supports: union (label filters, ALREADY_EXISTS), oss "
        "(open-source Flyte 2: neither) or auto (default: the first label filter finds out)",
    )
    run.add_argument(
        "--no-watch",
        dest="watch",
        action="store_false",
        default=None,
        help="no WatchRuns stream: find failures by polling only (every --poll-interval)",
    )
    run.add_argument("--lookback", metavar="DURATION", help="how far back the first start looks, e.g. 1h")
    run.add_argument("--max-concurrent-reruns", type=int, metavar="N")
    run.add_argument("--api-key-file", metavar="FILE", help="file holding the API key (else FLYTE_API_KEY)")
    run.add_argument("--notify-webhook", metavar="URL", help="webhook for exhausted lineages")
    run.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    run.set_defaults(func=_run)

    history = sub.add_parser(
        "history",
        help="decisions recorded in the audit ledger",
        description="Show recorded decisions, newest first.",
    )
    history.add_argument("--config", metavar="FILE", help="settings file (to find the ledger)")
    history.add_argument("--state", metavar="PATH", help="SQLite ledger (default ./rerund.db)")
    history.add_argument("--run", metavar="RUN", help="only this run or lineage root")
    history.add_argument("--policy", metavar="POLICY", help="only this policy")
    history.add_argument(
        "--source", choices=("daemon", "sweep"), help="only decisions of the daemon or of `rerund sweep`"
    )
    history.add_argument("--limit", type=int, default=50, metavar="N")
    history.add_argument("--format", choices=("text", "json"), default="text")
    history.set_defaults(func=_history)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "rerund.decisions":
            return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"
        return super().format(record)


def configure_logging(level: str = "INFO") -> None:
    """Log lines to stderr; decisions as one short line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("rerund").setLevel(level)
    for noisy in ("apscheduler", "flyte", "httpx", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {
        "endpoint": args.endpoint,
        "org": args.org,
        "insecure": args.insecure,
        "scopes": scopes_from_flags(args.scope),
        "policies": args.policies,
        "state": args.state,
        "http": args.http,
        "dry_run": args.dry_run,
        "poll_interval": args.poll_interval,
        "backend": args.backend,
        "watch": args.watch,
        "lookback": args.lookback,
        "max_concurrent_reruns": args.max_concurrent_reruns,
        "api_key_file": args.api_key_file,
        "notify_webhook": args.notify_webhook,
        "log_level": args.log_level,
    }
    return load_settings(args.config, overrides=overrides)


def _run(args: argparse.Namespace) -> int:

    settings = _settings(args)
    settings.require_runnable()
    configure_logging(settings.log_level)
    return asyncio.run(Daemon(settings).run())


def _history(args: argparse.Namespace) -> int:
    state: Path
    if args.state:
        state = Path(args.state)
    else:
        state = load_settings(args.config).state if args.config else Path("rerund.db")
    if not state.exists():
        raise ConfigError(
            f"no ledger at {str(state)!r}: pass --state PATH or --config FILE of the daemon "
            "whose history you want"
        )
    rows = Ledger(state).history(run=args.run, policy=args.policy, source=args.source, limit=args.limit)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no decisions recorded" + (f" for run {args.run!r}" if args.run else ""))
        return 0
    for r in rows:
        tag = "" if r["source"] == "daemon" else f"[{r['source']}] "
        where = f"{r['project']}/{r['domain']}/{r['run']}"
        print(f"{r['at'][:19]}Z  {r['decision']:<7}  {where}  {tag}{r['reason']}")
    return 0
