"""The sandbox server: the Connect services, an ASGI router and the ``/_sandbox/`` admin API.

``Sandbox`` assembles store, engine, watch hub, RPC counters and faults, and serves them with
uvicorn on one asyncio event loop. ``serve_forever`` runs it in the calling (main) thread until
SIGINT/SIGTERM; ``SandboxThread`` runs it in a background thread (tests, ``rerund demo``).

The admin API is not part of Flyte's API (JSON over plain HTTP)::

    GET  /_sandbox/stats    {"requests": {"CreateRun": 3, ...}, "runs": {"FAILED": 2, ...}, "faults": {...}}
    POST /_sandbox/faults   {"unavailable": 0.2, "latency": "50ms", "drop_streams_after": 50}
    GET  /_sandbox/requests {"by_method": {"CreateRun": 3, ...}, "by_run": {"r1": {"GetRunDetails": 2}}}
    GET  /_sandbox/runs     [{"name": ..., "phase": "FAILED", ...}, ...]
    POST /_sandbox/runs     {"task": "train.fit", "count": 2, "labels": {}, "inputs": {}, "version": "v1"}
                            -> {"runs": [...]}
    GET  /_sandbox/tasks    [{"task": ..., "version": ..., "deployed_at": ..., "latest": true}, ...]
    POST /_sandbox/tasks    {"task": "train.fit", "version": "v2", "behaviour": "succeed", ...} deploys a
                            version (fields as a workload ``versions:`` entry) -> {"task", "version", ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flyteidl2.cluster.service_connect import ClusterServiceASGIApplication
from flyteidl2.dataproxy.dataproxy_service_connect import DataProxyServiceASGIApplication
from flyteidl2.task.task_service_connect import TaskServiceASGIApplication
from flyteidl2.workflow.run_service_connect import RunServiceASGIApplication

from rerund.clock import utcnow
from rerund.errors import ConfigError
from rerund.sandbox import literals
from rerund.sandbox.engine import Engine
from rerund.sandbox.profiles import UNION, Profile
from rerund.sandbox.records import PHASE_NAMES, RunRec
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
from rerund.sandbox.workload import Workload, parse_duration

__all__ = ["Sandbox", "SandboxThread", "bind_socket", "run_snapshot", "serve_forever"]

log = logging.getLogger("rerund.sandbox")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def run_snapshot(r: RunRec) -> dict[str, Any]:
    """A plain-data view of one run (``sb.runs()``, ``GET /_sandbox/runs``)."""
    a0 = r.root
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
        "envs": r.envs,
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


def _faults_from_json(body: Mapping[str, Any], current: Faults) -> Faults:
    """Parse the admin faults body; raises ValueError with what is wrong."""
    unknown = set(body) - {"unavailable", "latency", "latency_s", "drop_streams_after"}
    if unknown:
        raise ValueError(
            f"unknown fault(s) {sorted(unknown)}; known: unavailable, latency, drop_streams_after"
        )
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
    return Faults(unavailable=unavailable, latency_s=latency, drop_streams_after=drop)


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
    ) -> None:
        if not org:
            raise ConfigError("sandbox org is empty; pass --org NAME (the protos need a non-empty org)")
        self.workload = workload
        self.org = org
        self.db = db
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.stats = RpcStats(self.faults, self.rng)
        self.run_counts = RunRequestCounts()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.profile = profile
        self.hub = Hub(profile)
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
        interceptors: list[Any] = [self.stats, self.run_counts]
        apps: list[Any] = [
            RunServiceASGIApplication(
                SandboxRunService(*args, profile=self.profile), interceptors=interceptors
            ),
            DataProxyServiceASGIApplication(
                SandboxDataProxyService(*args, profile=self.profile), interceptors=interceptors
            ),
            ClusterServiceASGIApplication(SandboxClusterService(), interceptors=interceptors),
            TaskServiceASGIApplication(SandboxTaskService(catalog), interceptors=interceptors),
        ]
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

    def set_faults(self, **changes: Any) -> Faults:
        new = _faults_from_json(changes, self.faults)
        self.faults.unavailable = new.unavailable
        self.faults.latency_s = new.latency_s
        self.faults.drop_streams_after = new.drop_streams_after
        return self.faults

    def stats_json(self) -> dict[str, Any]:
        assert self.store is not None
        by_phase = {
            PHASE_NAMES.get(p, str(p)): n for p, n in sorted(self.store.count_by_phase().items()) if n
        }
        return {
            "requests": dict(self.stats.counts),
            "runs": by_phase,
            "faults": self.faults.as_json(),
            "profile": self.profile.name,
            "watch_dropped": self.hub.dropped,
        }

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
        if path.startswith("/_sandbox/"):
            await self._admin(scope, receive, send)
            return
        service = "/" + path.lstrip("/").split("/", 1)[0]
        app = self._apps.get(service)
        if app is None:
            method = path.rsplit("/", 1)[-1]
            self.stats.counts[method or path] += 1
            log.warning("sandbox: unknown RPC %s answered unimplemented", path)
            body = json.dumps({"code": "unimplemented", "message": f"the sandbox does not implement {path}"})
            await _respond(send, 404, body.encode(), "application/json")
            return
        await app(scope, receive, send)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.engine is not None and self.store is not None
        method = scope["method"]
        route = scope["path"].removeprefix("/_sandbox/").rstrip("/")
        try:
            body: Any = None
            if method == "POST":
                raw = b""
                while True:
                    message = await receive()
                    raw += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
            if (method, route) == ("GET", "stats"):
                result: Any = self.stats_json()
            elif (method, route) == ("POST", "faults"):
                result = self.set_faults(**body).as_json()
            elif (method, route) == ("GET", "requests"):
                result = {"by_method": dict(self.stats.counts), "by_run": self.run_counts.as_json()}
            elif (method, route) == ("GET", "runs"):
                result = [run_snapshot(r) for r in self.store.runs.values()]
            elif (method, route) == ("POST", "runs"):
                names = self.engine.launch(
                    str(body.get("task", "")),
                    count=int(body.get("count", 1)),
                    labels=body.get("labels") or {},
                    envs=body.get("envs") or {},
                    inputs=body.get("inputs") or {},
                    project=body.get("project"),
                    domain=body.get("domain"),
                    name=body.get("name"),
                    version=body.get("version"),
                )
                result = {"runs": names}
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
                            "GET tasks, POST tasks"
                        }
                    ).encode(),
                )
                return
        except (ValueError, TypeError) as exc:
            await _respond(send, 400, json.dumps({"error": str(exc)}).encode())
            return
        await _respond(send, 200, json.dumps(result).encode())


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


def _uvicorn_server(app: Any, quiet: bool) -> Any:
    import uvicorn

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

        async def shutdown(self, sockets: Any = None) -> None:
            app.hub.close_all()
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning" if quiet else "info",
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
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
    """Serve in the calling thread until SIGINT/SIGTERM (then shut down cleanly)."""
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
