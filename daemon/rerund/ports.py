"""Ports: every Protocol the shell needs from the outside world, in one place.

The shell talks to the control plane only through ``ControlPlane``; the production adapter
(``rerund.adapters.flyte``) implements it with the real flyte SDK, and unit tests
implement it in memory. Keeping the port small — list, watch, read one failure, create one
rerun — is what lets a reconcile pass be called directly in a test, and is also the RPC budget
of the daemon: every method documents the RPCs it costs. The ledger (``DecisionLedger``,
``ReproLedger``), the notifier and the scheduler are ports too; ``rerund.adapters`` implements
them all.

This module sits on the ground floor, just above the core: it imports only ``rerund.core``
(the values it speaks in, ``rerund.core.runs``), so adapters implement it without importing
the shell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from rerund.core.incidents import IncidentRecord, Members
from rerund.core.outbox import OutboxItem
from rerund.core.records import RerunIssue, RerunOutcome
from rerund.core.runs import FailureFacts, RelaunchRequest, RerunRequest, RunRef, RunSummary

__all__ = [
    "ControlPlane",
    "DaemonLedger",
    "DecisionLedger",
    "Deployments",
    "Leadership",
    "Notifier",
    "Outbox",
    "Reconnect",
    "ReproLedger",
    "RpcGate",
    "Schedule",
    "ScheduleFactory",
    "Scheduler",
]


class Deployments(Protocol):
    """What a control plane knows beyond runs: the deployed tasks (``retry.scope: relaunch``)
    and the project/domain scopes (``rerund sweep`` checks its scopes). Every ``ControlPlane``
    has these methods; one that cannot do one of them (an in-memory fake) raises
    ``UnsupportedError``, and the caller says what that means (a relaunch is recorded as
    invalid, no version is known, the scopes are not checked)."""

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        """Create the relaunch: the deployed task (``Task.get``: ListTasks for the latest version,
        GetTaskDetails), overridden with the request's resources, run under the request's name
        with the source run's inputs (GetRunDetails, GetActionData) — SelectCluster,
        UploadInputs, CreateRun (on open-source Flyte one GetRunDetails before and one after, as
        for a rerun). Errors as ``create_rerun``'s: ``AlreadyExistsError`` when the name exists,
        ``PermanentControlPlaneError`` when the task or version is not deployed or the resources
        are refused."""
        ...

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        """The most recently deployed version of ``task`` (None: none is deployed). Costs 1
        RPC: ListTasks (name EQUAL, sorted by created_at descending, limit 1)."""
        ...

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        """True when the org has ``project`` with ``domain``, False when it has not, None when
        the control plane cannot say (no ProjectService). Costs 1 RPC (GetProject)."""
        ...


class ControlPlane(Deployments, Protocol):
    """The control plane as the daemon uses it. Errors are ``rerund.errors.ControlPlaneError``s."""

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        """Runs in FAILED/TIMED_OUT/ABORTED updated at or after ``since`` (ListRuns, paged)."""
        ...

    async def list_reruns(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        policy: str | None = None,
        changed_since: datetime | None = None,
    ) -> list[RunSummary]:
        """Runs carrying the ``rerund-policy`` label (equal to ``policy`` when given) created at or
        after ``since``, in any phase (ListRuns, paged), and when ``changed_since`` is given
        only those updated (created, or changed phase) at or after it. Reproduction reruns
        (label ``rerund-repro``) are left out: they inherit the labels of the run they rerun."""
        ...

    async def list_ended(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        """Runs created at or after ``since`` that have ended (SUCCEEDED, FAILED, TIMED_OUT,
        ABORTED), each with its relation known (``relation_known``): which of them rerun which
        run, whoever made them (``flyte.rerun`` by hand, or rerund). Labels may be left out.
        Costs ceil(runs / 200) ListRuns; on a control plane whose listing leaves the relation out
        (open-source Flyte) also 1 GetRunDetails per listed run not read before (read once, kept
        with its labels), and with ``backend: auto`` 1 ListRuns once to find out which it is."""
        ...

    async def get_run(self, ref: RunRef) -> RunSummary:
        """One run by name (GetRunDetails); ``labels`` are filled. ``NotFoundError`` if absent."""
        ...

    def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        """Runs of the scope as they change (one WatchRuns stream). Ends or raises on a drop."""
        ...

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        """The failure of ``run``: labels, relation, failing action, its task and error, and
        whether the error details are still missing (``error_pending``) or the run was aborted
        after it had finished (``finished_phase``).

        Costs 3 RPCs: GetRunDetails, ListActions (failed ones), GetActionDetails (one action);
        2 when the run details already carry the root action's error.
        """
        ...

    async def find_latest_run(
        self,
        project: str,
        domain: str,
        *,
        task: str,
        phase: str = "SUCCEEDED",
        labels: Mapping[str, str] | None = None,
        without_label: str | None = None,
    ) -> RunSummary | None:
        """The most recently created run of ``task`` in ``phase`` carrying ``labels`` (and not
        carrying the label ``without_label``), or None. Costs 1 RPC: ListRuns with filters,
        sorted by created_at descending, limit 1 (on a control plane that rejects the label
        filter NOT_EXISTS: 1 ListRuns of 20 and a GetRunDetails per run until one qualifies)."""
        ...

    async def read_outputs(self, ref: RunRef) -> dict[str, Any]:
        """The outputs of run ``ref`` (its root action) as plain Python values decoded from
        their Flyte literals: ``{name: value}``, empty when the run has none. Costs 2 RPCs:
        SelectCluster + DataProxy GetActionData."""
        ...

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        """Create the rerun (the SDK's rerun path): the source's RunSpec changed only by the
        request (``rerund.core.runspec``). Costs the SDK's rerun RPCs, plus 1 GetRunDetails when
        ``request.source_spec`` is not given. Raises ``AlreadyExistsError`` when a run of
        that name exists, ``PermanentControlPlaneError`` for a request that cannot succeed,
        ``TransientControlPlaneError`` when worth retrying."""
        ...

    def console_url(self, ref: RunRef) -> str:
        """Where a human sees the run."""
        ...


class RpcGate(Protocol):
    """The daemon's rate gate, given to a control plane that charges each RPC on the wire
    itself (the flyte adapter's ``rpc_gate``, given when it is built): ``await pace(n)``
    returns when ``n`` more RPCs may be sent; ``answered(n)`` reports ``n`` RPCs the control
    plane answered (anything but RESOURCE_EXHAUSTED or UNAVAILABLE), what a learned rate counts
    as let through. Safe to use
    from any thread's event loop (the flyte SDK's own included)."""

    async def pace(self, cost: int = 1) -> None: ...

    def answered(self, cost: int = 1) -> None: ...


class Notifier(Protocol):
    """Sends one notification (e.g. a webhook) and raises ``NotificationError`` on failure."""

    async def notify(self, payload: Mapping[str, Any]) -> None: ...


class Leadership(Protocol):
    """Which replica acts. Replicas sharing a state elect one leader through it; only the
    leader watches, decides, issues, notifies and fires reproduction checks. Each acquisition
    raises the state's leadership ``term`` by one, and every write only the leader may make
    checks that term in its own transaction (fencing: a replica that lost the lead without
    noticing yet has its writes refused with ``FencedError``). With a file state there is one
    replica, which always leads (term 0). Every method may block on the database: the runtime
    calls them in a worker thread. Database failures raise ``StateUnavailableError``."""

    @property
    def identity(self) -> str:
        """This replica: ``host:pid`` (the pod's name as its host in Kubernetes)."""
        ...

    @property
    def term(self) -> int | None:
        """The term this replica leads in, None while it does not lead."""
        ...

    def acquire(self) -> bool:
        """Become the leader if no one else is (never waits): True when this replica leads."""
        ...

    def held(self) -> bool:
        """Whether this replica still leads (one round trip to the state). False is for good:
        a replica that lost the lead stops acting and exits; it does not lead again."""
        ...

    def leader(self) -> tuple[str, int] | None:
        """(identity, term) of the leader the state records last (None: none ever led)."""
        ...

    def confirm(self) -> None:
        """Raise ``FencedError`` unless this replica leads in the term the state records (what
        is checked before a rerun is created)."""
        ...

    def release(self) -> None:
        """Stop leading (on a clean stop) so a follower takes over at once; idempotent."""
        ...


class Outbox(Protocol):
    """Side effects that must happen once (notifications), kept in the state until delivered.

    ``put`` adds an event under its unique key and returns False when the key is already there
    (sent, or waiting): a restart, a failover or a second replica puts it again, and it is
    still sent once. The leader's sender takes what is ``due``, ``claim``s it (fenced:
    ``FencedError`` once another replica leads), sends it and marks it ``delivered`` or
    ``failed`` (to be retried at ``retry_at``). Errors: ``StateUnavailableError``."""

    def put(self, key: str, payload: Mapping[str, Any], *, now: datetime) -> bool: ...

    def due(self, now: datetime, *, limit: int = 100) -> list[OutboxItem]: ...

    def claim(self, key: str, *, now: datetime, until: datetime) -> bool:
        """Take ``key`` for one send until ``until`` (True: still due and now ours). Fenced."""
        ...

    def delivered(self, key: str, *, now: datetime) -> None: ...

    def failed(self, key: str, error: str, *, retry_at: datetime, now: datetime) -> None: ...

    def pending(self) -> int:
        """Events not yet delivered (what ``rerund_outbox_pending`` shows)."""
        ...

    def prune(self, older_than: datetime) -> int:
        """Forget the events delivered before ``older_than``; how many."""
        ...


class Scheduler(Protocol):
    """Runs ``callback`` at ``at`` (in-memory; jobs are recomputed after a restart)."""

    def schedule(self, key: str, at: datetime, callback: Callable[[], Awaitable[None]]) -> None: ...

    def cancel(self, key: str) -> None: ...


class DecisionLedger(Protocol):
    """The audit ledger as the reconcile loop writes it. Every ``record_*`` returns True when
    the fact is new (the ledger de-duplicates across restarts) and raises ``LedgerError``."""

    def record_failure(
        self, *, project: str, domain: str, run: str, failed_at: datetime, now: datetime
    ) -> bool: ...

    def record_decision(
        self, *, project: str, domain: str, run: str, root: str, decision: dict[str, Any], now: datetime
    ) -> bool: ...

    def record_issue(self, issue: RerunIssue, *, now: datetime) -> bool: ...

    def record_outcome(self, outcome: RerunOutcome, *, now: datetime) -> bool: ...

    def set_watermark(self, scope: str, at: datetime) -> None: ...

    def watermark(self, scope: str) -> datetime | None: ...

    def created_without_outcome(self) -> Sequence[Any]: ...

    def issued_as(self, project: str, domain: str, target: str) -> tuple[str, int] | None:
        """(root, attempt) of run ``target`` when this ledger recorded creating it, else None:
        a run rerund created counts as its rerun whatever its relation (a relaunch has none)."""
        ...

    def record_incident(self, record: IncidentRecord, *, now: datetime) -> bool:
        """Save incident ``record`` (one row per fingerprint and opening time, replaced as it
        changes); True when its state (``open``, ``closed``) was not recorded before — a new
        incident, or one just closed: what is notified once across restarts and replicas."""
        ...

    def incidents(self, *, since: datetime) -> Sequence[IncidentRecord]:
        """The open incidents and those closed at or after ``since``, newest first."""
        ...

    def record_rerun_seen(self, target: RunRef, source: RunRef, phase: str, *, now: datetime) -> bool:
        """Run ``target``, which reruns ``source`` (its RunSpec relation, as the control plane
        says), ended in ``phase``; True when not recorded before. ``fingerprint_recoveries``
        counts it for the fingerprint decided for ``source`` unless rerund created it (then it
        counts once, as rerund's rerun): a rerun by hand is evidence too."""
        ...

    def save_incident_members(self, members: Mapping[str, Members], *, now: datetime) -> None:
        """Replace the saved ``Members`` of each fingerprint of ``members`` (what the breaker
        counts: its window's failed runs, or its open incident's runs and lineages; all empty:
        none), and forget the windows saved more than a day (the longest ``within``) before
        ``now``."""
        ...

    def incident_members(self) -> dict[str, Members]:
        """The saved ``Members`` per fingerprint (windows oldest first): what a restart counts
        again (``Breaker.restore_members``)."""
        ...

    def fingerprint_recoveries(
        self, *, since: datetime, fingerprint: str | None = None
    ) -> dict[str, tuple[int, int]]:
        """Fingerprint (only ``fingerprint`` when given) -> (reruns of its failures decided since
        ``since`` whose outcome is known — rerund's, and those by hand ``record_rerun_seen``
        saw — how many succeeded): the evidence ``give_up_below`` weighs and ``rerund status``
        shows."""
        ...


class ReproLedger(Protocol):
    """The audit ledger as the reproduction checks write it."""

    def record_reproduction(self, result: dict[str, Any], *, now: datetime) -> bool: ...

    def last_reproduction(self, check: str) -> datetime | None: ...


class DaemonLedger(DecisionLedger, ReproLedger, Protocol):
    """The whole ledger as the daemon uses it: what the loop and the reproduction checks write,
    what the status and the page read, its retention and its close."""

    def lineage_rows(
        self, *, since: datetime | None = None, root: str | None = None, limit: int = 20_000
    ) -> dict[str, list[dict[str, Any]]]: ...

    def latest_reproductions(self) -> list[dict[str, Any]]: ...

    def history(
        self,
        *,
        run: str | None = None,
        policy: str | None = None,
        source: str | None = None,
        limit: int = 50,
        contains: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def prune(self, older_than: datetime) -> int: ...

    def flush(self) -> None:
        """Write the rows of the open group now (a failure is logged): the daemon's stop does it
        while it still leads, before it releases the lead (a shared ledger's writes are fenced)."""
        ...

    def close(self) -> None: ...


class Schedule(Protocol):
    """The firing times of one cron schedule (pure: the time is an argument)."""

    def next_after(self, when: datetime) -> datetime | None: ...

    def latest_at_or_before(self, when: datetime) -> datetime | None: ...


# (expression, timezone) -> its Schedule; raises ValueError for a bad expression.
ScheduleFactory = Callable[[str, str], Schedule]

# Read the credentials again and reconnect the control plane with them (the daemon calls it when
# a credential file changes); raises ``ConfigError`` when the new ones cannot be used.
Reconnect = Callable[[], Awaitable[None]]
