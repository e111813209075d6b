"""``rerund run``: the long-running daemon around the reconcile loop.

What runs, all on one asyncio event loop:

- a **poller** — a full resync pass (``Reconciler.sync``) every ``poll_interval``, and at once
  after a watch stream reconnects (to cover the gap). This is the safety net that makes a
  missed stream message harmless;
- one **watcher** per listed scope — a WatchRuns stream for low latency (one org-wide stream
  serves every wildcard scope), reconnected with capped exponential backoff whenever it drops
  (``watch: false`` turns the streams off: polling only);
- a **credentials watcher** — when the API key, client secret or CA file changes, the SDK is
  initialised again with it (no restart) and a resync catches up on what was missed;
- the **scheduler** (APScheduler) — wakes failures whose rerun is not yet due;
- a **policy watcher** — reloads the policies on SIGHUP and when a policy file changes. An
  invalid file is rejected with its ``check`` problems in the log and
  ``rerund_policy_reloads_total{result="error"}``; the last good policies stay in force;
- the **HTTP** endpoints (``/`` the operator page, ``/status``, ``/metrics``, ``/healthz``,
  ``/readyz``, ``/decisions``);
- a **pruner** that keeps the ledger within ``ledger_retention``;
- the **reproduction checks** of the policies in force (``rerund.runtime.repro``): each fires
  on its cron schedule, reruns its reference run and records match / mismatch / failed /
  timeout. Missed firings run once on start.

Every one of these tasks runs under ``rerund.runtime.supervisor``: an unexpected exception is
logged once, counted in ``rerund_internal_errors_total{task}``, and the task restarted with
backoff while ``/readyz`` reports it down; what it held (the policies in force, the caches)
stays as it was.

SIGTERM/SIGINT: stop taking work (watchers and poller stop, issue loops stop retrying), let
in-flight calls finish, and exit — within 10 seconds. Nothing is lost by stopping: what is
still owed is recomputed from the control plane on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rerund import __version__
from rerund.adapters.flyte_control_plane import Connection, FlyteControlPlane
from rerund.adapters.ledger import Ledger
from rerund.adapters.scheduler import AsyncScheduler
from rerund.adapters.webhook import WebhookNotifier
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.durations import format_duration
from rerund.core.redact import redact_url
from rerund.core.rules import PolicySet
from rerund.core.runs import RunRef, RunSummary
from rerund.core.scopes import plan
from rerund.core.status import Status, explanation_lines, iso, lineage_lines
from rerund.errors import ConfigError, ControlPlaneError, LedgerError, NotFoundError, PolicyError
from rerund.fdlimit import raise_fd_limit
from rerund.policy import load_policies
from rerund.policy.loader import expand_paths
from rerund.ports import ControlPlane
from rerund.runtime.http import Handler, HttpServer, Response, html_response, json_response
from rerund.runtime.live import explain_live
from rerund.runtime.metrics import Metrics
from rerund.runtime.page import MAX_QUERY, PageView, render_page
from rerund.runtime.reconcile import Reconciler, public_decision
from rerund.runtime.repro import ReproRunner
from rerund.runtime.settings import Settings, read_ca_cert, read_secret_file
from rerund.runtime.status import gather_status
from rerund.runtime.supervisor import Supervisor
from rerund.runtime.throttle import AdaptiveLimit, GuardedControlPlane, RateSchedule, Throttle, guarded

__all__ = ["Daemon", "PolicyHolder", "connect_control_plane", "settle_heap"]

log = logging.getLogger("rerund.daemon")

_STOP_BUDGET_S = 8.0  # of the 10 s a SIGTERM allows
# The ledger's one-row writes are committed together this long after the first of them (see
# ``Ledger.group_commits``): a storm's rows share a commit.
_GROUP_COMMIT_S = 0.05
# Clock skew worth a warning: well above the Date header's second and a slow round trip.
_SKEW_WARNING_S = 30.0


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


async def connect_control_plane(settings: Settings, clock: ControlPlaneClock | None = None) -> ControlPlane:
    """The real control plane (the flyte SDK adapter) for ``settings``, initialised and
    probed: a refused credential or an untrusted certificate raises ``ConfigError``. Every
    answer's HTTP ``Date`` is told to ``clock``."""
    cp = FlyteControlPlane(
        connection=connection(settings),
        rpc_timeout=settings.rpc_timeout.total_seconds(),
        console_url=settings.console_url,
        backend=settings.backend,
        clock=clock,
    )
    await cp.connect()
    first = plan((sc.project, sc.domain) for sc in settings.scopes)
    if first:
        await cp.probe(*first[0])
    return cp


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"the HTTP address {host}:{port} is already in use (another rerund — `rerund demo`? — or "
            "another program listens there); stop it, or pass --http HOST:PORT (port 0 picks a free "
            "one) or --http off"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror}; pass another --http HOST:PORT or --http off"


def settle_heap(gen0: int = 10_000) -> None:
    """For a long-running daemon process, once it has started: what is alive then (modules, the
    SDK's client, policies, settings) lives as long as the process, so it leaves the garbage
    collector's generations (``gc.freeze``) and a full collection stops walking it; and the
    youngest generation is collected every ``gen0`` allocations instead of 700 — a storm
    allocates protobuf messages and coroutines by the million, almost none of them in a cycle.
    Over a 2,000-failure WAN storm this took the collector's CPU from 0.47 s to 0.03 s. Only
    ``rerund run`` calls it: it is the process's own choice, not a library's."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


_NAMES_SHOWN = 5  # policy names in a log line; the rest are counted
_PROBLEMS_SHOWN = 10  # problems in a rejected reload's log record; the rest are counted


def _first_names(names: Sequence[str]) -> str:
    """``a, b, c, d, e and 9996 more``: a log line stays short whatever the number of policies."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    return f"{shown} and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else shown


def _first_problems(problems: Sequence[object], paths: Sequence[Path]) -> str:
    """The first problems, one a line, and how many more (``rerund check`` lists them all)."""
    text = "\n".join(str(p) for p in problems[:_PROBLEMS_SHOWN])
    if len(problems) > _PROBLEMS_SHOWN:
        more, where = len(problems) - _PROBLEMS_SHOWN, " ".join(str(p) for p in paths)
        text += f"\n… and {more} more problem(s); `rerund check {where}` lists them all"
    return text


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

    async def reload(self, why: str) -> bool:
        """Load the policies again; True when the new set is in force.

        The files are read, parsed and compiled in a worker thread: ten thousand policies take
        seconds, and the event loop keeps serving watch events, reruns and HTTP meanwhile. Only
        the swap of the set in force happens on the loop."""
        self._fingerprint = self.fingerprint()
        try:
            new = await asyncio.to_thread(load_policies, list(self.paths))
        except PolicyError as exc:
            self._metrics.policy_reloads.labels("error").inc()
            kept = len(self._current) if self._current is not None else 0
            log.error(
                "policy reload (%s) rejected: %d problem(s); the last good policies (%d) stay in force:\n%s",
                why,
                len(exc.problems),
                kept,
                _first_problems(exc.problems, self.paths),
            )
            return False
        except Exception:  # a bug in loading must not end hot reload: count it, keep the last good set
            self._metrics.policy_reloads.labels("error").inc()
            kept = len(self._current) if self._current is not None else 0
            log.exception(
                "policy reload (%s) failed unexpectedly; the last good policies (%d) stay in force, "
                "the next change or SIGHUP retries",
                why,
                kept,
            )
            return False
        self._current = new
        self._metrics.policy_reloads.labels("ok").inc()
        self._metrics.policies_loaded.set(len(new))
        self._metrics.init_policies(list(new.names()))
        log.info("policies reloaded (%s): %d in force: %s", why, len(new), _first_names(new.names()))
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
        # The daemon decides on the control plane's time: the wall clock (``clock``, default
        # the host's) plus the skew measured on the control plane's answers.
        self.cp_clock = ControlPlaneClock(clock or utcnow)
        clock = self.cp_clock.now
        self._skew_warned = False
        self._no_date_warned = False
        self._cp_built_here = control_plane is None  # the flyte adapter, which reads Date headers
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.supervisor = Supervisor(
            self.metrics.internal_errors, stopping=lambda: self._stop is not None and self._stop.is_set()
        )
        self._clock = clock
        self._cp = control_plane
        self._install_signals = install_signals
        self._reload_interval = reload_check_interval
        self._on_ready = on_ready
        self._stop: asyncio.Event | None = None
        self._resync: asyncio.Event | None = None
        self._reload: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._events: set[asyncio.Task[None]] = set()
        self.reconciler: Reconciler | None = None
        self.repro: ReproRunner | None = None
        self.policies: PolicyHolder | None = None
        self.http: HttpServer | None = None
        self.ledger: Any = None
        self._reachable: bool | None = None  # None until the first resync pass
        self.guard: GuardedControlPlane | None = None

    # -- control -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop (also before ``run`` has started: it stops at once)."""
        self._stop_requested = True
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
        if self._stop_requested:
            self._stop.set()
        self._resync = asyncio.Event()
        self._reload = asyncio.Event()

        raise_fd_limit()  # the HTTP server's connection cap is derived from it
        self.policies = PolicyHolder(s.policies, self.metrics, self._policies_changed)
        policies = self.policies.load()
        ledger = Ledger(s.state, on_reopen=self.metrics.ledger_reopened.inc, max_bytes=s.ledger_max_bytes)
        loop = self._loop
        ledger.group_commits(lambda flush: loop.call_later(_GROUP_COMMIT_S, flush))
        self.ledger = ledger
        raw = self._cp if self._cp is not None else await connect_control_plane(s, self.cp_clock)
        self.metrics.clock_skew.set_function(lambda: self.cp_clock.skew.total_seconds())
        self.metrics.track_held_bytes(raw, ledger)
        throttle = Throttle(
            AdaptiveLimit(ceiling=s.max_concurrent_reruns),
            RateSchedule(s.max_rps),
            on_change=self.metrics.control_plane_concurrency.set,
            on_release=self.metrics.control_plane_rpcs.inc,
            on_peak=self.metrics.control_plane_peak_rps.set,
        )
        self.guard = guarded(
            raw,
            throttle,
            on_error=lambda exc: self.metrics.control_plane_errors.labels(
                exc.rpc or "unknown", exc.code or "unknown"
            ).inc(),
        )
        cp: ControlPlane = self.guard
        self._cp = cp
        notifier = None
        if s.notify.webhook:
            notifier = WebhookNotifier(
                s.notify.webhook, timeout=s.notify.timeout.total_seconds(), retries=s.notify.retries
            )
        scheduler = AsyncScheduler(local=self.cp_clock.local)
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
            default_scope=next(((sc.project, sc.domain) for sc in s.scopes if not sc.wildcard), None),
            ledger=ledger,
            notifier=notifier,
            poll_interval=min(5.0, s.poll_interval.total_seconds()),
        )
        if s.http_address is not None:
            host, port = s.http_address
            self.http = HttpServer(host, port, self._routes(), hosts=s.http_hosts)
            try:
                await self.http.start()
            except OSError as exc:
                scheduler.shutdown()
                ledger.close()
                raise ConfigError(_listen_error(host, port, exc)) from None
        if self._install_signals:
            self._signals(install=True)
        log.info(
            "rerund started: endpoint %s (auth: %s%s%s%s), org %s, scopes %s, %d policies (%s), "
            "%spoll every %s, %s%s, event loop %s",
            redact_url(s.endpoint) if s.endpoint else "(from the API key)",
            s.auth_mode.replace("_", " "),
            f", CA {s.ca_cert_file}" if s.ca_cert_file else "",
            f", proxy {redact_url(s.http_proxy)}" if s.http_proxy else "",
            f", at most {s.max_rps:g} RPC/s" if s.max_rps else "",
            s.org,
            ", ".join(sc.key for sc in s.scopes),
            len(policies),
            _first_names(policies.names()),
            "watch + " if s.watch else "no watch (polling only), ",
            format_duration(s.poll_interval),
            f"HTTP on {self.http.url}" if self.http else "HTTP off",
            ", DRY RUN: nothing is created" if s.dry_run else "",
            "uvloop" if type(self._loop).__module__.startswith("uvloop") else "asyncio",
        )
        if policies.reproductions:
            log.info(
                "%d reproduction check(s)%s: %s",
                len(policies.reproductions),
                " (not fired: dry run)" if s.dry_run else "",
                ", ".join(f"{c.name} ({c.schedule} {c.timezone})" for c in policies.reproductions),
            )
        sup = self.supervisor
        tasks = [sup.start("poller", self._poller)]
        if s.watch:
            tasks += [
                sup.start(f"watch {project}/{domain}", functools.partial(self._watcher, project, domain))
                for project, domain in plan((sc.project, sc.domain) for sc in s.scopes)
            ]
        if hasattr(raw, "connect") and self._credential_files():
            tasks.append(sup.start("credentials", functools.partial(self._credentials_watcher, raw)))
        tasks.append(sup.start("policies", self._policy_watcher))
        tasks.append(sup.start("pruner", functools.partial(self._pruner, ledger)))
        if not s.dry_run:
            tasks.append(sup.start("reproductions", self.repro.run))
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
                report = await self.reconciler.sync()
            except Exception:
                log.exception("resync pass failed; retrying at the next poll")
            else:
                self._reachability(report.ok, report.errors)
                self._skew()
                log.debug(
                    "resync pass: %d failed run(s) listed, %d rerun(s) indexed, %d owed",
                    report.failed_runs,
                    report.reruns_listed,
                    len(self.reconciler.pending()),
                )
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
            # Until a resync has reached the control plane the poller speaks for it (once); each
            # failed reconnect meanwhile is only a debug line.
            log.log(
                logging.DEBUG if self._reachable is not True else logging.INFO,
                "watch of %s/%s dropped (%s); resync now, reconnect in %.1fs",
                project,
                domain,
                reason,
                delay,
            )
            self._resync.set()
            await self._sleep(delay)
            delay = min(delay * 2, 30.0)

    def _skew(self) -> None:
        """After each pass: one WARNING when the clocks are more than ``_SKEW_WARNING_S`` apart,
        one INFO when they agree again (within half of it), one WARNING if no answer carried a
        ``Date``; the metric follows every answer."""
        if not self.cp_clock.measured:
            if self._cp_built_here and not self._no_date_warned:
                self._no_date_warned = True
                log.warning(
                    "the control plane's answers carry no HTTP Date header, so rerund cannot measure "
                    "the clock skew and uses this host's clock for watermarks and due times; keep the "
                    "host's time in sync (NTP): a clock ahead of the control plane's misses failures"
                )
            return
        skew = self.cp_clock.skew.total_seconds()
        if abs(skew) > _SKEW_WARNING_S and not self._skew_warned:
            self._skew_warned = True
            log.warning(
                "this host's clock is %.0fs %s the control plane's (measured on its answers' HTTP Date); "
                "rerund uses the control plane's time for watermarks and due times, so nothing is missed "
                "or delayed, but fix the host's time sync (NTP): the log's times and this host's other "
                "programs are off by as much",
                abs(skew),
                "behind" if skew > 0 else "ahead of",
            )
        elif abs(skew) <= _SKEW_WARNING_S / 2 and self._skew_warned:
            self._skew_warned = False
            log.info("this host's clock agrees with the control plane's again (within %.0fs)", abs(skew))

    def _reachability(self, ok: bool, errors: tuple[str, ...]) -> None:
        """One plain line when the control plane stops answering, one when it answers again."""
        where = (
            redact_url(self.settings.endpoint) if self.settings.endpoint else "(the endpoint of the API key)"
        )
        if not ok and self._reachable is not False:
            self._reachable = False
            if self.guard is not None and self.guard.credentials.since is not None:
                return  # it answers, refusing the credentials: the guard says so, once a minute
            reason = errors[0].split(": ", 1)[-1] if errors else "unknown"
            log.error(
                "cannot reach the control plane at %s: %s; rerund keeps trying (a resync every %s, "
                "the watch streams with backoff) and nothing owed is lost meanwhile",
                where,
                reason.rsplit(": ", 1)[-1],
                format_duration(self.settings.poll_interval),
            )
        elif ok and self._reachable is False:
            self._reachable = True
            log.info("the control plane at %s answers again", where)
        elif ok:
            self._reachable = True

    def _event(self, summary: RunSummary) -> None:
        assert self.reconciler is not None
        handle = self.reconciler.watch_event(summary)
        if handle is None:
            return
        task = asyncio.get_running_loop().create_task(handle)
        self._events.add(task)
        task.add_done_callback(self._event_done)

    def _event_done(self, task: asyncio.Task[Any]) -> None:
        """A watch event's task ended: an exception is logged and counted, never left unread."""
        self._events.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        self.metrics.internal_errors.labels("watch event").inc()
        log.error(
            "handling a watch event failed; the next resync pass decides that run",
            exc_info=task.exception(),
        )

    async def _policy_watcher(self) -> None:
        assert self.policies is not None and self._stop is not None and self._reload is not None
        while not self._stop.is_set():
            await self._sleep(self._reload_interval, self._reload)
            if self._stop.is_set():
                return
            if self._reload.is_set():
                self._reload.clear()
                await self.policies.reload("SIGHUP")
            elif self.policies.changed():
                await self.policies.reload("file changed")

    def _credential_files(self) -> tuple[Any, ...]:
        """(path, mtime, size) of the API key, client secret and CA files: a change reloads them."""
        s = self.settings
        out: list[tuple[str, int | None, int | None]] = []
        for path in (s.api_key_file, s.client_secret_file, s.ca_cert_file):
            if path is None:
                continue
            try:
                st = path.stat()
            except OSError:
                out.append((str(path), None, None))
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def _credentials_watcher(self, cp: Any) -> None:
        """Initialise the SDK again when a credential file changes; then resync to catch up."""
        assert self._stop is not None and self._resync is not None
        files = self._credential_files()
        while not self._stop.is_set():
            await self._sleep(self._reload_interval)
            now = self._credential_files()
            if now == files or self._stop.is_set():
                continue
            files = now
            try:
                await cp.connect(connection(self.settings))
            except ConfigError as exc:
                log.error("credentials changed but cannot be used (%s); the previous ones stay in use", exc)
                continue
            log.info("credentials reloaded from %s; resync now to catch up", ", ".join(f[0] for f in files))
            self._resync.set()

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

    def _routes(self) -> dict[str, Handler]:
        return {
            "/": self._page_route,
            "/status": self._status_route,
            "/metrics": self._metrics_route,
            "/healthz": lambda q: Response(200, b"ok\n"),
            "/readyz": self._ready_route,
            "/decisions": self._decisions_route,
        }

    def _metrics_route(self, query: dict[str, list[str]]) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def ready(self) -> tuple[bool, str]:
        """Ready when a resync pass succeeded within 3 poll intervals and no background task
        is down (waiting to be restarted after a failure)."""
        down = self.supervisor.down()
        if down:
            what = "; ".join(f"{name}: {why}" for name, why in sorted(down.items()))
            return False, f"background task(s) down, restarting with backoff: {what}"
        refused = self.guard.credentials if self.guard is not None else None
        if refused is not None and refused.since is not None:
            return False, (
                f"the control plane refuses rerund's credentials ({refused.reason}); nothing is created "
                "until they are fixed (rewrite the key or secret file: it is reloaded without a restart)"
            )
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

    def status(self) -> Status:
        """Where every lineage stands, from the ledger and this daemon's reruns index and
        pending items (no RPC)."""
        now = self._clock()
        notes: list[str] = []
        ledger = self.ledger
        pending = self.reconciler.pending() if self.reconciler else {}
        try:
            return gather_status(
                now=now,
                ledger=ledger,
                policies=self.policies.current if self.policies else None,
                reruns=self.reconciler.listed_reruns() if self.reconciler else [],
                pending=pending,
            )
        except LedgerError as exc:
            notes.append(f"the ledger cannot be read ({exc}); lineages are shown from the control plane only")
            return gather_status(
                now=now,
                ledger=None,
                policies=self.policies.current if self.policies else None,
                reruns=self.reconciler.listed_reruns() if self.reconciler else [],
                pending=pending,
                notes=notes,
            )

    def _status_route(self, query: dict[str, list[str]]) -> Response:
        return json_response(self.status().to_json())

    async def _page_route(self, query: dict[str, list[str]]) -> Response:
        def arg(name: str) -> str:
            return (query.get(name) or [""])[0].strip()[:MAX_QUERY]

        search, run, scope = arg("run"), arg("explain"), arg("scope")
        status = self.status()
        notes: list[str] = []
        decisions: list[dict[str, Any]] = []
        if self.ledger is not None:
            try:
                decisions = self.ledger.history(contains=search or None, limit=50)
            except LedgerError as exc:
                notes.append(str(exc))
        lines: list[str] = []
        error = ""
        scopes = [sc.key for sc in self.settings.scopes]
        if run:
            scope, lines, error = await self._explain_lines(run, scope, scopes, status)
        ok, why = self.ready()
        view = PageView(
            status=status,
            ready=ok,
            ready_reason=why,
            last_sync=self.reconciler.last_sync if self.reconciler else None,
            settings=self.settings.public(),
            policies=list(self.policies.current.names()) if self.policies else [],
            decisions=decisions,
            search=search,
            explain_run=run,
            explain_scope=scope,
            explanation=lines,
            explain_error=error,
            scopes=scopes,
            version=__version__,
            notes=notes,
        )
        return html_response(render_page(view))

    async def _explain_lines(
        self, run: str, scope: str, scopes: list[str], status: Status
    ) -> tuple[str, list[str], str]:
        """(scope, the live explanation's lines, an error) for the page's ``?explain=RUN``."""
        if not scope and len(scopes) == 1:
            scope = scopes[0]
        if scope not in scopes:
            known = ", ".join(scopes) or "none"
            return scope, [], f"which scope is run {run!r} in? add &scope=PROJECT/DOMAIN, one of: {known}"
        assert self._cp is not None and self.policies is not None
        project, domain = scope.split("/", 1)
        ref = RunRef(project, domain, run)
        try:
            result = await explain_live(self._cp, ref, self.policies.current, self._clock())
        except NotFoundError:
            return scope, [], f"no run {run!r} in {scope}: check the name (run names are lower-case)"
        except ControlPlaneError as exc:
            return scope, [], f"run {run!r} cannot be explained now: {exc}"
        if result is None:
            return (
                scope,
                [],
                (f"run {ref} has not failed: rerund decides only about FAILED, TIMED_OUT and ABORTED runs"),
            )
        explanation, failure = result.explanation, result.failure
        facts = {
            "root": failure.root,
            "attempt": failure.attempt,
            "task": failure.task,
            "phase": failure.phase.value,
            "action": failure.action,
            "action_task": failure.action_task,
            "error": failure.error.model_dump(exclude_none=True),
            "failed_at": iso(failure.failed_at),
        }
        state = next(
            (
                s
                for s in (*status.in_flight, *status.exhausted, *status.recovered)
                if s.key == f"{scope}/{failure.root}"
            ),
            None,
        )
        lineage = lineage_lines(failure.root, failure.attempt, list(result.reruns), state)
        body = public_decision(explanation.decision)
        lines = explanation_lines(
            str(ref),
            facts,
            body,
            explanation.trace,
            lineage,
            explanation.changes,
            exact=failure.spec is not None,
        )
        return scope, lines, ""
