"""The daemon's HTTP routes: ``/`` the operator page (with its live explanation of a run),
``/status``, ``/metrics``, ``/healthz``, ``/readyz`` and ``/decisions``.

``Site`` serves them from finished objects (the reconciler, the ledger, the policies in force,
the guarded control plane) and a readiness function; it reads, it never creates or records.

History in one place: with a ``shared`` state (PostgreSQL) ``/decisions`` and the page's
decisions table read the shared ledger (off the event loop), so every replica, a follower too,
shows the same decisions; with a file state (one replica) ``/decisions`` lists this process's
recent decisions from memory.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rerund import __version__
from rerund.core.rules import PolicySet
from rerund.core.runs import RunRef
from rerund.core.scopes import Coverage, is_pattern
from rerund.core.status import Status, explanation_lines, iso, lineage_lines
from rerund.errors import ControlPlaneError, LedgerError, NotFoundError
from rerund.ports import ControlPlane, DaemonLedger
from rerund.runtime.http import Handler, Response, html_response, json_response
from rerund.runtime.live import SEARCH_BACK, explain_live, find_run
from rerund.runtime.page import MAX_QUERY, PageView, render_page
from rerund.runtime.reconcile import Reconciler, public_decision
from rerund.runtime.settings import Settings
from rerund.runtime.status import gather_status

__all__ = ["Site"]


class Site:
    """The routes of one daemon, over the objects it runs with."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry,
        control_plane: ControlPlane,
        ledger: DaemonLedger,
        reconciler: Reconciler,
        policies: Callable[[], PolicySet],
        ready: Callable[[], tuple[bool, str]],
        clock: Callable[[], datetime],
        alive: Callable[[], tuple[bool, str]] = lambda: (True, ""),
        role: Callable[[], dict[str, Any]] | None = None,
        shared: bool = False,
    ) -> None:
        """``shared``: the ledger is shared by replicas (a ``postgresql://`` state)."""
        self._settings = settings
        self._registry = registry
        self._cp = control_plane
        self._ledger = ledger
        self._reconciler = reconciler
        self._policies = policies
        self._ready = ready
        self._alive = alive  # thread-safe: /healthz may be answered on the HTTP server's thread
        self._clock = clock
        self._role = role
        self._shared = shared

    def routes(self) -> dict[str, Handler]:
        return {
            "/": self._page_route,
            "/status": self._status_route,
            "/metrics": self._metrics_route,
            "/healthz": self._health_route,
            "/readyz": self._ready_route,
            "/decisions": self._decisions_route,
        }

    def _health_route(self, query: dict[str, list[str]]) -> Response:
        ok, why = self._alive()
        return Response(200, b"ok\n") if ok else Response(503, f"{why}\n".encode())

    def _metrics_route(self, query: dict[str, list[str]]) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _ready_route(self, query: dict[str, list[str]]) -> Response:
        ok, why = self._ready()
        last = self._reconciler.last_sync
        body: dict[str, Any] = {"ready": ok, "reason": why, "last_sync": iso(last) if last else None}
        if self._role is not None:  # which replica leads (role, identity, leader, term)
            body.update(self._role())
        return json_response(body, 200 if ok else 503)

    async def _decisions_route(self, query: dict[str, list[str]]) -> Response:
        try:
            limit = max(0, int(query.get("limit", ["100"])[0]))
        except ValueError:
            return json_response({"error": "limit must be an integer, e.g. /decisions?limit=20"}, 400)
        body: dict[str, Any] = {}
        decisions = list(reversed(self._reconciler.recent))[:limit]
        if self._shared:  # every replica's decisions, from the shared ledger
            try:
                decisions = await self._shared_decisions(limit)
            except LedgerError as exc:
                body["notes"] = [
                    f"the shared ledger cannot be read ({exc}); these are this replica's own recent "
                    "decisions, from memory (/readyz says whether the state database answers)"
                ]
        pending: dict[str, Any] | None = self._reconciler.pending()
        role = self._role() if self._role is not None and self._shared else None
        if role is not None and role["role"] != "leader":
            # What is owed lives in the leader's memory (recomputed from the control plane, never
            # stored): a follower owes nothing, and an empty list here would read as "nothing owed".
            pending = None
            leader = f"{role['leader']} (term {role['term']})" if role["leader"] else "the leader"
            body.setdefault("notes", []).append(
                f"pending is null: this replica ({role['identity']}) follows; the work still owed is "
                f"held in the memory of {leader}: read its /decisions"
            )
        return json_response(
            {
                "decisions": decisions,
                "pending": pending,
                "settings": self._settings.public(),
                **body,
            }
        )

    async def _shared_decisions(self, limit: int) -> list[dict[str, Any]]:
        """The daemons' latest ``limit`` decisions in the shared ledger, newest first, with the
        fields of the in-memory list (a sweep's decisions are ``rerund history``'s). Raises
        ``LedgerError``."""
        rows = await asyncio.to_thread(self._ledger.history, source="daemon", limit=limit)
        for row in rows:
            del row["source"]
        return rows

    async def status(self) -> Status:
        """Where every lineage stands, from the ledger and this daemon's reruns index and
        pending items (no RPC). The ledger is read in a worker thread (a database, or a large
        file, can take its time: the event loop goes on deciding and answering meanwhile); what
        the loop owns (pending items, the reruns index) is read here, on the loop."""
        now = self._clock()
        pending = self._reconciler.pending()
        reruns = self._reconciler.listed_reruns()
        policies = self._policies()
        try:
            return await asyncio.to_thread(
                functools.partial(
                    gather_status,
                    now=now,
                    ledger=self._ledger,
                    policies=policies,
                    reruns=reruns,
                    pending=pending,
                )
            )
        except LedgerError as exc:
            return gather_status(
                now=now,
                ledger=None,
                policies=self._policies(),
                reruns=reruns,
                pending=pending,
                notes=[f"the ledger cannot be read ({exc}); lineages are shown from the control plane only"],
            )

    async def _status_route(self, query: dict[str, list[str]]) -> Response:
        body = (await self.status()).to_json()
        role = self._role() if self._role is not None else None
        if role is not None and role["shared"]:  # replicas share the state: which one leads
            body["leadership"] = role
        return json_response(body)

    async def _page_route(self, query: dict[str, list[str]]) -> Response:
        def arg(name: str) -> str:
            return (query.get(name) or [""])[0].strip()[:MAX_QUERY]

        search, run, scope = arg("run"), arg("explain"), arg("scope")
        status = await self.status()
        notes: list[str] = []
        decisions: list[dict[str, Any]] = []
        try:  # a ledger read: off the event loop
            decisions = await asyncio.to_thread(self._ledger.history, contains=search or None, limit=50)
        except LedgerError as exc:
            notes.append(str(exc))
        lines: list[str] = []
        error = ""
        scopes = [sc.key for sc in self._settings.scopes]
        if run:
            scope, lines, error = await self._explain_lines(run, scope, scopes, status)
        ok, why = self._ready()
        view = PageView(
            status=status,
            ready=ok,
            ready_reason=why,
            last_sync=self._reconciler.last_sync,
            settings=self._settings.public(),
            policies=list(self._policies().names()),
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
        """(scope, the live explanation's lines, an error) for the page's ``?explain=RUN``: the
        run in ``scope`` when that is a concrete scope the daemon covers, else looked up by name
        in ``scope`` (a wildcard scope) or every scope (``find_run``)."""
        pairs = [(p, d) for p, _, d in (s.partition("/") for s in scopes)]
        project, _, domain = scope.partition("/")
        if not scope and len(pairs) == 1 and not any(map(is_pattern, pairs[0])):
            scope, (project, domain) = scopes[0], pairs[0]
        concrete = bool(project and domain) and not is_pattern(project) and not is_pattern(domain)
        if scope and not (scope in scopes or (concrete and Coverage(tuple(pairs)).covers(project, domain))):
            known = ", ".join(scopes) or "none"
            return scope, [], f"which scope is run {run!r} in? add &scope=PROJECT/DOMAIN, one of: {known}"
        if concrete:
            ref = RunRef(project, domain, run)
        else:
            where = [(project, domain)] if scope else pairs
            since = self._clock() - max(self._settings.lookback, SEARCH_BACK)
            try:
                found = await find_run(self._cp, run, where, since=since)
            except ControlPlaneError as exc:
                return scope, [], f"run {run!r} cannot be looked up now: {exc}"
            if len(found) != 1:
                shown = ", ".join(f"{p}/{d}" for p, d in where)
                if not found:
                    return scope, [], f"no run {run!r} in {shown}: check the name (run names are lower-case)"
                return (
                    scope,
                    [],
                    f"run name {run!r} is in {len(found)} scopes: {', '.join(map(str, found))}; "
                    f"add &scope=PROJECT/DOMAIN, one of: {', '.join(r.scope for r in found)}",
                )
            ref = found[0]
            scope = ref.scope
        try:
            ledger = self._ledger
            history = (
                (lambda fp, since: ledger.fingerprint_recoveries(since=since, fingerprint=fp).get(fp, (0, 0)))
                if ledger
                else None
            )
            result = await explain_live(self._cp, ref, self._policies(), self._clock(), history)
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
        state = next(
            (
                s
                for s in (*status.in_flight, *status.exhausted, *status.recovered)
                if s.key == f"{scope}/{failure.root}"
            ),
            None,
        )
        lineage = lineage_lines(failure.root, failure.attempt, list(result.reruns), state)
        lines = explanation_lines(
            str(ref),
            result.facts(ref),
            public_decision(explanation.decision),
            explanation.trace,
            lineage,
            explanation.changes,
            exact=failure.spec is not None,
        )
        return scope, lines, ""
