"""Runs as the layers exchange them: plain frozen values, the lineage label names and the
phase sets. The control-plane adapter builds these from the wire, the shell passes them around,
the core reads them; they live here, on the ground floor, so every layer can import them.

Lineage lives on the control plane, in three labels every rerun carries (``rerund-root``,
``rerund-attempt``, ``rerund-policy``), plus the SDK's ``RunSpec.relation``. Anyone can write
labels, so a run counts as a lineage's rerun only when its relation (or rerund's ledger)
vouches for them (``rerund.core.lineage.vouches``). Nothing about a
lineage is only known locally. A reproduction rerun carries ``rerund-repro`` (the check's name).
A relaunch (a fresh run of the deployed task) has no relation at all: its lineage is only in
those labels, which is why every layer reads lineage from labels.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rerund.core.model import ErrorInfo, RunOverrides, RunSpecView
from rerund.core.resources import ResourcesView

__all__ = [
    "FAILED_PHASES",
    "LABEL_ATTEMPT",
    "LABEL_CANARIES",
    "LABEL_POLICY",
    "LABEL_REPRO",
    "LABEL_ROOT",
    "ROOT_ACTION",
    "TERMINAL_PHASES",
    "FailureFacts",
    "RelaunchRequest",
    "RerunRequest",
    "RunRef",
    "RunSummary",
]

LABEL_ROOT = "rerund-root"
LABEL_ATTEMPT = "rerund-attempt"
LABEL_POLICY = "rerund-policy"
LABEL_REPRO = "rerund-repro"
# How many of a lineage's reruns were canaries of an incident (``rerund.core.incidents``):
# those are not counted against the policy's max_attempts.
LABEL_CANARIES = "rerund-canaries"
ROOT_ACTION = "a0"  # the root action of a run: a rerun of scope run starts here

FAILED_PHASES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
TERMINAL_PHASES = FAILED_PHASES | {"SUCCEEDED"}


@dataclass(frozen=True, order=True, slots=True)
class RunRef:
    """A run on the control plane: its project, domain and name.

    Slotted, its project and domain interned: the daemon's caches hold tens of thousands of
    runs, and a run parsed off the wire would otherwise carry its own copy of both (~150 bytes)."""

    project: str
    domain: str
    name: str

    def __post_init__(self) -> None:
        if type(self.project) is str and type(self.domain) is str:
            object.__setattr__(self, "project", sys.intern(self.project))
            object.__setattr__(self, "domain", sys.intern(self.domain))

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
    # The run this one reruns (its RunSpec relation; the SDK sets it on every rerun), and
    # whether that is known: GetRunDetails always knows it, a listing may not say.
    relation: RunRef | None = None
    relation_known: bool = False

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class FailureFacts:
    """Everything the decision core needs about one failed run, read from the control plane."""

    summary: RunSummary  # its phase is the one read: QUEUED or RUNNING when executing again
    labels: Mapping[str, str]
    action: str
    action_task: str
    error: ErrorInfo
    failed_at: datetime
    spec: RunSpecView | None = None  # the run's RunSpec (read with the run details, no extra RPC)
    # FAILED, but the error details are not there yet (open-source Flyte fills them once the
    # last attempt's events arrived): the failure must not be decided yet.
    error_pending: bool = False
    # ABORTED only because an operator aborted a run that had already finished in this phase
    # (open-source AbortRun has no phase condition); None for a real abort.
    finished_phase: str | None = None
    task_version: str = ""  # the version of the run's (root) task
    resources: ResourcesView | None = None  # the root task's requests and limits (None: unknown)
    relation: RunRef | None = None  # the run this one reruns (RunSpec relation), None: not a rerun


@dataclass(frozen=True, kw_only=True)
class _NewRun:
    """What a rerun and a relaunch both say about the run they create: its ``source`` and
    ``name``, the ``env``, ``labels`` and ``inputs`` merged over the source's, the policy's
    RunSpec ``overrides``, and the source's spec when already read (``source_spec``)."""

    source: RunRef
    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    overrides: RunOverrides = field(default_factory=RunOverrides)
    source_spec: RunSpecView | None = None

    @property
    def target(self) -> RunRef:
        return RunRef(self.source.project, self.source.domain, self.name)


@dataclass(frozen=True, kw_only=True)
class RerunRequest(_NewRun):
    """One rerun to create. ``action`` names the source action (``a0`` = the whole run).

    ``overrides`` are the policy's RunSpec changes; ``source_spec`` the source run's spec when
    already read (the adapter reads it otherwise, 1 GetRunDetails): the adapter passes the
    source's own values through where the SDK would overwrite them (see ``rerund.core.runspec``).
    """

    action: str = "a0"
    recover: bool = False


@dataclass(frozen=True, kw_only=True)
class RelaunchRequest(_NewRun):
    """One relaunch to create: a fresh run named ``name`` of version ``version`` of the deployed
    task ``task`` (``""``: the latest deployed), with ``resources`` (None: the deployed task's
    own), the source run's inputs with ``inputs`` over them, and a RunSpec that is the
    source's (``source_spec``; read by the adapter when None) changed as for a rerun: ``env``
    and ``labels`` (lineage labels included) merged over it, the ``overrides`` applied."""

    task: str
    version: str = ""
    resources: ResourcesView | None = None
