"""``rerund sandbox``: serve the Flyte-compatible sandbox control plane until SIGINT/SIGTERM.

Prints the endpoint, the ``flyte.init(...)`` call and a ``flyte`` CLI config file (written to
disk) that point at it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from rerund.errors import ConfigError

__all__ = ["flyte_cli_config", "register"]

_DESCRIPTION = """\
Serve a Flyte 2 control plane (Connect protocol over HTTP) that the real flyte SDK and
`flyte` CLI talk to like a real backend. Runs move QUEUED -> RUNNING -> terminal by the
behaviour their task declares in the workload file; reruns follow their lineage.
"""

_EPILOG = """\
examples:
  rerund sandbox --workload policies/demo/workload.yaml
  rerund sandbox --profile oss --error-delay 2s   # behave like open-source Flyte 2
  rerund sandbox --port 0 --db /tmp/sandbox.db --fault-unavailable 0.2 --fault-latency 50ms
  rerund sandbox --auth --api-key-out /tmp/sandbox.key --tls /tmp/sandbox-tls --rate-limit 100/s

admin endpoint (not part of Flyte's API; with --auth every call needs
'authorization: Bearer TOKEN', the admin token from --admin-token-out; without --auth a POST
needs content-type: application/json; a Host other than localhost, an IP address or --host is refused):
  GET  /_sandbox/stats     RPC counts by method, runs by phase, faults
  GET  /_sandbox/requests  RPC counts by method, and by run and method
  GET  /_sandbox/rates     RPCs per whole second, and the peak
  POST /_sandbox/faults    {"unavailable": 0.2, "latency": "50ms", "drop_streams_after": 50,
                           "db_errors": 0.3, "rate_limit": "100/s"}
  POST /_sandbox/auth      {"revoke": true, "mint": true}  (--auth: revoke every token and the
                           secret; mint a new key into --api-key-out)
  GET  /_sandbox/runs      every run as JSON
  POST /_sandbox/runs      {"task": "train.fit", "count": 2, "labels": {}, "inputs": {}}
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sandbox",
        help="serve a Flyte-compatible sandbox control plane",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8090, help="port to listen on; 0 picks a free one (default 8090)"
    )
    p.add_argument(
        "--db",
        default=":memory:",
        help="SQLite file that keeps every run across restarts, or :memory: (default)",
    )
    p.add_argument("--workload", type=Path, default=None, help="workload YAML file (tasks, runs, arrivals)")
    p.add_argument("--org", default="sandbox", help="organization name served (default sandbox)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every workload duration by this factor (default 1.0; 0.1 = ten times faster)",
    )
    p.add_argument(
        "--fault-unavailable",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of RPCs answered UNAVAILABLE (0-1)",
    )
    p.add_argument(
        "--fault-latency", default="0ms", metavar="DURATION", help="latency added to every RPC, e.g. 50ms"
    )
    p.add_argument(
        "--fault-drop-streams-after",
        type=int,
        default=0,
        metavar="N",
        help="close watch streams with UNAVAILABLE after N messages (0 = never)",
    )
    p.add_argument(
        "--fault-db-errors",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of run reads the database fails (0-1): GetRunDetails answers NOT_FOUND and "
        "ListRuns INTERNAL, as open-source Flyte does on a database error",
    )
    p.add_argument(
        "--profile",
        default="union",
        choices=("union", "oss"),
        help="which control plane to imitate: union (default) or oss, the open-source runs "
        "service (no label filters, CreateRun returns an existing run, pages of at most 200, ...; "
        "see the README)",
    )
    p.add_argument(
        "--error-delay",
        default=None,
        metavar="DURATION",
        help="--profile oss: how long after a run turns FAILED its error details appear "
        "(default 1s; the real service shows them once the last attempt's events arrived)",
    )
    p.add_argument(
        "--rate-limit",
        default="0",
        metavar="N/s",
        help="answer RESOURCE_EXHAUSTED beyond N RPCs per second, as a gateway does (0 = unlimited)",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="require OAuth2 bearer tokens (client credentials) on every RPC, as Union does",
    )
    p.add_argument(
        "--api-key-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --auth: write the API key (flyte create api-key form) to FILE, mode 0600",
    )
    p.add_argument(
        "--admin-token-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --auth: write the token the admin API (/_sandbox/) needs to FILE, mode 0600 "
        "(default: the --api-key-out file with .admin appended)",
    )
    p.add_argument(
        "--token-ttl",
        default="1h",
        metavar="DURATION",
        help="with --auth: lifetime of each issued token (default 1h)",
    )
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve HTTPS; DIR/ca.crt, server.crt, server.key are generated when absent",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed for faults, run names and random outputs"
    )
    p.add_argument(
        "--flyte-config",
        type=Path,
        default=None,
        help="where to write the flyte CLI config (default: a temp file named after the port)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request (uvicorn info logs)")
    p.set_defaults(func=run)


def flyte_cli_config(
    endpoint: str,
    *,
    org: str,
    project: str,
    domain: str,
    ca_cert: Path | None = None,
    auth: bool = False,
) -> str:
    """The ``flyte --config FILE`` YAML that points the CLI at ``endpoint``. With ``auth`` the
    credentials come from ``FLYTE_API_KEY`` (never written here); ``ca_cert`` is the CA to trust."""
    admin = f"  endpoint: {endpoint}\n"
    if ca_cert is None and not auth:
        admin += "  insecure: true\n"
    else:
        admin += "  insecure: false\n"
    if ca_cert is not None:
        admin += f"  caCertFilePath: {ca_cert}\n"
    if auth:
        admin += "  authType: ClientSecret\n  disableKeyring: true\n"
    return "admin:\n" + admin + f"task:\n  org: {org}\n  project: {project}\n  domain: {domain}\n"


def run(args: argparse.Namespace) -> int:
    # The sandbox (its server, store and engine) loads only when it is served.
    from rerund.sandbox.auth import AuthState
    from rerund.sandbox.profiles import profile_named
    from rerund.sandbox.ratelimit import format_rate, parse_rate
    from rerund.sandbox.server import Sandbox, bind_socket, serve_forever
    from rerund.sandbox.service import Faults
    from rerund.sandbox.tls import ensure_tls
    from rerund.sandbox.workload import Workload, load_workload, parse_duration

    if not 0.0 <= args.fault_unavailable <= 1.0:
        raise ConfigError(
            f"--fault-unavailable must be a share between 0 and 1, got {args.fault_unavailable}"
        )
    if not 0.0 <= args.fault_db_errors <= 1.0:
        raise ConfigError(f"--fault-db-errors must be a share between 0 and 1, got {args.fault_db_errors}")
    if args.fault_drop_streams_after < 0:
        raise ConfigError(
            f"--fault-drop-streams-after must be >= 0 (0 = never), got {args.fault_drop_streams_after}"
        )
    if args.time_scale <= 0:
        raise ConfigError(f"--time-scale must be positive, got {args.time_scale}")
    try:
        latency = parse_duration(args.fault_latency)
    except ValueError as exc:
        raise ConfigError(f"--fault-latency: {exc}") from None
    profile = profile_named(args.profile)
    if args.error_delay is not None:
        if profile.name != "oss":
            raise ConfigError(
                f"--error-delay applies to --profile oss only (got --profile {args.profile}); "
                "drop it or add --profile oss"
            )
        try:
            profile = profile.with_error_delay(parse_duration(args.error_delay))
        except ValueError as exc:
            raise ConfigError(f"--error-delay: {exc}") from None
    try:
        rate_limit = parse_rate(args.rate_limit)
    except ValueError as exc:
        raise ConfigError(f"--rate-limit: {exc}") from None
    try:
        token_ttl = parse_duration(args.token_ttl)
    except ValueError as exc:
        raise ConfigError(f"--token-ttl: {exc}") from None
    if token_ttl <= 0:
        raise ConfigError(f"--token-ttl must be a positive duration, e.g. 1h, got {args.token_ttl!r}")
    if args.auth and args.api_key_out is None:
        raise ConfigError(
            "--auth needs --api-key-out FILE: the sandbox writes its API key there (it never prints it)"
        )
    if args.api_key_out is not None and not args.auth:
        raise ConfigError("--api-key-out needs --auth (without it the sandbox accepts anyone)")
    if args.admin_token_out is not None and not args.auth:
        raise ConfigError("--admin-token-out needs --auth (without it the admin API takes no token)")
    if args.auth and args.admin_token_out is None:
        args.admin_token_out = args.api_key_out.with_name(args.api_key_out.name + ".admin")
    tls = ensure_tls(args.tls) if args.tls is not None else None
    workload = load_workload(args.workload) if args.workload else Workload()
    faults = Faults(
        unavailable=args.fault_unavailable,
        latency_s=latency,
        drop_streams_after=args.fault_drop_streams_after,
        db_errors=args.fault_db_errors,
    )
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    endpoint = f"{'https' if tls else 'http'}://{shown_host}:{port}"
    auth = None
    if args.auth:
        key_host = "localhost" if ":" in host else host  # the key's endpoint part cannot hold ':'
        auth = AuthState(
            org=args.org,
            token_ttl_s=token_ttl,
            key_host=key_host,
            key_file=args.api_key_out,
            admin_file=args.admin_token_out,
        )
        try:
            auth.mint_key()
            auth.write_admin_token()
        except ConfigError:
            sock.close()
            raise
    sandbox = Sandbox(
        workload,
        db=args.db,
        org=args.org,
        time_scale=args.time_scale,
        faults=faults,
        seed=args.seed,
        profile=profile,
        auth=auth,
        tls=tls,
        rate_limit=rate_limit,
        hosts=(args.host,),
    )
    config_path = args.flyte_config or Path(tempfile.gettempdir()) / f"rerund-sandbox-{port}.flyte.yaml"
    config_text = flyte_cli_config(
        endpoint,
        org=args.org,
        project=workload.project,
        domain=workload.domain,
        ca_cert=tls.ca_cert if tls else None,
        auth=args.auth,
    )
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config_text, encoding="utf-8")
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot write the flyte CLI config to {config_path}: {exc}; pass --flyte-config PATH"
        ) from None

    def ready() -> None:
        assert sandbox.store is not None
        durable = (
            f"{args.db} (durable)"
            if sandbox.store.durable
            else ":memory: (lost on exit; use --db PATH to keep runs)"
        )
        source = str(args.workload) if args.workload else "none (no tasks; pass --workload FILE)"
        print(
            f"rerund sandbox: serving Flyte at {endpoint}  "
            f"(org {args.org}, project {workload.project}, domain {workload.domain})\n"
            f"  workload: {source}: {len(workload.tasks)} tasks, {len(sandbox.store.runs)} runs, "
            f"{len(workload.arrivals)} arrival schedules"
            + (f", {len(workload.deploys)} scheduled deploys" if workload.deploys else "")
            + "\n"
            f"  database: {durable}\n"
            f"  faults:   {_faults_text(faults)}, rate limit {format_rate(rate_limit)}\n"
            f"  profile:  {_profile_text(profile)}\n"
            + _security_text(args, tls, token_ttl)
            + f"  admin:    {endpoint}/_sandbox/stats"
            + (
                f" (send 'authorization: Bearer TOKEN', TOKEN from {args.admin_token_out})"
                if args.auth
                else ""
            )
            + "\n"
            "\n"
            "Point the SDK at it:\n"
            "    import flyte\n" + _sdk_text(endpoint, args, workload, tls) + "\n"
            f"Point the flyte CLI at it (config written to {config_path}"
            + ("; removed when the sandbox stops" if args.flyte_config is None else "")
            + "):\n"
            f"    {_cli_env(args, tls)}flyte {_cli_endpoint(args, endpoint)}--config {config_path} get run\n"
            + "".join(f"    {line}\n" for line in config_text.splitlines())
            + "\nStop with Ctrl-C (SIGINT) or SIGTERM.",
            flush=True,
        )

    try:
        serve_forever(sandbox, sock, ready=ready, quiet=not args.verbose)
    finally:
        if args.flyte_config is None:  # ours, in the temp directory: do not leave it behind
            config_path.unlink(missing_ok=True)
    stored = len(sandbox.store.runs) if sandbox.store is not None else 0
    where = (
        f"kept in {args.db}"
        if sandbox.store is not None and sandbox.store.durable
        else "discarded (:memory:)"
    )
    print(f"rerund sandbox: stopped cleanly; {stored} runs {where}", file=sys.stderr, flush=True)
    return 0


def _profile_text(p: Any) -> str:
    if p.name == "oss":
        return (
            f"oss (open-source Flyte 2: no label filters, pages <= {p.max_page}, "
            f"error details {round(p.error_delay_s * 1000, 3):g}ms after FAILED)"
        )
    return "union"


def _security_text(args: argparse.Namespace, tls: Any, token_ttl: float) -> str:
    text = f"  tls:      CA {tls.ca_cert} (trust it: ca_cert_file_path)\n" if tls else "  tls:      off\n"
    if args.auth:
        text += (
            f"  auth:     bearer tokens required; API key written to {args.api_key_out} (mode 0600), "
            f"tokens live {token_ttl:g}s\n"
        )
    else:
        text += "  auth:     off (anyone may call)\n"
    return text


def _sdk_text(endpoint: str, args: argparse.Namespace, workload: Any, tls: Any) -> str:
    where = f'org="{args.org}", project="{workload.project}", domain="{workload.domain}"'
    if not args.auth and tls is None:
        return f'    flyte.init(endpoint="{endpoint}", insecure=True, {where})\n'
    ca = f', ca_cert_file_path="{tls.ca_cert}"' if tls else ""
    if not args.auth:
        return f'    flyte.init(endpoint="{endpoint}"{ca}, {where})\n'
    return (
        "    from flyte.remote._client.auth._auth_utils import decode_api_key\n"
        f'    _, client_id, secret, _ = decode_api_key(open("{args.api_key_out}").read().strip())\n'
        f'    flyte.init(endpoint="{endpoint}"{ca}, auth_type="ClientSecret", client_id=client_id,\n'
        f"               client_credentials_secret=secret, disable_keyring=True, {where})\n"
    )


def _cli_env(args: argparse.Namespace, tls: Any) -> str:
    env = f"FLYTE_API_KEY=$(cat {args.api_key_out}) " if args.auth else ""
    if tls is not None and args.auth:
        # The SDK fetches tokens with httpx, which trusts SSL_CERT_FILE, not caCertFilePath.
        env += f"SSL_CERT_FILE={tls.ca_cert} "
    return env


def _cli_endpoint(args: argparse.Namespace, endpoint: str) -> str:
    # With FLYTE_API_KEY the CLI takes the endpoint from the key unless --endpoint names it, and
    # a key cannot carry a port (decode_api_key splits on ':').
    return f"--endpoint {endpoint} " if args.auth else ""


def _faults_text(f: Any) -> str:
    if not (f.unavailable or f.latency_s or f.drop_streams_after or f.db_errors):
        return "none"
    return (
        f"unavailable={f.unavailable} latency={round(f.latency_s * 1000, 3):g}ms "
        f"drop_streams_after={f.drop_streams_after or 'never'}"
        + (f" db_errors={f.db_errors}" if f.db_errors else "")
    )
