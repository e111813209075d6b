"""``rerund run``: the long-running daemon around the reconcile loop.

What runs, all on one asyncio event loop:

- a **poller** — a full resync pass (``Reconciler.sync``) every ``poll_interval``, and at once
  after a watch stream reconnects (to cover the gap). This is the safety net that makes a
  missed stream message harmless;
- one **watcher** per scope — a WatchRuns stream for low latency, reconnected with capped
  exponential backoff whenever it drops (``watch: false`` turns the streams off: polling only);
- the **scheduler** (APScheduler) — wakes failures whose rerun is not yet due;
- a **policy watcher** — reloads the policies on SIGHUP and when a policy file changes. An
  invalid file is rejected with its ``check`` problems in the log and
  ``rerund_policy_reloads_total{result="error"}``; the last good policies stay in force;
- the **HTTP** endpoints (``/metrics``, ``/healthz``, ``/readyz``, ``/decisions``);
- a **pruner** that keeps the ledger within ``ledger_retention``;
- the **reproduction checks** of the policies in force (``rerund.runtime.repro``): each fires
  on its cron schedule, reruns its reference run and records match / mismatch / failed /
  timeout. Missed firings run once on start.

SIGTERM/SIGINT: stop taking work (watchers and poller stop, issue loops stop retrying), let
in-flight calls finish, and exit — within 10 seconds. Nothing is lost by stopping: what is
still owed is recomputed from the control plane on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rerund.adapters.flyte_control_plane import FlyteControlPlane
from rerund.adapters.ledger import Ledger
from rerund.adapters.scheduler import AsyncScheduler
from rerund.adapters.webhook import WebhookNotifier
from rerund.clock import utcnow
from rerund.core.durations import format_duration
from rerund.core.rules import PolicySet
from rerund.core.runs import RunSummary
from rerund.errors import ControlPlaneError, LedgerError, PolicyError
from rerund.policy import load_policies
from rerund.policy.loader import expand_paths
from rerund.ports import ControlPlane
from rerund.runtime.http import HttpServer, Response, json_response
from rerund.runtime.metrics import Metrics
from rerund.runtime.reconcile import Reconciler
from rerund.runtime.repro import ReproRunner
from rerund.runtime.settings import Settings

__all__ = ["Daemon", "PolicyHolder", "connect_control_plane"]

log = logging.getLogger("rerund.daemon")

_STOP_BUDGET_S = 8.0  # of the 10 s a SIGTERM allows


async def connect_control_plane(settings: Settings) -> ControlPlane:
    """The real control plane (the flyte SDK adapter) for ``settings``, initialised."""
    cp = FlyteControlPlane(
        endpoint=settings.endpoint,
        org=settings.org,
        insecure=settings.plain_http,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        rpc_timeout=settings.rpc_timeout.total_seconds(),
        console_url=settings.console_url,
        backend=settings.backend,
    )
    await cp.connect()
    return cp


class PolicyHolder:
    """The policies in force, and their hot reload (the last good set stays on error)."""

    def __init__(self, paths: tuple[Path, ...], metrics: Metrics, on_change: Callable[[], None]) -> None:
        self.paths = paths
        self._metrics = metrics
        self._on_change = on_change
        self._current: PolicySet | None = None
        self._fingerprint: tuple[Any, ...] = ()

    @property
    def current(self) -> PolicySet:
        assert self._current is not None, "policies not loaded"
        return self._current

    def load(self) -> PolicySet:
        """The first load: an invalid file is fatal (raises ``PolicyError``)."""
        self._fingerprint = self.fingerprint()
        self._current = load_policies(list(self.paths))
        self._metrics.policies_loaded.set(len(self._current))
        self._metrics.init_policies(list(self._current.names()))
        return self._current

    def fingerprint(self) -> tuple[Any, ...]:
        """Which policy files exist and their (mtime, size): a change triggers a reload."""
        files, _ = expand_paths(list(self.paths))
        out = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload(self, why: str) -> bool:
        """Load the policies again; True when the new set is in force."""
        self._fingerprint = self.fingerprint()
        try:
            new = load_policies(list(self.paths))
        except PolicyError as exc:
            self._metrics.policy_reloads.labels("error").inc()
            kept = len(self._current) if self._current is not None else 0
            log.error(
                "policy reload (%s) rejected: %d problem(s); the last good policies (%d) stay in force:\n%s",
                why,
                len(exc.problems),
                kept,
                "\n".join(str(p) for p in exc.problems),
            )
            return False
        self._current = new
        self._metrics.policy_reloads.labels("ok").inc()
        self._metrics.policies_loaded.set(len(new))
        self._metrics.init_policies(list(new.names()))
        log.info("policies reloaded (%s): %d in force: %s", why, len(new), ", ".join(new.names()))
        self._on_change()
        return True

    def changed(self) -> bool:
        return self.fingerprint() != self._fingerprint


class Daemon:
    """One daemon process. ``await run()`` until ``request_stop()`` (or SIGTERM/SIGINT)."""

    def __init__(
        self,
        settings: Settings,
        *,
        control_plane: ControlPlane | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] | None = None,
        install_signals: bool = True,
        reload_check_interval: float = 1.0,
        on_ready: Callable[[Daemon], None] | None = None,
    ) -> None:
        if clock is None:
            clock = utcnow
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._clock = clock
        self._cp = control_plane
        self._install_signals = install_signals
        self._reload_interval = reload_check_interval
        self._on_ready = on_ready
        self._stop: asyncio.Event | None = None
        self._resync: asyncio.Event | None = None
        self._reload: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: set[asyncio.Task[None]] = set()
        self.reconciler: Reconciler | None = None
        self.repro: ReproRunner | None = None
        self.policies: PolicyHolder | None = None
        self.http: HttpServer | None = None

    # -- control -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def request_reload(self) -> None:
        """Thread-safe: reload the policies now (what SIGHUP does)."""
        if self._loop is not None and self._reload is not None:
            self._loop.call_soon_threadsafe(self._reload.set)

    # -- main --------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._resync = asyncio.Event()
        self._reload = asyncio.Event()

        self.policies = PolicyHolder(s.policies, self.metrics, self._policies_changed)
        policies = self.policies.load()
        ledger = Ledger(s.state)
        cp = self._cp if self._cp is not None else await connect_control_plane(s)
        self._cp = cp
        notifier = None
        if s.notify.webhook:
            notifier = WebhookNotifier(
                s.notify.webhook, timeout=s.notify.timeout.total_seconds(), retries=s.notify.retries
            )
        scheduler = AsyncScheduler()
        scheduler.start()
        self.reconciler = Reconciler(
            cp,
            scopes=[(sc.project, sc.domain) for sc in s.scopes],
            policies=lambda: self.policies.current if self.policies else policies,
            metrics=self.metrics,
            ledger=ledger,
            scheduler=scheduler,
            notifier=notifier,
            clock=self._clock,
            dry_run=s.dry_run,
            max_concurrent_reruns=s.max_concurrent_reruns,
            lookback=s.lookback,
            overlap=s.overlap,
            error_wait=s.error_details_wait,
        )
        self.repro = ReproRunner(
            cp,
            checks=lambda: (self.policies.current if self.policies else policies).reproductions,
            metrics=self.metrics,
            clock=self._clock,
            default_scope=(s.scopes[0].project, s.scopes[0].domain) if s.scopes else None,
            ledger=ledger,
            notifier=notifier,
            poll_interval=min(5.0, s.poll_interval.total_seconds()),
        )
        if s.http_address is not None:
            host, port = s.http_address
            self.http = HttpServer(host, port, self._routes())
            await self.http.start()
        if self._install_signals:
            self._signals(install=True)
        log.info(
            "rerund started: endpoint %s, org %s, scopes %s, %d policies (%s), %spoll every %s, %s%s",
            s.endpoint or "(from the API key)",
            s.org,
            ", ".join(sc.key for sc in s.scopes),
            len(policies),
            ", ".join(policies.names()),
            "watch + " if s.watch else "no watch (polling only), ",
            format_duration(s.poll_interval),
            f"HTTP on {self.http.url}" if self.http else "HTTP off",
            ", DRY RUN: nothing is created" if s.dry_run else "",
        )
        if policies.reproductions:
            log.info(
                "%d reproduction check(s)%s: %s",
                len(policies.reproductions),
                " (not fired: dry run)" if s.dry_run else "",
                ", ".join(f"{c.name} ({c.schedule} {c.timezone})" for c in policies.reproductions),
            )
        tasks = [asyncio.create_task(self._poller(), name="poller")]
        if s.watch:
            tasks += [
                asyncio.create_task(self._watcher(sc.project, sc.domain), name=f"watch {sc.key}")
                for sc in s.scopes
            ]
        tasks.append(asyncio.create_task(self._policy_watcher(), name="policies"))
        tasks.append(asyncio.create_task(self._pruner(ledger), name="pruner"))
        if not s.dry_run:
            tasks.append(asyncio.create_task(self.repro.run(), name="reproductions"))
        if self._on_ready is not None:
            self._on_ready(self)
        try:
            await self._stop.wait()
        finally:
            log.info("stopping: finishing in-flight calls (at most %.0fs)", _STOP_BUDGET_S)
            self.reconciler.stop()
            self.repro.stop()
            for t in tasks:
                t.cancel()
            for t in list(self._events):
                t.cancel()
            await asyncio.wait([*tasks, *self._events], timeout=2)
            await self.repro.drain(timeout=1)
            if not await self.reconciler.drain(timeout=_STOP_BUDGET_S - 3):
                log.warning(
                    "stopped with calls still in flight; what they owe is recomputed on the next start"
                )
            scheduler.shutdown()
            if self.http is not None:
                await self.http.stop()
            if self._install_signals:
                self._signals(install=False)
            ledger.close()
            log.info("rerund stopped")
        return 0

    def _signals(self, *, install: bool) -> None:
        assert self._loop is not None
        for sig, fn in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if install:
                    self._loop.add_signal_handler(sig, fn)
                else:
                    self._loop.remove_signal_handler(sig)

    def _policies_changed(self) -> None:
        if self.reconciler is not None:
            self.reconciler.policies_changed()
        if self._resync is not None:
            self._resync.set()

    async def _sleep(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep up to ``seconds``, waking early on stop or any of ``events``."""
        assert self._stop is not None
        waiters = [asyncio.create_task(e.wait()) for e in (self._stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _poller(self) -> None:
        assert self.reconciler is not None and self._stop is not None and self._resync is not None
        interval = self.settings.poll_interval.total_seconds()
        while not self._stop.is_set():
            self._resync.clear()
            try:
                await self.reconciler.sync()
            except Exception:
                log.exception("resync pass failed; retrying at the next poll")
            await self._sleep(interval, self._resync)
            await self._sleep(0.2)  # coalesce bursts of resync requests

    async def _watcher(self, project: str, domain: str) -> None:
        assert self._cp is not None and self._stop is not None and self._resync is not None
        assert self.reconciler is not None
        delay = 0.5
        while not self._stop.is_set():
            try:
                async for summary in self._cp.watch(project, domain):
                    delay = 0.5
                    self._event(summary)
                reason = "the stream ended"
            except ControlPlaneError as exc:
                self.reconciler.count_error(exc, rpc="WatchRuns")
                reason = str(exc)
            if self._stop.is_set():
                return
            log.info(
                "watch of %s/%s dropped (%s); resync now, reconnect in %.1fs", project, domain, reason, delay
            )
            self._resync.set()
            await self._sleep(delay)
            delay = min(delay * 2, 30.0)

    def _event(self, summary: RunSummary) -> None:
        assert self.reconciler is not None
        task = asyncio.get_running_loop().create_task(self.reconciler.on_watch(summary))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _policy_watcher(self) -> None:
        assert self.policies is not None and self._stop is not None and self._reload is not None
        while not self._stop.is_set():
            await self._sleep(self._reload_interval, self._reload)
            if self._stop.is_set():
                return
            if self._reload.is_set():
                self._reload.clear()
                self.policies.reload("SIGHUP")
            elif self.policies.changed():
                self.policies.reload("file changed")

    async def _pruner(self, ledger: Any) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                n = ledger.prune(self._clock() - self.settings.ledger_retention)
                if n:
                    log.info(
                        "ledger: pruned %d records older than %s",
                        n,
                        format_duration(self.settings.ledger_retention),
                    )
            except LedgerError as exc:
                log.error("%s", exc)
            await self._sleep(3600)

    # -- HTTP --------------------------------------------------------------------------------

    def _routes(self) -> dict[str, Callable[[dict[str, list[str]]], Response]]:
        return {
            "/metrics": self._metrics_route,
            "/healthz": lambda q: Response(200, b"ok\n"),
            "/readyz": self._ready_route,
            "/decisions": self._decisions_route,
        }

    def _metrics_route(self, query: dict[str, list[str]]) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def ready(self) -> tuple[bool, str]:
        """Ready when a resync pass succeeded within 3 poll intervals."""
        window = 3 * self.settings.poll_interval
        last = self.reconciler.last_sync if self.reconciler else None
        if last is None:
            return False, "no resync pass has succeeded yet"
        age = self._clock() - last
        if age > window:
            ago = format_duration(timedelta(seconds=round(age.total_seconds())))
            return False, f"the last successful resync was {ago} ago (more than 3 poll intervals)"
        return True, "a resync succeeded within 3 poll intervals"

    def _ready_route(self, query: dict[str, list[str]]) -> Response:
        ok, why = self.ready()
        last = self.reconciler.last_sync if self.reconciler else None
        return json_response(
            {"ready": ok, "reason": why, "last_sync": last.isoformat() if last else None}, 200 if ok else 503
        )

    def _decisions_route(self, query: dict[str, list[str]]) -> Response:
        assert self.reconciler is not None
        try:
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            return json_response({"error": "limit must be an integer, e.g. /decisions?limit=20"}, 400)
        recent = list(reversed(self.reconciler.recent))[: max(0, limit)]
        return json_response(
            {
                "decisions": recent,
                "pending": self.reconciler.pending(),
                "settings": self.settings.public(),
            }
        )
