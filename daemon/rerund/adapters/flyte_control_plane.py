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

RPC cost: ``read_failure`` is GetRunDetails + ListActions + GetActionDetails (2 when the root
action's error is already in the run details); ``create_rerun`` is exactly the SDK's rerun
path; listings page by 100 and watching is one stream per scope. For reproduction checks,
``find_latest_run`` is one ListRuns (limit 1) and ``read_outputs`` is SelectCluster +
DataProxy GetActionData, whose literals are decoded here (``decode_literal``) into plain
Python values without the SDK's type engine, so no task code or type is needed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from rerund.clock import utcnow
from rerund.core.model import ErrorInfo, GpuFault, RunSpecView
from rerund.core.runs import LABEL_POLICY, LABEL_REPRO, FailureFacts, RerunRequest, RunRef, RunSummary
from rerund.core.runspec import SDK_ENV_KEYS
from rerund.errors import (
    AlreadyExistsError,
    ConfigError,
    ControlPlaneError,
    NotFoundError,
    PermanentControlPlaneError,
    TransientControlPlaneError,
)

__all__ = [
    "FlyteControlPlane",
    "decode_literal",
    "error_info",
    "runcontext_for_rerun",
    "spec_view",
    "translate_error",
]

# A daemon must not phone home on its users' behalf: the SDK's error telemetry stays off unless
# the operator sets FLYTE_DISABLE_TELEMETRY=false explicitly.
os.environ.setdefault("FLYTE_DISABLE_TELEMETRY", "true")

log = logging.getLogger("rerund.flyte")

_TRANSIENT_CODES = {
    "unavailable",
    "deadline_exceeded",
    "internal",
    "unknown",
    "resource_exhausted",
    "aborted",
}
_FAILED_PHASE_VALUES = ("6", "7", "8")  # FAILED, ABORTED, TIMED_OUT


def translate_error(exc: BaseException, rpc: str) -> ControlPlaneError:
    """Map an SDK / Connect / transport error of ``rpc`` onto the ``rerund.errors`` tree."""
    import flyte.errors
    from connectrpc.errors import ConnectError

    if isinstance(exc, ControlPlaneError):
        return exc
    if isinstance(exc, ConnectError):
        code = exc.code.value
        text = f"{rpc} failed ({code}): {exc.message}"
        if code == "not_found":
            return NotFoundError(text, rpc=rpc, code=code)
        if code == "already_exists":
            return AlreadyExistsError(text, rpc=rpc, code=code)
        if code in _TRANSIENT_CODES:
            return TransientControlPlaneError(text + "; retrying with backoff", rpc=rpc, code=code)
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
        return TransientControlPlaneError(
            f"{rpc} failed ({code}): {exc}; retrying with backoff", rpc=rpc, code=code
        )
    if isinstance(exc, TimeoutError):
        return TransientControlPlaneError(
            f"{rpc} timed out; retrying with backoff", rpc=rpc, code="deadline_exceeded"
        )
    if isinstance(exc, ValueError | TypeError):
        return PermanentControlPlaneError(f"{rpc} cannot be done: {exc}", rpc=rpc, code="invalid_argument")
    return TransientControlPlaneError(
        f"{rpc} failed ({type(exc).__name__}: {exc}); retrying with backoff", rpc=rpc, code="unavailable"
    )


def _ts(msg: Any, field: str) -> datetime | None:
    if not msg.HasField(field):
        return None
    ts = getattr(msg, field)
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def _phase_name(value: int) -> str:
    from flyteidl2.common import phase_pb2

    try:
        return str(phase_pb2.ActionPhase.Name(value)).removeprefix("ACTION_PHASE_")
    except ValueError:
        return "UNSPECIFIED"


def _task_name(metadata: Any) -> str:
    if metadata.HasField("task"):
        return str(metadata.task.id.name or metadata.task.short_name)
    return ""


def _summary(run: Any) -> RunSummary:
    action = run.action
    rid = action.id.run
    return RunSummary(
        ref=RunRef(rid.project, rid.domain, rid.name),
        phase=_phase_name(action.status.phase),
        task=_task_name(action.metadata),
        created_at=_ts(action.status, "start_time"),
        ended_at=_ts(action.status, "end_time"),
        labels=dict(run.labels),
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

        stream: Any = get_client().run_service.watch_runs(req)
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
        endpoint: str,
        org: str,
        insecure: bool,
        api_key: str | None = None,
        rpc_timeout: float = 30.0,
        console_url: str = "",
        page_size: int = 100,
    ) -> None:
        self._endpoint = endpoint
        self._org = org
        self._insecure = insecure
        self._api_key = api_key
        self._timeout = rpc_timeout
        self._console_url = console_url.rstrip("/")
        self._page = page_size
        self._connected = False
        self._not_exists: bool | None = None  # does ListRuns take labels.<k> NOT_EXISTS? None: untried

    async def connect(self) -> None:
        """``flyte.init`` (sends nothing on the wire). Raises ``ConfigError`` for a bad key."""
        import flyte

        kwargs: dict[str, Any] = {
            "org": self._org,
            "insecure": self._insecure,
            "sync_local_sys_paths": False,
            "log_level": logging.WARNING,
        }
        if self._api_key and self._endpoint:
            # An explicit endpoint wins; the key supplies the client credentials.
            _, client_id, secret = _decode_api_key(self._api_key)
            kwargs.update(
                endpoint=self._endpoint,
                auth_type="ClientSecret",
                client_id=client_id,
                client_credentials_secret=secret,
            )
        elif self._api_key:
            _decode_api_key(self._api_key)
            kwargs["api_key"] = self._api_key
        else:
            kwargs["endpoint"] = self._endpoint
        try:
            await flyte.init.aio(**kwargs)
        except Exception as exc:
            raise ConfigError(
                f"cannot initialise the flyte SDK for endpoint {self._endpoint!r}: {type(exc).__name__}"
            ) from None
        self._connected = True

    @contextmanager
    def _scope(self, project: str, domain: str) -> Iterator[None]:
        from flyte._initialize import get_init_config, init_config_context

        cfg = get_init_config().replace(project=project, domain=domain)
        with init_config_context(cfg):
            yield

    async def _call(self, rpc: str, fn: Any, req: Any) -> Any:
        try:
            return await asyncio.wait_for(fn.aio(req), timeout=self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, rpc) from exc

    def _run_id(self, ref: RunRef) -> Any:
        from flyteidl2.common import identifier_pb2

        return identifier_pb2.RunIdentifier(
            org=self._org, project=ref.project, domain=ref.domain, name=ref.name
        )

    async def _list(self, project: str, domain: str, filters: list[Any]) -> list[RunSummary]:
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        out: list[RunSummary] = []
        token = ""
        while True:
            req = run_service_pb2.ListRunsRequest(
                request=list_pb2.ListRequest(
                    limit=self._page,
                    token=token,
                    filters=filters,
                    sort_by=list_pb2.Sort(key="created_at", direction=list_pb2.Sort.ASCENDING),
                ),
                org=self._org,
                project_id=identifier_pb2.ProjectIdentifier(
                    organization=self._org, name=project, domain=domain
                ),
            )
            resp = await self._call("ListRuns", _rpcs().list_runs, req)
            out.extend(_summary(r) for r in resp.runs)
            token = resp.token
            if not token:
                return out

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
        self, project: str, domain: str, *, since: datetime, policy: str | None = None
    ) -> list[RunSummary]:
        from flyteidl2.common import list_pb2

        label = (
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{LABEL_POLICY}", values=[policy])
            if policy
            else list_pb2.Filter(function=list_pb2.Filter.EXISTS, field=f"labels.{LABEL_POLICY}")
        )
        filters = [
            label,
            list_pb2.Filter(
                function=list_pb2.Filter.GREATER_THAN_OR_EQUAL,
                field="created_at",
                values=[since.astimezone(UTC).isoformat()],
            ),
        ]
        # A reproduction rerun of a rerun inherits its rerund-* labels; it is not part of the
        # lineage and must not count against budgets. A control plane that cannot filter on a
        # missing label gets the plain listing (the reproduction reruns then count, as reruns).
        if self._not_exists is not False:
            try:
                return await self._list(project, domain, [*filters, _without(LABEL_REPRO)])
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument":
                    raise
                self._no_not_exists(exc)
        return await self._list(project, domain, filters)

    async def watch(self, project: str, domain: str) -> AsyncIterator[RunSummary]:
        from flyteidl2.common import identifier_pb2
        from flyteidl2.workflow import run_service_pb2

        req = run_service_pb2.WatchRunsRequest(
            project_id=identifier_pb2.ProjectIdentifier(organization=self._org, name=project, domain=domain)
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def sink(resp: Any) -> None:
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
            list_pb2.Filter(function=list_pb2.Filter.VALUE_IN, field="phase", values=[phase_value]),
        ]
        for key, value in sorted((labels or {}).items()):
            filters.append(
                list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{key}", values=[value])
            )
        if not without_label:
            runs = await self._latest(project, domain, filters, limit=1)
            return runs[0] if runs else None
        if self._not_exists is not False:
            try:
                runs = await self._latest(project, domain, [*filters, _without(without_label)], limit=1)
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument":
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

    async def get_run(self, ref: RunRef) -> RunSummary:
        from flyteidl2.workflow import run_service_pb2

        details = (
            await self._call(
                "GetRunDetails",
                _rpcs().get_run_details,
                run_service_pb2.GetRunDetailsRequest(run_id=self._run_id(ref)),
            )
        ).details
        action = details.action
        return RunSummary(
            ref=ref,
            phase=_phase_name(action.status.phase),
            task=_task_name(action.metadata),
            created_at=_ts(action.status, "start_time"),
            ended_at=_ts(action.status, "end_time"),
            labels=dict(details.run_spec.labels.values),
        )

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        ref = run.ref
        run_id = self._run_id(ref)
        details = (
            await self._call(
                "GetRunDetails", _rpcs().get_run_details, run_service_pb2.GetRunDetailsRequest(run_id=run_id)
            )
        ).details
        spec = details.run_spec
        labels = dict(spec.labels.values)
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
            action_details = (
                await self._call(
                    "GetActionDetails",
                    _rpcs().get_action_details,
                    run_service_pb2.GetActionDetailsRequest(action_id=action_id),
                )
            ).details
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
        return FailureFacts(
            summary=summary,
            labels=labels,
            action=action_details.id.name or "a0",
            action_task=action_task or task,
            error=error,
            failed_at=failed_at,
            spec=spec_view(spec),
        )

    async def read_spec(self, ref: RunRef) -> RunSpecView:
        """The RunSpec of run ``ref`` (1 GetRunDetails)."""
        from flyteidl2.workflow import run_service_pb2

        details = (
            await self._call(
                "GetRunDetails",
                _rpcs().get_run_details,
                run_service_pb2.GetRunDetailsRequest(run_id=self._run_id(ref)),
            )
        ).details
        return spec_view(details.run_spec)

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        import flyte

        src = request.source
        source_spec = request.source_spec if request.source_spec is not None else await self.read_spec(src)
        force = list(request.overrides.force_rerun_actions) or None
        try:
            with self._scope(src.project, src.domain):
                runner = flyte.with_runcontext(**runcontext_for_rerun(request, source_spec))
                call = runner.rerun.aio(
                    src.name,
                    action_name=request.action,
                    recover=request.recover,
                    force_rerun_actions=force,
                    **request.inputs,
                )
                run = await asyncio.wait_for(call, timeout=self._timeout * 4)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, "CreateRun") from exc
        return RunRef(src.project, src.domain, str(run.name or request.name))

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
