"""The sandbox server: the Connect services, an ASGI router and the ``/_sandbox/`` admin API.

``Sandbox`` assembles store, engine, watch hub, RPC counters and faults, and serves them with
uvicorn on one asyncio event loop. ``serve_forever`` runs it in the calling (main) thread until
SIGINT/SIGTERM; ``SandboxThread`` runs it in a background thread (tests, ``rerund demo``).

The admin API is not part of Flyte's API (JSON over plain HTTP)::

    GET  /_sandbox/stats    {"requests": {"CreateRun": 3, ...}, "runs": {"FAILED": 2, ...}, "faults": {...}}
                            ("reexecutions": CreateRuns of an existing name that ran it again, oss)
    POST /_sandbox/faults   {"unavailable": 0.2, "latency": "50ms", "drop_streams_after": 50,
                             "db_errors": 0.3}  (that share of GetRunDetails NOT_FOUND, of ListRuns INTERNAL)
    GET  /_sandbox/requests {"by_method": {"CreateRun": 3, ...}, "by_run": {"r1": {"GetRunDetails": 2}}}
    GET  /_sandbox/runs     [{"name": ..., "phase": "FAILED", ...}, ...]
    POST /_sandbox/runs     {"task": "train.fit", "count": 2, "labels": {}, "inputs": {}, "version": "v1"}
                            -> {"runs": [...]} (``project`` and ``domain`` too: a new project appears)
    GET  /_sandbox/tasks    [{"task": ..., "version": ..., "deployed_at": ..., "latest": true}, ...]
    POST /_sandbox/tasks    {"task": "train.fit", "version": "v2", "behaviour": "succeed", ...} deploys a
                            version (fields as a workload ``versions:`` entry) -> {"task", "version", ...}
    GET  /_sandbox/outages  [{"tasks": ["etl.*"], "starts_at": ..., "ends_at": ..., "error": {...}}, ...]
    POST /_sandbox/outages  {"tasks": ["etl.*"], "after": "0s", "for": "40s", "error": {"kind", "code",
                            "message"}} fails every execution of a matching task that starts inside
                            the window (fields as a workload ``outages:`` entry) -> the outage, placed
    POST /_sandbox/auth     {"revoke": true, "mint": true} (with --auth; the new key goes to the key file)
    GET  /_sandbox/rates    {"peak_rpc_per_s": 412, "per_second": [...]} (RPCs per whole second)

Who may call it: every request needs a Host that names this machine (an IP address,
``localhost`` or a name in ``hosts``; ``rerund.core.hosts``), so a DNS-rebinding web page
cannot reach it. With ``--auth`` the admin API needs ``authorization: Bearer <admin token>``
(the token is in a 0600 file next to the API key); without it, an admin POST needs
``content-type: application/json`` and no foreign ``Origin``, which a cross-site page cannot
send. Env values are never served (``"envs": {"KEY": "***"}``); a body nested deeper than
``MAX_JSON_DEPTH`` is answered 400.

With ``auth`` (``--auth``) every Flyte RPC needs a bearer token the sandbox issued (see
``rerund.sandbox.auth``); with ``tls`` (``--tls DIR``) it serves HTTPS (``rerund.sandbox.tls``);
``rate_limit`` puts a token bucket in front of every Flyte RPC (``rerund.sandbox.ratelimit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import signal
import socket
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flyteidl2.auth.auth_service_connect import AuthMetadataServiceASGIApplication
from flyteidl2.cluster.service_connect import ClusterServiceASGIApplication
from flyteidl2.dataproxy.dataproxy_service_connect import DataProxyServiceASGIApplication
from flyteidl2.project.project_service_connect import ProjectServiceASGIApplication
from flyteidl2.task.task_service_connect import TaskServiceASGIApplication
from flyteidl2.workflow.run_service_connect import RunServiceASGIApplication
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError

from rerund.clock import utcnow
from rerund.core.hosts import connection_cap, host_allowed, host_name
from rerund.errors import ConfigError
from rerund.fdlimit import CappedAcceptor, raise_fd_limit, soft_fd_limit
from rerund.sandbox import literals
from rerund.sandbox.auth import (
    AUTH_SERVICE_PATH,
    TOKEN_PATH,
    AuthState,
    SandboxAuthMetadataService,
    parse_form,
    unauthenticated_body,
)
from rerund.sandbox.engine import Engine
from rerund.sandbox.profiles import UNION, Profile, executor_error
from rerund.sandbox.projects import SandboxProjectService
from rerund.sandbox.ratelimit import RateLimiter, RateMeter, format_rate, parse_rate
from rerund.sandbox.records import NAME_RULE, PHASE_NAMES, RunRec, name_problem
from rerund.sandbox.service import (
    Faults,
    Hub,
    RpcStats,
    RunRequestCounts,
    SandboxClusterService,
    SandboxDataProxyService,
    SandboxRunService,
)
from rerund.sandbox.store import Store
from rerund.sandbox.tasks import SandboxTaskService, TaskCatalog, spec_resources
from rerund.sandbox.tls import TlsFiles
from rerund.sandbox.workload import Workload, outage_from_json, parse_duration

__all__ = ["Sandbox", "SandboxThread", "bind_socket", "run_snapshot", "serve_forever"]

log = logging.getLogger("rerund.sandbox")

# Request bodies, raw or decompressed; the largest real request (a CreateRun with inputs) is far
# below. Flyte's service refuses larger messages too (gRPC's default is 4 MiB).
MAX_REQUEST_BYTES = 4 << 20
MAX_LAUNCH = 10_000  # runs per admin POST /_sandbox/runs
MAX_JSON_DEPTH = 64  # nested lists and objects in an admin body (a workload file allows as many)
ENV_MASK = "***"  # what is served in place of an env value

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def run_snapshot(r: RunRec, *, env_values: bool = True, profile: Profile | None = None) -> dict[str, Any]:
    """A plain-data view of one run (``sb.runs()``; ``GET /_sandbox/runs`` with
    ``env_values=False``: env keys only, each value ``***``). ``error`` is the cause;
    ``served_error`` is the error as ``profile`` serves it to a client (``oss``: no code, the
    executor's message forms)."""
    a0 = r.root
    served = None
    if a0.error is not None:
        served = {"kind": a0.error.kind, "code": a0.error.code, "message": a0.error.message}
        if profile is not None and not profile.error_codes:
            kind, message = executor_error(a0.error.kind, a0.error.code, a0.error.message)
            served = {"kind": kind, "code": "", "message": message}
    rel = None
    if r.related_to is not None:
        rel = {"run": r.related_to[3], "type": "RECOVER" if r.relation_type == 2 else "RERUN"}
        if r.relation_type not in (1, 2):
            rel["type"] = str(r.relation_type)
    return {
        "name": r.name,
        "org": r.org,
        "project": r.project,
        "domain": r.domain,
        "phase": PHASE_NAMES.get(r.phase, str(r.phase)),
        "task": r.task,
        "labels": r.labels,
        "envs": r.envs if env_values else dict.fromkeys(r.envs, ENV_MASK),
        "relation": rel,
        "version": a0.task_spec.task_template.id.version,
        "resources": dict(zip(("requests", "limits"), spec_resources(a0.task_spec), strict=True)),
        "action_name": r.source_action,
        "lineage": r.lineage,
        "inputs": literals.values_from_literals(a0.inputs) if a0.inputs is not None else {},
        "outputs": literals.values_from_literals(a0.outputs) if a0.outputs is not None else {},
        "error": {"kind": a0.error.kind, "code": a0.error.code, "message": a0.error.message}
        if a0.error
        else None,
        "served_error": served,
        "actions": [
            {
                "name": a.name,
                "parent": a.parent,
                "task": a.task,
                "phase": PHASE_NAMES.get(a.phase, str(a.phase)),
            }
            for a in r.actions.values()
        ],
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
    }


class _Conflict(ValueError):
    """The admin request names something that already exists (answered 409)."""


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {json.dumps(value)}")
    return value


def _text_map(body: Mapping[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f'{key} must be a mapping of strings to strings, e.g. {{"team": "ml"}}')
    return value


def _launch_args(body: Mapping[str, Any]) -> dict[str, Any]:
    """The admin ``POST /_sandbox/runs`` body checked as CreateRun checks a request."""
    unknown = set(body) - {
        "task",
        "count",
        "labels",
        "envs",
        "inputs",
        "project",
        "domain",
        "name",
        "version",
    }
    if unknown:
        raise ValueError(
            f"unknown field(s) {sorted(unknown)}; known: task, count, labels, envs, inputs, project, "
            "domain, name, version"
        )
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_LAUNCH:
        raise ValueError(f"count must be a whole number from 1 to {MAX_LAUNCH}, got {json.dumps(count)}")
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs must be a mapping of input names to values, got {json.dumps(inputs)}")
    name = _text(body, "name")
    if name is not None:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"run name {name!r} {problem}: a run name must be {NAME_RULE}")
    return {
        "task": _text(body, "task", required=True),
        "count": count,
        "labels": _text_map(body, "labels"),
        "envs": _text_map(body, "envs"),
        "inputs": inputs,
        "project": _text(body, "project") or None,
        "domain": _text(body, "domain") or None,
        "name": name,
        "version": _text(body, "version") or None,
    }


def _faults_from_json(body: Mapping[str, Any], current: Faults) -> Faults:
    """Parse the admin faults body; raises ValueError with what is wrong."""
    unknown = set(body) - {"unavailable", "latency", "latency_s", "drop_streams_after", "db_errors"}
    if unknown:
        raise ValueError(
            f"unknown fault(s) {sorted(unknown)}; known: unavailable, latency, drop_streams_after, "
            "db_errors, rate_limit"
        )
    db_errors = float(body.get("db_errors", current.db_errors))
    if not 0.0 <= db_errors <= 1.0:
        raise ValueError(f"db_errors must be a share between 0 and 1, got {db_errors}")
    unavailable = float(body.get("unavailable", current.unavailable))
    if not 0.0 <= unavailable <= 1.0:
        raise ValueError(f"unavailable must be a share between 0 and 1, got {unavailable}")
    latency = current.latency_s
    if "latency" in body:
        latency = parse_duration(body["latency"])
    if "latency_s" in body:
        latency = parse_duration(body["latency_s"])
    drop = int(body.get("drop_streams_after", current.drop_streams_after))
    if drop < 0:
        raise ValueError(f"drop_streams_after must be >= 0 (0 = never), got {drop}")
    return Faults(unavailable=unavailable, latency_s=latency, drop_streams_after=drop, db_errors=db_errors)


class Sandbox:
    """All parts of one sandbox, and the ASGI app that serves them."""

    def __init__(
        self,
        workload: Workload,
        *,
        db: str | Path = ":memory:",
        org: str = "sandbox",
        time_scale: float = 1.0,
        faults: Faults | None = None,
        seed: int | None = None,
        profile: Profile = UNION,
        auth: AuthState | None = None,
        tls: TlsFiles | None = None,
        rate_limit: float = 0.0,
        hosts: tuple[str, ...] = (),
    ) -> None:
        if not org:
            raise ConfigError("sandbox org is empty; pass --org NAME (the protos need a non-empty org)")
        self.workload = workload
        self.org = org
        self.db = db
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.stats = RpcStats(self.faults, self.rng, profile)
        self.run_counts = RunRequestCounts()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.profile = profile
        self.hub = Hub(profile)
        self.auth = auth
        self.tls = tls
        self.ratelimit = RateLimiter(rate_limit)
        self.meter = RateMeter()
        self.hosts = hosts  # names served besides localhost and IP addresses (the --host name)
        self._apps: dict[str, Any] = {}

    async def start(self) -> None:
        """Open the store (loading a durable one), build services, resume and start work."""
        store = Store(self.db)
        self.store = store
        catalog = TaskCatalog(self.workload, org=self.org, clock=utcnow)
        engine = Engine(
            store,
            self.workload,
            org=self.org,
            time_scale=self.time_scale,
            clock=utcnow,
            rng=self.rng,
            profile=self.profile,
            catalog=catalog,
        )
        self.engine = engine
        store.listeners.append(self.hub.publish)
        args = (store, engine, self.hub, self.stats)
        interceptors: list[Any] = [self.meter, self.stats, self.ratelimit, self.run_counts]
        apps: list[Any] = [
            RunServiceASGIApplication(
                SandboxRunService(*args, profile=self.profile),
                interceptors=interceptors,
                read_max_bytes=MAX_REQUEST_BYTES,
            ),
            DataProxyServiceASGIApplication(
                SandboxDataProxyService(*args, profile=self.profile),
                interceptors=interceptors,
                read_max_bytes=MAX_REQUEST_BYTES,
            ),
            ClusterServiceASGIApplication(
                SandboxClusterService(), interceptors=interceptors, read_max_bytes=MAX_REQUEST_BYTES
            ),
            TaskServiceASGIApplication(
                SandboxTaskService(catalog), interceptors=interceptors, read_max_bytes=MAX_REQUEST_BYTES
            ),
            ProjectServiceASGIApplication(
                SandboxProjectService(self.workload, store, self.org),
                interceptors=interceptors,
                read_max_bytes=MAX_REQUEST_BYTES,
            ),
        ]
        if self.auth is not None:
            apps.append(
                AuthMetadataServiceASGIApplication(
                    SandboxAuthMetadataService(self._base_url), interceptors=[self.stats]
                )
            )
        self._apps = {app.path: app for app in apps}
        store.start_flusher()
        engine.resume()
        engine.start_workload()

    async def stop(self) -> None:
        """End watch streams, stop executing and flush the store."""
        self.hub.close_all()
        if self.engine is not None:
            await self.engine.stop()
        if self.store is not None:
            await self.store.close()

    def _base_url(self, ctx: Any) -> str:
        host = ctx.request_headers().get("host") or "127.0.0.1"
        return f"{'https' if self.tls is not None else 'http'}://{host}"

    def set_faults(self, **changes: Any) -> Faults:
        rate = parse_rate(changes.pop("rate_limit")) if "rate_limit" in changes else None
        new = _faults_from_json(changes, self.faults)  # all checked before any is applied
        if rate is not None:
            self.ratelimit.set_rate(rate)
        self.faults.unavailable = new.unavailable
        self.faults.latency_s = new.latency_s
        self.faults.drop_streams_after = new.drop_streams_after
        self.faults.db_errors = new.db_errors
        return self.faults

    def stats_json(self) -> dict[str, Any]:
        assert self.store is not None
        by_phase = {
            PHASE_NAMES.get(p, str(p)): n for p, n in sorted(self.store.count_by_phase().items()) if n
        }
        result: dict[str, Any] = {
            "requests": dict(self.stats.counts),
            "runs": by_phase,
            "faults": self.faults_json(),
            "profile": self.profile.name,
            "watch_dropped": self.hub.dropped,
            "reexecutions": self.engine.reexecutions if self.engine is not None else 0,
        }
        if self.ratelimit.refused:
            result["rate_limited"] = self.ratelimit.refused
        if self.auth is not None:
            result["auth"] = {
                "tokens_issued": self.auth.issued,
                "tokens_live": self.auth.live_tokens(),
                "token_requests_refused": self.auth.rejected,
                "token_ttl_s": self.auth.token_ttl_s,
            }
        return result

    def faults_json(self) -> dict[str, Any]:
        """The faults; ``rate_limit`` appears once a limit is set (``"unlimited"`` after 0)."""
        result = self.faults.as_json()
        if self.ratelimit.rate > 0 or self.ratelimit.changed:
            result["rate_limit"] = format_rate(self.ratelimit.rate)
        return result

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        host = _header(scope, b"host")
        if not host_allowed(host, self.hosts):
            self.stats.counts["WrongHost"] += 1
            why = (
                f"Host {host_name(host)!r} is not this machine's name; the sandbox answers requests for "
                "localhost, an IP address or its --host name only (a DNS-rebinding web page uses a name "
                "of its own)"
            )
            refusal: dict[str, str] = (
                {"error": why}
                if path.startswith("/_sandbox/")
                else {"code": "permission_denied", "message": why}
            )
            await _respond(send, 403, json.dumps(refusal).encode())
            return
        if path.startswith("/_sandbox/"):
            await self._admin(scope, receive, send)
            return
        service = "/" + path.lstrip("/").split("/", 1)[0]
        if self.auth is not None:
            if path == TOKEN_PATH:
                await self._token(scope, receive, send)
                return
            if service != AUTH_SERVICE_PATH:
                refused = self.auth.check(_header(scope, b"authorization"))
                if refused:
                    self.stats.counts["Unauthenticated"] += 1
                    await _respond(send, 401, unauthenticated_body(refused))
                    return
        app = self._apps.get(service)
        if app is None:
            method = path.rsplit("/", 1)[-1]
            self.stats.counts[method or path] += 1
            log.warning("sandbox: unknown RPC %s answered unimplemented", path)
            body = json.dumps({"code": "unimplemented", "message": f"the sandbox does not implement {path}"})
            await _respond(send, 404, body.encode(), "application/json")
            return
        replay = await _checked_rpc(scope, receive, send)
        if replay is not None:
            await app(scope, replay, send)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.engine is not None and self.store is not None
        method = scope["method"]
        route = scope["path"].removeprefix("/_sandbox/").rstrip("/")
        refused = self._admin_refusal(scope)
        if refused is not None:
            status, message = refused
            await _respond(send, status, json.dumps({"error": message}).encode())
            return
        try:
            body: Any = None
            if method == "POST":
                raw = await _read_body(receive, MAX_REQUEST_BYTES)
                if raw is None:
                    await _respond(
                        send, 413, json.dumps({"error": f"body over {MAX_REQUEST_BYTES} bytes"}).encode()
                    )
                    return
                body = _json_object(raw)
            if (method, route) == ("GET", "stats"):
                result: Any = self.stats_json()
            elif (method, route) == ("POST", "faults"):
                self.set_faults(**body)
                result = self.faults_json()
            elif (method, route) == ("GET", "rates"):
                result = self.meter.as_json()
            elif (method, route) == ("POST", "auth"):
                result = self._admin_auth(body)
            elif (method, route) == ("GET", "requests"):
                result = {"by_method": dict(self.stats.counts), "by_run": self.run_counts.as_json()}
            elif (method, route) == ("GET", "runs"):
                result = [
                    run_snapshot(r, env_values=False, profile=self.profile) for r in self.store.runs.values()
                ]
            elif (method, route) == ("POST", "runs"):
                args = _launch_args(body)
                name = args["name"]
                project = args["project"] or self.workload.project
                domain = args["domain"] or self.workload.domain
                if name is not None and (self.org, project, domain, name) in self.store.runs:
                    raise _Conflict(
                        f"run {name!r} already exists in {self.org}/{project}/{domain}; pick another name "
                        "(a run is never replaced)"
                    )
                names = self.engine.launch(args.pop("task"), **args)
                result = {"runs": names}
            elif (method, route) == ("GET", "outages"):
                result = [o.to_json() for o in self.engine.outages]
            elif (method, route) == ("POST", "outages"):
                outage = outage_from_json(body, self.workload.tasks)
                result = self.engine.add_outage(outage, utcnow()).to_json()
            elif (method, route) == ("GET", "tasks"):
                result = self.engine.catalog.snapshot()
            elif (method, route) == ("POST", "tasks"):
                d = self.engine.catalog.deploy(body)
                result = {
                    "task": d.task,
                    "version": d.version,
                    "project": d.project,
                    "domain": d.domain,
                    "deployed_at": d.deployed_at.isoformat(),
                }
            else:
                await _respond(
                    send,
                    404,
                    json.dumps(
                        {
                            "error": f"no admin route {method} /_sandbox/{route}; "
                            "routes: GET stats, POST faults, GET runs, POST runs, GET requests, "
                            "GET tasks, POST tasks, GET outages, POST outages, GET rates, POST auth"
                        }
                    ).encode(),
                )
                return
        except _Conflict as exc:
            await _respond(send, 409, json.dumps({"error": str(exc)}).encode())
            return
        except (ValueError, TypeError) as exc:
            await _respond(send, 400, json.dumps({"error": str(exc)}).encode())
            return
        await _respond(send, 200, json.dumps(result).encode())

    def _admin_refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(HTTP status, why) when an admin request is refused, else None.

        With ``--auth``: the admin token. Every POST: ``content-type: application/json`` (a
        cross-site page can send ``text/plain`` and forms without asking; JSON needs a CORS
        preflight the sandbox never answers) and, when the browser names one, an ``Origin``
        that is the sandbox itself."""
        if self.auth is not None:
            reason = self.auth.check_admin(_header(scope, b"authorization"))
            if reason:
                return 401, reason
        if scope["method"] != "POST":
            return None
        ctype = _header(scope, b"content-type").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, (
                "the sandbox admin API takes POSTs with content-type: application/json only (a web "
                f"page's cross-site form or text/plain POST is refused); got {ctype or 'none'!r}"
            )
        origin = _header(scope, b"origin")
        if origin and urlsplit(origin).netloc.lower() != _header(scope, b"host").lower():
            return 403, (
                "the sandbox admin API takes POSTs with content-type: application/json from its own "
                f"origin only; Origin {origin!r} is another site"
            )
        return None

    def _admin_auth(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /_sandbox/auth``: revoke every token and the secret, and/or mint a new key
        (written to the key file; never answered over HTTP)."""
        if self.auth is None:
            raise ValueError("the sandbox runs without --auth; there are no tokens or keys to manage")
        unknown = set(body) - {"revoke", "mint"}
        if unknown or not body:
            raise ValueError(
                f'POST /_sandbox/auth takes {{"revoke": true, "mint": true}}; got {sorted(body)}'
            )
        result: dict[str, Any] = {}
        if body.get("revoke"):
            result["revoked_tokens"] = self.auth.revoke_all()
        if body.get("mint"):
            if self.auth.key_file is None:
                raise ValueError("the sandbox has no --api-key-out FILE to write a new key to")
            self.auth.mint_key()
            result["key_file"] = str(self.auth.key_file)
        return result

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The OAuth2 token endpoint (client credentials)."""
        assert self.auth is not None
        self.stats.counts["Token"] += 1
        if scope["method"] != "POST":
            await _respond(send, 405, json.dumps({"error": "invalid_request"}).encode())
            return
        raw = await _read_body(receive, limit=64 * 1024)
        if raw is None:
            await _respond(send, 413, json.dumps({"error": "invalid_request"}).encode())
            return
        status, answer = self.auth.issue(_header(scope, b"authorization"), parse_form(raw))
        await _respond(send, status, json.dumps(answer).encode())


def _json_object(raw: bytes) -> dict[str, Any]:
    """An admin body: a JSON object nested at most ``MAX_JSON_DEPTH`` deep; ValueError (400)
    with what is wrong otherwise. The depth is checked iteratively after parsing, and a
    document too deep for the parser itself is answered the same."""
    too_deep = (
        f"the request body nests JSON more than {MAX_JSON_DEPTH} levels deep; the admin API reads at most "
        f"{MAX_JSON_DEPTH} levels"
    )
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise ValueError(too_deep) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"the request body is not UTF-8 JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the request body is not JSON: {exc}") from None
    todo: list[tuple[Any, int]] = [(body, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(too_deep)
            todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows over ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _inflate(data: bytes, encoding: str) -> bytes:
    """``data`` decompressed; ``_RpcRefused`` when it expands over ``MAX_REQUEST_BYTES``."""
    if encoding in ("", "identity") or not data:
        return data
    if encoding != "gzip":
        return data  # connectrpc answers unimplemented for an unknown encoding
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_REQUEST_BYTES + 1)
    except zlib.error as exc:
        raise _RpcRefused("invalid_argument", f"the request body is not valid gzip: {exc}") from None
    if len(out) > MAX_REQUEST_BYTES or inflater.unconsumed_tail:
        raise _RpcRefused(
            "resource_exhausted", f"the request decompresses to more than {MAX_REQUEST_BYTES} bytes"
        )
    return out


class _RpcRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_HTTP_STATUS = {"invalid_argument": 400, "resource_exhausted": 413}


@functools.lru_cache(maxsize=256)
def _input_class(path: str) -> Any:
    """The request message class of the RPC at ``path`` (``/pkg.Service/Method``), or None."""
    service, _, method = path.strip("/").partition("/")
    try:
        desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    except KeyError:
        return None
    return None if desc is None else message_factory.GetMessageClass(desc.input_type)


def _decode(payload: bytes, cls: Any, codec: str) -> None:
    """Raise ``_RpcRefused(invalid_argument)`` unless ``payload`` is a ``cls`` message."""
    try:
        if codec == "json":
            json_format.Parse(payload.decode("utf-8") or "{}", cls(), ignore_unknown_fields=False)
        else:
            cls().ParseFromString(payload)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        what = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise _RpcRefused(
            "invalid_argument", f"the request is not a valid {cls.DESCRIPTOR.full_name}: {what}"
        ) from None


def _check_payload(body: bytes, cls: Any, ctype: str, headers: Mapping[str, str]) -> None:
    """Check one Connect request body: unary (``application/proto|json``) or a stream of
    envelopes (``application/connect+proto|json``); raises ``_RpcRefused``."""
    if ctype.startswith("application/connect+"):
        codec = ctype.removeprefix("application/connect+")
        encoding = headers.get("connect-content-encoding", "identity").lower()
        view = memoryview(body)
        total = 0
        while view:
            if len(view) < 5:
                raise _RpcRefused("invalid_argument", "the request stream ends inside an envelope header")
            flags, size = view[0], int.from_bytes(view[1:5], "big")
            if len(view) < 5 + size:
                raise _RpcRefused("invalid_argument", "the request stream ends inside a message")
            payload = bytes(view[5 : 5 + size])
            view = view[5 + size :]
            if flags & 0x02:
                continue  # an end-of-stream envelope carries no request
            payload = _inflate(payload, encoding) if flags & 0x01 else payload
            total += len(payload)
            if total > MAX_REQUEST_BYTES:
                raise _RpcRefused("resource_exhausted", f"the request is over {MAX_REQUEST_BYTES} bytes")
            _decode(payload, cls, codec)
        return
    encoding = headers.get("content-encoding", "identity").lower()
    _decode(_inflate(body, encoding), cls, ctype.removeprefix("application/"))


async def _checked_rpc(scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """Read and check a Connect request before connectrpc sees it (the real service's limits).

    A body (raw, or once decompressed) over ``MAX_REQUEST_BYTES`` is answered
    ``resource_exhausted`` (HTTP 413); one that is not the method's request message is answered
    ``invalid_argument`` (HTTP 400) instead of connectrpc's 500 ``unknown``. Returns a receive
    that replays the body, or None when the request was answered here.
    """
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    known = ("application/proto", "application/json", "application/connect+proto", "application/connect+json")
    if scope.get("method") != "POST" or ctype not in known:
        return receive
    body = await _read_body(receive, MAX_REQUEST_BYTES)
    try:
        if body is None:
            raise _RpcRefused("resource_exhausted", f"the request body is over {MAX_REQUEST_BYTES} bytes")
        cls = _input_class(scope["path"])
        if cls is not None:
            _check_payload(body, cls, ctype, headers)
    except _RpcRefused as refused:
        error = {"code": refused.code, "message": refused.message}
        if ctype.startswith("application/connect+"):
            end = json.dumps({"error": error}).encode()
            frame = b"\x02" + len(end).to_bytes(4, "big") + end
            await _respond(send, 200, frame, ctype)
        else:
            await _respond(send, _HTTP_STATUS[refused.code], json.dumps(error).encode())
        return None
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, once the body is consumed
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _respond(send: Send, status: int, body: bytes, content_type: str = "application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # is IPPROTO_TCP, and accepted sockets inherit it from this one. Without it, Nagle holds
    # every response body back until the client's delayed ACK (~40 ms per RPC on keep-alive).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"sandbox cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "pick another --port (0 = any free port)"
        ) from exc
    sock.set_inheritable(True)
    return sock


HEAD_TIMEOUT_S = 10.0  # a request line and headers must arrive within this
# The kernel's listen queue, where clients beyond the accept limit wait (uvicorn's default: 2048).
ACCEPT_BACKLOG = 100
# Sockets accepted beyond the held connections: each a newcomer that closes the oldest idle
# connection (or itself, when all are busy). The accept stops at the cap + this (CappedAcceptor).
SPARE_CONNECTIONS = 8


def _bounded_h11(max_connections: int, head_timeout: float) -> type[Any]:
    """uvicorn's h11 protocol with the two bounds uvicorn lacks (its ``limit_concurrency``
    answers 503 to requests but keeps every socket open, and nothing times out a connection
    that never completes a request head):

    - at most ``max_connections`` connections: a new one beyond it closes the oldest idle one
      (no request in progress: it sent nothing yet, or waits between keep-alive requests), or
      itself when every connection is busy (watch streams, calls in progress);
    - a connection that sends no complete request head within ``head_timeout`` of connecting,
      or of starting to send one, is closed (uvicorn's ``timeout_keep_alive`` covers the quiet
      time between requests).

    Idle is what uvicorn's own ``shutdown`` checks (``cycle`` None or its response complete);
    these two attributes are the only private parts read, and a protocol without them counts
    as busy, never closed for a newcomer.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    held: dict[Any, None] = {}  # every open connection, the oldest first

    def idle(proto: Any) -> bool:
        cycle = getattr(proto, "cycle", False)
        return cycle is None or bool(getattr(cycle, "response_complete", False))

    class BoundedH11(H11Protocol):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            held[self] = None
            self._start_head_timer()
            if len(held) > max_connections:
                oldest = next((p for p in held if p is not self and idle(p)), self)
                if oldest is self:
                    log.warning("sandbox: %d connections, all busy: closing a new one", len(held) - 1)
                oldest.transport.close()
                held.pop(oldest, None)

        def connection_lost(self, exc: Exception | None) -> None:
            held.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and idle(self):
                self._start_head_timer()  # a new request head begins
            super().data_received(data)

        def _start_head_timer(self) -> None:
            started = getattr(self, "cycle", None)
            self._head_timer = self.loop.call_later(head_timeout, self._head_late, started)

        def _head_late(self, started: Any) -> None:
            self._head_timer = None
            if getattr(self, "cycle", None) is started and idle(self) and not self.transport.is_closing():
                self.transport.close()  # no request began since the timer started

    return BoundedH11


def _uvicorn_server(app: Any, quiet: bool) -> Any:
    import uvicorn

    tls: TlsFiles | None = getattr(app, "tls", None)
    cap = connection_cap(soft_fd_limit())

    class _Server(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the captured signal after shutdown; the sandbox exits cleanly.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        acceptor: CappedAcceptor | None = None

        async def startup(self, sockets: Any = None) -> None:
            # uvicorn's own server (loop.create_server) accepts all the listen queue holds,
            # whatever the cap: the sockets are served by a CappedAcceptor instead, which stops
            # accepting at the cap + SPARE_CONNECTIONS open connections (a hard bound).
            await super().startup(sockets=[])
            config = self.config

            def protocol() -> asyncio.Protocol:
                made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )
                return made

            self.acceptor = CappedAcceptor(
                list(sockets or []),
                protocol,
                cap + SPARE_CONNECTIONS,
                ssl=config.ssl,
                ssl_handshake_timeout=HEAD_TIMEOUT_S,  # a silent TLS client holds a slot no longer
                backlog=ACCEPT_BACKLOG,
            )
            self.acceptor.start()

        async def shutdown(self, sockets: Any = None) -> None:
            if self.acceptor is not None:
                self.acceptor.close()
            app.hub.close_all()
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning" if quiet else "info",
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
        backlog=ACCEPT_BACKLOG,
        http=_bounded_h11(cap, HEAD_TIMEOUT_S),
        ssl_certfile=str(tls.server_cert) if tls else None,
        ssl_keyfile=str(tls.server_key) if tls else None,
    )
    return _Server(config)


async def _serve(
    sandbox: Sandbox, sock: socket.socket, server: Any, ready: Callable[[], None] | None
) -> None:
    await sandbox.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.create_task(server.serve(sockets=[sock]))
        while not server.started and not started.done():
            await asyncio.sleep(0.005)
        if ready is not None and server.started:
            ready()
        await started
    finally:
        await sandbox.stop()


def serve_forever(
    sandbox: Sandbox, sock: socket.socket, *, ready: Callable[[], None] | None = None, quiet: bool = True
) -> None:
    """Serve in the calling thread until SIGINT/SIGTERM (then shut down cleanly). The process's
    soft open-file limit is raised to its hard limit first (the connection cap is derived from it)."""
    raise_fd_limit()
    server = _uvicorn_server(sandbox, quiet)
    asyncio.run(_serve(sandbox, sock, server, ready))


class SandboxThread:
    """A sandbox served by uvicorn on its own event loop in a background thread."""

    def __init__(self, sandbox: Sandbox, sock: socket.socket) -> None:
        self.sandbox = sandbox
        self.sock = sock
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._server = _uvicorn_server(self.sandbox, quiet=True)

        def main() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(_serve(self.sandbox, self.sock, self._server, self._ready.set))
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            finally:
                self._ready.set()
                loop.close()

        self._thread = threading.Thread(target=main, name="rerund-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the sandbox did not start: {self._error!r}") from self._error

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` on the sandbox's event loop and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
