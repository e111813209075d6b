"""The SDK's own event loop: ``run_on_sdk_loop`` runs the daemon on it, and ``rpcs()`` are the raw
RPCs rerund makes (ListRuns, GetRunDetails, ..., the WatchRuns pump), wrapped with the SDK's
``syncify`` so they share its loop and its HTTP client. ``.aio()`` hops to that loop and back and
carries our ``contextvars`` along."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import SimpleNamespace
from typing import Any, TypeVar

from rerund.adapters.flyte import sdk_internals

__all__ = ["rpcs", "run_on_sdk_loop"]

_T = TypeVar("_T")


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
    sdk_internals.use_event_loop(event_loop)
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


def rpcs() -> Any:
    """The syncified raw RPC functions (built lazily so importing this module stays cheap)."""
    global _RPCS
    if _RPCS is not None:
        return _RPCS
    from flyte.syncify import syncify

    @syncify
    async def list_runs(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().run_service.list_runs(req))

    @syncify
    async def get_run_details(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().run_service.get_run_details(req))

    @syncify
    async def list_actions(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().run_service.list_actions(req))

    @syncify
    async def get_action_details(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().run_service.get_action_details(req))

    @syncify
    async def pump_watch_runs(req: Any, sink: Any) -> None:
        # Runs on the SDK's loop; hands every message to ``sink`` (thread-safe) so the
        # consumer's loop never shares an async generator with the SDK's loop.
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError

        client = sdk_internals.get_client()
        stream: Any = getattr(client, "watch_service", client.run_service).watch_runs(req)
        try:
            async for resp in stream:
                sink(resp)
        except ConnectError as exc:
            if exc.code != Code.CANCELED:  # CANCELED: the consumer stopped watching
                raise

    @syncify
    async def get_action_data(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().dataproxy_service.get_action_data(req))

    @syncify
    async def get_project(req: Any) -> Any:
        return await _uncancel(sdk_internals.get_client().project_domain_service.get_project(req))

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
