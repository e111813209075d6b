"""Ports: what the reconcile loop needs from the outside world, as Protocols and plain values.

The shell talks to the control plane only through ``ControlPlane``; the production adapter
(``rerund.adapters.flyte_control_plane``) implements it with the real flyte SDK, and unit tests
implement it in memory. Keeping the port small — list, watch, read one failure, create one
rerun — is what lets a reconcile pass be called directly in a test, and is also the RPC budget
of the daemon: every method documents the RPCs it costs.

Lineage lives on the control plane, in three labels every rerun carries (``rerund-root``,
``rerund-attempt``, ``rerund-policy``), plus the SDK's ``RunSpec.relation``. Nothing about a
lineage is only known locally.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rerund.core.model import ErrorInfo

__all__ = [
    "FAILED_PHASES",
    "LABEL_ATTEMPT",
    "LABEL_POLICY",
    "LABEL_ROOT",
    "TERMINAL_PHASES",
    "ControlPlane",
    "FailureFacts",
    "Notifier",
    "RerunRequest",
    "RunRef",
    "RunSummary",
]

LABEL_ROOT = "rerund-root"
LABEL_ATTEMPT = "rerund-attempt"
LABEL_POLICY = "rerund-policy"

FAILED_PHASES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
TERMINAL_PHASES = FAILED_PHASES | {"SUCCEEDED"}


@dataclass(frozen=True, order=True)
class RunRef:
    """A run on the control plane: its project, domain and name."""

    project: str
    domain: str
    name: str

    @property
    def scope(self) -> str:
        return f"{self.project}/{self.domain}"

    def __str__(self) -> str:
        return f"{self.project}/{self.domain}/{self.name}"


@dataclass(frozen=True)
class RunSummary:
    """What a list or watch tells about a run, without a further call.

    ``labels`` may be empty although the run has labels: open-source Flyte does not fill them
    in ListRuns. ``phase`` is the flyteidl2 phase name without prefix (``FAILED``).
    """

    ref: RunRef
    phase: str
    task: str = ""
    created_at: datetime | None = None
    ended_at: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class FailureFacts:
    """Everything the decision core needs about one failed run, read from the control plane."""

    summary: RunSummary
    labels: Mapping[str, str]
    action: str
    action_task: str
    error: ErrorInfo
    failed_at: datetime
    related_to: str | None = None  # RunSpec.relation: the run this one was rerun from
    relation: str | None = None  # "RERUN" | "RECOVER"


@dataclass(frozen=True)
class RerunRequest:
    """One rerun to create. ``action`` names the source action (``a0`` = the whole run)."""

    source: RunRef
    name: str
    action: str = "a0"
    recover: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> RunRef:
        return RunRef(self.source.project, self.source.domain, self.name)


class ControlPlane(Protocol):
    """The control plane as the daemon uses it. Errors are ``rerund.errors.ControlPlaneError``s."""

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        """Runs in FAILED/TIMED_OUT/ABORTED updated at or after ``since`` (ListRuns, paged)."""
        ...

    async def list_reruns(
        self, project: str, domain: str, *, since: datetime, policy: str | None = None
    ) -> list[RunSummary]:
        """Runs carrying the ``rerund-policy`` label (equal to ``policy`` when given) created at or
        after ``since``, in any phase (ListRuns, paged). Reproduction reruns (label
        ``rerund-repro``) are left out: they inherit the labels of the run they rerun."""
        ...

    async def get_run(self, ref: RunRef) -> RunSummary:
        """One run by name (GetRunDetails); ``labels`` are filled. ``NotFoundError`` if absent."""
        ...

    def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        """Runs of the scope as they change (one WatchRuns stream). Ends or raises on a drop."""
        ...

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        """The failure of ``run``: labels, relation, failing action, its task and error.

        Costs 3 RPCs: GetRunDetails, ListActions (failed ones), GetActionDetails (one action).
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
        """Create the rerun (the SDK's rerun path). Raises ``AlreadyExistsError`` when a run of
        that name exists, ``PermanentControlPlaneError`` for a request that cannot succeed,
        ``TransientControlPlaneError`` when worth retrying."""
        ...

    def console_url(self, ref: RunRef) -> str:
        """Where a human sees the run."""
        ...


class Notifier(Protocol):
    """Sends one notification (e.g. a webhook) and raises ``NotificationError`` on failure."""

    async def notify(self, payload: Mapping[str, Any]) -> None: ...
