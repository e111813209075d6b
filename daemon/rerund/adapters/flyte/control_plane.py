"""``FlyteControlPlane``: ``rerund.ports.ControlPlane`` (and ``Deployments``) on the real flyte SDK.

The rest of the package does one job each (``rerund.adapters.flyte``'s docstring lists them);
this module holds the calls: connecting, reads, listings and watching, and the creates.

- The SDK runs every call on its own background event loop (``sdk_loop``).
- ``rerun()``, ``RunDetails.get`` and ``first_failure()`` look the source run up in the
  project/domain of the *init config*, not of ``with_runcontext(project=...)``: every SDK call
  runs inside ``sdk_internals.scope`` with the scope's project/domain.
- Every error is translated into ``rerund.errors`` (``errors.translate_error``) so nothing
  above this package knows the SDK.

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
the ones ``read_failure`` or ``read_spec`` made of it (``ReuseReads``: a run that has ended does
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
- ``create_rerun`` and ``create_relaunch`` look before creating, mark the create, and look
  again right before the CreateRun goes out, and read the source, which open-source Flyte does
  not check (``oss.create_looking_first``: five RPCs more per create).
- ``list_ended`` (what ``rerund suggest`` learns reruns made by hand from) reads the relation
  of each listed run from its RunSpec (GetRunDetails, cached with the labels: a failure already
  read, or a run ``list_reruns`` read, costs nothing more); Union's listing carries it.
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
import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rerund.adapters.flyte import sdk_internals
from rerund.adapters.flyte.backend import Backend, refuses_labels
from rerund.adapters.flyte.connection import Connection, decode_api_key
from rerund.adapters.flyte.convert import (
    RESOURCES_VIEWS,
    SPEC_VIEWS,
    created_and_changed,
    decode_literal,
    error_info,
    finished_before_abort,
    flyte_resources,
    lacking_label,
    missing_inputs,
    phase_name,
    phase_value,
    relation_of,
    resources_view,
    runcontext_for_relaunch,
    runcontext_for_rerun,
    shared_spec_view,
    spec_view,
    summary_of,
    task_name,
    timestamp,
    with_labels,
)
from rerund.adapters.flyte.errors import is_tls_failure, tls_reason, translate_error
from rerund.adapters.flyte.oss import ANNOTATION_ISSUER, create_looking_first
from rerund.adapters.flyte.sdk_loop import rpcs
from rerund.adapters.flyte.tuning import (
    ReadKey,
    ReuseReads,
    RpcGateInterceptor,
    looking_again,
    read_key,
    reusing,
    slim_for_rerun,
)
from rerund.adapters.http_proxy import export_http_proxy
from rerund.clock import ControlPlaneClock, utcnow
from rerund.core.model import ErrorInfo, RunSpecView
from rerund.core.redact import redact_url
from rerund.core.runs import (
    LABEL_POLICY,
    LABEL_REPRO,
    FailureFacts,
    RelaunchRequest,
    RerunRequest,
    RunRef,
    RunSummary,
)
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
from rerund.sizedcache import ENTRY_BYTES, SizedCache, str_bytes

__all__ = ["FlyteControlPlane"]

log = logging.getLogger("rerund.flyte")


class _NoTokenEndpointErrors(logging.Filter):
    """The SDK logs an ERROR line for every refused token request before raising; rerund turns
    the raised error into ``CredentialsError`` and reports it once a minute, not per call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.module != "_token_client"


logging.getLogger("flyte").addFilter(_NoTokenEndpointErrors())

_ORG = ("*", "*")
_FAILED_PHASE_VALUES = ("6", "7", "8")  # FAILED, ABORTED, TIMED_OUT
_ENDED_PHASE_VALUES = ("5", "6", "7", "8")  # SUCCEEDED, and the failed phases
_MAX_PAGE = 200  # open-source Flyte refuses larger pages (runs/repository/impl/requests.go)
_INTERNAL_REPEATS = 3  # INTERNAL this many times in a row for one request: permanent
# Runs whose labels (and relation) are remembered: open-source Flyte's listing carries neither,
# so the reruns listing and the reference scan read them once per run (``_labels_of``); on Union
# (its listings carry both) none are kept. Bounded
# in bytes (``SizedCache``; about 350 bytes a run with rerund's four labels): 16 MiB holds ~45,000
# runs, the reruns of an hour's budget window at 6 failures/s with room to spare; a run evicted
# is read again when listed again.
_LABEL_CACHE_BYTES = 16 * 1024 * 1024
# Runs whose last ``read_failure`` answers are kept for the SDK's rerun path (``ReuseReads``):
# a failure is read, decided and, when owed now, rerun moments later; older reads are dropped.
# Bounded in bytes (``_READ_CACHE_BYTES``, the answers' serialized size; a SizedCache). A kept
# answer holds only what the rerun path reads (``slim_for_rerun``: no error message, abort reason
# or attempts, which are of any size), so runs with 5 MB messages hold what runs with short ones
# do. A run's reads are only needed if it is rerun, most within seconds of the read (or after its
# backoff): 2 MiB holds the serialized reads of ~5,000 runs (~400 bytes each in the soak; the
# dicts and keys about as much again), some 14 minutes at 6 failures/s; a run evicted costs the
# rerun path its own reads. It held 4 MiB until round 7: the soak's RSS grew with it for 30 minutes.
_READ_CACHE_BYTES = 2 * 1024 * 1024
_EXECUTING_PHASES = frozenset({"QUEUED", "WAITING_FOR_RESOURCES", "INITIALIZING", "RUNNING", "PAUSED"})
_REFERENCE_SCAN = 200  # oss: newest candidates read when looking for a labelled reference run
_FALLBACK_CANDIDATES = 20


_Labelled = tuple[tuple[str, ...], object]  # (labels k1, v1, k2, v2, ...; relation or _UNREAD)
_UNREAD = object()  # a run whose relation was not read with its labels


def _labelled_bytes(ref: RunRef, kept: _Labelled) -> int:
    """Estimated bytes of one entry of the label cache: the entry, its run's name, its labels'
    characters (interned strings: their headers are shared), its relation."""
    flat, relation = kept
    size = ENTRY_BYTES + str_bytes(ref.name) + sum(8 + len(t) for t in flat)
    if isinstance(relation, RunRef):
        size += ENTRY_BYTES // 2 + str_bytes(relation.name)
    return size


def _reads_bytes(ref: RunRef, reads: dict[ReadKey, tuple[Any, bytes]]) -> int:
    """The serialized bytes of a run's kept reads (what ``rerund_read_cache_bytes`` reports)."""
    return sum(len(data) for _, data in reads.values())


def _flat(labels: Mapping[str, str]) -> tuple[str, ...]:
    """``labels`` as the label cache keeps them: k1, v1, k2, v2, ... interned (keys and most
    values repeat from run to run)."""
    return tuple(sys.intern(t) for kv in labels.items() for t in kv)


def _labels_in(kept: _Labelled | None) -> dict[str, str]:
    """The labels of a label-cache entry (none for a run not cached)."""
    if kept is None:
        return {}
    flat = kept[0]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _in_create(exc: ControlPlaneError) -> ControlPlaneError:
    """``exc``, from a read rerund makes inside a create, as the create's error (``rpc``
    CreateRun), as the SDK's own reads inside it are reported; a refusal of the create itself
    (``source_inputs_missing``) stays as it is."""
    if exc.rpc == "CreateRun" or exc.code == "source_inputs_missing":
        return exc
    return type(exc)(f"CreateRun: {exc}", rpc="CreateRun", code=exc.code)


def _refuse_empty_fields(target: RunRef) -> None:
    """``PermanentControlPlaneError`` when run ``target`` has an empty project, domain or name:
    open-source Flyte checks none of them beyond the name (``run_service.go`` CreateRun; an
    empty domain creates the run in domain ``""``), so rerund never sends one."""
    empty = [k for k in ("project", "domain", "name") if not getattr(target, k)]
    if empty:
        raise PermanentControlPlaneError(
            f"CreateRun of {target}: rerund does not create a run with an empty {' or '.join(empty)} "
            "(open-source Flyte would accept it); not retried",
            rpc="CreateRun",
            code="invalid_argument",
        )


def _inputs_missing(name: str, src: RunRef, action: str, missing: list[str]) -> PermanentControlPlaneError:
    return PermanentControlPlaneError(
        f"{name!r} of run {src} gives up: the inputs of action {action} came back without "
        f"{', '.join(repr(m) for m in missing)}, which the task needs (open-source Flyte answers "
        "empty inputs when their blob is gone from storage); rerunning would run the task on its "
        "defaults, so it is not created. Give the inputs in the policy's inputs: to rerun it",
        rpc="GetActionData",
        code="source_inputs_missing",
    )


def _in_phases_since(phases: tuple[str, ...], field: str, since: datetime) -> list[Any]:
    """ListRuns filters: the run's phase is one of ``phases`` and its ``field`` (``updated_at``
    or ``created_at``) is at or after ``since``."""
    from flyteidl2.common import list_pb2

    return [
        list_pb2.Filter(function=list_pb2.Filter.VALUE_IN, field="phase", values=list(phases)),
        list_pb2.Filter(
            function=list_pb2.Filter.GREATER_THAN_OR_EQUAL,
            field=field,
            values=[since.astimezone(UTC).isoformat()],
        ),
    ]


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
        sdk_tuning: bool = True,
    ) -> None:
        self._known = Backend(backend)
        self._conn = connection or Connection(endpoint=endpoint, org=org, insecure=insecure, api_key=api_key)
        self._endpoint = self._conn.endpoint
        self._org = self._conn.org
        self._insecure = self._conn.insecure
        self._api_key = self._conn.api_key
        self._bundle: Path | None = None
        # The daemon's rate gate (``ports.RpcGate``), awaited by every unary RPC of the SDK's
        # client (``RpcGateInterceptor``): our raw RPCs, each ListRuns page, the SDK's own rerun path, and
        # the SDK's retries.
        self.rpc_gate = rpc_gate
        # Per RPC, from the moment the rate gate lets it go (``RpcGateInterceptor``): calls made of
        # several RPCs (the SDK's rerun path) are bounded RPC by RPC, not as a whole, so time
        # queued behind max_rps never counts as the control plane's.
        self.rpc_timeout = rpc_timeout
        # Told the HTTP ``Date`` of every unary answer (``RpcGateInterceptor``): the control plane's time.
        self.clock = clock
        # The SDK's client tuned (``sdk_internals.install_tuned_client``: interceptors, no request
        # compression) or the plain SDK path (``sdk_tuning: false``, or the tuning is refused
        # for this SDK): then the gate and the deadline apply per call (``_gated``).
        self._tuning_wanted = sdk_tuning
        self.tuned = False
        self._gate = RpcGateInterceptor(self)
        self._console_url = console_url.rstrip("/")
        self._page = max(1, min(page_size, _MAX_PAGE))
        self._connected = False
        # run -> (its labels as a flat tuple of interned strings, its relation or _UNREAD)
        self._labels: SizedCache[RunRef, _Labelled] = SizedCache(
            "labels", _LABEL_CACHE_BYTES, _labelled_bytes
        )
        # run -> its kept reads, serialized (``_keep_read``); held: their serialized bytes
        self._reads: SizedCache[RunRef, dict[ReadKey, tuple[Any, bytes]]] = SizedCache(
            "reads", _READ_CACHE_BYTES, _reads_bytes
        )
        self._internal: dict[tuple[str, bytes], int] = {}
        self._label_reads = asyncio.Semaphore(8)

    @property
    def backend(self) -> str:
        """``union`` or ``oss`` once known (configured, or found by the first label filter), else
        ``auto``."""
        return self._known.name

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
            _, client_id, secret = decode_api_key(conn.api_key)
            kwargs.update(
                endpoint=conn.endpoint,
                auth_type="ClientSecret",
                client_id=client_id,
                client_credentials_secret=secret,
            )
        elif conn.api_key:
            decode_api_key(conn.api_key)
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
            with sdk_internals.token_requests_trust(conn.ca_cert_file, self._bundle_path(conn.ca_cert_file)):
                await flyte.init.aio(**kwargs)
        except Exception as exc:
            shown = redact_url(conn.endpoint) if conn.endpoint else "(from the API key)"
            raise ConfigError(
                f"cannot initialise the flyte SDK for endpoint {shown!r}: {type(exc).__name__}"
            ) from None
        self.tuned = self._tune()
        self._conn = conn
        self._endpoint, self._org, self._insecure, self._api_key = (
            conn.endpoint,
            conn.org,
            conn.insecure,
            conn.api_key,
        )
        self._connected = True

    def _tune(self) -> bool:
        """Install the tuned client over the one ``flyte.init`` just built; False (the plain SDK
        path, logged) when not wanted, not verified for this SDK, or when it fails."""
        if not self._tuning_wanted:
            return False
        problem = sdk_internals.tuning_problem()
        if problem is None:
            try:
                sdk_internals.install_tuned_client(ReuseReads(), self._gate)
            except Exception as exc:  # the fence's promise: a failed tuning falls back, never stops
                problem = f"the SDK tuning failed ({type(exc).__name__}: {exc})"
            else:
                return True
        log.warning("%s; rerund runs on the plain flyte SDK path (slower, correct)", problem)
        return False

    async def _gated(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``await call()``: as it is when the client is tuned (its interceptor gates each RPC);
        on the plain SDK path through the rate gate and the deadline here, per call."""
        if self.tuned:
            return await call()
        return await self._gate.gated(lambda _request, _ctx: call(), None, None)

    def _bundle_path(self, ca_cert_file: Path | None) -> Path | None:
        """The file the token client's CA bundle is written to (one per adapter, removed with
        it); None without a private CA."""
        if ca_cert_file is None:
            return None
        if self._bundle is None:
            fd, name = tempfile.mkstemp(prefix="rerund-ca-", suffix=".pem")
            os.close(fd)
            self._bundle = Path(name)
        return self._bundle

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
            if is_tls_failure(exc):
                raise ConfigError(
                    f"the control plane at {endpoint} presents a TLS certificate rerund does not trust: "
                    f"{tls_reason(exc)}; set ca_cert_file (--ca-cert-file) to the CA that signed it"
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

    async def _call(self, rpc: str, fn: Any, req: Any) -> Any:
        try:
            resp = await self._gated(lambda: fn.aio(req))
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
        if self._known.label_filters:  # Union: its listings carry both, nothing reads them here
            if len(self._labels):
                self._labels.clear()
            return
        if spec is not None:
            relation: object = relation_of(spec)
        else:
            kept = self._labels.get(ref)
            relation = _UNREAD if kept is None else kept[1]
        self._labels.put(ref, (_flat(labels), relation))

    async def _labels_of(
        self, refs: list[RunRef]
    ) -> tuple[dict[RunRef, dict[str, str]], dict[RunRef, RunRef | None]]:
        """Labels of ``refs`` and the relations read with them (GetRunDetails for each one not
        in the label cache; labels never change). A run gone meanwhile has none. Taken as read,
        not from the cache afterwards: a run evicted while the others are read keeps its labels."""
        found: dict[RunRef, _Labelled] = {}
        for r in refs:
            kept = self._labels.get(r)
            if kept is not None:
                found[r] = kept

        async def read(ref: RunRef) -> None:
            async with self._label_reads:
                try:
                    run = await self.get_run(ref)
                except NotFoundError:
                    self._learned_labels(ref, {})
                    found[ref] = ((), _UNREAD)
                else:
                    found[ref] = (_flat(run.labels), run.relation)

        await asyncio.gather(*(read(r) for r in dict.fromkeys(refs) if r not in found))
        relations = {r: rel for r, (_, rel) in found.items() if rel is None or isinstance(rel, RunRef)}
        return {r: _labels_in(found[r]) for r in refs}, relations

    async def _supports_label_filters(self, project: str, domain: str) -> bool:
        """Whether ListRuns takes label filters; with ``backend: auto`` the first call asks
        (one ListRuns of limit 1 with a label filter) and remembers."""
        if self._known.label_filters is not None:
            return self._known.label_filters
        from flyteidl2.common import list_pb2

        probe = list_pb2.Filter(function=list_pb2.Filter.EQUAL, field=f"labels.{LABEL_POLICY}", values=["-"])
        try:
            await self._latest(project, domain, [probe], limit=1)
        except PermanentControlPlaneError as exc:
            if not refuses_labels(exc):
                raise
            self._known.found_oss(exc)
            return False
        self._known.found_union()
        return True

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
            out.extend(self._stamped(summary_of(r)) for r in resp.runs)
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
        return await self._call("ListRuns", rpcs().list_runs, req)

    async def list_failed(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        return await self._list(project, domain, _in_phases_since(_FAILED_PHASE_VALUES, "updated_at", since))

    async def list_ended(self, project: str, domain: str, *, since: datetime) -> list[RunSummary]:
        filters = _in_phases_since(_ENDED_PHASE_VALUES, "created_at", since)
        runs = await self._list(project, domain, filters, page=_MAX_PAGE)
        if await self._supports_label_filters(project, domain):
            # Union's listing carries each run's root-action relation: none listed is none.
            return [r if r.relation_known else replace(r, relation_known=True) for r in runs]
        # Open-source Flyte's does not: the RunSpec's, read once per run with its labels.
        labels, relations = await self._labels_of([r.ref for r in runs if not r.relation_known])
        return [r if r.relation_known else with_labels(r, labels[r.ref], relations) for r in runs]

    async def list_reruns(
        self,
        project: str,
        domain: str,
        *,
        since: datetime,
        policy: str | None = None,
        changed_since: datetime | None = None,
    ) -> list[RunSummary]:
        times = created_and_changed(since, changed_since)
        if self._known.label_filters is False:
            return await self._list_reruns_by_reading(project, domain, times=times, policy=policy)
        try:
            out = await self._list_reruns_by_filter(project, domain, times=times, policy=policy)
        except PermanentControlPlaneError as exc:
            if self._known.label_filters is None and refuses_labels(exc):
                self._known.found_oss(exc)
                return await self._list_reruns_by_reading(project, domain, times=times, policy=policy)
            raise
        self._known.found_union()
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
        if self._known.not_exists is not False:
            try:
                return await self._list(project, domain, [*filters, lacking_label(LABEL_REPRO)])
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument" or refuses_labels(exc):
                    raise
                self._known.found_no_not_exists(exc)
        return await self._list(project, domain, filters)

    async def _list_reruns_by_reading(
        self, project: str, domain: str, *, times: list[Any], policy: str | None
    ) -> list[RunSummary]:
        """``list_reruns`` without label filters (open-source Flyte): every run the time filters
        ``times`` select, each one's labels read once (see the module docstring for the cost)."""
        runs = await self._list(project, domain, times, page=_MAX_PAGE)
        labels, relations = await self._labels_of([r.ref for r in runs])
        out = []
        for r in runs:
            lab = labels[r.ref]
            if LABEL_POLICY not in lab or LABEL_REPRO in lab:
                continue
            if policy is not None and lab[LABEL_POLICY] != policy:
                continue
            out.append(with_labels(r, lab, relations))
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

        pump = asyncio.ensure_future(rpcs().pump_watch_runs.aio(req, sink))
        pump.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                resp = await queue.get()
                if resp is None:
                    break
                for run in resp.runs:
                    yield self._stamped(summary_of(run))
            while not queue.empty():  # messages that raced the end of the stream
                resp = queue.get_nowait()
                for run in resp.runs if resp is not None else ():
                    yield self._stamped(summary_of(run))
            if not pump.cancelled() and pump.exception() is not None:
                exc = pump.exception()
                assert exc is not None
                raise translate_error(exc, "WatchRuns") from exc
        finally:
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump

    def _stamped(self, summary: RunSummary) -> RunSummary:
        """``summary``, its end told to the clock: a failure streamed or listed at once is not
        in the future of the control plane's time (``ControlPlaneClock.saw``)."""
        if self.clock is not None and summary.ended_at is not None:
            self.clock.saw(summary.ended_at)
        return summary

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
            value = phase_value(phase)
        except ValueError:
            raise PermanentControlPlaneError(
                f"ListRuns: unknown phase {phase!r}; use SUCCEEDED, FAILED, TIMED_OUT or ABORTED",
                rpc="ListRuns",
                code="invalid_argument",
            ) from None
        filters = [
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="task_name", values=[task]),
            # EQUAL with one value: open-source Flyte's SQL refuses a single-value VALUE_IN.
            list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="phase", values=[value]),
        ]
        if (labels or without_label) and self._known.label_filters is False:
            return await self._latest_by_reading(project, domain, filters, labels or {}, without_label)
        if labels or without_label:
            try:
                found = await self._latest_by_filter(project, domain, filters, labels, without_label)
            except PermanentControlPlaneError as exc:
                if self._known.label_filters is None and refuses_labels(exc):
                    self._known.found_oss(exc)
                    return await self._latest_by_reading(
                        project, domain, filters, labels or {}, without_label
                    )
                raise
            self._known.found_union()
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
        if self._known.not_exists is not False and self._known.label_filters is not False:
            try:
                runs = await self._latest(project, domain, [*filters, lacking_label(without_label)], limit=1)
            except PermanentControlPlaneError as exc:
                if exc.code != "invalid_argument" or refuses_labels(exc):
                    raise
                self._known.found_no_not_exists(exc)
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
            resp = await self._call("ListRuns", rpcs().list_runs, req)
            page = [summary_of(r) for r in resp.runs]
            scanned += len(page)
            found, relations = await self._labels_of([r.ref for r in page])
            for r in page:
                lab = found[r.ref]
                if all(lab.get(k) == v for k, v in labels.items()) and (
                    not without_label or without_label not in lab
                ):
                    return with_labels(r, lab, relations)
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
        resp = await self._call("ListRuns", rpcs().list_runs, req)
        return [summary_of(r) for r in resp.runs[:limit]]

    async def read_outputs(self, ref: RunRef) -> dict[str, Any]:
        from flyteidl2.common import identifier_pb2
        from flyteidl2.dataproxy import dataproxy_service_pb2

        req = dataproxy_service_pb2.GetActionDataRequest(
            action_id=identifier_pb2.ActionIdentifier(run=self._run_id(ref), name="a0")
        )
        resp = await self._call("GetActionData", rpcs().get_action_data, req)
        if not resp.HasField("outputs"):
            return {}
        return {nl.name: decode_literal(nl.value) for nl in resp.outputs.literals}

    async def scope_exists(self, project: str, domain: str) -> bool | None:
        """Whether the org has project ``project`` with domain ``domain`` (1 RPC: ProjectService
        GetProject). None when the control plane does not say (it serves no ProjectService)."""
        from flyteidl2.project import project_service_pb2

        req = project_service_pb2.GetProjectRequest(id=project, org=self._org)
        try:
            resp = await self._call("GetProject", rpcs().get_project, req)
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
        return (await self.run_details_answer(ref))[1].details

    def _run_details_request(self, ref: RunRef) -> Any:
        from flyteidl2.workflow import run_service_pb2

        return run_service_pb2.GetRunDetailsRequest(run_id=self._run_id(ref))

    def looking_again(self, ref: RunRef) -> contextlib.AbstractContextManager[None]:
        """Within: the SDK's CreateRun of run ``ref`` is preceded by one more look for it (a
        ListRuns filtered on its name), and not sent when that finds the run
        (``tuning.ReuseReads``; ``oss`` uses it)."""
        return looking_again(self._by_name_request(ref))

    def _by_name_request(self, ref: RunRef) -> Any:
        """The ListRuns of ``ref``'s project/domain filtered on its name (one row at most).
        Open-source Flyte answers its database errors INTERNAL, never a false "no run"."""
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        by_name = list_pb2.Filter(function=list_pb2.Filter.EQUAL, field="run_name", values=[ref.name])
        return run_service_pb2.ListRunsRequest(
            request=list_pb2.ListRequest(limit=1, filters=[by_name]),
            project_id=identifier_pb2.ProjectIdentifier(
                organization=self._org, name=ref.project, domain=ref.domain
            ),
        )

    async def run_details_answer(self, ref: RunRef, *, confirm_absent: bool = True) -> tuple[Any, Any]:
        """GetRunDetails of run ``ref``: (request, answer), for ``_keep_read``.

        Open-source Flyte answers NOT_FOUND for *any* database error (``runs/service/
        run_service.go`` ``GetRunDetails``): a failed run read as absent would be settled as
        deleted and never rerun. On open-source Flyte (``backend: oss``, or detected so), a
        NOT_FOUND is believed only when a ListRuns filtered on ``run_name`` finds no run either
        (one RPC more, only on a NOT_FOUND); when it finds one, the read is a transient error,
        retried."""
        request = self._run_details_request(ref)
        try:
            return request, await self._call("GetRunDetails", rpcs().get_run_details, request)
        except NotFoundError:
            if not confirm_absent or self._known.label_filters is not False:  # oss only: Union's is true
                raise
            if await self.listed_by_name(ref, "GetRunDetails"):
                raise TransientControlPlaneError(
                    f"GetRunDetails: run {ref} answered NOT_FOUND but ListRuns lists it (open-source "
                    "Flyte answers NOT_FOUND for a database error); the read is retried",
                    rpc="GetRunDetails",
                    code="unavailable",
                ) from None
            raise

    async def listed_by_name(self, ref: RunRef, what: str) -> bool:
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
            phase=phase_name(action.status.phase),
            task=task_name(action.metadata),
            created_at=timestamp(action.status, "start_time"),
            ended_at=timestamp(action.status, "end_time"),
            labels=labels,
            relation=relation_of(details.run_spec),
            relation_known=True,
        )

    async def read_failure(self, run: RunSummary) -> FailureFacts:
        from flyteidl2.common import identifier_pb2, list_pb2
        from flyteidl2.workflow import run_service_pb2

        ref = run.ref
        run_id = self._run_id(ref)
        run_request, run_answer = await self.run_details_answer(ref)
        details = run_answer.details
        spec = details.run_spec
        labels = dict(spec.labels.values)
        self._learned_labels(ref, labels, spec)
        actions = await self._call(
            "ListActions",
            rpcs().list_actions,
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
        # The first failed child action is the cause; the root's error usually repeats it. One
        # that failed or timed out comes before one aborted: open-source AbortAction aborts any
        # action with no phase condition (``runs/repository/impl/action.go`` AbortAction), so a
        # child an operator aborted after it succeeded is listed ABORTED, maybe first.
        children = [a for a in actions.actions if a.metadata.parent]
        chosen = next((a for a in children if phase_name(a.status.phase) != "ABORTED"), None)
        chosen = chosen or next(iter(children), None)
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
            action_answer = await self._call("GetActionDetails", rpcs().get_action_details, action_request)
            kept.append(("GetActionDetails", action_request, action_answer))
            action_details = action_answer.details
        error = ErrorInfo()
        # An empty ErrorInfo is no error read: open-source Flyte serves the last attempt's nil
        # error as one when the FAILED event lies past the 500 events it reads of an action
        # (``run_service.go`` getAttempts / buildActionDetails).
        has_error = action_details.HasField("error_info") and action_details.error_info.ByteSize() > 0
        if has_error:
            error = error_info(action_details.error_info)
        elif action_details.HasField("abort_info"):
            error = ErrorInfo(kind="UNSPECIFIED", code="Aborted", message=action_details.abort_info.reason)
        action_task = task_name(action_details.metadata)
        if not action_task and action_details.HasField("task"):
            action_task = action_details.task.task_template.id.name
        failed_at = (
            run.ended_at or timestamp(action_details.status, "end_time") or timestamp(root.status, "end_time")
        )
        if failed_at is None:
            failed_at = utcnow()
        task = run.task or task_name(root.metadata)
        # The phase read now, not the one listed: open-source Flyte runs a FAILED run again when
        # a CreateRun names it (``run_service.go`` CreateRun), so a run listed FAILED can be
        # QUEUED or RUNNING by the time it is read; its facts say so and it is not decided.
        now_phase = phase_name(root.status.phase)
        executing = now_phase in _EXECUTING_PHASES and run.phase != now_phase
        summary = (
            run
            if task == run.task and not executing
            else RunSummary(
                ref=run.ref,
                phase=now_phase if executing else run.phase,
                task=task,
                created_at=run.created_at,
                ended_at=None if executing else run.ended_at,
                labels=run.labels,
            )
        )
        # FAILED without error details: open-source Flyte fills them once the last attempt's
        # events arrived, a while after the phase. TIMED_OUT never has any there.
        pending = (
            phase_name(action_details.status.phase) == "FAILED"
            and not has_error
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
            finished_phase=finished_before_abort(root),
            task_version=root.metadata.task.id.version or template.id.version,
            resources=resources_view(template) if root.HasField("task") else None,
            relation=relation_of(spec),
        )
        for method, request, answer in kept:  # after the facts were taken from them
            self._keep_read(ref, method, request, answer)
        return facts

    def _keep_read(self, ref: RunRef, method: str, request: Any, answer: Any) -> None:
        """Keep ``answer``, a read of run ``ref`` that the SDK's rerun path makes again, for that
        path (``ReuseReads``), slimmed to what that path reads (``slim_for_rerun``, in place:
        call it once the caller took what it needs) and serialized. Serialized, because a
        parsed answer pins the whole arena it was parsed into, the cleared 5 MB message too: the
        bytes kept are the bytes held. No more than ``read_cache_budget`` bytes of them are kept
        (oldest run dropped first; a run's reads larger than the budget on their own are not
        kept)."""
        key = read_key(method, request)
        if key is None:
            return
        slim_for_rerun(answer)
        data = answer.SerializeToString()
        reads = dict(self._reads.get(ref) or {})
        reads[key] = (type(answer), data)
        self._reads.put(ref, reads)

    @property
    def read_cache_bytes(self) -> int:
        """The serialized bytes of the reads kept: ``rerund_read_cache_bytes``."""
        return self._reads.held

    @property
    def read_cache_budget(self) -> int:
        return self._reads.budget

    @read_cache_budget.setter
    def read_cache_budget(self, budget: int) -> None:
        self._reads.budget = budget
        self._reads.shrink()

    @property
    def caches(self) -> tuple[SizedCache[Any, Any], ...]:
        """The adapter's long-lived caches (``rerund_cache_bytes``)."""
        return (self._labels, self._reads, SPEC_VIEWS, RESOURCES_VIEWS)

    def _take_reads(self, ref: RunRef) -> dict[ReadKey, Any] | None:
        """What was read of ``ref`` (``_keep_read``), parsed again and given up to the call that
        reruns it."""
        kept = self._reads.pop(ref)
        if kept is None:
            return None
        return {key: kind.FromString(data) for key, (kind, data) in kept.items()}

    async def read_spec(self, ref: RunRef) -> RunSpecView:
        """The RunSpec of run ``ref`` (1 GetRunDetails, kept for a rerun of ``ref``)."""
        request, answer = await self.run_details_answer(ref)
        view = spec_view(answer.details.run_spec)
        self._keep_read(ref, "GetRunDetails", request, answer)
        return view

    async def issue_mark(self, ref: RunRef) -> str:
        """The ``rerund-issue`` annotation of run ``ref`` (one GetRunDetails; labels cached)."""
        details = await self._run_details(ref)
        self._learned_labels(ref, dict(details.run_spec.labels.values), details.run_spec)
        return str(details.run_spec.annotations.values.get(ANNOTATION_ISSUER, ""))

    async def _absent_right_before_creating(self, target: RunRef) -> None:
        """oss, on the plain SDK path (no ``ReuseReads`` to look again right before the
        CreateRun): one ListRuns filtered on ``target``'s name right before the SDK's create
        call; ``AlreadyExistsError`` when it finds the run (another process created it after
        the look before: open-source Flyte's CreateRun would run it again). Its INTERNAL (a
        database error) is transient: the create is retried. The tuned client looks at the
        CreateRun itself (``tuning.looking_again``), so nothing is sent here then."""
        if self.tuned:
            return
        try:
            answer = await self._call("ListRuns", rpcs().list_runs, self._by_name_request(target))
        except PermanentControlPlaneError as exc:
            if exc.code != "internal_repeated":
                raise
            self._internal.clear()  # the database takes this filter: its failing, however often
            raise TransientControlPlaneError(
                f"CreateRun: cannot look for run {target} right before creating it: {exc}",
                rpc="ListRuns",
                code="internal",
            ) from exc
        if not any(r.action.id.run.name == target.name for r in answer.runs):
            return
        raise AlreadyExistsError(
            f"run {target} found right before the SDK's create call",
            rpc="CreateRun",
            code="already_exists",
        )

    async def _create(
        self, source: RunRef, target: RunRef, create: Callable[[str], Awaitable[RunRef]]
    ) -> RunRef:
        """``create(mark)`` of run ``target`` (from ``source``): on Union at once (ALREADY_EXISTS
        tells a second create), on open-source Flyte through ``create_looking_first``. Every
        create of the adapter goes through here."""
        _refuse_empty_fields(target)
        if await self._supports_label_filters(source.project, source.domain):
            return await create("")
        return await create_looking_first(self, source, target, create)

    async def source_read(self, ref: RunRef) -> None:
        """GetRunDetails of run ``ref`` (a NOT_FOUND confirmed by a ListRuns on its name), kept
        for the SDK's own read of it (``oss.create_looking_first``: is a rerun's source there?)."""
        request, answer = await self.run_details_answer(ref)
        self._keep_read(ref, "GetRunDetails", request, answer)

    async def create_rerun(self, request: RerunRequest) -> RunRef:
        return await self._create(
            request.source, request.target, functools.partial(self._create_rerun, request)
        )

    async def _create_rerun(self, request: RerunRequest, mark: str) -> RunRef:
        import flyte

        src = request.source
        key = ("CreateRun", str(request.target).encode())
        source_spec = request.source_spec if request.source_spec is not None else await self.read_spec(src)
        force = list(request.overrides.force_rerun_actions) or None
        try:
            reads = await self._inputs_checked(request, self._take_reads(src) or {})
        except ControlPlaneError as exc:
            raise _in_create(exc) from exc
        if mark:
            await self._absent_right_before_creating(request.target)
        try:
            with sdk_internals.scope(src.project, src.domain), reusing(reads):
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
                run = await self._gated(lambda: call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._repeated_internal(key, translate_error(exc, "CreateRun")) from exc
        self._internal.pop(key, None)
        return RunRef(src.project, src.domain, str(run.name or request.name))

    async def create_relaunch(self, request: RelaunchRequest) -> RunRef:
        return await self._create(
            request.source, request.target, functools.partial(self._create_relaunch, request)
        )

    async def _create_relaunch(self, request: RelaunchRequest, mark: str) -> RunRef:
        import flyte
        import flyte.errors
        import flyte.remote

        src = request.source
        source_spec = request.source_spec if request.source_spec is not None else await self.read_spec(src)
        version = request.version or None
        what = f"task {request.task!r} version {request.version or 'latest'!r} in {src.project}/{src.domain}"

        reads = self._take_reads(src) or {}

        async def relaunch() -> Any:
            source_task = await self._task_spec(src, "a0", reads)  # before the SDK reads (and takes) it
            with sdk_internals.scope(src.project, src.domain), reusing(reads):
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
                    task = task.override(resources=flyte_resources(request.resources))
                    if kept.ByteSize():  # the accelerator type and shared memory stay the task's
                        task.pb2.spec.task_template.extended_resources.CopyFrom(kept)
                source_run = await flyte.remote.Run.get.aio(name=src.name)
                read = dict(await source_run.inputs.aio())
                missing = missing_inputs(source_task, read, request.inputs)
                if missing:
                    raise _inputs_missing(request.name, src, "a0", missing)
                inputs = {**read, **request.inputs}
                kwargs = runcontext_for_relaunch(request, source_spec)
                if mark:  # oss: the mark of this create, an annotation (labels stay the request's)
                    kwargs["annotations"] = {**kwargs.get("annotations", {}), ANNOTATION_ISSUER: mark}
                runner = flyte.with_runcontext(**kwargs)
                if mark:
                    await self._absent_right_before_creating(request.target)
                return await runner.run.aio(task, **inputs)

        try:
            run = await self._gated(relaunch)
        except asyncio.CancelledError:
            raise
        except ControlPlaneError as exc:  # rerund's own read of the source, inside the create
            raise _in_create(exc) from exc
        except flyte.errors.RemoteTaskNotFoundError as exc:
            raise PermanentControlPlaneError(
                f"relaunch {request.name!r} of run {src.name!r}: {what} is not deployed ({exc}); not retried",
                rpc="GetTaskDetails",
                code="not_found",
            ) from exc
        except Exception as exc:
            raise translate_error(exc, "CreateRun") from exc
        return RunRef(src.project, src.domain, str(run.name or request.name))

    async def _task_spec(self, src: RunRef, action: str, reads: dict[ReadKey, Any]) -> Any:
        """The ``TaskSpec`` of action ``action`` of run ``src``: from ``reads`` (what
        ``read_failure`` kept for the SDK's rerun path), else read now and added to them."""
        if action == "a0":
            key: ReadKey = ("GetRunDetails", src.project, src.domain, src.name, "")
            if key not in reads:
                reads[key] = (await self.run_details_answer(src))[1]
            return reads[key].details.action.task
        from flyteidl2.common import identifier_pb2
        from flyteidl2.workflow import run_service_pb2

        key = ("GetActionDetails", src.project, src.domain, src.name, action)
        if key not in reads:
            request = run_service_pb2.GetActionDetailsRequest(
                action_id=identifier_pb2.ActionIdentifier(run=self._run_id(src), name=action)
            )
            reads[key] = await self._call("GetActionDetails", rpcs().get_action_details, request)
        return reads[key].details.task

    async def _inputs_checked(self, request: RerunRequest, reads: dict[ReadKey, Any]) -> dict[ReadKey, Any]:
        """``reads`` plus the source action's inputs (GetActionData, which the SDK's rerun path
        then reuses), once they are known to carry every input the task needs that the request
        does not give; raises ``PermanentControlPlaneError`` (``source_inputs_missing``) when
        they do not: a rerun never runs on defaults. No RPC when the request gives them all."""
        from flyteidl2.common import identifier_pb2
        from flyteidl2.dataproxy import dataproxy_service_pb2

        src, action = request.source, request.action or "a0"
        spec = await self._task_spec(src, action, reads)
        if not missing_inputs(spec, (), request.inputs):
            return reads
        data_request = dataproxy_service_pb2.GetActionDataRequest(
            action_id=identifier_pb2.ActionIdentifier(run=self._run_id(src), name=action)
        )
        data = await self._call("GetActionData", rpcs().get_action_data, data_request)
        missing = missing_inputs(spec, (nl.name for nl in data.inputs.literals), request.inputs)
        if missing:
            raise _inputs_missing(request.name, src, action, missing)
        reads[("GetActionData", src.project, src.domain, src.name, action)] = data
        return reads

    async def latest_task_version(self, project: str, domain: str, task: str) -> str | None:
        import flyte.remote

        async def latest() -> str | None:
            with sdk_internals.scope(project, domain):
                async for found in flyte.remote.Task.listall.aio(
                    by_task_name=task, project=project, domain=domain, sort_by=("created_at", "desc"), limit=1
                ):
                    return str(found.version)
            return None

        try:
            return await self._gated(latest)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_error(exc, "ListTasks") from exc

    def console_url(self, ref: RunRef) -> str:
        if self._console_url:
            return f"{self._console_url}/v2/domain/{ref.domain}/project/{ref.project}/runs/{ref.name}"
        try:
            return sdk_internals.console_run_url(ref.project, ref.domain, ref.name)
        except Exception:
            return (
                f"{self._endpoint.rstrip('/')}/v2/domain/{ref.domain}/project/{ref.project}/runs/{ref.name}"
            )
