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
- the **scheduler** (a ``ports.Scheduler``) — wakes failures whose rerun is not yet due;
- a **policy watcher** — reloads the policies on SIGHUP and when a policy file changes. An
  invalid file is rejected with its ``check`` problems in the log and
  ``rerund_policy_reloads_total{result="error"}``; the last good policies stay in force;
- the **HTTP** endpoints (``rerund.runtime.web``: ``/`` the operator page, ``/status``,
  ``/metrics``, ``/healthz``, ``/readyz``, ``/decisions``);
- a **pruner** that keeps the ledger within ``ledger_retention``;
- the **reproduction checks** of the policies in force (``rerund.runtime.repro``): each fires
  on its cron schedule, reruns its reference run and records match / mismatch / failed /
  timeout. Missed firings run once on start.

Every one of these tasks runs under ``rerund.runtime.supervisor``: an unexpected exception is
logged once, counted in ``rerund_internal_errors_total{task}``, and the task restarted with
backoff while ``/readyz`` reports it down; what it held (the policies in force, the caches)
stays as it was.

Only the leader runs the tasks above but the HTTP endpoints (``rerund.runtime.leader``): with a
file state this process leads at once; replicas on a PostgreSQL state campaign for the lead,
and a follower serves HTTP (ready, saying who leads) until it takes over. A leader that loses
the lead stops every task at once (the same stop sequence with a budget of
``_LOST_LEAD_STOP_S``), and ``run`` returns ``EXIT_LOST_LEAD`` (3) for the process's supervisor
to restart it as a follower.

SIGTERM/SIGINT: one stop sequence (``Daemon._shutdown``), within 10 seconds. Nothing is lost by
stopping: what is still owed is recomputed from the control plane on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from rerund.aiotasks import TaskSet
from rerund.core.durations import format_duration
from rerund.core.redact import redact_url
from rerund.core.rules import PolicySet
from rerund.core.runs import RunSummary
from rerund.core.scopes import plan
from rerund.errors import ConfigError, ControlPlaneError, LedgerError, PolicyError, StateUnavailableError
from rerund.policy import load_policies
from rerund.policy.loader import expand_paths
from rerund.ports import DaemonLedger, Reconnect
from rerund.runtime.connection import CredentialFiles, Reachability, sleep_until
from rerund.runtime.http import HttpServer
from rerund.runtime.leader import EXIT_LOST_LEAD, Lead
from rerund.runtime.metrics import Metrics
from rerund.runtime.outbox import OutboxSender
from rerund.runtime.reconcile import Reconciler
from rerund.runtime.repro import ReproRunner
from rerund.runtime.settings import Settings
from rerund.runtime.skew import SkewWatch
from rerund.runtime.supervisor import Supervisor
from rerund.runtime.throttle import GuardedControlPlane
from rerund.runtime.web import Site

__all__ = ["Daemon", "PolicyHolder", "Requests", "settle_heap"]

log = logging.getLogger("rerund.daemon")

_STOP_BUDGET_S = 8.0  # of the 10 s a SIGTERM allows (App closes the ledger after it)
_INTAKE_STOP_S = 2.0  # of it, at most, for the background tasks to end once cancelled
_LOST_LEAD_STOP_S = 1.0  # the whole budget of a leader that lost the lead: it stops at once


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
    allocates protobuf messages and coroutines by the million, almost none of them in a cycle
    (what it saves: bench/README.md, "Figures behind choices in the code"). Only ``rerund run``
    calls it: it is the process's own choice, not a library's."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


_EVENTS_PER_YIELD = 64  # stream events taken before the watcher yields to the loop
_NAMES_SHOWN = 5  # policy names in a log line; the rest are counted
# /healthz fails when the event loop has not run for this long (it beats every _BEAT_S).
LOOP_STALL_S = 30.0
_BEAT_S = 1.0
_PROBLEMS_SHOWN = 10  # problems a rejected reload logs (a line each); the rest are counted


def _first_names(names: Sequence[str]) -> str:
    """``a, b, c, d, e and 9996 more``: a log line stays short whatever the number of policies."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    return f"{shown} and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else shown


def _rejected_lines(why: str, problems: Sequence[object], paths: Sequence[Path], kept: int) -> list[str]:
    """A rejected reload as log lines, one record each (a log collector reads lines): what
    happened with the count and what stays in force, then the first problems, numbered."""
    where = " ".join(str(p) for p in paths)
    head = (
        f"policy reload ({why}) rejected: {len(problems)} problem(s); the last good policies ({kept}) "
        f"stay in force; `rerund check {where}` lists "
        + ("them all" if len(problems) > _PROBLEMS_SHOWN else "them")
    )
    shown = problems[:_PROBLEMS_SHOWN]
    return [
        head,
        *(f"policy reload ({why}) problem {i} of {len(problems)}: {p}" for i, p in enumerate(shown, 1)),
    ]


class PolicyHolder:
    """The policies in force, and their hot reload (the last good set stays on error)."""

    def __init__(
        self, paths: tuple[Path, ...], metrics: Metrics, on_change: Callable[[], None] = lambda: None
    ) -> None:
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
            for line in _rejected_lines(why, exc.problems, self.paths, kept):
                log.error("%s", line)
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


class Requests:
    """What the daemon is asked to do: stop and reload (thread-safe, made before or while it
    runs) and resync now (set on the loop: a watch dropped, credentials or policies changed)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.resync = asyncio.Event()
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the daemon runs on: a stop requested earlier takes effect now."""
        self._loop = loop
        if self._stop_requested:
            self.stop.set()

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stop.set)

    def request_reload(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.reload.set)


class Heartbeat:
    """The event loop's liveness: ``run`` beats every ``_BEAT_S`` until ``stop`` is set;
    ``alive`` (thread-safe) says whether it beat within ``LOOP_STALL_S``."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._beat = time.monotonic()

    async def run(self) -> None:
        while not self._stop.is_set():
            self._beat = time.monotonic()
            await asyncio.sleep(_BEAT_S)

    def alive(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._beat
        if stalled <= LOOP_STALL_S:
            return True, ""
        return False, (
            f"the event loop has not run for {stalled:.0f}s (limit {LOOP_STALL_S:g}s): the daemon is "
            "stuck; restart it (what is owed is recomputed from the control plane on start)"
        )


@dataclass(frozen=True)
class _Options:
    """How this process runs its loop: signal handlers, how often files are checked for
    changes, the ready callback, the seconds the stop sequence may take."""

    install_signals: bool
    reload_check_interval: float
    on_ready: Callable[[Daemon], None] | None
    stop_budget: float


class Daemon:
    """One daemon process over finished objects (``rerund.app`` builds them): ``await run()``
    until ``request_stop()`` (or SIGTERM/SIGINT)."""

    def __init__(
        self,
        settings: Settings,
        *,
        control_plane: GuardedControlPlane,
        ledger: DaemonLedger,
        policies: PolicyHolder,
        reconciler: Reconciler,
        repro: ReproRunner,
        metrics: Metrics,
        registry: CollectorRegistry,
        skew: SkewWatch,
        clock: Callable[[], datetime],
        requests: Requests,
        reconnect: Reconnect | None = None,
        lead: Lead | None = None,
        outbox_sender: OutboxSender | None = None,
        install_signals: bool = True,
        reload_check_interval: float = 1.0,
        on_ready: Callable[[Daemon], None] | None = None,
        stop_budget: float | None = None,
    ) -> None:
        """``stop_budget``: the seconds the stop sequence may take (``_shutdown``; default 8)."""
        self.settings = settings
        self.lead = lead
        self.outbox_sender = outbox_sender
        self.guard = control_plane
        self.ledger = ledger
        self.policies = policies
        self.reconciler = reconciler
        self.repro = repro
        self.metrics = metrics
        self.skew = skew
        self.requests = requests
        self._clock = clock
        self._options = _Options(
            install_signals,
            reload_check_interval,
            on_ready,
            _STOP_BUDGET_S if stop_budget is None else stop_budget,
        )
        self._credentials = (
            CredentialFiles(
                settings,
                reconnect,
                stop=requests.stop,
                resync=requests.resync,
                interval=reload_check_interval,
            )
            if reconnect is not None
            else None
        )
        self._events = TaskSet(log, what="a watch event")
        self._reachability = Reachability(settings, control_plane.credentials)
        self._heartbeat = Heartbeat(requests.stop)
        self.supervisor = Supervisor(metrics.internal_errors, stopping=self._stopping)
        site = Site(
            settings,
            registry=registry,
            control_plane=control_plane,
            ledger=ledger,
            reconciler=reconciler,
            policies=lambda: policies.current,
            ready=self.ready,
            clock=clock,
            alive=self.alive,
            role=lead.info if lead is not None else None,
            shared=lead is not None and lead.shared,
        )
        address = settings.http_address
        self.http = (
            # /healthz on the server's own thread: answered while the loop is busy deciding.
            HttpServer(
                address[0],
                address[1],
                site.routes(),
                hosts=settings.http_hosts,
                thread_paths=("/healthz",),
            )
            if address is not None
            else None
        )

    # -- control -----------------------------------------------------------------------------

    def _stopping(self) -> bool:
        """A stop was requested, or the lead was lost (the daemon then stops at once)."""
        return self.requests.stop.is_set() or (self.lead is not None and self.lead.lost.is_set())

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop (also before ``run`` has started: it stops at once)."""
        self.requests.request_stop()

    def request_reload(self) -> None:
        """Thread-safe: reload the policies now (what SIGHUP does)."""
        self.requests.request_reload()

    # -- main --------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.requests.bind(loop)
        if self.http is not None:
            try:
                await self.http.start()
            except OSError as exc:
                host, port = s.http_address or ("", 0)
                raise ConfigError(_listen_error(host, port, exc)) from None
        if self._options.install_signals:
            self._signals(loop, install=True)
        policies = self.policies.current
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
            "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        )
        if policies.reproductions:
            log.info(
                "%d reproduction check(s)%s: %s",
                len(policies.reproductions),
                " (not fired: dry run)" if s.dry_run else "",
                ", ".join(f"{c.name} ({c.schedule} {c.timezone})" for c in policies.reproductions),
            )
        # The heartbeat runs on followers too: /healthz says whether the event loop runs, and a
        # follower waiting for the lead is alive.
        self.supervisor.start("heartbeat", self._heartbeat.run)
        try:
            if await self._campaign():
                self._act()
            if self._options.on_ready is not None:
                self._options.on_ready(self)
            await self._until_stopped()
        finally:
            await self._shutdown()
            if self._options.install_signals:
                self._signals(loop, install=False)
        if self.lead is not None and self.lead.lost.is_set():
            return EXIT_LOST_LEAD
        return 0

    async def _campaign(self) -> bool:
        """Wait until this replica leads (at once with a file state); False on stop."""
        if self.lead is None:
            return True
        return await self.lead.campaign(self.requests.stop)

    async def _until_stopped(self) -> None:
        """Until a stop is requested or the lead is lost."""
        if self.lead is None:
            await self.requests.stop.wait()
            return
        waiters = [
            asyncio.ensure_future(self.requests.stop.wait()),
            asyncio.ensure_future(self.lead.lost.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _act(self) -> None:
        """The leader's tasks: watch, decide, issue, notify, fire the reproduction checks."""
        s = self.settings
        sup = self.supervisor
        sup.start("poller", self._poller)
        if s.watch:
            for project, domain in plan((sc.project, sc.domain) for sc in s.scopes):
                sup.start(f"watch {project}/{domain}", functools.partial(self._watcher, project, domain))
        if self._credentials is not None and self._credentials.state():
            sup.start("credentials", self._credentials.run)
        sup.start("policies", self._policy_watcher)
        sup.start("pruner", self._pruner)
        if not s.dry_run:
            sup.start("reproductions", self.repro.run)
        if self.outbox_sender is not None:
            sup.start("outbox", self.outbox_sender.run)
        if self.lead is not None and self.lead.shared:
            sup.start("leadership", functools.partial(self.lead.keep, self.requests.stop))

    def alive(self) -> tuple[bool, str]:
        """Liveness (``/healthz``, from any thread): whether the event loop ran within
        ``LOOP_STALL_S``. A loop busy deciding yields often and stays alive; one stuck for
        that long is reported, so a liveness probe restarts the daemon."""
        return self._heartbeat.alive()

    async def _shutdown(self) -> None:
        """The stop sequence, in this order, within ``stop_budget`` seconds:

        1. stop intake: the reconciler and the reproduction checks refuse new work (retry loops
           stop retrying); the background tasks and the watch events being handled are
           cancelled (at most ``_INTAKE_STOP_S`` for them to end);
        2. drain: the creates and firings in flight finish, until the deadline; those still
           unanswered then are cancelled, so nothing of the daemon's runs once ``run`` returns
           (what they owe is recomputed on the next start: the control plane has their run, or
           not);
        3. while still leading: write the ledger's last group of rows, and send the outbox's due
           events once (until the deadline: an event put just before the stop is delivered
           now, not by the next leader), then release the lead;
        4. stop serving HTTP.

        ``App`` then closes the adapters it opened: the scheduler, and the ledger (which writes
        its pending rows first).
        """
        loop = asyncio.get_running_loop()
        lost = self.lead is not None and self.lead.lost.is_set()
        budget = min(self._options.stop_budget, _LOST_LEAD_STOP_S) if lost else self._options.stop_budget
        deadline = loop.time() + budget
        if lost:
            log.info("stopping at once: this replica no longer leads (at most %.0fs)", budget)
        else:
            log.info("stopping: finishing in-flight calls (at most %.0fs)", budget)
        self.reconciler.stop()
        self.repro.stop()
        if self.outbox_sender is not None:
            self.outbox_sender.stop()
        intake = min(_INTAKE_STOP_S, budget / 4)
        await asyncio.gather(self.supervisor.stop(timeout=intake), self._events.stop(timeout=intake))
        left = max(0.0, deadline - loop.time())
        drained = await asyncio.gather(self.reconciler.drain(timeout=left), self.repro.drain(timeout=left))
        if not all(drained):
            log.warning("stopped with calls still in flight; what they owe is recomputed on the next start")
            await asyncio.gather(self.reconciler.cancel(), self.repro.cancel())
        if not lost:  # the last group of rows, written while this replica still leads
            self.ledger.flush()
        if self.outbox_sender is not None and not lost:
            await self.outbox_sender.last_pass(timeout=deadline - loop.time())
        if self.lead is not None and not lost:
            await self.lead.release()
        if self.http is not None:
            await self.http.stop()

    def _signals(self, loop: asyncio.AbstractEventLoop, *, install: bool) -> None:
        for sig, fn in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if install:
                    loop.add_signal_handler(sig, fn)
                else:
                    loop.remove_signal_handler(sig)

    def _policies_changed(self) -> None:
        self.reconciler.policies_changed()
        self.requests.resync.set()

    async def _sleep(self, seconds: float, *events: asyncio.Event) -> None:
        """Sleep up to ``seconds``, waking early on stop or any of ``events``."""
        await sleep_until(seconds, self.requests.stop, *events)

    async def _poller(self) -> None:
        interval = self.settings.poll_interval.total_seconds()
        while not self.requests.stop.is_set():
            self.requests.resync.clear()
            try:
                report = await self.reconciler.sync()
            except Exception:
                log.exception("resync pass failed; retrying at the next poll")
            else:
                self._reachability.passed(report.ok, report.errors)
                self.skew.check()
                log.debug(
                    "resync pass: %d failed run(s) listed, %d rerun(s) indexed, %d owed",
                    report.failed_runs,
                    report.reruns_listed,
                    len(self.reconciler.pending()),
                )
            await self._sleep(interval, self.requests.resync)
            await self._sleep(0.2)  # coalesce bursts of resync requests

    async def _watcher(self, project: str, domain: str) -> None:
        delay = 0.5
        while not self.requests.stop.is_set():
            try:
                events = 0
                async for summary in self.guard.watch(project, domain):
                    delay = 0.5
                    self._event(summary)
                    events += 1
                    if events % _EVENTS_PER_YIELD == 0:
                        # A stream's snapshot may arrive as thousands of buffered events; each
                        # failed run is a task, and tasks started together run together: let the
                        # loop run these (and answer /healthz) before starting more.
                        await asyncio.sleep(0)
                reason = "the stream ended"
            except ControlPlaneError as exc:
                self.reconciler.count_error(exc, rpc="WatchRuns")
                reason = str(exc)
            if self.requests.stop.is_set():
                return
            # Until a resync has reached the control plane the poller speaks for it (once); each
            # failed reconnect meanwhile is only a debug line.
            log.log(
                logging.DEBUG if self._reachability.reachable is not True else logging.INFO,
                "watch of %s/%s dropped (%s); resync now, reconnect in %.1fs",
                project,
                domain,
                reason,
                delay,
            )
            self.requests.resync.set()
            await self._sleep(delay)
            delay = min(delay * 2, 30.0)

    def _event(self, summary: RunSummary) -> None:
        handle = self.reconciler.watch_event(summary)
        if handle is not None:
            self._events.spawn(handle, failed=self._event_failed)

    def _event_failed(self, exc: Exception) -> None:
        """Handling a watch event raised: logged and counted, never left unread."""
        self.metrics.internal_errors.labels("watch event").inc()
        log.error("handling a watch event failed; the next resync pass decides that run", exc_info=exc)

    async def _policy_watcher(self) -> None:
        reload = self.requests.reload
        while not self.requests.stop.is_set():
            await self._sleep(self._options.reload_check_interval, reload)
            if self.requests.stop.is_set():
                return
            if reload.is_set():
                reload.clear()
                if await self.policies.reload("SIGHUP"):
                    self._policies_changed()
            elif self.policies.changed() and await self.policies.reload("file changed"):
                self._policies_changed()

    async def _pruner(self) -> None:
        while not self.requests.stop.is_set():
            try:
                n = self.ledger.prune(self._clock() - self.settings.ledger_retention)
                if n:
                    log.info(
                        "ledger: pruned %d records older than %s",
                        n,
                        format_duration(self.settings.ledger_retention),
                    )
            except LedgerError as exc:
                log.error("%s", exc)
            if self.outbox_sender is not None:
                try:
                    await self.outbox_sender.prune(self._clock() - self.settings.ledger_retention)
                except StateUnavailableError as exc:
                    log.error("%s", exc)
            await self._sleep(3600)

    def ready(self) -> tuple[bool, str]:
        """Ready when a resync pass succeeded within 3 poll intervals and no background task
        is down (waiting to be restarted after a failure). A follower is ready while the state
        database answers (it says who leads)."""
        follower = self.lead.ready() if self.lead is not None else None
        if follower is not None:
            return follower
        down = self.supervisor.down()
        if down:
            what = "; ".join(f"{name}: {why}" for name, why in sorted(down.items()))
            return False, f"background task(s) down, restarting with backoff: {what}"
        refused = self.guard.credentials
        if refused.since is not None:
            return False, (
                f"the control plane refuses rerund's credentials ({refused.reason}); nothing is created "
                "until they are fixed (rewrite the key or secret file: it is reloaded without a restart)"
            )
        window = 3 * self.settings.poll_interval
        last = self.reconciler.last_sync
        if last is None:
            return False, "no resync pass has succeeded yet"
        age = self._clock() - last
        if age > window:
            ago = format_duration(timedelta(seconds=round(age.total_seconds())))
            return False, f"the last successful resync was {ago} ago (more than 3 poll intervals)"
        return True, "a resync succeeded within 3 poll intervals"
