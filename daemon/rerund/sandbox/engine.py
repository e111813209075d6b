"""The execution engine: moves every run QUEUED -> RUNNING -> terminal by its workload task.

One asyncio task per non-terminal run, all on the sandbox's single event loop (no threads).
A run of a task with ``children`` runs child actions a1, a2, ... in order; the first failing
child fails the root with the child's error. Each execution of a task takes the outcome
``behaviour[k-1]`` where k counts executions of that task in the run's lineage; the count is
taken when the outcome is decided, so a sandbox restart mid-execution re-executes without
double counting. Recover reruns start with the source run's succeeded children already
RECOVERED (outputs copied) and execute only the rest.

An execution behaves as the *version* of its task it runs (the version in its task spec; see
``rerund.sandbox.tasks``). A task with ``oom_below`` fails an execution whose container asks for
less memory with kind USER, code ``OOMKilled`` — as Flyte 2's executor reports a container the
kernel killed for memory — whatever its behaviour says.

An *outage* (a workload's ``outages:`` or ``POST /_sandbox/outages``) fails every execution of
a matching task that started (went RUNNING) inside its window with the outage's error, ahead of
the task's behaviour and ``oom_below``; such a failure is not counted as an execution.

Durations are multiplied by ``time_scale`` (0.01 makes a 1 s task take 10 ms).
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flyteidl2.common import run_pb2 as common_run_pb2
from flyteidl2.core import literals_pb2
from flyteidl2.task import common_pb2, run_pb2, task_definition_pb2

from rerund.aiotasks import TaskSet
from rerund.sandbox import literals, protos
from rerund.sandbox.profiles import UNION, Profile, invalid_label_value
from rerund.sandbox.records import (
    ABORTED,
    FAILED,
    QUEUED,
    RECOVERED,
    RUNNING,
    SUCCEEDED,
    SUCCESS_PHASES,
    TERMINAL_PHASES,
    TIMED_OUT,
    ActionRec,
    ErrorRec,
    RunRec,
)
from rerund.sandbox.store import Store
from rerund.sandbox.tasks import TaskCatalog, resource_problem, spec_resources
from rerund.sandbox.workload import (
    Deploy,
    Outage,
    RunBatch,
    RunSpecFacts,
    TaskDef,
    Workload,
    parse_quantity,
)

log = logging.getLogger("rerund.sandbox")

__all__ = ["ActiveOutage", "Engine", "lineage_of", "run_spec_of", "spec_facts"]

MAX_OUTAGES = 100  # outages not yet over at once (the admin API adds them)


@dataclass(frozen=True)
class ActiveOutage:
    """An outage placed in time: executions of its tasks starting in [starts_at, ends_at) fail."""

    outage: Outage
    starts_at: datetime
    ends_at: datetime

    def fails(self, task: str, started: datetime) -> bool:
        """True when an execution of ``task`` that started at ``started`` fails by this outage."""
        return self.starts_at <= started < self.ends_at and self.outage.covers(task)

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": list(self.outage.tasks),
            "starts_at": self.starts_at.isoformat().replace("+00:00", "Z"),
            "ends_at": self.ends_at.isoformat().replace("+00:00", "Z"),
            "error": self.outage.error.model_dump(
                exclude_none=True, exclude={"message_bytes"} if not self.outage.error.message_bytes else None
            ),
        }


_NAME_CHARS = string.ascii_lowercase + string.digits


def lineage_of(r: RunRec) -> str:
    return r.lineage


class Engine:
    """Drives executions; see the module docstring. Methods run on the event-loop thread."""

    def __init__(
        self,
        store: Store,
        workload: Workload,
        *,
        org: str,
        time_scale: float = 1.0,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
        profile: Profile = UNION,
        catalog: TaskCatalog | None = None,
    ) -> None:
        self.profile = profile
        self.store = store
        self.workload = workload
        self.catalog = catalog or TaskCatalog(workload, org=org, clock=clock)
        self.org = org
        self.time_scale = time_scale
        self.clock = clock
        self.rng = rng or random.Random()
        self._runs = TaskSet(log, what="a sandbox run")  # by run key
        self._arrivals = TaskSet(log, what="a sandbox arrival schedule")
        self._stopping = False
        self.outages: list[ActiveOutage] = []
        self.reexecutions = 0  # CreateRun of an existing name that ran it again (profile oss)

    # --- lifecycle -----------------------------------------------------------------------

    def resume(self) -> None:
        """Continue every run that was not terminal when the store was loaded."""
        for r in list(self.store.runs.values()):
            if r.phase not in TERMINAL_PHASES:
                self._start(r)

    def start_workload(self) -> None:
        """Place the workload's outages from now; start its ``runs`` (unless the store already
        has runs) and arrivals."""
        now = self.clock()
        for outage in self.workload.outages:
            self.add_outage(outage, now)
        if not self.store.runs:
            for batch in self.workload.runs:
                self._launch_batch(batch)
        for arrival in self.workload.arrivals:
            self._arrivals.spawn(self._arrive(arrival), name=f"arrival-{arrival.task}")
        for deploy in self.workload.deploys:
            self._arrivals.spawn(self._deploy(deploy), name=f"deploy-{deploy.task}")

    def add_outage(self, outage: Outage, since: datetime) -> ActiveOutage:
        """Place ``outage`` in time, its ``after`` counted from ``since`` (durations scaled by
        ``time_scale``); outages already over are forgotten. Raises ``ValueError`` when
        ``MAX_OUTAGES`` are not over yet."""
        self.outages = [o for o in self.outages if o.ends_at > since]
        if len(self.outages) >= MAX_OUTAGES:
            raise ValueError(
                f"{MAX_OUTAGES} outages are not over yet; wait for one to end before adding more"
            )
        starts = since + timedelta(seconds=outage.after * self.time_scale)
        placed = ActiveOutage(outage, starts, starts + timedelta(seconds=outage.for_ * self.time_scale))
        self.outages.append(placed)
        return placed

    def _outage_error(self, a: ActionRec) -> ErrorRec | None:
        """The error of the first outage the execution of ``a`` started inside, if any."""
        started = a.start_time
        if started is None:
            return None
        for placed in self.outages:
            if placed.fails(a.task, started):
                spec = placed.outage.error
                fault = spec.gpu_fault.model_dump() if spec.gpu_fault is not None else None
                return ErrorRec(kind=spec.kind, code=spec.code, message=spec.message, gpu_fault=fault)
        return None

    async def _deploy(self, deploy: Deploy) -> None:
        await asyncio.sleep(deploy.after * self.time_scale)
        body = {"task": deploy.task, **deploy.model_dump(exclude_unset=True, exclude={"task", "after"})}
        self.catalog.deploy(body)

    async def stop(self) -> None:
        """Stop executing (runs stay as they are, to be resumed by the next start)."""
        self._stopping = True
        await asyncio.gather(self._runs.stop(), self._arrivals.stop())

    def busy(self) -> bool:
        """True while a run executes or an arrival schedule is still producing runs."""
        return bool(self._runs) or bool(self._arrivals)

    async def _arrive(self, arrival: Any) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(arrival.every * self.time_scale)
            if arrival.for_ and loop.time() - started > arrival.for_ * self.time_scale:
                return
            self._launch_batch(arrival)

    # --- creating runs -------------------------------------------------------------------

    def _launch_batch(self, batch: RunBatch) -> list[str]:
        """Start the runs of a workload ``runs`` entry or of one arrival."""
        return self.launch(
            batch.task,
            count=batch.count,
            inputs=batch.inputs,
            project=batch.project,
            domain=batch.domain,
            run_spec=run_spec_of(batch),
            version=batch.version,
        )

    def new_name(self, org: str, project: str, domain: str) -> str:
        """A fresh run name like Flyte's: ``r`` + 19 lowercase letters/digits."""
        while True:
            name = "r" + "".join(self.rng.choice(_NAME_CHARS) for _ in range(19))
            if (org, project, domain, name) not in self.store.runs:
                return name

    def task_spec(
        self,
        task: str,
        project: str,
        domain: str,
        version: str | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> task_definition_pb2.TaskSpec:
        """The spec of ``version`` of ``task`` (default: the latest deployed in the scope)."""
        interface = inputs if inputs is not None else self.workload.interface_inputs(task)
        deployed = (
            self.catalog.latest(project, domain, task)
            if version is None
            else self.catalog.get(project, domain, task, version)
        )
        if deployed is not None:
            return self.catalog.task_spec(deployed, interface)
        td = self.catalog.definition(task, version) if version is not None else self.workload.task(task)
        return protos.task_spec_for(
            task,
            td,
            org=self.org,
            project=project,
            domain=domain,
            inputs=interface,
            version=version or protos.TASK_VERSION,
        )

    def launch(
        self,
        task: str,
        *,
        count: int = 1,
        labels: Mapping[str, str] | None = None,
        envs: Mapping[str, str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        project: str | None = None,
        domain: str | None = None,
        name: str | None = None,
        run_spec: run_pb2.RunSpec | None = None,
        version: str | None = None,
    ) -> list[str]:
        """Start ``count`` new runs of workload task ``task`` (its ``version``, default the latest
        deployed); returns their names. ``run_spec`` (see ``run_spec_of``) is the base spec;
        ``labels`` and ``envs`` are merged over it."""
        if task not in self.workload.tasks:
            known = ", ".join(sorted(self.workload.tasks)) or "none"
            raise ValueError(f"task {task!r} is not in the sandbox workload; known tasks: {known}")
        if version is not None and not self.catalog.get(
            project or self.workload.project, domain or self.workload.domain, task, version
        ):
            known = ", ".join(
                d.version
                for d in self.catalog.versions(
                    project or self.workload.project, domain or self.workload.domain, task
                )
            )
            raise ValueError(
                f"task {task!r} has no deployed version {version!r}; deployed: {known or 'none'}"
            )
        if name is not None and count != 1:
            raise ValueError(f"a run name ({name!r}) can only be given with count=1, not count={count}")
        project = project or self.workload.project
        domain = domain or self.workload.domain
        values = {**self.workload.task(task).inputs, **(inputs or {})}
        spec = self.task_spec(task, project, domain, version)
        if inputs and not set(inputs) <= set(self.workload.interface_inputs(task)):
            # A run given inputs no workload entry declares: its task's interface covers them too.
            spec = self.task_spec(
                task, project, domain, version, inputs={**inputs, **self.workload.interface_inputs(task)}
            )
        base = run_spec
        run_spec = run_pb2.RunSpec()
        if base is not None:
            run_spec.CopyFrom(base)
        for k, v in (labels or {}).items():
            run_spec.labels.values[k] = v
        if envs:
            merged = {kv.key: kv.value for kv in run_spec.envs.values} | dict(envs)
            del run_spec.envs.values[:]
            for k, v in merged.items():
                run_spec.envs.values.append(literals_pb2.KeyValuePair(key=k, value=v))
        names = []
        for _ in range(count):
            run_name = name or self.new_name(self.org, project, domain)
            self.create(
                org=self.org,
                project=project,
                domain=domain,
                name=run_name,
                task_spec=spec,
                inputs=literals.inputs_from_values(values),
                run_spec=run_spec,
                created_by="sandbox-workload",
            )
            names.append(run_name)
        return names

    def create(
        self,
        *,
        org: str,
        project: str,
        domain: str,
        name: str,
        task_spec: task_definition_pb2.TaskSpec,
        inputs: common_pb2.Inputs,
        run_spec: run_pb2.RunSpec,
        created_by: str = "sandbox",
    ) -> RunRec:
        """Create a run and start executing it. The caller has checked the name is free and,
        for a rerun, that ``run_spec.relation.related_to`` exists in the store."""
        now = self.clock()
        if self.profile.stamps_run_spec:  # only when unset: a rerun keeps its source's
            stamped = run_pb2.RunSpec()
            stamped.CopyFrom(run_spec)  # the caller's may be shared by a batch
            run_spec = stamped
            if not run_spec.HasField("run_start_time"):
                run_spec.run_start_time.FromDatetime(now)
            if not run_spec.raw_data_storage.raw_data_prefix:
                run_spec.raw_data_storage.raw_data_prefix = (
                    f"sandbox://raw-data/{org}/{project}/{domain}/{name}"
                )
        task = task_spec.task_template.id.name or task_spec.short_name or "task"
        lineage = f"{project}/{domain}/{name}"
        relation_type = 0
        related_to = None
        source_action = None
        source: RunRec | None = None
        if run_spec.HasField("relation") and run_spec.relation.HasField("related_to"):
            rel = run_spec.relation.related_to
            related_to = (rel.org, rel.project, rel.domain, rel.name)
            relation_type = int(run_spec.relation.relation_type)
            source = self.store.runs.get(related_to)
            if source is not None:
                lineage = source.lineage
                source_action = _source_action(source, task)
        a0 = ActionRec(
            name="a0",
            parent="",
            task=task,
            task_spec=task_spec,
            phase=QUEUED,
            created_at=now,
            updated_at=now,
            inputs=inputs,
        )
        r = RunRec(
            org=org,
            project=project,
            domain=domain,
            name=name,
            task=task,
            run_spec=run_spec,
            created_at=now,
            updated_at=now,
            lineage=lineage,
            relation_type=relation_type,
            related_to=related_to,
            source_action=source_action,
            created_by=created_by,
            actions={"a0": a0},
        )
        if (
            source is not None
            and relation_type == common_run_pb2.RELATION_TYPE_RECOVER
            and self.profile.recover_acts  # open-source Flyte stores RECOVER and runs everything
        ):
            forced = set(run_spec.recover.force_rerun_actions)
            for sa in source.actions.values():
                if sa.name != "a0" and sa.phase in SUCCESS_PHASES and sa.name not in forced:
                    r.actions[sa.name] = ActionRec(
                        name=sa.name,
                        parent=sa.parent,
                        task=sa.task,
                        task_spec=sa.task_spec,
                        phase=RECOVERED,
                        created_at=now,
                        updated_at=now,
                        start_time=now,
                        end_time=now,
                        inputs=sa.inputs,
                        outputs=sa.outputs,
                        recovered_from=sa.recovered_from or source.name,
                    )
        self.store.add_run(r)
        self._start(r)
        return r

    def reexecute(self, r: RunRec, inputs: common_pb2.Inputs) -> None:
        """CreateRun of ``r``'s name again on open-source Flyte: the inline inputs are
        overwritten and the root action is enqueued again (``runs/service/run_service.go``
        ``CreateRun``: ``CreateAction`` does nothing on conflict, then ``ActionsService.Enqueue``
        runs). A finished run goes back to QUEUED and executes again (a FAILED run can go back
        to RUNNING); a run still executing keeps executing."""
        self.reexecutions += 1
        a0 = r.root
        a0.inputs = inputs
        if r.key in self._runs:  # still executing: it keeps executing
            return
        now = self.clock()
        r.actions = {"a0": a0}
        a0.phase = QUEUED
        a0.start_time = a0.end_time = None
        a0.error = None
        a0.abort_reason = None
        a0.outputs = None
        a0.finished_phase = None
        self.store.touch(r, a0, now)
        self._start(r)

    # --- executing -----------------------------------------------------------------------

    def _start(self, r: RunRec) -> None:
        if self._stopping or self._pod_refused(r):
            return
        self._runs.spawn(self._execute(r), key=r.key, name=f"run-{r.name}")

    def _pod_refused(self, r: RunRec) -> bool:
        """``oss``: a label or annotation value Kubernetes refuses: the pod is never created and
        the run stays QUEUED (the profile's docstring, item 12); resources the platform does not
        have: the pod is never scheduled and the run stays QUEUED (item 17)."""
        spec = r.run_spec
        if not self.profile.validates_requests and (
            resource_problem(r.root.task_spec, self.catalog.max_resources) is not None
        ):
            return True  # item 17: more than the platform has: the pod is Unschedulable, QUEUED
        return self.profile.pod_labels_checked and (
            invalid_label_value(dict(spec.labels.values)) is not None
            or invalid_label_value(dict(spec.annotations.values)) is not None
        )

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds * self.time_scale))

    def _set(self, r: RunRec, a: ActionRec, phase: int) -> None:
        if a.parent and a.phase == ABORTED and a.abort_reason is not None:
            return  # a child aborted by AbortAction (oss): its row stays ABORTED
        now = self.clock()
        a.phase = phase
        if phase == RUNNING and a.start_time is None:
            a.start_time = now
        if phase in TERMINAL_PHASES:
            a.start_time = a.start_time or now
            a.end_time = now
        self.store.touch(r, a, now)

    def _definition(self, a: ActionRec) -> TaskDef:
        """How the execution of action ``a`` behaves: the version of its task it runs."""
        return self.catalog.definition(a.task, a.task_spec.task_template.id.version)

    async def _execute(self, r: RunRec) -> None:
        td = self._definition(r.root)
        a0 = r.root
        if a0.phase == QUEUED:
            await self._sleep(td.queued)
            self._set(r, a0, RUNNING)
        for i, child_task in enumerate(td.children, start=1):
            name = f"a{i}"
            act = r.actions.get(name)
            if act is not None and act.phase in SUCCESS_PHASES:
                continue
            if act is None:
                now = self.clock()
                spec = self.task_spec(child_task, r.project, r.domain)
                child_td = self.catalog.definition(child_task, spec.task_template.id.version)
                act = ActionRec(
                    name=name,
                    parent="a0",
                    task=child_task,
                    task_spec=spec,
                    phase=QUEUED,
                    created_at=now,
                    updated_at=now,
                    inputs=literals.inputs_from_values(child_td.inputs),
                )
                r.actions[name] = act
                self.store.touch(r, act, now)
            child_td = self._definition(act)
            if act.phase == QUEUED:
                await self._sleep(child_td.queued)
                self._set(r, act, RUNNING)
            await self._sleep(child_td.duration)
            if not await self._complete(r, act, child_td):
                a0.error = act.error
                if act.error is not None and self.profile.root_error_in_details:
                    # Open-source RunDetails shows the root's own error: the one it raised
                    # when its child failed, not the child's error copied.
                    a0.error = ErrorRec(
                        kind=act.error.kind,
                        code=act.error.code,
                        message=f"child action {act.name} ({act.task}) failed: {act.error.message}",
                    )
                self._set(r, a0, act.phase)
                return
        await self._sleep(td.duration)
        await self._complete(r, a0, td)

    async def _complete(self, r: RunRec, a: ActionRec, td: TaskDef) -> bool:
        """``_finish``, except that a ``hang`` outcome never returns (until the run is aborted
        or the sandbox stops, which cancels this task)."""
        finished = self._finish(r, a, td)
        if finished is None:
            await asyncio.Future()  # hang: stay RUNNING
        return bool(finished)

    def _finish(self, r: RunRec, a: ActionRec, td: TaskDef) -> bool | None:
        """Decide and record the outcome of one execution; True when it succeeded, None when
        it hangs (stays RUNNING). An execution that started inside an outage fails with the
        outage's error and is not counted as one of the task's (its behaviour goes on after)."""
        outage = self._outage_error(a)
        if outage is not None:
            a.error = outage
            self._set(r, a, FAILED)
            return False
        behaviour, error = td.rule_for(spec_facts(r.run_spec, td))
        k = self.store.next_count(r.lineage, a.task)
        outcome = behaviour[min(max(k, 1), len(behaviour)) - 1]
        oom = _oom_error(a, td)
        if oom is not None:
            a.error = oom
            self._set(r, a, FAILED)
            return False
        if outcome == "hang":
            return None
        if outcome == "succeed":
            a.outputs = literals.outputs_from_values(self._outputs(td))
            self._set(r, a, SUCCEEDED)
            return True
        spec = error if outcome == "fail" else td.timeout_error
        fault = spec.gpu_fault.model_dump() if spec.gpu_fault is not None else None
        a.error = ErrorRec(kind=spec.kind, code=spec.code, message=spec.message, gpu_fault=fault)
        self._set(r, a, FAILED if outcome == "fail" else TIMED_OUT)
        return False

    def _outputs(self, td: TaskDef) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in td.outputs.items():
            if isinstance(v, Mapping) and set(v) == {"random"}:
                lo, hi = v["random"]
                out[k] = self.rng.uniform(float(lo), float(hi))
            else:
                out[k] = v
        return out

    def abort_finished(self, r: RunRec, reason: str) -> None:
        """Abort a finished run as open-source Flyte does (no phase condition): the root turns
        ABORTED, ``updated_at`` moves, ``end_time`` stays, the last attempt keeps its phase."""
        a0 = r.root
        if a0.phase != ABORTED:
            a0.finished_phase = a0.finished_phase or a0.phase
        a0.phase = ABORTED
        a0.abort_reason = reason
        self.store.touch(r, a0, self.clock())

    def abort_action(self, r: RunRec, a: ActionRec, reason: str) -> None:
        """AbortAction of child action ``a`` on open-source Flyte: no phase condition (the
        profile's docstring, item 18): the action turns ABORTED whatever its phase, its end time
        kept when it had one, its last attempt keeping the phase it finished in. The sandbox
        writes no later phase over it; what the parent task does then is its own (not modelled:
        it goes on as its workload says)."""
        now = self.clock()
        if a.phase in TERMINAL_PHASES and a.phase != ABORTED:
            a.finished_phase = a.finished_phase or a.phase
        a.phase = ABORTED
        a.abort_reason = reason
        a.start_time = a.start_time or now
        a.end_time = a.end_time or now
        self.store.touch(r, a, now)

    def abort(self, r: RunRec, reason: str) -> None:
        """Abort a run: its task stops and every non-terminal action becomes ABORTED."""
        self._runs.cancel(r.key)
        for a in r.actions.values():
            if a.phase not in TERMINAL_PHASES:
                a.abort_reason = reason
                self._set(r, a, ABORTED)


_SCOPES = {
    "global": run_pb2.CacheLookupScope.CACHE_LOOKUP_SCOPE_GLOBAL,
    "project-domain": run_pb2.CacheLookupScope.CACHE_LOOKUP_SCOPE_PROJECT_DOMAIN,
}


# What the flyte SDK (2.12.1) always puts in a run's env when the caller does not: its
# logger's level (WARNING), the log format and the user logger's level (INFO).
_SDK_ENV_DEFAULTS = {"LOG_LEVEL": "30", "LOG_FORMAT": "console", "USER_LOG_LEVEL": "20"}


def run_spec_of(batch: RunBatch) -> run_pb2.RunSpec:
    """The RunSpec of a workload run, field for field as the flyte SDK builds it for
    ``with_runcontext(env_vars=, labels=, annotations=, queue=, interruptible=,
    cache_lookup_scope=, service_account=, overwrite_cache=, max_action_concurrency=).run(...)``
    (``_run.py`` ``_apply_overrides`` with no base spec) and the service stores it, including
    the ``LOG_LEVEL`` / ``LOG_FORMAT`` / ``USER_LOG_LEVEL`` the SDK adds when ``env`` lacks them."""
    spec = run_pb2.RunSpec(
        overwrite_cache=batch.overwrite_cache,
        queue=batch.queue,
        max_action_concurrency=batch.max_action_concurrency,
    )
    for k, v in batch.labels.items():
        spec.labels.values[k] = v
    for k, v in batch.annotations.items():
        spec.annotations.values[k] = v
    env = dict(batch.envs)
    for k, v in _SDK_ENV_DEFAULTS.items():
        env.setdefault(k, v)
    for k, v in env.items():
        spec.envs.values.append(literals_pb2.KeyValuePair(key=k, value=v))
    if batch.interruptible is not None:
        spec.interruptible.value = batch.interruptible
    if batch.service_account:
        spec.security_context.run_as.k8s_service_account = batch.service_account
    if batch.overwrite_cache:
        spec.cache_config.overwrite_cache = True
    if batch.cache_lookup_scope is not None:
        spec.cache_config.cache_lookup_scope = _SCOPES[batch.cache_lookup_scope]
    return spec


def spec_facts(spec: run_pb2.RunSpec, task: TaskDef) -> RunSpecFacts:
    """What a task's ``when`` rules read from a run's RunSpec; an unset ``interruptible`` is
    the task's own setting."""
    return RunSpecFacts(
        queue=spec.queue,
        interruptible=spec.interruptible.value if spec.HasField("interruptible") else task.interruptible,
        service_account=spec.security_context.run_as.k8s_service_account,
        labels=dict(spec.labels.values),
        env={kv.key: kv.value for kv in spec.envs.values},
    )


def _oom_error(a: ActionRec, td: TaskDef) -> ErrorRec | None:
    """The OOMKilled error of an execution whose memory request is below the task's
    ``oom_below`` (None: it has enough memory, or the task needs no minimum)."""
    if td.oom_below is None:
        return None
    requests, limits = spec_resources(a.task_spec)
    request = requests.get("memory")
    try:
        enough = request is not None and parse_quantity(request) >= parse_quantity(td.oom_below)
    except ValueError:
        enough = False
    if enough:
        return None
    limit = limits.get("memory", request or "none")
    return ErrorRec(
        kind="USER",
        code="OOMKilled",
        message=(
            f"[OOMKilled] the container of {a.task} exceeded its memory limit ({limit}; memory request "
            f"{request or 'none'}) and was killed by the kernel; this task needs at least {td.oom_below}"
        ),
    )


def _source_action(source: RunRec, task: str) -> str:
    """Which action of ``source`` a rerun running ``task`` was sourced from: ``a0`` when the
    tasks match, else the first (preferably failed) action running that task. CreateRun does
    not carry the action name, so the sandbox infers it from the task."""
    if source.task == task:
        return "a0"
    same = [a for a in source.actions.values() if a.task == task]
    failed = [a for a in same if a.phase not in SUCCESS_PHASES]
    pick = (failed or same or [source.root])[0]
    return pick.name
