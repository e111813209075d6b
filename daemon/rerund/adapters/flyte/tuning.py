"""rerund's interceptors on the SDK's client (installed by ``sdk_internals.install_tuned_client``
when the tuning is on): ``ReuseReads`` answers the SDK's rerun path's reads of the source with
the ones ``read_failure`` just made and, on open-source Flyte, looks for the run once more
right before a CreateRun goes out (``looking_again``); ``RpcGate`` holds ``max_rps`` and
``rpc_timeout`` per RPC on the wire and tells the clock every answer's ``Date``. Both are plain
connectrpc interceptors; the SDK's client (for the look) comes from ``sdk_internals``."""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from rerund.clock import ControlPlaneClock
from rerund.ports import RpcGate

__all__ = [
    "GateOwner",
    "ReadKey",
    "ReuseReads",
    "RpcGateInterceptor",
    "http_date",
    "looking_again",
    "read_key",
    "reusing",
    "slim_for_rerun",
]


class GateOwner(Protocol):
    """What ``RpcGateInterceptor`` reads of its owner (the control plane), at each RPC."""

    rpc_gate: RpcGate | None
    rpc_timeout: float
    clock: ControlPlaneClock | None


# What ``read_failure`` just read of a run, keyed as the SDK asks for it again.
ReadKey = tuple[str, str, str, str, str]
_REUSABLE: contextvars.ContextVar[dict[ReadKey, Any] | None] = contextvars.ContextVar(
    "rerund_reusable_reads", default=None
)


def read_key(method: str, request: Any) -> ReadKey | None:
    """The key of a GetRunDetails, GetActionDetails or GetActionData request: (method, project,
    domain, run, action); None for any other RPC. Its strings are interned: the read cache keeps
    two or three keys a run, and a string read off a message is a new object each time (~290
    bytes a run in the soak, not shared, before)."""
    if method == "GetRunDetails":
        run = request.run_id
        return (sys.intern(method), sys.intern(run.project), sys.intern(run.domain), sys.intern(run.name), "")
    if method in ("GetActionDetails", "GetActionData"):
        action = request.action_id
        run = action.run
        return (
            sys.intern(method),
            sys.intern(run.project),
            sys.intern(run.domain),
            sys.intern(run.name),
            sys.intern(action.name or "a0"),
        )
    return None


def slim_for_rerun(answer: Any) -> None:
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
def reusing(reads: dict[ReadKey, Any] | None) -> Iterator[None]:
    """Within: ``ReuseReads`` answers the SDK's reads in ``reads`` (each once)."""
    token = _REUSABLE.set(reads or None)
    try:
        yield
    finally:
        _REUSABLE.reset(token)


# oss: the GetRunDetails of the run a create is about to make, sent again right before its
# CreateRun goes out (``ReuseReads``); None outside an oss create.
_LOOK_AGAIN: contextvars.ContextVar[Any | None] = contextvars.ContextVar("rerund_look_again", default=None)


@contextmanager
def looking_again(request: Any) -> Iterator[None]:
    """Within: the CreateRun the SDK sends is preceded by ``request`` (a ListRuns filtered on
    the name of the run to create); when it finds the run, the CreateRun is not sent
    (ALREADY_EXISTS)."""
    token = _LOOK_AGAIN.set(request)
    try:
        yield
    finally:
        _LOOK_AGAIN.reset(token)


class ReuseReads:
    """A connectrpc unary interceptor, outermost in the SDK's chain. The SDK's rerun path begins
    by reading the source run (GetRunDetails, and GetActionDetails when one action is rerun),
    which ``read_failure`` read moments before to decide. What it reads there never changes
    once the run has ended (its RunSpec, its task spec, its identifiers), so inside
    ``reusing(reads)`` such a request is answered with that read instead of sent again:
    one RPC less per rerun on the wire, in ``max_rps`` and in CPU. Outside, or for anything
    else, the request goes on unchanged.

    oss, inside ``looking_again(look)``: the CreateRun is sent only when ``look`` (a ListRuns
    filtered on the name of the run it creates) finds no run just before it. A ListRuns, not a
    GetRunDetails: open-source Flyte answers a GetRunDetails the database failed NOT_FOUND
    (``run_service.go`` GetRunDetails), which would let the CreateRun go out over a run that
    exists (the 1,000-failure storm under ``db_errors`` 0.3 re-executed two runs that way); a
    ListRuns the database failed answers INTERNAL, and the create is retried. The look before
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
            key = read_key(ctx.method().name, request)
            if key is not None:
                found = reads.pop(key, None)
                if found is not None:
                    return found
        return await call_next(request, ctx)


async def _absent_just_before_create(look: Any) -> None:
    """Raise ALREADY_EXISTS when ``look`` (a ListRuns filtered on ``run_name``, on the SDK's
    loop) finds the run. An error is the create's error (retried: the look before comes
    again); its INTERNAL (a database error) is raised as UNAVAILABLE."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    from rerund.adapters.flyte.sdk_internals import get_client

    name = look.request.filters[0].values[0]
    try:
        answer = await get_client().run_service.list_runs(look)
    except ConnectError as exc:
        if exc.code != Code.INTERNAL:
            raise
        # A database error, not the CreateRun's: as UNAVAILABLE it is retried and never counts
        # towards the CreateRun's repeated INTERNAL (which would give the rerun up).
        raise ConnectError(
            Code.UNAVAILABLE, f"cannot look for run {name!r} right before creating it: {exc.message}"
        ) from exc
    if any(r.action.id.run.name == name for r in answer.runs):
        raise ConnectError(Code.ALREADY_EXISTS, f"run {name!r} found just before creating it")


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


class RpcGateInterceptor:
    """A connectrpc unary interceptor, innermost in the SDK's chain: every unary RPC the SDK's
    client sends (each retry the SDK makes included) first waits for its owner's ``rpc_gate``,
    so ``max_rps`` holds per RPC on the wire rather than per call, and each one answered is
    reported to it (``answered``); its ``rpc_timeout`` starts
    once the gate lets it go (time queued behind the rate limit is not time the control plane
    took to answer). Streams pass ungated: a WatchRuns stream is one request per scope that
    lives for hours, and a layer here would cost every message it carries."""

    def __init__(self, owner: GateOwner) -> None:
        self._owner = owner

    async def intercept_unary(self, call_next: Any, request: Any, ctx: Any) -> Any:
        clock = self._owner.clock
        if clock is None:
            return await self.gated(call_next, request, ctx)
        from connectrpc.client import ResponseMetadata

        with ResponseMetadata() as answered:
            try:
                return await self.gated(call_next, request, ctx)
            finally:
                # Every answer, an error's too, tells the control plane's time (``Date``).
                date = http_date(answered.headers().get("date"))
                if date is not None:
                    clock.observe(date)

    async def gated(self, call_next: Any, request: Any, ctx: Any) -> Any:
        """``call_next(request, ctx)`` once the gate lets it go, within ``rpc_timeout``, told to
        the gate when answered. The plain SDK path (no interceptors) calls this per call."""
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
def http_date(value: str | None) -> datetime | None:
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
