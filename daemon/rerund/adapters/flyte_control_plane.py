"""The control plane through the real flyte SDK — the only module of rerund that imports flyte.

It implements ``rerund.ports.ControlPlane``. Three facts about the SDK (2.12.1) shape
it (see FLYTE-WIRE.md):

- The SDK runs every call on its own background event loop (``flyte.syncify``). Our raw RPCs
  are wrapped with the same ``syncify`` so they share that loop and its HTTP client; ``.aio()``
  hops to it and back, and carries our ``contextvars`` along.
- ``rerun()``, ``RunDetails.get`` and ``first_failure()`` look the source run up in the
  project/domain of the *init config*, not of ``with_runcontext(project=...)``. To serve
  several scopes from one process, every SDK call runs inside
  ``flyte._initialize.init_config_context`` with the scope's project/domain.
- ``CreateRun`` errors come back as ``flyte.errors.RuntimeUserError`` codes
  (``RunAlreadyExistsError``, ``InvalidArgumentError``) or ``RuntimeSystemError``; other RPCs
  raise ``connectrpc.errors.ConnectError``. All of them are translated here into
  ``rerund.errors`` (``raise ... from exc``) so nothing above this module knows the SDK.

Connecting (``Connection``, ``connect``): an API key, client credentials (a client id and a
secret) or an external token command, a private CA — all passed to ``flyte.init`` — and an
HTTP proxy, exported to the process as ``HTTPS_PROXY``/``HTTP_PROXY`` (``http_proxy.py``: the
SDK's own ``http_proxy_url`` reaches none of its HTTP clients). The SDK fetches OAuth2
tokens, sends them, and on UNAUTHENTICATED fetches a new one and retries once, so an expiring
token never reaches rerund. What does reach rerund is a
credential the control plane refuses outright (``CredentialsError``). ``probe`` makes one
ListRuns at start so that a wrong key or CA stops the daemon with a message (``ConfigError``)
instead of failing every call. Scope ``*/*`` lists and watches the whole org (``org`` in
ListRuns and WatchRuns).

RPC cost: ``read_failure`` is GetRunDetails + ListActions + GetActionDetails (2 when the root
action's error is already in the run details); ``create_rerun`` is the SDK's rerun path, whose
reads of the source (GetRunDetails; GetActionDetails when one action is rerun) are answered with
the ones ``read_failure`` or ``read_spec`` made of it (``_ReuseReads``: a run that has ended does
not change), so after ``read_failure`` it is SelectCluster, GetActionData, UploadInputs and
CreateRun; listings page by 100 (at most 200) and watching is one stream per scope. For
reproduction checks, ``find_latest_run`` is one ListRuns (limit 1) and ``read_outputs`` is
SelectCluster + DataProxy GetActionData, whose literals are decoded here (``decode_literal``)
into plain Python values without the SDK's type engine, so no task code or type is needed.

Two backends (``backend: union | oss | auto``). Open-source Flyte 2 filters ListRuns only on a
fixed column list (no ``labels.<k>``, no EXISTS / NOT_EXISTS / VALUE_NOT_IN) and answers a
CreateRun of an existing name with the existing run as a success. ``auto`` finds out with the
first label-filtered ListRuns (INVALID_ARGUMENT ``invalid filter field`` -> oss, logged once).
On oss:

- ``list_reruns`` lists every run created in the window (ListRuns by ``created_at``, pages of
  200) and reads each run's labels once from ``RunDetails.run_spec.labels`` (GetRunDetails,
  cached for the life of the process: labels never change); reruns are the runs carrying
  ``rerund-policy``. Cost: ceil(runs in window / 200) ListRuns per pass, plus one GetRunDetails
  per run the first time it is listed (a failure already read costs nothing more).
- ``create_rerun`` looks before creating: GetRunDetails of the rerun's deterministic name;
  found -> ``AlreadyExistsError`` (what ALREADY_EXISTS means on Union). Two replicas can both
  look and both create in the same moment: there is still one run (the name is
  deterministic), and the create carries a random ``rerund-issue`` annotation that a
  GetRunDetails after it compares, so the one whose run it is not records "already issued". The
  look is made again right before the CreateRun goes out (after the SDK's SelectCluster,
  GetActionData and UploadInputs, which under a storm take long enough for another replica's
  run to be created and finish): found -> ``AlreadyExistsError``, no CreateRun. Three RPCs more
  per rerun. (The real service enqueues the run again on the second CreateRun: it executes
  again; looking first, and again last, keeps that to creates within one GetRunDetails of each
  other, which meet a run still executing.) GetRunDetails answers NOT_FOUND for any
  database error, so absence is confirmed by a ListRuns on ``run_name`` (one RPC more; its
  database errors are INTERNAL, transient) before creating.
- ``find_latest_run`` with labels lists the newest runs of the task in the phase (pages of 50,
  at most 200 candidates) and reads their labels (cached) until one matches.

On both: a phase filter is EQUAL with one value or VALUE_IN with several (what open-source
Flyte's SQL can take); an INTERNAL answer that repeats for the same request
(``_INTERNAL_REPEATS`` times in a row) becomes ``PermanentControlPlaneError``; a FAILED run whose
error details have not arrived yet is reported with ``error_pending``; a run an operator
aborted after it had finished is reported with ``finished_phase``.

Relaunches (``rerund.ports.Deployments``) go through the SDK's public path for running a
deployed task: ``flyte.remote.Task.get(name, version=... | auto_version="latest")`` (ListTasks
for the latest, GetTaskDetails), ``.override(resources=...)`` (a full replacement of the
container's resources, so every resource of the request is passed; the task's accelerator and
shared memory are kept), the source's inputs from ``Run.get(name).inputs()`` (GetRunDetails,
answered with ``read_failure``'s like the rerun path's; SelectCluster, GetActionData), then
``flyte.with_runcontext(name=..., labels=...).run(task, **inputs)`` (SelectCluster,
UploadInputs, CreateRun). ``latest_task_version`` is one ListTasks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import email.utils
import functools
import logging
import os
import signal
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from rerund.adapters.http_proxy import export_http_proxy
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.model import ErrorInfo, GpuFault, RunSpecView
from rerund.core.redact import redact_url
from rerund.core.resources import RESOURCE_NAMES, ResourcesView
from rerund.core.runs import (
    LABEL_POLICY,
    LABEL_REPRO,
    FailureFacts,
    RelaunchRequest,
    RerunRequest,
    RunRef,
    RunSummary,
)
from rerund.core.runspec import SDK_ENV_KEYS
from rerund.errors import (
    AlreadyExistsError,
    ConfigError,
    ControlPlaneError,
    CredentialsError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)
from rerund.ports import RpcGate

__all__ = [
    "BACKENDS",
    "Connection",
    "FlyteControlPlane",
    "decode_literal",
    "error_info",
    "resources_view",
    "run_on_sdk_loop",
    "runcontext_for_relaunch",
    "runcontext_for_rerun",
    "spec_view",
    "translate_error",
]

# A daemon must not phone home on its users' behalf: the SDK's error telemetry stays off unless
# the operator sets FLYTE_DISABLE_TELEMETRY=false explicitly.
os.environ.setdefault("FLYTE_DISABLE_TELEMETRY", "true")

log = logging.getLogger("rerund.flyte")


class _NoTokenEndpointErrors(logging.Filter):
    """The SDK logs an ERROR line for every refused token request before raising; rerund turns
    the raised error into ``CredentialsError`` and reports it once a minute, not per call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.module != "_token_client"


logging.getLogger("flyte").addFilter(_NoTokenEndpointErrors())

_ORG = ("*", "*")

_TRANSIENT_CODES = {
    "unavailable",
    "deadline_exceeded",
    "internal",
    "unknown",
    "resource_exhausted",
    "aborted",
}
_FAILED_PHASE_VALUES = ("6", "7", "8")  # FAILED, ABORTED, TIMED_OUT
# oss: a random mark on each create (an annotation), so an answer with another process's run is
# recognised
ANNOTATION_ISSUER = "rerund-issue"
_MAX_PAGE = 200  # open-source Flyte refuses larger pages (runs/repository/impl/requests.go)
_INTERNAL_REPEATS = 3  # INTERNAL this many times in a row for one request: permanent
_LABEL_CACHE = 100_000  # runs whose labels are remembered (oss: labels are read per run)
# Runs whose last ``read_failure`` answers are kept for the SDK's rerun path (``_ReuseReads``):
# a failure is read, decided and, when owed now, rerun moments later; older reads are dropped.
# Bounded twice: in runs, and in bytes (``_READ_CACHE_BYTES``, the answers' serialized size). A
# kept answer holds only what the rerun path reads (``_slim_for_rerun``: no error message, abort
# reason or attempts, which are of any size), so 1,024 runs with 5 MB messages hold what 1,024
# with short ones do.
_READ_CACHE = 1024
_READ_CACHE_BYTES = 32 * 1024 * 1024
_REFERENCE_SCAN = 200  # oss: newest candidates read when looking for a labelled reference run
BACKENDS = ("auto", "union", "oss")


def translate_error(exc: BaseException, rpc: str) -> ControlPlaneError:
    """Map an SDK / Connect / transport error of ``rpc`` onto the ``rerund.errors`` tree."""
    import flyte.errors
    from connectrpc.errors import ConnectError
    from flyte.remote._client.auth.errors import AuthenticationError

    if isinstance(exc, ControlPlaneError):
        return exc
    if isinstance(exc, AuthenticationError) and not isinstance(exc.__cause__, ConnectError):
        return CredentialsError(
            f"{rpc}: the token endpoint refused rerund's credentials ({exc}); retrying with backoff",
            rpc=rpc,
            code="unauthenticated",
        )
    if isinstance(exc, ConnectError):
        code = exc.code.value
        text = f"{rpc} failed ({code}): {exc.message}"
        if code == "unauthenticated":
            return CredentialsError(text + "; retrying with backoff", rpc=rpc, code=code)
        if code == "not_found":
            return NotFoundError(text, rpc=rpc, code=code)
        if code == "already_exists":
            return AlreadyExistsError(text, rpc=rpc, code=code)
        if code in _TRANSIENT_CODES:
            return TransientControlPlaneError(text, rpc=rpc, code=code)
        return PermanentControlPlaneError(text, rpc=rpc, code=code)
    if isinstance(exc, flyte.errors.RuntimeUserError):
        code = str(getattr(exc, "code", ""))
        if code == "RunAlreadyExistsError":
            return AlreadyExistsError(f"{rpc}: {exc}", rpc=rpc, code="already_exists")
        if code == "InvalidArgumentError":
            return PermanentControlPlaneError(
                f"{rpc} rejected the request as invalid: {exc}", rpc=rpc, code="invalid_argument"
            )
        return PermanentControlPlaneError(
            f"{rpc} failed ({code}): {exc}", rpc=rpc, code=code.lower() or "user"
        )
    if isinstance(exc, flyte.errors.RuntimeSystemError):
        cause = exc.__cause__
        if isinstance(cause, ConnectError):
            inner = translate_error(cause, rpc)
            return type(inner)(f"{rpc}: {exc}", rpc=rpc, code=inner.code)
        code = "unavailable" if getattr(exc, "code", "") == "SystemUnavailableError" else "internal"
        return TransientControlPlaneError(f"{rpc} failed ({code}): {exc}", rpc=rpc, code=code)
    if isinstance(exc, TimeoutError):
        return TransientControlPlaneError(f"{rpc} timed out", rpc=rpc, code="deadline_exceeded")
    if isinstance(exc, ValueError | TypeError):
        return PermanentControlPlaneError(f"{rpc} cannot be done: {exc}", rpc=rpc, code="invalid_argument")
    if _is_tls_failure(exc):
        return TransientControlPlaneError(
            f"{rpc} failed: the control plane's TLS certificate is not trusted ({_tls_reason(exc)}); "
            "retrying with backoff",
            rpc=rpc,
            code="unavailable",
        )
    return TransientControlPlaneError(
        f"{rpc} failed ({type(exc).__name__}: {exc})", rpc=rpc, code="unavailable"
    )


def _is_tls_failure(exc: BaseException) -> bool:
    """A TLS verification failure: pyqwest's ``invalid peer certificate`` (RPCs) or Python's
    ``CERTIFICATE_VERIFY_FAILED`` (the SDK's token requests), anywhere in the cause chain."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        text = str(seen)
        if "invalid peer certificate" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tls_reason(exc: BaseException) -> str:
    """The certificate problem named in ``exc``'s cause chain (e.g. ``invalid peer
    certificate: UnknownIssuer``), without the request URL around it."""
    import re

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        m = re.search(r"(invalid peer certificate: \w+|certificate verify failed: [^()]+)", str(seen))
        if m:
            return m.group(1).strip()
        seen = seen.__cause__ or seen.__context__
    return "certificate verification failed"


def _ts(msg: Any, field: str) -> datetime | None:
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


def _phase_name(value: int) -> str:
    return _phase_names().get(value, "UNSPECIFIED")


def _task_name(metadata: Any) -> str:
    if metadata.HasField("task"):
        return str(metadata.task.id.name or metadata.task.short_name)
    return ""


def _relation(holder: Any) -> RunRef | None:
    """The run a ``RunSpec`` (or ``ActionMetadata``) ``relation`` names; None when it has none."""
    if not holder.HasField("relation") or not holder.relation.HasField("related_to"):
        return None
    rel = holder.relation.related_to
    return RunRef(rel.project, rel.domain, rel.name)


def _summary(run: Any) -> RunSummary:
    action = run.action
    rid = action.id.run
    # A listing may carry the root action's relation (the sandbox's union profile does); when it
    # does not, the relation stays unknown until GetRunDetails reads the RunSpec.
    relation = _relation(action.metadata)
    return RunSummary(
        ref=RunRef(rid.project, rid.domain, rid.name),
        phase=_phase_name(action.status.phase),
        task=_task_name(action.metadata),
        created_at=_ts(action.status, "start_time"),
        ended_at=_ts(action.status, "end_time"),
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


# A storm's failures mostly share one RunSpec and one task's resources: the seen-cache keeps
# the facts of up to 20,000 failures, so equal views are built once and shared (frozen values,
# keyed by the message's deterministic bytes; bounded). About 2.5 KiB less per cached failure.
@functools.lru_cache(maxsize=1024)
def _spec_view_of(kind: Any, data: bytes) -> RunSpecView:
    return spec_view(kind.FromString(data))


@functools.lru_cache(maxsize=1024)
def _resources_view_of(kind: Any, data: bytes) -> ResourcesView:
    return _resources_of(kind.FromString(data))


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


def _created_and_changed(since: datetime, changed_since: datetime | None) -> list[Any]:
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


def _refuses_labels(exc: ControlPlaneError) -> bool:
    """Whether ``exc`` is open-source Flyte refusing a label filter (INVALID_ARGUMENT
    ``invalid filter field: labels.<k>``, ``runs/repository/impl/filters.go``)."""
    return exc.code == "invalid_argument" and "invalid filter field" in str(exc)


def _with_labels(
    run: RunSummary, labels: Mapping[str, str], relations: Mapping[RunRef, RunRef | None]
) -> RunSummary:
    """``run`` with the ``labels`` (and the relation, when known) its GetRunDetails read."""
    known = run.relation_known or run.ref in relations
    return RunSummary(
        ref=run.ref,
        phase=run.phase,
        task=run.task,
        created_at=run.created_at,
        ended_at=run.ended_at,
        labels=dict(labels),
        relation=run.relation if run.relation_known else relations.get(run.ref),
        relation_known=known,
    )


def _finished_before_abort(root: Any) -> str | None:
    """The phase a run had finished in before an operator aborted it, or None.

    Open-source AbortRun has no phase condition: it turns a finished root ABORTED while its
    last attempt (built from the execution's own events) keeps the phase it ended in."""
    if _phase_name(root.status.phase) != "ABORTED" or not root.attempts:
        return None
    last = max(root.attempts, key=lambda a: a.attempt)
    phase = _phase_name(last.phase)
    return phase if phase in ("SUCCEEDED", "FAILED", "TIMED_OUT", "RECOVERED") else None


@contextlib.contextmanager
def _not_found_is_a_database_error(target: RunRef) -> Iterator[None]:
    """oss, once the look before creating ``target`` found nothing: a run read that answers
    NOT_FOUND now (the source's details, the SDK's read of the source, the mark read back after
    the create) is a run that exists: open-source Flyte's GetRunDetails answers NOT_FOUND for
    any database error. Retried (transient), never settled as refused. A project that does not
    exist stays NOT_FOUND."""
    try:
        yield
    except NotFoundError as exc:
        if "project" in str(exc).lower() and exc.rpc != "GetRunDetails":
            raise
        raise TransientControlPlaneError(
            f"CreateRun of {target}: a run read answered NOT_FOUND, which open-source Flyte also "
            f"answers for a database error; retried: {exc}",
            rpc=exc.rpc,
            code="internal",
        ) from exc


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


def _flyte_resources(view: ResourcesView) -> Any:
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


_FALLBACK_CANDIDATES = 20


def _without(label: str) -> Any:
    from flyteidl2.common import list_pb2

    return list_pb2.Filter(function=list_pb2.Filter.NOT_EXISTS, field=f"labels.{label}")


def _phase_value(name: str) -> str:
    from flyteidl2.common import phase_pb2

    return str(phase_pb2.ActionPhase.Value(f"ACTION_PHASE_{name}"))


@dataclass(frozen=True)
class Connection:
    """How to reach and authenticate to the control plane. At most one of ``api_key``,
    ``client_id``/``client_secret`` and ``auth_command`` is set (the settings check that).
    ``repr`` never shows a secret."""

    endpoint: str
    org: str
    insecure: bool = False
    api_key: str | None = field(default=None, repr=False)
    client_id: str = ""
    client_secret: str | None = field(default=None, repr=False)
    auth_command: tuple[str, ...] = ()
    ca_cert_file: Path | None = None
    http_proxy: str = ""

    @property
    def auth(self) -> str:
        """The credential in use, for messages (never its value)."""
        if self.api_key:
            return "the API key"
        if self.client_id:
            return f"client credentials of {self.client_id!r}"
        if self.auth_command:
            return f"the token from auth_command {self.auth_command[0]!r}"
        return "no credentials"


def _decode_api_key(key: str) -> tuple[str, str, str]:
    """(endpoint, client_id, client_secret) of a Union/Flyte API key; never echoes the key."""
    try:
        parts = base64.b64decode(key.encode(), validate=True).decode("utf-8").split(":", 3)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = []
    if len(parts) != 4:
        raise ConfigError(
            "the API key (FLYTE_API_KEY or api_key_file) is not a Flyte API key: expected the base64 "
            "form printed by `flyte create api-key`; the key itself is not shown"
        )
    return parts[0], parts[1], parts[2]


# -- one event loop ----------------------------------------------------------------------------

_T = TypeVar("_T")


def _use_event_loop(event_loop: str) -> None:
    """Make the SDK's background loop a uvloop loop (``event_loop`` ``uvloop``): the SDK creates
    it with ``asyncio.new_event_loop()`` when ``flyte.syncify`` is first imported, so the policy
    is set for that import only. Once the SDK is imported its loop stays what it is."""
    import sys

    if event_loop == "uvloop" and "flyte.syncify" not in sys.modules:
        import uvloop

        before = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            import flyte.syncify  # noqa: F401 - creates the SDK's loop under the policy
        finally:
            asyncio.set_event_loop_policy(before)


def run_on_sdk_loop(
    main: Callable[[], Coroutine[Any, Any, _T]],
    *,
    signals: Mapping[signal.Signals, Callable[[], None]] | None = None,
    event_loop: str = "uvloop",
) -> _T:
    """Run ``main()`` to completion on the flyte SDK's own event loop and return its result,
    blocking the calling (main) thread.

    The SDK runs every call on a background loop of its own (``flyte.syncify``); a caller on
    another loop pays two thread hand-offs per call (the request crosses to the SDK's thread
    through its self-pipe, the answer comes back through the caller's). A daemon that makes
    thousands of calls a minute runs on the SDK's loop instead: ``syncify`` sees it is already
    there and awaits each call directly. With ``event_loop`` ``uvloop`` (the default) that loop
    is uvloop's, whose scheduling and I/O cost a fraction of asyncio's own — together about a
    millisecond of CPU per rerun in a storm.

    Signal handlers can only be installed from the main thread, so ``signals`` (signal -> a
    thread-safe callable, such as ``Daemon.request_stop``) are installed here for the duration
    of the call and restored after.
    """
    _use_event_loop(event_loop)
    from flyte.syncify import syncify

    @syncify
    async def on_sdk_loop() -> tuple[_T | None, BaseException | None]:
        # SystemExit or KeyboardInterrupt raised in a task would end the loop's thread, and this
        # (main) thread would wait for an answer forever: carry them over instead.
        try:
            return await main(), None
        except (SystemExit, KeyboardInterrupt) as exc:
            return None, exc

    def forward(fn: Callable[[], None]) -> Callable[[int, Any], None]:
        return lambda _signum, _frame: fn()

    previous: dict[signal.Signals, Any] = {}
    if signals and threading.current_thread() is threading.main_thread():
        for sig, fn in signals.items():
            previous[sig] = signal.signal(sig, forward(fn))
    try:
        result, escaped = on_sdk_loop()
        if escaped is not None:
            raise escaped
        return result  # type: ignore[return-value]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- the SDK's client, tuned for a daemon --------------------------------------------------------


# What ``read_failure`` just read of a run, keyed as the SDK asks for it again.
_ReadKey = tuple[str, str, str, str, str]
_REUSABLE: contextvars.ContextVar[dict[_ReadKey, Any] | None] = contextvars.ContextVar(
    "rerund_reusable_reads", default=None
)


def _read_key(method: str, request: Any) -> _ReadKey | None:
    """The key of a GetRunDetails or GetActionDetails request: (method, project, domain, run,
    action); None for any other RPC."""
    if method == "GetRunDetails":
        run = request.run_id
        return (method, run.project, run.domain, run.name, "")
    if method == "GetActionDetails":
        action = request.action_id
        return (method, action.run.project, action.run.domain, action.run.name, action.name)
    return None


def _slim_for_rerun(answer: Any) -> None:
    """Clear, in place, what the SDK's rerun path never reads of a GetRunDetails or
    GetActionDetails answer and what can be of any size: error messages, abort reasons and the
    attempts (each with its own error, logs and cluster events). It reads the RunSpec, the
    action's id and its task spec (``flyte._run``'s rerun)."""
    details = answer.details
    action = details.action if details.DESCRIPTOR.name == "RunDetails" else details
    action.ClearField("error_info")
    action.ClearField("abort_info")
    action.ClearField("attempts")


@contextmanager
def _reusing(reads: dict[_ReadKey, Any] | None) -> Iterator[None]:
    """Within: ``_ReuseReads`` answers the SDK's reads in ``reads`` (each once)."""
    token = _REUSABLE.set(reads or None)
    try:
        yield
    finally:
        _REUSABLE.reset(token)


# oss: the GetRunDetails of the run a create is about to make, sent again right before its
# CreateRun goes out (``_ReuseReads``); None outside an oss create.
_LOOK_AGAIN: contextvars.ContextVar[Any | None] = contextvars.ContextVar("rerund_look_again", default=None)


@contextmanager
def _looking_again(request: Any) -> Iterator[None]:
    """Within: the CreateRun the SDK sends is preceded by ``request`` (a GetRunDetails of the
    run to create); when it finds the run, the CreateRun is not sent (ALREADY_EXISTS)."""
    token = _LOOK_AGAIN.set(request)
    try:
        yield
    finally:
        _LOOK_AGAIN.reset(token)


class _ReuseReads:
    """A connectrpc unary interceptor, outermost in the SDK's chain. The SDK's rerun path begins
    by reading the source run (GetRunDetails, and GetActionDetails when one action is rerun),
    which ``read_failure`` read moments before to decide. What it reads there never changes
    once the run has ended (its RunSpec, its task spec, its identifiers), so inside
    ``_reusing(reads)`` such a request is answered with that read instead of sent again:
    one RPC less per rerun on the wire, in ``max_rps`` and in CPU. Outside, or for anything
    else, the request goes on unchanged.

    oss, inside ``_looking_again(look)``: the CreateRun is sent only when ``look`` (the
    GetRunDetails of the run it creates) answers NOT_FOUND just before it. The look before
    creating came before the SDK's SelectCluster, GetActionData and UploadInputs, and two
    replicas deciding one failure decide it at the same moment: under a storm another replica's
    run of that name could be created, run and finish in between, and open-source Flyte's
    CreateRun would execute it again (a duplicate execution, whose failure is read with its
    error cleared). Looking again here leaves one GetRunDetails' time, too short for a run to
    finish, so a CreateRun that still races another only meets a run that is executing."""

    async def intercept_unary(self, call_next: Any, request: Any, ctx: Any) -> Any:
        look = _LOOK_AGAIN.get()
        if look is not None and ctx.method().name == "CreateRun":
            await _absent_just_before_create(look)
        reads = _REUSABLE.get()
        if reads:
            key = _read_key(ctx.method().name, request)
            if key is not None:
                found = reads.pop(key, None)
                if found is not None:
                    return found
        return await call_next(request, ctx)


async def _absent_just_before_create(look: Any) -> None:
    """Raise ALREADY_EXISTS when ``look`` (a GetRunDetails, on the SDK's loop) finds the run.
    A NOT_FOUND goes on to the create (the look before creating confirmed absence with a
    ListRuns); any other error is the create's error (retried: the look before comes again)."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError
    from flyte._initialize import get_client

    try:
        await get_client().run_service.get_run_details(look)
    except ConnectError as exc:
        if exc.code == Code.NOT_FOUND:
            return
        raise
    run = look.run_id
    raise ConnectError(Code.ALREADY_EXISTS, f"run {run.name!r} found just before creating it")


# Error codes that are the control plane's answer to an RPC it let through (the learned rate
# counts them as accepted): not an overload (RESOURCE_EXHAUSTED, UNAVAILABLE), a deadline, a
# cancellation, a credential refusal or a transport failure (UNKNOWN).
_ANSWERED_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "DATA_LOSS",
    }
)


class _RpcGate:
    """A connectrpc unary interceptor, innermost in the SDK's chain: every unary RPC the SDK's
    client sends (each retry the SDK makes included) first waits for its owner's ``rpc_gate``,
    so ``max_rps`` holds per RPC on the wire rather than per call, and each one answered is
    reported to it (``answered``); its ``rpc_timeout`` starts
    once the gate lets it go (time queued behind the rate limit is not time the control plane
    took to answer). Streams pass ungated: a WatchRuns stream is one request per scope that
    lives for hours, and a layer here would cost every message it carries."""

    def __init__(self, owner: FlyteControlPlane) -> None:
        self._owner = owner

    async def intercept_unary(self, call_next: Any, request: Any, ctx: Any) -> Any:
        clock = self._owner.clock
        if clock is None:
            return await self._gated(call_next, request, ctx)
        from connectrpc.client import ResponseMetadata

        with ResponseMetadata() as answered:
            try:
                return await self._gated(call_next, request, ctx)
            finally:
                # Every answer, an error's too, tells the control plane's time (``Date``).
                date = _http_date(answered.headers().get("date"))
                if date is not None:
                    clock.observe(date)

    async def _gated(self, call_next: Any, request: Any, ctx: Any) -> Any:
        gate = self._owner.rpc_gate
        if gate is not None:
            await gate.pace(1)
        timeout = self._owner.rpc_timeout
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                answer = await call_next(request, ctx)
        except Exception as exc:
            from connectrpc.code import Code
            from connectrpc.errors import ConnectError

            # connectrpc turns the cancellation the deadline sends into ConnectError(CANCELED),
            # which the timeout does not recognise as its own: take it back here.
            if isinstance(exc, ConnectError):
                if gate is not None and exc.code.name in _ANSWERED_CODES:
                    gate.answered(1)
                if not (exc.code == Code.CANCELED and deadline.expired()):
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            elif not isinstance(exc, TimeoutError):
                raise
            raise ConnectError(
                Code.DEADLINE_EXCEEDED, f"no answer within rpc_timeout ({timeout:g}s)"
            ) from None
        if gate is not None:
            gate.answered(1)
        return answer


@functools.lru_cache(maxsize=4)
def _http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header (RFC 9110 IMF-fixdate, as Go's net/http, Envoy and uvicorn send
    it) as an aware UTC datetime; None when absent or unreadable. Cached: it changes once a
    second."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


@functools.cache
def _session_class() -> type:
    """flyte's ``SessionConfig`` whose service clients send requests uncompressed.

    connectrpc gzips every request body by default (level 6, even a 200-byte GetRunDetails);
    rerund's requests are a few KiB at most, so that is CPU for nothing — about a third of a
    millisecond per rerun. Responses are still accepted compressed."""
    from flyte.remote._client.auth._session import SessionConfig

    class _UncompressedRequests(SessionConfig):  # type: ignore[misc]
        def connect_kwargs(self) -> dict[str, Any]:
            return {**super().connect_kwargs(), "send_compression": None}

    return _UncompressedRequests


@functools.cache
def _client_set_class() -> type:
    """flyte's ``ClientSet`` plus ``watch_service``: a RunService client for WatchRuns that asks
    for its messages uncompressed. connectrpc decompresses a stream message by message in Python
    (the gzip module, ~20 us each) and a run's update is a few hundred bytes; a storm carries
    six of them per rerun (each run queued, running, ended). Unary answers stay compressed
    (decompressed natively by the HTTP client)."""
    from flyte.remote._client.controlplane import ClientSet
    from flyteidl2.workflow.run_service_connect import RunServiceClient

    class _DaemonClientSet(ClientSet):  # type: ignore[misc]
        def __init__(self, session_cfg: Any) -> None:
            super().__init__(session_cfg)
            kwargs = {**session_cfg.connect_kwargs(), "accept_compression": ()}
            self.watch_service = RunServiceClient(**kwargs)

    return _DaemonClientSet


def _tune_sdk_client(gate: _RpcGate) -> None:
    """Replace the client ``flyte.init`` built with one made from the same session (endpoint,
    transport, TLS trust, auth interceptors) plus ``_ReuseReads`` as the outermost interceptor
    and ``gate`` as the innermost, and without request compression. ``flyte.init`` sends
    nothing on the wire, so nothing is lost."""
    import dataclasses

    from flyte._initialize import get_init_config, replace_client

    client = get_init_config().client
    if client is None:
        return
    session = client.session_config
    values = {f.name: getattr(session, f.name) for f in dataclasses.fields(session)}
    values["interceptors"] = (_ReuseReads(), *session.interceptors, gate)
    replace_client(_client_set_class()(_session_class()(**values)))  # type: ignore[no-untyped-call]


# -- raw RPCs on the SDK's loop ------------------------------------------------------------------


async def _uncancel(call: Any) -> Any:
    """Await an RPC; connectrpc turns a cancellation into ConnectError(CANCELED), which would
    finish the SDK-loop task with an exception nobody retrieves: turn it back."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    try:
        return await call
    except ConnectError as exc:
        if exc.code == Code.CANCELED:
            raise asyncio.CancelledError from exc
        raise


def _rpcs() -> Any:
    """The syncified raw RPC functions (built lazily so importing this module stays cheap)."""
    global _RPCS
    if _RPCS is not None:
        return _RPCS
    from flyte._initialize import get_client
    from flyte.syncify import syncify

    @syncify
    async def list_runs(req: Any) -> Any:
        return await _uncancel(get_client().run_service.list_runs(req))

    @syncify
    async def get_run_details(req: Any) -> Any:
        return await _uncancel(get_client().run_service.get_run_details(req))

    @syncify
    async def list_actions(req: Any) -> Any:
        return await _uncancel(get_client().run_service.list_actions(req))

    @syncify
    async def get_action_details(req: Any) -> Any:
        return await _uncancel(get_client().run_service.get_action_details(req))

    @syncify
    async def pump_watch_runs(req: Any, sink: Any) -> None:
        # Runs on the SDK's loop; hands every message to ``sink`` (thread-safe) so the
        # consumer's loop never shares an async generator with the SDK's loop.
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError

        client = get_client()
        stream: Any = getattr(client, "watch_service", client.run_service).watch_runs(req)
        try:
            async for resp in stream:
                sink(resp)
        except ConnectError as exc:
            if exc.code != Code.CANCELED:  # CANCELED: the consumer stopped watching
                raise

    @syncify
    async def get_action_data(req: Any) -> Any:
        return await _uncancel(get_client().dataproxy_service.get_action_data(req))

    @syncify
    async def get_project(req: Any) -> Any:
        return await _uncancel(get_client().project_domain_service.get_project(req))

    _RPCS = SimpleNamespace(
        get_action_data=get_action_data,
        get_project=get_project,
        list_runs=list_runs,
        get_run_details=get_run_details,
        list_actions=list_actions,
        get_action_details=get_action_details,
        pump_watch_runs=pump_watch_runs,
    )
    return _RPCS


_RPCS: Any = None


class FlyteControlPlane:
    """``ControlPlane`` implemented with the flyte SDK. Call ``await connect()`` first."""

    def __init__(
        self,
        *,
        endpoint: str = "",
        org: str = "",
        insecure: bool = False,
        api_key: str | None = None,
        rpc_timeout: float = 30.0,
        console_url: str = "",
        page_size: int = 100,
        backend: str = "auto",
        connection: Connection | None = None,
        clock: ControlPlaneClock | None = None,
        rpc_gate: RpcGate | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}; set backend: auto")
        self._conn = connection or Connection(endpoint=endpoint, org=org, insecure=insecure, api_key=api_key)
        self._endpoint = self._conn.endpoint
        self._org = self._conn.org
        self._insecure = self._conn.insecure
        self._api_key = self._conn.api_key
        self._bundle: Path | None = None
        # The daemon's rate gate (``ports.RpcGate``), awaited by every unary RPC of the SDK's
        # client (``_RpcGate``): our raw RPCs, each ListRuns page, the SDK's own rerun path, and
        # the SDK's retries.
        self.rpc_gate = rpc_gate
        # Per RPC, from the moment the rate gate lets it go (``_RpcGate``): calls made of
        # several RPCs (the SDK's rerun path) are bounded RPC by RPC, not as a whole, so time
        # queued behind max_rps never counts as the control plane's.
        self.rpc_timeout = rpc_timeout
        # Told the HTTP ``Date`` of every unary answer (``_RpcGate``): the control plane's time.
        self.clock = clock
        self._console_url = console_url.rstrip("/")
        self._page = max(1, min(page_size, _MAX_PAGE))
        self._connected = False
        self._not_exists: bool | None = None  # does ListRuns take labels.<k> NOT_EXISTS? None: untried
        # Does ListRuns take label filters (Union) or not (open-source Flyte)? None: not known yet.
        self._label_filters: bool | None = {"auto": None, "union": True, "oss": False}[backend]
        self._backend = backend
        self._labels: OrderedDict[RunRef, dict[str, str]] = OrderedDict()
        self._relations: dict[RunRef, RunRef | None] = {}  # read with the labels, evicted with them
        self._reads: OrderedDict[RunRef, dict[_ReadKey, tuple[Any, bytes]]] = OrderedDict()
        self._read_sizes: dict[RunRef, int] = {}  # serialized bytes of each run's kept reads
        self.read_cache_bytes = 0  # their sum: ``rerund_read_cache_bytes``
        self.read_cache_budget = _READ_CACHE_BYTES
        self._internal: dict[tuple[str, bytes], int] = {}
        self._label_reads = asyncio.Semaphore(8)

    @property
    def backend(self) -> str:
        """``union`` or ``oss`` once known (configured, or found by the first label filter), else
        ``auto``."""
        if self._label_filters is None:
            return "auto"
        return "union" if self._label_filters else "oss"

    async def connect(self, connection: Connection | None = None) -> None:
        """``flyte.init`` (sends nothing on the wire) with ``connection`` (default: the one given
        at construction). Called again with new credentials, it replaces the SDK's client: calls
        in flight finish on the old one. Raises ``ConfigError`` for a malformed key."""
        import flyte

        conn = connection or self._conn
        kwargs: dict[str, Any] = {
            "org": conn.org,
            "insecure": conn.insecure,
            "sync_local_sys_paths": False,
            "log_level": logging.WARNING,
            "disable_keyring": True,  # a daemon keeps no tokens on disk
        }
        if conn.api_key and conn.endpoint:
            # An explicit endpoint wins (a key cannot carry a port); the key supplies the client
            # credentials, as the SDK's own api_key path does (auth_type ClientSecret).
            _, client_id, secret = _decode_api_key(conn.api_key)
            kwargs.update(
                endpoint=conn.endpoint,
                auth_type="ClientSecret",
                client_id=client_id,
                client_credentials_secret=secret,
            )
        elif conn.api_key:
            _decode_api_key(conn.api_key)
            kwargs["api_key"] = conn.api_key
        else:
            kwargs["endpoint"] = conn.endpoint
            if conn.client_id:
                kwargs.update(
                    auth_type="ClientSecret",
                    client_id=conn.client_id,
                    client_credentials_secret=conn.client_secret,
                )
            elif conn.auth_command:
                kwargs.update(auth_type="ExternalCommand", command=list(conn.auth_command))
        if conn.ca_cert_file is not None:
            kwargs["ca_cert_file_path"] = str(conn.ca_cert_file)
        if conn.http_proxy:
            kwargs["http_proxy_url"] = conn.http_proxy  # flyte 2.12.1 ignores it: see http_proxy.py
        export_http_proxy(conn.http_proxy)  # before the SDK builds its HTTP clients
        try:
            with self._token_requests_trust(conn.ca_cert_file):
                await flyte.init.aio(**kwargs)
            _tune_sdk_client(_RpcGate(self))
        except Exception as exc:
            shown = redact_url(conn.endpoint) if conn.endpoint else "(from the API key)"
            raise ConfigError(
                f"cannot initialise the flyte SDK for endpoint {shown!r}: {type(exc).__name__}"
            ) from None
        self._conn = conn
        self._endpoint, self._org, self._insecure, self._api_key = (
            conn.endpoint,
            conn.org,
            conn.insecure,
            conn.api_key,
        )
        self._connected = True

    @contextmanager
    def _token_requests_trust(self, ca_cert_file: Path | None) -> Iterator[None]:
        """flyte 2.12.1 verifies the control plane with ``ca_cert_file_path`` but fetches OAuth2
        tokens with an httpx client that ignores it and reads ``SSL_CERT_FILE`` instead; that
        client is built inside ``flyte.init``. So, for the call only, ``SSL_CERT_FILE`` names a
        bundle of the CAs trusted so far (the file ``SSL_CERT_FILE`` named, else certifi's) plus
        the private CA: a token endpoint on the private control plane and one at a public
        identity provider are both trusted."""
        if ca_cert_file is None:
            yield
            return
        import certifi

        before = os.environ.get("SSL_CERT_FILE")
        public = Path(before) if before and Path(before).is_file() else Path(certifi.where())
        bundle = public.read_bytes() + b"\n" + ca_cert_file.read_bytes()
        if self._bundle is None:
            fd, name = tempfile.mkstemp(prefix="rerund-ca-", suffix=".pem")
            os.close(fd)
            self._bundle = Path(name)
        self._bundle.write_bytes(bundle)
        os.environ["SSL_CERT_FILE"] = str(self._bundle)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = before

    async def probe(self, project: str, domain: str, *, retrying: bool = True) -> None:
        """One ListRuns (limit 1) in ``project/domain`` (``*``/``*``: the org) to learn at start
        whether the control plane accepts rerund's TLS trust and credentials.

        Raises ``ConfigError`` (the daemon exits 2) when it refuses the credentials or its
        certificate is not trusted; other errors (unreachable, overloaded) are left to the
        daemon's retries and only logged — or, for a one-shot command (``retrying=False``),
        which does not retry, raised as they are, so it says so once.
        """
        endpoint = redact_url(self._conn.endpoint) if self._conn.endpoint else "(the API key's endpoint)"
        try:
            await self._list_page(project, domain, [], limit=1, token="")
        except CredentialsError as exc:
            reason = str(exc).removesuffix("; retrying with backoff")
            raise ConfigError(
                f"the control plane at {endpoint} refuses rerund's credentials ({self._conn.auth}): "
                f"{reason}; rerund exits. Check the key or secret (the value is not shown) and that "
                "it belongs to this endpoint and org"
            ) from None
        except ControlPlaneError as exc:
            if _is_tls_failure(exc):
                raise ConfigError(
                    f"the control plane at {endpoint} presents a TLS certificate rerund does not trust: "
                    f"{_tls_reason(exc)}; set ca_cert_file (--ca-cert-file) to the CA that signed it"
                ) from None
            if not retrying:
                raise
            log.warning(
                "the control plane at %s did not answer the start-up check (%s); retrying", endpoint, exc
            )

    def __del__(self) -> None:
        bundle = getattr(self, "_bundle", None)  # absent when __init__ refused its settings
        if bundle is not None:
            with contextlib.suppress(OSError):
                bundle.unlink()

    @contextmanager
    def _scope(self, project: str, domain: str) -> Iterator[None]:
        from flyte._initialize import get_init_config, init_config_context

        cfg = get_init_config().replace(project=project, domain=domain)
        with init_config_context(cfg):
            yield

    async def _call(self, rpc: str, fn: Any, req: Any) -> Any:
        try:
            resp = await fn.aio(req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            key = (rpc, req.SerializeToString(deterministic=True))
            raise self._repeated_internal(key, translate_error(exc, rpc)) from exc
        if self._internal:  # a request answered INTERNAL before is answered now: forget it
            self._internal.pop((rpc, req.SerializeToString(deterministic=True)), None)
        return resp

    def _repeated_internal(self, key: tuple[str, bytes], err: ControlPlaneError) -> ControlPlaneError:
        """``err``, or a ``PermanentControlPlaneError`` when the same request has now been
        answered INTERNAL ``_INTERNAL_REPEATS`` times in a row (the SDK already retried each)."""
        if err.code != "internal":
            self._internal.pop(key, None)
            return err
        n = self._internal.get(key, 0) + 1
        if len(self._internal) > 10_000:
            self._internal.clear()
        self._internal[key] = n
        if n < _INTERNAL_REPEATS:
            return err
        return PermanentControlPlaneError(
            f"{err.rpc} answered INTERNAL {n} times in a row for the same request, so rerund treats it "
            "as permanent and stops retrying it; the control plane cannot serve this request (open-source "
            "Flyte answers INTERNAL for filter values its database refuses); report it with this "
            f"message: {err}",
            rpc=err.rpc,
            code="internal_repeated",
        )

    def _learned_labels(self, ref: RunRef, labels: Mapping[str, str], spec: Any = None) -> None:
        """Keep the labels of ``ref`` (and the relation of its RunSpec ``spec``, when given)."""
        self._labels[ref] = dict(labels)
        self._labels.move_to_end(ref)
        if spec is not None:
            self._relations[ref] = _relation(spec)
        while len(self._labels) > _LABEL_CACHE:
            gone, _ = self._labels.popitem(last=False)
            self._relations.pop(gone, None)

    async def _labels_of(self, refs: list[RunRef]) -> dict[RunRef, dict[str, str]]:
        """Labels of ``refs`` (GetRunDetails for each one not read before; labels never change).
        A run gone meanwhile has none."""

        async def read(ref: RunRef) -> None:
            async with self._label_reads:
                try:
                    await self.get_run(ref)
                except NotFoundError:
                    self._learned_labels(ref, {})

        await asyncio.gather(*(read(r) for r in dict.fromkeys(refs) if r not in self._labels))
        return {r: self._labels.get(r, {}) for r in refs}

    async def _supports_label_filters(self, project: str, domain: str) -> bool:
        """Whether ListRuns takes label filters; with ``backend: auto`` the first call asks
        (one ListRuns of limit 1 with a label filter) and remembers."""
        if self._label_filters is not None:
            return self._label_filters
        from flyteidl2.common import list_pb2

        probe = list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{LABEL_POLICY}", values=["-"])
        try:
            await self._latest(project, domain, [probe], limit=1)
        except PermanentControlPlaneError as exc:
            if not _refuses_labels(exc):
                raise
            self._found_oss(exc)
            return False
        self._found_union()
        return True

    def _found_oss(self, exc: ControlPlaneError) -> None:
        self._label_filters = False
        log.warning(
            "the control plane refuses label filters (%s): it is open-source Flyte, so rerund lists runs "
            "and reads their labels from the run details (one GetRunDetails per run created in the "
            "window, once), and looks for an existing rerun before creating one; set backend: oss to "
            "skip this discovery",
            exc,
        )

    def _found_union(self) -> None:
        if self._label_filters is None:
            self._label_filters = True
            log.info(
                "the control plane takes label filters (Union); set backend: union to skip this discovery"
            )

    def _run_id(self, ref: RunRef) -> Any:
        from flyteidl2.common import identifier_pb2

        return identifier_pb2.RunIdentifier(
            org=self._org, project=ref.project, domain=ref.domain, name=ref.name
        )

    async def _list(
        self, project: str, domain: str, filters: list[Any], *, page: int | None = None
    ) -> list[RunSummary]:
        """Every run matching ``filters``, oldest first (ListRuns, paged). On open-source Flyte the
        token is a live row offset: a run created meanwhile repeats a row (harmless: listings
        are merged by name), and rows never leave these listings (terminal phases and creation
        times do not change back), so none is skipped. ``*/*``: the whole org."""

        out: list[RunSummary] = []
        token = ""
        while True:
            resp = await self._list_page(
                project, domain, filters, limit=min(page or self._page, _MAX_PAGE), token=token
            )
            out.extend(_summary(r) for r in resp.runs)
            token = resp.token
            if not token:
                return out

    async def _list_page(
        self, project: str, domain: str, filters: list[Any], *, limit: int, token: str
    ) -> Any:
        """One ListRuns page of ``project/domain``, or of the whole org for ``*/*``."""
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        request = list_pb2.ListRequest(
            limit=limit,
            token=token,
            filters=filters,
            sort_by=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.ASCENDING),
        )
        if (project, domain) == _ORG:
            req = run_service_pb2.ListRunsRequest(request=request, org=self._org)
        else:
            req = run_service_pb2.ListRunsRequest(
                request=request,
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=self._org, name=project, domain=domain
                ),
            )
        return await self._call("ListRuns", _rpcs().list_runs, req)

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        from flyteidl2.common import list_pb2

        filters = [
            list_pb2.Filter(
                function=list_pb2.Filter.VALUE_IN, field="phase", values=list(_FAILED_PHASE_VALUES)
            ),
            list_pb2.Filter(
                function=list_pb2.Filter.GREATER_THAN_OR_EQUAL,
                field="updated_at",
                values=[since.astimezone(UTC).isoformat()],
            ),
        ]
        return await self._list(project, domain, filters)

    async def list_reruns(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        policy: str | None = None,
        changed_since: datetime | None = None,
    ) -> list[RunSummary]:
        times = _created_and_changed(since, changed_since)
        if self._label_filters is False:
            return await self._list_reruns_by_reading(project, domain, times=times, policy=policy)
        try:
            out = await self._list_reruns_by_filter(project, domain, times=times, policy=policy)
        except PermanentControlPlaneError as exc:
            if self._label_filters is None and _refuses_labels(exc):
                self._found_oss(exc)
                return await self._list_reruns_by_reading(project, domain, times=times, policy=policy)
            raise
        self._found_union()
        return out

    async def _list_reruns_by_filter(
        self, project: str, domain: str, *, times: list[Any], policy: str | None
    ) -> list[RunSummary]:
        from flyteidl2.common import list_pb2

        label = (
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{LABEL_POLICY}", values=[policy])
            if policy
            else list_pb2.Filter(function=list_pb2.Filter.EXISTS, field=f"labels.{LABEL_POLICY}")
        )
        filters = [label, *times]
        # A reproduction rerun of a rerun inherits its rerund-* labels; it is not part of the
        # lineage and must not count against budgets. A control plane that cannot filter on a
        # missing label gets the plain listing (the reproduction reruns then count, as reruns).
        if self._not_exists is not False:
            try:
                return await self._list(project, domain, [*filters, _without(LABEL_REPRO)])
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument" or _refuses_labels(exc):
                    raise
                self._no_not_exists(exc)
        return await self._list(project, domain, filters)

    async def _list_reruns_by_reading(
        self, project: str, domain: str, *, times: list[Any], policy: str | None
    ) -> list[RunSummary]:
        """``list_reruns`` without label filters (open-source Flyte): every run the time filters
        ``times`` select, each one's labels read once (see the module docstring for the cost)."""
        runs = await self._list(project, domain, times, page=_MAX_PAGE)
        labels = await self._labels_of([r.ref for r in runs])
        out = []
        for r in runs:
            lab = labels[r.ref]
            if LABEL_POLICY not in lab or LABEL_REPRO in lab:
                continue
            if policy is not None and lab[LABEL_POLICY] != policy:
                continue
            out.append(_with_labels(r, lab, self._relations))
        return out

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        from flyteidl2.common import identifier_pb2
        from flyteidl2.workflow import run_service_pb2

        if (project, domain) == _ORG:
            req = run_service_pb2.WatchRunsRequest(org=self._org)
        else:
            req = run_service_pb2.WatchRunsRequest(
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=self._org, name=project, domain=domain
                )
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        consumer = threading.get_ident()

        def sink(resp: Any) -> None:
            if threading.get_ident() == consumer:  # the daemon runs on the SDK's loop
                queue.put_nowait(resp)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, resp)

        pump = asyncio.ensure_future(_rpcs().pump_watch_runs.aio(req, sink))
        pump.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                resp = await queue.get()
                if resp is None:
                    break
                for run in resp.runs:
                    yield _summary(run)
            while not queue.empty():  # messages that raced the end of the stream
                resp = queue.get_nowait()
                for run in resp.runs if resp is not None else ():
                    yield _summary(run)
            if not pump.cancelled() and pump.exception() is not None:
                exc = pump.exception()
                assert exc is not None
                raise translate_error(exc, "WatchRuns") from exc
        finally:
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump

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
        from flyteidl2.common import list_pb2

        try:
            phase_value = _phase_value(phase)
        except ValueError:
            raise PermanentControlPlaneError(
                f"ListRuns: unknown phase {phase!r}; use SUCCEEDED, FAILED, TIMED_OUT or ABORTED",
                rpc="ListRuns",
                code="invalid_argument",
            ) from None
        filters = [
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="task_name", values=[task]),
            # EQUAL with one value: open-source Flyte's SQL refuses a single-value VALUE_IN.
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="phase", values=[phase_value]),
        ]
        if (labels or without_label) and self._label_filters is False:
            return await self._latest_by_reading(project, domain, filters, labels or {}, without_label)
        if labels or without_label:
            try:
                found = await self._latest_by_filter(project, domain, filters, labels, without_label)
            except PermanentControlPlaneError as exc:
                if self._label_filters is None and _refuses_labels(exc):
                    self._found_oss(exc)
                    return await self._latest_by_reading(
                        project, domain, filters, labels or {}, without_label
                    )
                raise
            self._found_union()
            return found
        return await self._latest_by_filter(project, domain, filters, labels, without_label)

    async def _latest_by_filter(
        self,
        project: str,
        domain: str,
        filters: list[Any],
        labels: Mapping[str, str] | None,
        without_label: str | None,
    ) -> RunSummary | None:
        from flyteidl2.common import list_pb2

        filters = list(filters)
        for key, value in sorted((labels or {}).items()):
            filters.append(
                list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{key}", values=[value])
            )
        if not without_label:
            runs = await self._latest(project, domain, filters, limit=1)
            return runs[0] if runs else None
        if self._not_exists is not False and self._label_filters is not False:
            try:
                runs = await self._latest(project, domain, [*filters, _without(without_label)], limit=1)
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument" or _refuses_labels(exc):
                    raise
                self._no_not_exists(exc)
            else:
                return runs[0] if runs else None
        # The control plane cannot filter on a missing label: look at the latest few runs and
        # read each one's labels (GetRunDetails) until one does not carry ``without_label``.
        for candidate in await self._latest(project, domain, filters, limit=_FALLBACK_CANDIDATES):
            if without_label not in (await self.get_run(candidate.ref)).labels:
                return candidate
        return None

    async def _latest_by_reading(
        self,
        project: str,
        domain: str,
        filters: list[Any],
        labels: Mapping[str, str],
        without_label: str | None,
    ) -> RunSummary | None:
        """``find_latest_run`` without label filters: the newest candidates (pages of 50, at most
        ``_REFERENCE_SCAN``), each one's labels read (cached) until one matches."""
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        token, scanned = "", 0
        while scanned < _REFERENCE_SCAN:
            req = run_service_pb2.ListRunsRequest(
                request=list_pb2.ListRequest(
                    limit=50,
                    token=token,
                    filters=filters,
                    sort_by=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.DESCENDING),
                ),
                org=self._org,
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=self._org, name=project, domain=domain
                ),
            )
            resp = await self._call("ListRuns", _rpcs().list_runs, req)
            page = [_summary(r) for r in resp.runs]
            scanned += len(page)
            found = await self._labels_of([r.ref for r in page])
            for r in page:
                lab = found[r.ref]
                if all(lab.get(k) == v for k, v in labels.items()) and (
                    not without_label or without_label not in lab
                ):
                    return _with_labels(r, lab, self._relations)
            token = resp.token
            if not token or not page:
                return None
        return None

    async def _latest(self, project: str, domain: str, filters: list[Any], *, limit: int) -> list[RunSummary]:
        """The ``limit`` most recently created runs matching ``filters`` (one ListRuns)."""
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        req = run_service_pb2.ListRunsRequest(
            request=list_pb2.ListRequest(
                limit=limit,
                filters=filters,
                sort_by=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.DESCENDING),
            ),
            org=self._org,
            project_id=identifier_pb2.ProjectIdentifier(organization=self._org, name=project, domain=domain),
        )
        resp = await self._call("ListRuns", _rpcs().list_runs, req)
        return [_summary(r) for r in resp.runs[:limit]]

    def _no_not_exists(self, exc: ControlPlaneError) -> None:
        self._not_exists = False
        log.warning(
            "the control plane rejects the label filter NOT_EXISTS (%s); reproduction reruns are now "
            "told apart by reading their labels, which costs more RPCs",
            exc,
        )

    async def read_outputs(self, ref: RunRef) -> dict[str, Any]:
        from flyteidl2.common import identifier_pb2
        from flyteidl2.dataproxy import dataproxy_service_pb2

        req = dataproxy_service_pb2.GetActionDataRequest(
            action_id=identifier_pb2.ActionIdentifier(run=self._run_id(ref), name="a0")
        )
        resp = await self._call("GetActionData", _rpcs().get_action_data, req)
        if not resp.HasField("outputs"):
            return {}
        return {nl.name: decode_literal(nl.value) for nl in resp.outputs.literals}

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        """Whether the org has project ``project`` with domain ``domain`` (1 RPC: ProjectService
        GetProject). None when the control plane does not say (it serves no ProjectService)."""
        from flyteidl2.project import project_service_pb2

        req = project_service_pb2.GetProjectRequest(id=project, org=self._org)
        try:
            resp = await self._call("GetProject", _rpcs().get_project, req)
        except NotFoundError:
            return False
        except PermanentControlPlaneError as exc:
            if exc.code == "unimplemented":
                return None
            raise
        domains = {d.id or d.name for d in resp.project.domains}
        return domain in domains if domains else True

    async def _run_details(self, ref: RunRef) -> Any:
        """GetRunDetails of run ``ref`` (its ``details``)."""
        return (await self._run_details_answer(ref))[1].details

    async def _run_details_answer(self, ref: RunRef, *, confirm_absent: bool = True) -> tuple[Any, Any]:
        """GetRunDetails of run ``ref``: (request, answer), for ``_keep_read``.

        Open-source Flyte answers NOT_FOUND for *any* database error (``runs/service/
        run_service.go`` ``GetRunDetails``): a failed run read as absent would be settled as
        deleted and never rerun. On open-source Flyte (``backend: oss``, or detected so), a
        NOT_FOUND is believed only when a ListRuns filtered on ``run_name`` finds no run either
        (one RPC more, only on a NOT_FOUND); when it finds one, the read is a transient error,
        retried."""
        from flyteidl2.workflow import run_service_pb2

        request = run_service_pb2.GetRunDetailsRequest(run_id=self._run_id(ref))
        try:
            return request, await self._call("GetRunDetails", _rpcs().get_run_details, request)
        except NotFoundError:
            if not confirm_absent or self._label_filters is not False:  # oss only: Union's is true
                raise
            if await self._listed_by_name(ref, "GetRunDetails"):
                raise TransientControlPlaneError(
                    f"GetRunDetails: run {ref} answered NOT_FOUND but ListRuns lists it (open-source "
                    "Flyte answers NOT_FOUND for a database error); the read is retried",
                    rpc="GetRunDetails",
                    code="unavailable",
                ) from None
            raise

    async def _listed_by_name(self, ref: RunRef, what: str) -> bool:
        """Whether a ListRuns filtered on ``run_name`` finds run ``ref``. Its INTERNAL (a
        database error, however often) is a ``TransientControlPlaneError``: absence unconfirmed."""
        from flyteidl2.common import list_pb2

        by_name = list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="run_name", values=[ref.name])
        try:
            listed = await self._list_page(ref.project, ref.domain, [by_name], limit=1, token="")
        except PermanentControlPlaneError as exc:
            if exc.code != "internal_repeated":
                raise
            # The database takes this filter; INTERNAL here is its failing, however often.
            self._internal.clear()
            raise TransientControlPlaneError(
                f"{what}: cannot confirm run {ref} is absent: {exc}",
                rpc="ListRuns",
                code="internal",
            ) from exc
        return any(r.action.id.run.name == ref.name for r in listed.runs)

    async def get_run(self, ref: RunRef) -> RunSummary:
        details = await self._run_details(ref)
        action = details.action
        labels = dict(details.run_spec.labels.values)
        self._learned_labels(ref, labels, details.run_spec)
        return RunSummary(
            ref=ref,
            phase=_phase_name(action.status.phase),
            task=_task_name(action.metadata),
            created_at=_ts(action.status, "start_time"),
            ended_at=_ts(action.status, "end_time"),
            labels=labels,
            relation=_relation(details.run_spec),
            relation_known=True,
        )

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        ref = run.ref
        run_id = self._run_id(ref)
        run_request, run_answer = await self._run_details_answer(ref)
        details = run_answer.details
        spec = details.run_spec
        labels = dict(spec.labels.values)
        self._learned_labels(ref, labels, spec)
        actions = await self._call(
            "ListActions",
            _rpcs().list_actions,
            run_service_pb2.ListActionsRequest(
                run_id=run_id,
                request=list_pb2.ListRequest(
                    limit=100,
                    filters=[
                        list_pb2.Filter(
                            function=list_pb2.Filter.VALUE_IN,
                            field="phase",
                            values=list(_FAILED_PHASE_VALUES),
                        )
                    ],
                    sort_by=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.ASCENDING),
                ),
            ),
        )
        kept: list[tuple[str, Any, Any]] = [("GetRunDetails", run_request, run_answer)]
        # The first failed child action is the cause; the root's error usually repeats it.
        chosen = next((a for a in actions.actions if a.metadata.parent), None)
        root = details.action
        if (
            chosen is None
            and root.HasField("error_info")
            and (root.error_info.message or root.error_info.code)
        ):
            action_details = root
        else:
            action_id = (
                chosen.id
                if chosen is not None
                else identifier_pb2.ActionIdentifier(run=run_id, name=root.id.name or "a0")
            )
            action_request = run_service_pb2.GetActionDetailsRequest(action_id=action_id)
            action_answer = await self._call("GetActionDetails", _rpcs().get_action_details, action_request)
            kept.append(("GetActionDetails", action_request, action_answer))
            action_details = action_answer.details
        error = ErrorInfo()
        if action_details.HasField("error_info"):
            error = error_info(action_details.error_info)
        elif action_details.HasField("abort_info"):
            error = ErrorInfo(kind="UNSPECIFIED", code="Aborted", message=action_details.abort_info.reason)
        action_task = _task_name(action_details.metadata)
        if not action_task and action_details.HasField("task"):
            action_task = action_details.task.task_template.id.name
        failed_at = run.ended_at or _ts(action_details.status, "end_time") or _ts(root.status, "end_time")
        if failed_at is None:
            failed_at = utcnow()
        task = run.task or _task_name(root.metadata)
        summary = (
            run
            if task == run.task
            else RunSummary(
                ref=run.ref,
                phase=run.phase,
                task=task,
                created_at=run.created_at,
                ended_at=run.ended_at,
                labels=run.labels,
            )
        )
        # FAILED without error details: open-source Flyte fills them once the last attempt's
        # events arrived, a while after the phase. TIMED_OUT never has any there.
        pending = (
            _phase_name(action_details.status.phase) == "FAILED"
            and not action_details.HasField("error_info")
            and not action_details.HasField("abort_info")
        )
        template = root.task.task_template
        facts = FailureFacts(
            summary=summary,
            labels=labels,
            action=action_details.id.name or "a0",
            action_task=action_task or task,
            error=error,
            failed_at=failed_at,
            spec=shared_spec_view(spec),
            error_pending=pending,
            finished_phase=_finished_before_abort(root),
            task_version=root.metadata.task.id.version or template.id.version,
            resources=resources_view(template) if root.HasField("task") else None,
            relation=_relation(spec),
        )
        for method, request, answer in kept:  # after the facts were taken from them
            self._keep_read(ref, method, request, answer)
        return facts

    def _keep_read(self, ref: RunRef, method: str, request: Any, answer: Any) -> None:
        """Keep ``answer``, a read of run ``ref`` that the SDK's rerun path makes again, for that
        path (``_ReuseReads``), slimmed to what that path reads (``_slim_for_rerun``, in place:
        call it once the caller took what it needs) and serialized. Serialized, because a
        parsed answer pins the whole arena it was parsed into, the cleared 5 MB message too: the
        bytes kept are the bytes held. The newest ``_READ_CACHE`` runs' reads are kept, and no
        more than ``read_cache_budget`` bytes of them (oldest dropped first; an answer larger
        than the budget on its own is not kept)."""
        key = _read_key(method, request)
        if key is None:
            return
        _slim_for_rerun(answer)
        data = answer.SerializeToString()
        if len(data) > self.read_cache_budget:
            return
        reads = self._reads.setdefault(ref, {})
        old = reads.get(key)
        reads[key] = (type(answer), data)
        self._reads.move_to_end(ref)
        grown = len(data) - (len(old[1]) if old is not None else 0)
        self._read_sizes[ref] = self._read_sizes.get(ref, 0) + grown
        self.read_cache_bytes += grown
        while len(self._reads) > _READ_CACHE or self.read_cache_bytes > self.read_cache_budget:
            oldest, _ = self._reads.popitem(last=False)
            self.read_cache_bytes -= self._read_sizes.pop(oldest, 0)

    def _take_reads(self, ref: RunRef) -> dict[_ReadKey, Any] | None:
        """What was read of ``ref`` (``_keep_read``), parsed again and given up to the call that
        reruns it."""
        self.read_cache_bytes -= self._read_sizes.pop(ref, 0)
        kept = self._reads.pop(ref, None)
        if kept is None:
            return None
        return {key: kind.FromString(data) for key, (kind, data) in kept.items()}

    async def read_spec(self, ref: RunRef) -> RunSpecView:
        """The RunSpec of run ``ref`` (1 GetRunDetails, kept for a rerun of ``ref``)."""
        request, answer = await self._run_details_answer(ref)
        view = spec_view(answer.details.run_spec)
        self._keep_read(ref, "GetRunDetails", request, answer)
        return view

    async def _issue_mark(self, ref: RunRef) -> str:
        """The ``rerund-issue`` annotation of run ``ref`` (one GetRunDetails; labels cached)."""
        details = await self._run_details(ref)
        self._learned_labels(ref, dict(details.run_spec.labels.values), details.run_spec)
        return str(details.run_spec.annotations.values.get(ANNOTATION_ISSUER, ""))

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        src = request.source
        oss = not await self._supports_label_filters(src.project, src.domain)
        if not oss:
            return await self._create_rerun(request, "")
        mark = await self._look_first(request.target)
        with _not_found_is_a_database_error(request.target):
            return await self._create_rerun(request, mark)

    async def _create_rerun(self, request: RerunRequest, mark: str) -> RunRef:
        import flyte

        src = request.source
        oss = bool(mark)
        key = ("CreateRun", str(request.target).encode())
        source_spec = request.source_spec if request.source_spec is not None else await self.read_spec(src)
        force = list(request.overrides.force_rerun_actions) or None
        try:
            with (
                self._scope(src.project, src.domain),
                _reusing(self._take_reads(src)),
                self._looking_again(request.target, oss),
            ):
                kwargs = runcontext_for_rerun(request, source_spec)
                if mark:  # oss: the mark of this create, an annotation (labels stay the request's)
                    kwargs["annotations"] = {**kwargs.get("annotations", {}), ANNOTATION_ISSUER: mark}
                runner = flyte.with_runcontext(**kwargs)
                call = runner.rerun.aio(
                    src.name,
                    action_name=request.action,
                    recover=request.recover,
                    force_rerun_actions=force,
                    **request.inputs,
                )
                run = await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = translate_error(exc, "CreateRun")
            if oss and isinstance(err, AlreadyExistsError):  # oss answers none: the last look did
                raise self._found_just_before_creating(request.target) from exc
            raise self._repeated_internal(key, err) from exc
        self._internal.pop(key, None)
        if oss:
            await self._check_mark(request.target, mark)
        return RunRef(src.project, src.domain, str(run.name or request.name))

    def _looking_again(self, target: RunRef, oss: bool) -> AbstractContextManager[None]:
        """oss: within, the SDK's CreateRun of ``target`` is preceded by one more GetRunDetails
        of it, and not sent when that finds the run (``_ReuseReads``). Nothing on Union."""
        if not oss:
            return nullcontext()
        from flyteidl2.workflow import run_service_pb2

        return _looking_again(run_service_pb2.GetRunDetailsRequest(run_id=self._run_id(target)))

    async def _look_first(self, target: RunRef) -> str:
        """oss: open-source Flyte returns an existing run of that name as a success (and
        enqueues it again: it executes again): look first, and return the mark this create
        carries so its answer can be told apart. ``AlreadyExistsError`` when found.

        GetRunDetails answers NOT_FOUND for *any* database error (``runs/service/
        run_service.go`` ``GetRunDetails``), so its NOT_FOUND alone does not prove absence:
        a ListRuns filtered on ``run_name`` (whose database errors come back INTERNAL, a
        transient error here: the create waits for a later pass) must find no run either."""
        try:
            await self._run_details_answer(target, confirm_absent=False)
        except NotFoundError:
            pass
        else:
            raise self._found_before_creating(target)
        if await self._listed_by_name(target, "CreateRun"):
            raise self._found_before_creating(target)
        return uuid.uuid4().hex[:12]

    @staticmethod
    def _found_before_creating(target: RunRef) -> AlreadyExistsError:
        return AlreadyExistsError(
            f"CreateRun: run {target} already exists (found before creating it; "
            "open-source Flyte would have returned it as a success and run it again)",
            rpc="CreateRun",
            code="already_exists",
        )

    @staticmethod
    def _found_just_before_creating(target: RunRef) -> AlreadyExistsError:
        return AlreadyExistsError(
            f"CreateRun: run {target} already exists (found just before creating it: another process "
            "created it after the look before; open-source Flyte would have run it again)",
            rpc="CreateRun",
            code="already_exists",
        )

    async def _check_mark(self, target: RunRef, mark: str) -> None:
        """oss: another process may have created the same name between the look and the create,
        and open-source Flyte then answered with its run. The mark says whose run it is."""
        if await self._issue_mark(target) != mark:
            raise AlreadyExistsError(
                f"CreateRun: run {target} was created by another process at the same "
                "moment (open-source Flyte answered with that run as a success)",
                rpc="CreateRun",
                code="already_exists",
            )

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        src = request.source
        oss = not await self._supports_label_filters(src.project, src.domain)
        if not oss:
            return await self._create_relaunch(request, "")
        mark = await self._look_first(request.target)
        with _not_found_is_a_database_error(request.target):
            return await self._create_relaunch(request, mark)

    async def _create_relaunch(self, request: RelaunchRequest, mark: str) -> RunRef:
        import flyte
        import flyte.errors
        import flyte.remote

        src = request.source
        oss = bool(mark)
        source_spec = request.source_spec if request.source_spec is not None else await self.read_spec(src)
        version = request.version or None
        what = f"task {request.task!r} version {request.version or 'latest'!r} in {src.project}/{src.domain}"

        reads = self._take_reads(src)

        async def relaunch() -> Any:
            with (
                self._scope(src.project, src.domain),
                _reusing(reads),
                self._looking_again(request.target, oss),
            ):
                lazy = flyte.remote.Task.get(
                    request.task,
                    project=src.project,
                    domain=src.domain,
                    version=version,
                    auto_version=None if version else "latest",
                )
                task = await lazy.fetch.aio()
                if request.resources is not None:
                    ext = task.pb2.spec.task_template.extended_resources
                    kept = type(ext)()
                    kept.CopyFrom(ext)
                    task = task.override(resources=_flyte_resources(request.resources))
                    if kept.ByteSize():  # the accelerator type and shared memory stay the task's
                        task.pb2.spec.task_template.extended_resources.CopyFrom(kept)
                source_run = await flyte.remote.Run.get.aio(name=src.name)
                inputs = dict(await source_run.inputs.aio())
                inputs.update(request.inputs)
                kwargs = runcontext_for_relaunch(request, source_spec)
                if mark:  # oss: the mark of this create, an annotation (labels stay the request's)
                    kwargs["annotations"] = {**kwargs.get("annotations", {}), ANNOTATION_ISSUER: mark}
                runner = flyte.with_runcontext(**kwargs)
                return await runner.run.aio(task, **inputs)

        try:
            run = await relaunch()
        except asyncio.CancelledError:
            raise
        except flyte.errors.RemoteTaskNotFoundError as exc:
            raise PermanentControlPlaneError(
                f"relaunch {request.name!r} of run {src.name!r}: {what} is not deployed ({exc}); not retried",
                rpc="GetTaskDetails",
                code="not_found",
            ) from exc
        except Exception as exc:
            err = translate_error(exc, "CreateRun")
            if oss and isinstance(err, AlreadyExistsError):  # oss answers none: the last look did
                raise self._found_just_before_creating(request.target) from exc
            raise err from exc
        if oss:
            await self._check_mark(request.target, mark)
        return RunRef(src.project, src.domain, str(run.name or request.name))

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        import flyte.remote

        async def latest() -> str | None:
            with self._scope(project, domain):
                async for found in flyte.remote.Task.listall.aio(
                    by_task_name=task, project=project, domain=domain, sort_by=("created_at", "desc"), limit=1
                ):
                    return str(found.version)
            return None

        try:
            return await latest()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, "ListTasks") from exc

    def console_url(self, ref: RunRef) -> str:
        if self._console_url:
            return f"{self._console_url}/v2/domain/{ref.domain}/project/{ref.project}/runs/{ref.name}"
        try:
            from flyte._initialize import get_client

            return str(
                get_client().console.run_url(project=ref.project, domain=ref.domain, run_name=ref.name)
            )
        except Exception:
            return (
                f"{self._endpoint.rstrip('/')}/v2/domain/{ref.domain}/project/{ref.project}/runs/{ref.name}"
            )
