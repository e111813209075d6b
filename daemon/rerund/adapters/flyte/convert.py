"""Between flyteidl2 messages and rerund's values: timestamps, phases, run summaries, the
RunSpec view, error details, resources, output literals, and the ``flyte.with_runcontext``
keyword arguments of a rerun or a relaunch. Pure functions of their arguments (no RPC, no
clock, no SDK client)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rerund.core.model import ErrorInfo, GpuFault, RunSpecView
from rerund.core.resources import RESOURCE_NAMES, ResourcesView
from rerund.core.runs import RelaunchRequest, RerunRequest, RunRef, RunSummary
from rerund.core.runspec import SDK_ENV_KEYS
from rerund.sizedcache import ENTRY_BYTES, SizedCache

__all__ = [
    "created_and_changed",
    "decode_literal",
    "error_info",
    "finished_before_abort",
    "flyte_resources",
    "lacking_label",
    "missing_inputs",
    "phase_name",
    "phase_value",
    "relation_of",
    "resources_view",
    "runcontext_for_relaunch",
    "runcontext_for_rerun",
    "shared_spec_view",
    "spec_view",
    "summary_of",
    "task_name",
    "timestamp",
    "with_labels",
]

log = logging.getLogger("rerund.flyte")


def timestamp(msg: Any, field: str) -> datetime | None:
    if not msg.HasField(field):
        return None
    ts = getattr(msg, field)
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


@functools.cache
def _phase_names() -> dict[int, str]:
    from flyteidl2.common import phase_pb2

    return {number: str(name).removeprefix("ACTION_PHASE_") for name, number in phase_pb2.ActionPhase.items()}


def phase_name(value: int) -> str:
    return _phase_names().get(value, "UNSPECIFIED")


def task_name(metadata: Any) -> str:
    if metadata.HasField("task"):
        return str(metadata.task.id.name or metadata.task.short_name)
    return ""


def relation_of(holder: Any) -> RunRef | None:
    """The run a ``RunSpec`` (or ``ActionMetadata``) ``relation`` names; None when it has none."""
    if not holder.HasField("relation") or not holder.relation.HasField("related_to"):
        return None
    rel = holder.relation.related_to
    return RunRef(rel.project, rel.domain, rel.name)


def summary_of(run: Any) -> RunSummary:
    action = run.action
    rid = action.id.run
    # A listing may carry the root action's relation (the sandbox's union profile does); when it
    # does not, the relation stays unknown until GetRunDetails reads the RunSpec.
    relation = relation_of(action.metadata)
    return RunSummary(
        ref=RunRef(rid.project, rid.domain, rid.name),
        phase=phase_name(action.status.phase),
        task=task_name(action.metadata),
        created_at=timestamp(action.status, "start_time"),
        ended_at=timestamp(action.status, "end_time"),
        labels=dict(run.labels),
        relation=relation,
        relation_known=relation is not None,
    )


_SCOPE_NAMES = {1: "global", 2: "project-domain"}  # flyteidl2 task.CacheLookupScope


def spec_view(spec: Any) -> RunSpecView:
    """A flyteidl2 ``task.RunSpec`` as the ``RunSpecView`` the rerun invariant is stated over."""
    return RunSpecView(
        env={kv.key: kv.value for kv in spec.envs.values},
        labels=dict(spec.labels.values),
        annotations=dict(spec.annotations.values),
        queue=spec.queue,
        interruptible=spec.interruptible.value if spec.HasField("interruptible") else None,
        service_account=spec.security_context.run_as.k8s_service_account,
        overwrite_cache=bool(spec.overwrite_cache or spec.cache_config.overwrite_cache),
        cache_lookup_scope=_SCOPE_NAMES.get(int(spec.cache_config.cache_lookup_scope), ""),  # type: ignore[arg-type]
        max_action_concurrency=spec.max_action_concurrency,
    )


# A storm's failures mostly share one RunSpec and one task's resources: the facts of the failures
# still owed (thousands, in a storm deferred by a budget) hold a view each, so equal views are
# built once and shared (frozen values, keyed by the message's deterministic bytes). About 2.5 KiB
# less per owed failure. A view evicted here is not freed while facts hold it: the cache only
# finds equal ones, so it needs the recent ones. Bounded in bytes (a RunSpec's env can be of any
# size): each entry is estimated at its key's bytes three times over (the key, and the view's
# strings and dicts) plus ``ENTRY_BYTES``; 1 MiB (2 MiB until round 7: its pydantic views hold
# about twice the estimate, and the soak's RSS grew with them).
_SHARED_VIEW_BYTES = 1 * 1024 * 1024


def _view_bytes(key: tuple[Any, bytes], view: object) -> int:
    return ENTRY_BYTES + 3 * len(key[1]) + 500


SPEC_VIEWS: SizedCache[tuple[Any, bytes], RunSpecView] = SizedCache(
    "spec_views", _SHARED_VIEW_BYTES, _view_bytes
)
RESOURCES_VIEWS: SizedCache[tuple[Any, bytes], ResourcesView] = SizedCache(
    "resources_views", _SHARED_VIEW_BYTES, _view_bytes
)


def _spec_view_of(kind: Any, data: bytes) -> RunSpecView:
    return SPEC_VIEWS.get_or_put((kind, data), lambda: spec_view(kind.FromString(data)))


def _resources_view_of(kind: Any, data: bytes) -> ResourcesView:
    return RESOURCES_VIEWS.get_or_put((kind, data), lambda: _resources_of(kind.FromString(data)))


def shared_spec_view(spec: Any) -> RunSpecView:
    """``spec_view(spec)``, the same object for an equal ``spec``."""
    kind: Any = type(spec)  # a generated message class (hashable)
    return _spec_view_of(kind, spec.SerializeToString(deterministic=True))


def error_info(info: Any) -> ErrorInfo:
    """A flyteidl2 ``workflow.ErrorInfo`` (with its ``gpu_fault``) as the core's ``ErrorInfo``."""
    from flyteidl2.core import execution_pb2
    from flyteidl2.workflow import run_definition_pb2

    kind = run_definition_pb2.ErrorInfo.Kind.Name(info.kind).removeprefix("KIND_")
    fault = None
    if info.HasField("gpu_fault"):
        gf = info.gpu_fault
        fault = GpuFault(
            kind=execution_pb2.GpuFault.Kind.Name(gf.kind).removeprefix("KIND_"),  # type: ignore[arg-type]
            code=gf.code,
            name=gf.name,
            severity=execution_pb2.GpuFault.Severity.Name(gf.severity).removeprefix("SEVERITY_"),  # type: ignore[arg-type]
        )
    return ErrorInfo(
        kind=kind if kind in ("USER", "SYSTEM") else "UNSPECIFIED",
        code=info.code,
        message=info.message,
        gpu_fault=fault,
    )


def runcontext_for_rerun(request: RerunRequest, source: RunSpecView) -> dict[str, Any]:
    """The ``flyte.with_runcontext`` keyword arguments that make the SDK's rerun the source run
    changed only by ``request`` (the invariant of ``rerund.core.runspec``).

    The SDK's rerun path (``_run.py`` ``_build_env_dict`` / ``_apply_overrides``) would otherwise
    set ``LOG_LEVEL`` / ``USER_LOG_LEVEL`` from this process unless ``env_vars`` gives them,
    ``LOG_FORMAT`` to ``log_format`` always, and the cache lookup scope to ``"global"``: so the
    source's values are passed through explicitly, the policy's env winning. ``_F_SYS_PATH`` is
    kept out by ``flyte.init(sync_local_sys_paths=False)`` (``connect``).
    """
    ov = request.overrides
    env = {k: source.env[k] for k in SDK_ENV_KEYS if k in source.env}
    env.update(request.env)
    kwargs: dict[str, Any] = {
        "name": request.name,
        "env_vars": env,
        "labels": dict(request.labels),
        "project": request.source.project,
        "domain": request.source.domain,
        "cache_lookup_scope": source.cache_lookup_scope or None,
    }
    if "LOG_FORMAT" in env:
        kwargs["log_format"] = env["LOG_FORMAT"]
    if ov.annotations:
        kwargs["annotations"] = dict(ov.annotations)
    for key in ("queue", "interruptible", "service_account", "overwrite_cache", "max_action_concurrency"):
        value = getattr(ov, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


def with_labels(
    run: RunSummary, labels: Mapping[str, str], relations: Mapping[RunRef, RunRef | None]
) -> RunSummary:
    """``run`` with the ``labels`` (and the relation, when known) its GetRunDetails read."""
    return replace(
        run,
        labels=dict(labels),
        relation=run.relation if run.relation_known else relations.get(run.ref),
        relation_known=run.relation_known or run.ref in relations,
    )


def finished_before_abort(root: Any) -> str | None:
    """The phase a run had finished in before an operator aborted it, or None.

    Open-source AbortRun has no phase condition: it turns a finished root ABORTED while its
    last attempt (built from the execution's own events) keeps the phase it ended in."""
    if phase_name(root.status.phase) != "ABORTED" or not root.attempts:
        return None
    last = max(root.attempts, key=lambda a: a.attempt)
    phase = phase_name(last.phase)
    return phase if phase in ("SUCCEEDED", "FAILED", "TIMED_OUT", "RECOVERED") else None


def runcontext_for_relaunch(request: RelaunchRequest, source: RunSpecView) -> dict[str, Any]:
    """The ``flyte.with_runcontext`` keyword arguments of a relaunch: a fresh RunSpec that is the
    source's, changed as a rerun would be (``rerund.core.runspec``): env and labels merged
    over the source's, annotations too, the policy's RunSpec keys over the source's values.
    A fresh run's spec starts empty, so every source value is passed explicitly."""
    ov = request.overrides
    env = {**source.env, **request.env}
    kwargs: dict[str, Any] = {
        "name": request.name,
        "env_vars": env,
        "labels": {**source.labels, **request.labels},
        "annotations": {**source.annotations, **ov.annotations},
        "project": request.source.project,
        "domain": request.source.domain,
        "cache_lookup_scope": source.cache_lookup_scope or None,
    }
    if "LOG_FORMAT" in env:
        kwargs["log_format"] = env["LOG_FORMAT"]
    if source.queue:
        kwargs["queue"] = source.queue
    if source.interruptible is not None:
        kwargs["interruptible"] = source.interruptible
    if source.service_account:
        kwargs["service_account"] = source.service_account
    if source.overwrite_cache:
        kwargs["overwrite_cache"] = True
    if source.max_action_concurrency:
        kwargs["max_action_concurrency"] = source.max_action_concurrency
    for key in ("queue", "interruptible", "service_account", "overwrite_cache", "max_action_concurrency"):
        value = getattr(ov, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


_RESOURCE_KEYS = {1: "cpu", 2: "gpu", 3: "memory", 4: "storage", 5: "ephemeral_storage"}  # core.Resources


def resources_view(template: Any) -> ResourcesView | None:
    """The container requests and limits of a flyteidl2 ``TaskTemplate`` (None: no container)."""
    if not template.HasField("container"):
        return None
    res = template.container.resources
    kind: Any = type(res)  # a generated message class (hashable)
    return _resources_view_of(kind, res.SerializeToString(deterministic=True))


def _resources_of(res: Any) -> ResourcesView:
    def entries(items: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in items:
            name = _RESOURCE_KEYS.get(int(e.name))
            if name in RESOURCE_NAMES:
                out[name] = e.value
        return out

    return ResourcesView.model_validate({"requests": entries(res.requests), "limits": entries(res.limits)})


def flyte_resources(view: ResourcesView) -> Any:
    """``flyte.Resources`` asking for exactly ``view`` (cpu and memory as (request, limit) when
    both are set; a limit without a request is requested too; gpu and disk as requests)."""
    import flyte

    def pair(name: Any) -> Any:
        request, limit = view.requests.get(name), view.limits.get(name)
        if request is not None and limit is not None:
            return (request, limit)
        return request if request is not None else limit

    gpu = view.requests.get("gpu") or view.limits.get("gpu")
    return flyte.Resources(
        cpu=pair("cpu"),
        memory=pair("memory"),
        gpu=int(gpu) if gpu is not None else None,
        disk=view.requests.get("ephemeral_storage") or view.limits.get("ephemeral_storage"),
    )


def decode_literal(lit: Any) -> Any:
    """A flyteidl2 ``Literal`` as a plain Python value, for comparing outputs.

    Primitives become ``int``/``float``/``str``/``bool`` (datetimes and durations their
    ISO-8601 / ``"1.5s"`` text), ``none`` becomes None, collections lists, maps dicts, unions
    their value, msgpack binaries (the SDK's dicts and dataclasses) their unpacked value,
    generic structs dicts. Data that lives elsewhere (blobs, structured datasets, offloaded
    literals) becomes ``{"uri": ...}``: a different location compares as a difference, so list
    such outputs under ``compare.ignore``.
    """
    kind = lit.WhichOneof("value")
    if kind == "collection":
        return [decode_literal(v) for v in lit.collection.literals]
    if kind == "map":
        return {k: decode_literal(v) for k, v in sorted(lit.map.literals.items())}
    if kind == "offloaded_metadata":
        return {"uri": lit.offloaded_metadata.uri}
    if kind != "scalar":
        return None
    scalar = lit.scalar
    sk = scalar.WhichOneof("value")
    if sk == "primitive":
        p = scalar.primitive
        pk = p.WhichOneof("value")
        if pk == "integer":
            return int(p.integer)
        if pk == "float_value":
            return float(p.float_value)
        if pk == "string_value":
            return str(p.string_value)
        if pk == "boolean":
            return bool(p.boolean)
        if pk == "datetime":
            return str(p.datetime.ToJsonString())
        if pk == "duration":
            return str(p.duration.ToJsonString())
        return None
    if sk == "none_type":
        return None
    if sk == "union":
        return decode_literal(scalar.union.value)
    if sk == "binary":
        if scalar.binary.tag == "msgpack":
            try:
                import msgpack  # type: ignore[import-untyped,unused-ignore]

                return msgpack.unpackb(scalar.binary.value)
            except Exception as exc:
                log.debug("a msgpack output did not unpack (%s); compared as bytes", exc)
        return {"binary": scalar.binary.value.hex(), "tag": scalar.binary.tag}
    if sk == "generic":
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(scalar.generic)
    if sk == "blob":
        return {"uri": scalar.blob.uri}
    if sk == "structured_dataset":
        return {"uri": scalar.structured_dataset.uri}
    if sk == "schema":
        return {"uri": scalar.schema.uri}
    if sk == "error":
        return {"error": scalar.error.message}
    return None


def created_and_changed(since: datetime, changed_since: datetime | None) -> list[Any]:
    """The ListRuns time filters of ``list_reruns``: created at or after ``since`` and, when
    given, updated at or after ``changed_since`` (both are columns open-source Flyte filters)."""
    from flyteidl2.common import list_pb2

    at_or_after = list_pb2.Filter.GREATER_THAN_OR_EQUAL
    times = [
        list_pb2.Filter(function=at_or_after, field="created_at", values=[since.astimezone(UTC).isoformat()])
    ]
    if changed_since is not None:
        times.append(
            list_pb2.Filter(
                function=at_or_after, field="updated_at", values=[changed_since.astimezone(UTC).isoformat()]
            )
        )
    return times


def lacking_label(label: str) -> Any:
    from flyteidl2.common import list_pb2

    return list_pb2.Filter(function=list_pb2.Filter.NOT_EXISTS, field=f"labels.{label}")


def phase_value(name: str) -> str:
    from flyteidl2.common import phase_pb2

    return str(phase_pb2.ActionPhase.Value(f"ACTION_PHASE_{name}"))


def missing_inputs(spec: Any, present: Iterable[str], given: Iterable[str]) -> list[str]:
    """The inputs a flyteidl2 ``TaskSpec`` ``spec`` needs (declared by its interface, without a
    default) that neither the source's inputs as read (``present``) nor the request (``given``)
    supply, sorted. Open-source Flyte answers a missing input blob with empty inputs, so a rerun
    that went on would run the task on its defaults (or not at all)."""
    declared = [v.key for v in spec.task_template.interface.inputs.variables]
    defaults = {p.name for p in spec.default_inputs}
    return sorted(set(declared) - defaults - set(present) - set(given))
