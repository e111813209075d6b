"""``rerund run`` and ``rerund history``."""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import TYPE_CHECKING, Any

from rerund.cli.common import (
    add_connection_arguments,
    add_format_argument,
    add_secret_argument,
    connection_settings,
    ensure_policies,
    open_ledger,
    positive_int,
    say,
)
from rerund.clock import utcnow
from rerund.core.status import compute_status, iso, lineage_story
from rerund.runtime.heap import return_large_blocks
from rerund.runtime.logs import configure_logging

if TYPE_CHECKING:
    from rerund.adapters.state import StateLedger

__all__ = ["configure_logging", "register"]

_SETTINGS_HELP = """\
settings (file < RERUND_* environment < flags; rerund.example.yaml shows every one):
  endpoint            control plane URL, e.g. http://127.0.0.1:8090      RERUND_ENDPOINT
  insecure            plain HTTP, no TLS (default: when endpoint is http://)  RERUND_INSECURE
  org                 the org of the runs (the sandbox uses 'sandbox')     RERUND_ORG
  scopes              project/domain list; */* = the whole org, ml/*,      RERUND_SCOPES=demo/development,...
                      */production (one org-wide watch serves wildcards)
  policies            policy files or directories (default ./policies)     RERUND_POLICIES
  state               SQLite audit ledger (default ./rerund.db), or a       RERUND_STATE
                      postgresql:// URL replicas share (docs/state.md)
  state_password_file file holding that database's password             RERUND_STATE_PASSWORD_FILE
  http                operator page, metrics, health (default 127.0.0.1:9464)  RERUND_HTTP ('off' disables)
  http_hosts          Host names the HTTP server answers besides IP        RERUND_HTTP_HOSTS
                      addresses, localhost and the http host (DNS rebinding)
  dry_run             decide and record, create nothing                    RERUND_DRY_RUN
  poll_interval       resync period (default 30s)                          RERUND_POLL_INTERVAL
  watch               WatchRuns stream per scope (default true; false =    RERUND_WATCH
                      ListRuns polling every poll_interval only)
  lookback            how far back the first start looks (default 1h)      RERUND_LOOKBACK
  overlap             resync overlap behind the watermark (default 5m)     RERUND_OVERLAP
  max_concurrent_reruns  creates in flight at once, at most (default 64;   RERUND_MAX_CONCURRENT_RERUNS
                      adaptive: starts at 4, halves on overload)
  rpc_timeout         per control-plane call (default 30s)                 RERUND_RPC_TIMEOUT
  max_rps             hard cap on control-plane RPCs per second (0 = none) RERUND_MAX_RPS
  api_key_file        file holding the API key (or FLYTE_API_KEY);         RERUND_API_KEY_FILE
                      reloaded when it changes
  client_id           OAuth2 client credentials: the client id ...         RERUND_CLIENT_ID
  client_secret_file  ... and a file holding its secret                    RERUND_CLIENT_SECRET_FILE
  auth_command        a command that prints a bearer token                 RERUND_AUTH_COMMAND
  auth_command_file   ... or a file holding that command line              RERUND_AUTH_COMMAND_FILE
  ca_cert_file        PEM CA that signed the control plane's certificate   RERUND_CA_CERT_FILE
  http_proxy          HTTP proxy for every control-plane request           RERUND_HTTP_PROXY
                      (hosts in NO_PROXY are reached directly)
  http_proxy_file     ... or a file holding the proxy URL                  RERUND_HTTP_PROXY_FILE
  console_url         UI base URL for links in notifications               RERUND_CONSOLE_URL
  notify.webhook      URL for exhausted lineages (Slack-compatible)        RERUND_NOTIFY_WEBHOOK
  notify.webhook_file ... or a file holding that URL                       RERUND_NOTIFY_WEBHOOK_FILE
  notify.timeout      per webhook POST (default 5s)                        (file only)
  notify.retries      webhook retries (default 5)                          (file only)
  ledger_retention    how long the ledger keeps records (default 30d)      RERUND_LEDGER_RETENTION
  ledger_max_bytes    most bytes the ledger's rows may take, e.g. 2Gi     RERUND_LEDGER_MAX_BYTES
                      (default 0: no bound; oldest go first)
  backend             union | oss | auto: what the control plane supports  RERUND_BACKEND
                      (default auto: the first label filter finds out)
  error_details_wait  how long to wait for a FAILED run's error details    RERUND_ERROR_DETAILS_WAIT
                      (default 60s; open-source Flyte fills them late)
  log_level           DEBUG, INFO, WARNING or ERROR (default INFO)         RERUND_LOG_LEVEL
  log_format          text or json (one object per line; default text)     RERUND_LOG_FORMAT
  event_loop          uvloop or asyncio: the loop `rerund run` runs on      RERUND_EVENT_LOOP
                      (default uvloop)
  sdk_tuning          false: the plain flyte SDK path, slower and correct   RERUND_SDK_TUNING
                      (default true; off by itself for an unverified SDK)

Flags are visible to every local user (ps, /proc/PID/cmdline); the environment and files are
not. Give a credential (auth_command, http_proxy with user:password@, notify.webhook) through
RERUND_* or a *_file setting, never as a flag. The API key is never a flag (FLYTE_API_KEY or
api_key_file). /decisions, /status, the page and the logs show no credential of any setting.
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
    add_connection_arguments(
        run, scope_help="scope to watch (repeatable)", state_help="the ledger (default ./rerund.db)"
    )
    run.add_argument(
        "--policies", action="append", metavar="PATH", help="policy file or directory (repeatable)"
    )
    run.add_argument("--http", metavar="HOST:PORT", help="metrics/health address, or 'off'")
    run.add_argument(
        "--http-host",
        dest="http_hosts",
        action="append",
        metavar="NAME",
        help="a Host name the HTTP server answers besides IP addresses, localhost and the --http host "
        "(repeatable; e.g. the name an authenticating proxy passes on)",
    )
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
    run.add_argument(
        "--max-concurrent-reruns",
        type=int,
        metavar="N",
        help="reruns being created at once, at most (default 64)",
    )
    run.add_argument("--max-rps", type=float, metavar="N", help="at most N control-plane RPCs per second")
    add_secret_argument(
        run, "--notify-webhook", "URL", "webhook for exhausted lineages", "the --notify-webhook URL"
    )
    run.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text (default), or json: one object per line with run, lineage, policy, decision",
    )
    run.set_defaults(func=_run)

    history = sub.add_parser(
        "history",
        help="decisions in the audit ledger; with --run, the story of a lineage",
        description=(
            "Show recorded decisions, newest first. With --run RUN: the story of RUN's lineage, oldest "
            "first — each decision with its reason, the reruns created, how they ended, and whether the "
            "lineage recovered or was exhausted."
        ),
    )
    add_connection_arguments(history)
    history.add_argument("--run", metavar="RUN", help="the story of this run's lineage (a run or its root)")
    history.add_argument("--policy", metavar="POLICY", help="only this policy")
    history.add_argument(
        "--source", choices=("daemon", "sweep"), help="only decisions of the daemon or of `rerund sweep`"
    )
    history.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N decisions (default 50)"
    )
    add_format_argument(history)
    history.set_defaults(func=_history)


def _settings(args: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {
        "policies": args.policies,
        "http": args.http,
        "http_hosts": args.http_hosts,
        "dry_run": args.dry_run,
        "poll_interval": args.poll_interval,
        "backend": args.backend,
        "watch": args.watch,
        "lookback": args.lookback,
        "max_concurrent_reruns": args.max_concurrent_reruns,
        "max_rps": args.max_rps,
        "notify_webhook": args.notify_webhook,
        "notify_webhook_file": args.notify_webhook_file,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return connection_settings(args, **overrides)


def _run(args: argparse.Namespace) -> int:
    # The daemon's object graph (the flyte SDK, the runtime, the HTTP server) loads only when it
    # runs: `rerund run --help` and a settings error need none of it.
    from rerund.adapters.flyte.sdk_loop import run_on_sdk_loop
    from rerund.app import App
    from rerund.runtime.daemon import settle_heap

    settings = _settings(args)
    settings.require_runnable()
    ensure_policies(settings)
    configure_logging(settings.log_level, settings.log_format)
    return_large_blocks()  # a 5 MB error message must not raise the heap's high-water mark
    # On the SDK's own event loop: no thread hand-off per control-plane call.
    # os._exit: a leader that cannot prove its lead exits at once, without a stop sequence.
    daemon = App(settings, install_signals=False, on_ready=lambda _: settle_heap(), exit_process=os._exit)
    return run_on_sdk_loop(
        daemon.run,
        signals={
            signal.SIGTERM: daemon.request_stop,
            signal.SIGINT: daemon.request_stop,
            signal.SIGHUP: daemon.request_reload,
        },
        event_loop=settings.event_loop if settings.sdk_tuning else "asyncio",
    )


def _history(args: argparse.Namespace) -> int:
    # --state, else the settings' state (--config, then RERUND_STATE; default ./rerund.db), read
    # like every other command's connection
    ledger = open_ledger(connection_settings(args))
    if args.run:
        return _story(ledger, args)
    rows = ledger.history(policy=args.policy, source=args.source, limit=args.limit)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0 if rows or not args.policy else 1
    if not rows:
        if args.policy:
            seen = ", ".join(ledger.policies_seen()) or "none"
            say(f"no decision recorded for policy {args.policy!r}; policies with decisions: {seen}")
            return 1
        say(f"no decisions recorded yet in {ledger.path}")
        return 0
    for r in rows:
        tag = "" if r["source"] == "daemon" else f"[{r['source']}] "
        where = f"{r['project']}/{r['domain']}/{r['run']}"
        say(f"{r['at'][:19]}Z  {r['decision']:<7}  {where}  {tag}{r['reason']}")
    return 0


def _story(ledger: StateLedger, args: argparse.Namespace) -> int:
    """``history --run RUN``: the lineage of RUN told from the ledger, oldest first."""
    root = ledger.root_of(args.run) or args.run
    rows = ledger.lineage_rows(root=root)
    if args.policy:
        rows = {k: [r for r in v if r.get("policy") == args.policy] for k, v in rows.items()}
    if not any(rows.values()):
        say(f"no decision recorded about run {args.run!r} or its lineage in {ledger.path}")
        return 1
    status = compute_status(
        now=utcnow(),
        decisions=rows["decisions"],
        issues=rows["issues"],
        outcomes=rows["outcomes"],
        recent=1_000_000,
    )
    lineage = next(iter([*status.in_flight, *status.recovered, *status.exhausted]), None)
    story = lineage_story(rows["decisions"], rows["issues"], rows["outcomes"])[-args.limit :]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "root": root,
                    "state": lineage.to_json() if lineage else {"state": "ignored"},
                    "story": [line.to_json() for line in story],
                },
                indent=2,
            )
        )
        return 0
    if lineage is not None:
        due = f", due at {iso(lineage.due)}" if lineage.due else ""
        say(
            f"lineage {lineage.key}: {lineage.state}{due} "
            f"(attempt {lineage.attempt}, policy {lineage.policy})"
        )
        say(f"  {lineage.why}")
    else:
        say(f"lineage {root}: nothing owed (ignored)")
    for line in story:
        say(f"{iso(line.at.replace(microsecond=0))}  {line.event:<14} {line.run:<30} {line.text}")
    return 0
