"""The composition root: the one place that builds the adapters (the flyte control plane, the
ledger — an SQLite file or a PostgreSQL database, by the ``state`` setting —,
the scheduler, the webhook notifier, the cron schedules) for a ``Settings`` and hands
finished objects to the runtime. ``rerund run`` and ``rerund demo`` run an ``App``; ``rerund
status``, ``explain``, ``repro`` and ``sweep`` connect with ``connect_control_plane``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from rerund.adapters.cron import CronSchedule
from rerund.adapters.flyte.connection import Connection
from rerund.adapters.flyte.control_plane import FlyteControlPlane
from rerund.adapters.scheduler import AsyncScheduler
from rerund.adapters.sole import SoleLeader
from rerund.adapters.state import open_state
from rerund.adapters.webhook import WebhookNotifier
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.scopes import plan
from rerund.core.stateurl import is_database_url
from rerund.fdlimit import raise_fd_limit
from rerund.ports import ControlPlane, Reconnect, RpcGate
from rerund.runtime.daemon import Daemon, PolicyHolder, Requests
from rerund.runtime.leader import Lead
from rerund.runtime.metrics import Metrics
from rerund.runtime.outbox import OutboxSender
from rerund.runtime.reconcile import Reconciler
from rerund.runtime.repro import ReproRunner
from rerund.runtime.settings import Settings, read_ca_cert, read_secret_file
from rerund.runtime.skew import SkewWatch
from rerund.runtime.throttle import AdaptiveLimit, RateSchedule, Throttle, guarded

if TYPE_CHECKING:
    from rerund.adapters.sqlstate.leadership import PostgresLeadership
    from rerund.adapters.sqlstate.outbox import SqlOutbox

__all__ = ["App", "connect_control_plane", "connection"]

log = logging.getLogger("rerund.daemon")

# The ledger's one-row writes are committed together this long after the first of them (see
# ``Ledger.group_commits``): a storm's rows share a commit.
_GROUP_COMMIT_S = 0.05


def connection(settings: Settings) -> Connection:
    """The adapter's ``Connection`` for ``settings``, reading the secret files now (so a
    rewritten file is picked up by calling this again). Raises ``ConfigError``."""
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.api_key_file is not None:
        api_key = read_secret_file(settings.api_key_file, "api_key_file", what="the API key")
    secret = None
    if settings.client_secret_file is not None:
        secret = read_secret_file(settings.client_secret_file, "client_secret_file", what="the client secret")
    if settings.ca_cert_file is not None:
        read_ca_cert(settings.ca_cert_file)
    return Connection(
        endpoint=settings.endpoint,
        org=settings.org,
        insecure=settings.plain_http,
        api_key=api_key,
        client_id=settings.client_id,
        client_secret=secret,
        auth_command=settings.auth_command,
        ca_cert_file=settings.ca_cert_file,
        http_proxy=settings.http_proxy,
    )


async def _flyte(
    settings: Settings,
    clock: ControlPlaneClock | None,
    rpc_gate: RpcGate | None = None,
    *,
    retrying: bool = True,
) -> FlyteControlPlane:
    cp = FlyteControlPlane(
        connection=connection(settings),
        rpc_timeout=settings.rpc_timeout.total_seconds(),
        console_url=settings.console_url,
        backend=settings.backend,
        clock=clock,
        rpc_gate=rpc_gate,
        sdk_tuning=settings.sdk_tuning,
    )
    await cp.connect()
    first = plan((sc.project, sc.domain) for sc in settings.scopes)
    if first:
        await cp.probe(*first[0], retrying=retrying)
    return cp


async def connect_control_plane(settings: Settings, clock: ControlPlaneClock | None = None) -> ControlPlane:
    """The real control plane (the flyte SDK adapter) for ``settings``, initialised and
    probed: a refused credential or an untrusted certificate raises ``ConfigError``, an
    unreachable one its ``ControlPlaneError`` (a one-shot command does not retry, so it does not
    say "retrying"). Every answer's HTTP ``Date`` is told to ``clock``."""
    return await _flyte(settings, clock, retrying=False)


def _reconnect(cp: FlyteControlPlane, settings: Settings) -> Reconnect:
    async def reconnect() -> None:
        await cp.connect(connection(settings))

    return reconnect


class _SharedState:
    """The leadership and the outbox for ``settings.state``: on a ``postgresql://`` state,
    replicas elect a leader and share the outbox (their tables are the ledger's schema, migrated
    by ``open_state`` before this is built); on a file, this process leads alone and the outbox
    lives in the ledger's file (a restart does not notify twice), made only when there is a
    webhook to send to (a daemon on a file without one loads no SQL toolkit)."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state
        self.outbox: SqlOutbox | None = None
        if is_database_url(state):
            from rerund.adapters.sqlstate.leadership import PostgresLeadership, postgres_engine
            from rerund.adapters.sqlstate.outbox import SqlOutbox

            engine = postgres_engine(str(state), settings.state_password())
            leadership = PostgresLeadership(engine)
            self.leadership: PostgresLeadership | SoleLeader = leadership
            self.outbox = SqlOutbox(
                engine, fence=leadership.fence, identity=leadership.identity, term=lambda: leadership.term
            )
            self.shared = True
        else:
            self.leadership = SoleLeader()
            if settings.notify.webhook:
                from rerund.adapters.sqlstate.outbox import SqlOutbox, sqlite_engine

                self.outbox = SqlOutbox(sqlite_engine(Path(state)), identity=self.leadership.identity)
            self.shared = False

    def close(self) -> None:
        if not isinstance(self.leadership, SoleLeader):
            self.leadership.close()
        if self.outbox is not None:
            self.outbox.close()


class App:
    """``rerund run``: builds the daemon's objects on the running loop, runs the daemon, and
    closes what it opened. ``control_plane`` replaces the flyte adapter (tests, the demo)."""

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
        stop_budget: float | None = None,
        lead_retry_interval: float = 1.0,
        lead_check_interval: float = 1.0,
        exit_process: Callable[[int], object] | None = None,
    ) -> None:
        """``stop_budget``: the seconds the daemon's stop sequence may take (default 8);
        ``exit_process``: how a leader that cannot prove its lead ends the process (``Lead``'s
        watchdog; the CLI passes ``os._exit``)."""
        self._exit_process = exit_process
        self.settings = settings
        self._lead_retry = lead_retry_interval
        self._lead_check = lead_check_interval
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Requests()
        self._control_plane = control_plane
        self._clock = clock or utcnow
        self._install_signals = install_signals
        self._reload_interval = reload_check_interval
        self._on_ready = on_ready
        self._stop_budget = stop_budget

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop (also before ``run`` has started: it stops at once)."""
        self.requests.request_stop()

    def request_reload(self) -> None:
        """Thread-safe: reload the policies now (what SIGHUP does)."""
        self.requests.request_reload()

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        # The daemon decides on the control plane's time: the wall clock plus the skew measured
        # on the control plane's answers.
        cp_clock = ControlPlaneClock(self._clock)
        metrics = Metrics(self.registry)
        raise_fd_limit()  # the HTTP server's connection cap is derived from it
        policies = PolicyHolder(s.policies, metrics)
        policies.load()
        ledger = open_state(
            s.state,
            password=s.state_password(),
            on_reopen=metrics.ledger_reopened.inc,
            max_bytes=s.ledger_max_bytes,
        )
        ledger.group_commits(lambda flush: loop.call_later(_GROUP_COMMIT_S, flush))
        metrics.track_caches(ledger.caches)  # either backend's fresh runs (``ledger_fresh``)
        state = _SharedState(s)
        lead = Lead(
            state.leadership,
            metrics,
            shared=state.shared,
            retry_interval=self._lead_retry,
            check_interval=self._lead_check,
            exit_process=self._exit_process,
        )
        if is_database_url(s.state):  # the SQL toolkit only for a database state
            from rerund.adapters.sqlstate import PostgresLedger
            from rerund.adapters.sqlstate.leadership import PostgresLeadership

            if isinstance(ledger, PostgresLedger) and isinstance(state.leadership, PostgresLeadership):
                # every write of the shared ledger checks the term in its own transaction
                ledger.fence_writes(
                    state.leadership.fence, on_fenced=lambda exc: loop.call_soon_threadsafe(lead.fenced, exc)
                )
        scheduler: AsyncScheduler | None = None
        try:
            throttle = Throttle(
                AdaptiveLimit(ceiling=s.max_concurrent_reruns),
                RateSchedule(s.max_rps),
                on_change=metrics.control_plane_concurrency.set,
                on_release=metrics.control_plane_rpcs.inc,
                on_peak=metrics.control_plane_peak_rps.set,
            )
            reconnect: Reconnect | None = None
            if self._control_plane is not None:
                raw = self._control_plane
                metrics.track_held_bytes(lambda: 0.0, ledger.size_bytes)
            else:  # the flyte adapter charges every RPC on the wire to the throttle itself
                flyte = await _flyte(s, cp_clock, rpc_gate=throttle)
                raw, reconnect = flyte, _reconnect(flyte, s)
                metrics.track_held_bytes(lambda: float(flyte.read_cache_bytes), ledger.size_bytes)
                metrics.track_caches(flyte.caches)
            metrics.clock_skew.set_function(lambda: cp_clock.skew.total_seconds())
            guard = guarded(
                raw,
                throttle,
                paced_per_rpc=self._control_plane is None,
                on_error=lambda exc: metrics.control_plane_errors.labels(
                    exc.rpc or "unknown", exc.code or "unknown"
                ).inc(),
            )
            notifier = (
                WebhookNotifier(
                    s.notify.webhook, timeout=s.notify.timeout.total_seconds(), retries=s.notify.retries
                )
                if s.notify.webhook
                else None
            )
            sender = (
                OutboxSender(
                    state.outbox, notifier, metrics=metrics, clock=cp_clock.now, on_fenced=lead.fenced
                )
                if notifier is not None and state.outbox is not None
                else None
            )
            on_put = sender.wake if sender is not None else (lambda: None)
            scheduler = AsyncScheduler(local=cp_clock.local)
            scheduler.start()
            reconciler = Reconciler(
                guard,
                scopes=[(sc.project, sc.domain) for sc in s.scopes],
                policies=lambda: policies.current,
                metrics=metrics,
                ledger=ledger,
                scheduler=scheduler,
                notifier=notifier,
                outbox=state.outbox,
                on_put=on_put,
                fence=lead.fence if state.shared else None,
                clock=cp_clock.now,
                dry_run=s.dry_run,
                max_concurrent_reruns=s.max_concurrent_reruns,
                lookback=s.lookback,
                overlap=s.overlap,
                error_wait=s.error_details_wait,
            )
            repro = ReproRunner(
                guard,
                checks=lambda: policies.current.reproductions,
                schedules=CronSchedule,
                metrics=metrics,
                clock=cp_clock.now,
                default_scope=next(((sc.project, sc.domain) for sc in s.scopes if not sc.wildcard), None),
                ledger=ledger,
                notifier=notifier,
                outbox=state.outbox,
                on_put=on_put,
                fence=lead.fence if state.shared else None,
                poll_interval=min(5.0, s.poll_interval.total_seconds()),
            )
            daemon = Daemon(
                s,
                control_plane=guard,
                ledger=ledger,
                policies=policies,
                reconciler=reconciler,
                repro=repro,
                metrics=metrics,
                registry=self.registry,
                skew=SkewWatch(cp_clock, dates_expected=self._control_plane is None),
                clock=cp_clock.now,
                requests=self.requests,
                reconnect=reconnect,
                lead=lead,
                outbox_sender=sender,
                install_signals=self._install_signals,
                reload_check_interval=self._reload_interval,
                on_ready=self._on_ready,
                stop_budget=self._stop_budget,
            )
            code = await daemon.run()
        finally:
            if scheduler is not None:
                scheduler.shutdown()
            ledger.close()
            state.close()
        log.info("rerund stopped")
        return code
