"""An in-memory ``ControlPlane`` for calling one reconcile pass directly in unit tests.

It keeps runs the way the control plane does (names unique per project/domain, labels, phases,
creation and end times), answers ALREADY_EXISTS to a duplicate create, counts every call per
method and run, and can be told to fail the next calls of a method with a given error.
End-to-end behaviour against the real SDK is tested against the sandbox; this fake exists so a
single pass can be examined step by step with an injected clock. ``tests/ports`` runs one
contract suite against this fake and the real adapter, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rerund.core.model import ErrorInfo
from rerund.core.runs import (
    FAILED_PHASES,
    LABEL_POLICY,
    LABEL_REPRO,
    TERMINAL_PHASES,
    FailureFacts,
    RelaunchRequest,
    RerunRequest,
    RunRef,
    RunSummary,
)
from rerund.errors import AlreadyExistsError, ControlPlaneError, NotFoundError, UnsupportedError
from rerund.runtime.settings import Settings, load_settings

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CONNECTION_RESET = ErrorInfo(kind="SYSTEM", code="ConnectionResetError", message="Connection reset by peer")


def daemon_settings(
    tmp_path: Path, policies: str, *, environ: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings of an in-process daemon given a fake control plane: scope ml/production of org
    'o', ``policies`` (YAML text) in ``tmp_path / "policies.yaml"`` and the ledger beside it, a
    1 s resync;
    ``overrides`` add or replace settings (``http`` is required: an address or 'off')."""
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(policies)
    return load_settings(
        environ=environ or {},
        overrides={
            "endpoint": "http://127.0.0.1:1",
            "org": "o",
            "scopes": ["ml/production"],
            "policies": [str(policy_file)],
            "state": str(tmp_path / "rerund.db"),
            "poll_interval": "1s",
            **overrides,
        },
    )


@dataclass
class FakeRun:
    ref: RunRef
    phase: str
    task: str = "train.fit"
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime = T0
    ended_at: datetime | None = None
    action: str = "a0"
    action_task: str = ""
    error: ErrorInfo = CONNECTION_RESET
    request: RerunRequest | None = None  # how it was created, for reruns
    error_pending: bool = False  # FAILED, error details not arrived yet (open-source Flyte)
    finished_phase: str | None = None  # aborted after it had finished in this phase
    relation: RunRef | None = None  # the run this one reruns (RunSpec relation)
    updated_at: datetime | None = None  # last change; None: its creation or end, the later

    @property
    def changed_at(self) -> datetime:
        """When the run last changed, as ListRuns' ``updated_at`` filter sees it."""
        return max(t for t in (self.updated_at, self.created_at, self.ended_at) if t is not None)

    def summary(self) -> RunSummary:
        return RunSummary(
            ref=self.ref,
            phase=self.phase,
            task=self.task,
            created_at=self.created_at,
            ended_at=self.ended_at,
            labels=dict(self.labels),
            relation=self.relation,
            relation_known=True,
        )


class Clock:
    """A settable clock (aware UTC)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeControlPlane:
    def __init__(self, clock: Clock, *, project: str = "ml", domain: str = "production") -> None:
        self.clock = clock
        self.project = project
        self.domain = domain
        self.runs: dict[RunRef, FakeRun] = {}
        self.calls: Counter[str] = Counter()
        self.calls_by_run: Counter[tuple[str, str]] = Counter()
        self.fail_next: dict[str, deque[ControlPlaneError]] = defaultdict(deque)
        self.create_latency = 0.0  # seconds a CreateRun takes before the name is taken
        self.read_latency = 0.0  # seconds a read_failure / get_run takes
        self.labels_in_listings = True  # False: ListRuns without labels, as open-source Flyte

    # -- test helpers ---------------------------------------------------------------------------

    def ref(self, name: str) -> RunRef:
        return RunRef(self.project, self.domain, name)

    def add_failed(self, name: str, *, at: datetime | None = None, **kw: Any) -> FakeRun:
        """A failed run ``name``; ``rerun_of="x"`` gives it a relation to run ``x`` (what the
        SDK sets on every rerun: lineage labels count only with it)."""
        at = at or self.clock()
        if "rerun_of" in kw:
            kw["relation"] = self.ref(kw.pop("rerun_of"))
        run = FakeRun(
            self.ref(name), kw.pop("phase", "FAILED"), created_at=at - timedelta(seconds=5), ended_at=at, **kw
        )
        self.runs[run.ref] = run
        return run

    def add_lineage(self, root: str, attempts: int, *, at: datetime | None = None) -> str:
        """Lineage ``root``'s runs before attempt ``attempts + 1``: the original and reruns
        1..``attempts``, each with its relation to the one before (SUCCEEDED, so nothing decides
        them; no policy label, so no budget counts them). Returns the last one's name."""
        at = at or self.clock()
        name = root
        self.runs[self.ref(root)] = FakeRun(self.ref(root), "SUCCEEDED", created_at=at, ended_at=at)
        for n in range(1, attempts + 1):
            ref = self.ref(f"{root}-retry-{n}")
            labels = {"rerund-root": root, "rerund-attempt": str(n)}
            self.runs[ref] = FakeRun(
                ref, "SUCCEEDED", labels=labels, created_at=at, ended_at=at, relation=self.ref(name)
            )
            name = ref.name
        return name

    def fail(self, ref_name: str, phase: str = "FAILED", **kw: Any) -> FakeRun:
        """An existing run (e.g. a rerun) ends in ``phase`` now."""
        run = self.runs[self.ref(ref_name)]
        run.phase = phase
        run.ended_at = self.clock()
        for k, v in kw.items():
            setattr(run, k, v)
        return run

    def reruns(self) -> list[FakeRun]:
        return sorted((r for r in self.runs.values() if r.request is not None), key=lambda r: r.ref.name)

    def _call(self, method: str, run: str = "") -> None:
        self.calls[method] += 1
        if run:
            self.calls_by_run[(method, run)] += 1
        queue = self.fail_next.get(method)
        if queue:
            raise queue.popleft()

    # -- the port -------------------------------------------------------------------------------

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        self._call("list_failed")
        return [
            r.summary()
            for r in self.runs.values()
            if r.ref.scope == f"{project}/{domain}" and r.phase in FAILED_PHASES and r.changed_at >= since
        ]

    async def list_ended(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        self._call("list_ended")
        return [
            r.summary()
            for r in self.runs.values()
            if r.ref.scope == f"{project}/{domain}" and r.phase in TERMINAL_PHASES and r.created_at >= since
        ]

    async def list_reruns(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        policy: str | None = None,
        changed_since: datetime | None = None,
    ) -> list[RunSummary]:
        self._call("list_reruns")
        return [
            (
                r.summary()
                if self.labels_in_listings
                else replace(r.summary(), labels={}, relation=None, relation_known=False)
            )
            for r in self.runs.values()
            if r.ref.scope == f"{project}/{domain}"
            and LABEL_POLICY in r.labels
            and LABEL_REPRO not in r.labels  # as the adapter: reproduction reruns are left out
            and (policy is None or r.labels[LABEL_POLICY] == policy)
            and r.created_at >= since
            and (changed_since is None or r.changed_at >= changed_since)
        ]

    async def get_run(self, ref: RunRef) -> RunSummary:
        self._call("get_run", ref.name)
        if self.read_latency:
            await asyncio.sleep(self.read_latency)
        if ref not in self.runs:
            raise NotFoundError(f"run {ref} not found", rpc="GetRunDetails", code="not_found")
        return self.runs[ref].summary()

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        for r in list(self.runs.values()):
            yield r.summary()

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        self._call("read_failure", run.ref.name)
        if self.read_latency:
            await asyncio.sleep(self.read_latency)
        r = self.runs.get(run.ref)
        if r is None:
            raise NotFoundError(f"run {run.ref} not found", rpc="GetRunDetails", code="not_found")
        return FailureFacts(
            summary=r.summary(),
            labels=dict(r.labels),
            action=r.action,
            action_task=r.action_task or r.task,
            error=r.error,
            failed_at=r.ended_at or r.created_at,
            error_pending=r.error_pending,
            finished_phase=r.finished_phase,
            relation=r.relation,
        )

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        self._call("create_rerun", request.name)
        if self.create_latency:
            await asyncio.sleep(self.create_latency)
        target = request.target
        if target in self.runs:
            raise AlreadyExistsError(f"run {target} exists", rpc="CreateRun", code="already_exists")
        source = self.runs[request.source]
        self.runs[target] = FakeRun(
            target,
            "QUEUED",
            task=source.task,
            labels=dict(request.labels),
            created_at=self.clock(),
            action=source.action,
            action_task=source.action_task,
            error=source.error,
            request=request,
            relation=request.source,
        )
        return target

    def console_url(self, ref: RunRef) -> str:
        return f"http://console.example/{ref}"

    # -- ports.Deployments: this fake knows no deployed tasks and no scopes -------------------

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        raise UnsupportedError("the fake control plane cannot relaunch deployed tasks", rpc="CreateRun")

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        raise UnsupportedError("the fake control plane knows no deployed tasks", rpc="ListTasks")

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        raise UnsupportedError("the fake control plane knows no projects", rpc="GetProject")
