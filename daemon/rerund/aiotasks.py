"""Background tasks kept in one place: spawn, drain, cancel (kopf's ``aiotasks`` is the model).

A leaf: it imports no other rerund module, so the reconcile loop, the recorder and the sandbox
(an import island) share it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

__all__ = ["TaskSet"]

T = TypeVar("T")


class TaskSet:
    """The background tasks of one owner; each is forgotten when it ends.

    - ``spawn`` starts a coroutine as a task; the task's result is the coroutine's. An exception
      it raises (not a cancellation) goes to ``failed`` when given, else is logged to ``log``
      with ``what`` and counted with ``on_error``: it is never raised into the loop nor left
      unretrieved (the task's result is then None).
    - A task spawned with a ``key`` replaces the key's entry (the earlier task runs on,
      unlisted) and can be cancelled alone (``cancel``).
    - ``drain`` waits for every task, also those spawned while it waits; ``stop`` cancels every
      task and waits for them to end (both up to an optional ``timeout``).
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        what: str = "a background task",
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._log = log
        self._what = what
        self._on_error = on_error
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tasks

    def spawn(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        key: Hashable | None = None,
        name: str | None = None,
        failed: Callable[[Exception], None] | None = None,
    ) -> asyncio.Task[T | None]:
        """Run ``coro`` as a task of this set (see the class for errors and keys)."""

        async def guarded() -> T | None:
            try:
                return await coro
            except Exception as exc:
                if failed is not None:
                    failed(exc)
                    return None
                if self._on_error is not None:
                    self._on_error()
                self._log.exception("internal error in %s", self._what)
                return None

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        entry: Hashable = task if key is None else key
        self._tasks[entry] = task

        def forget(_: asyncio.Task[T | None]) -> None:
            coro.close()  # ended, or never started (cancelled first): no "never awaited" warning
            if self._tasks.get(entry) is task:
                del self._tasks[entry]

        task.add_done_callback(forget)
        return task

    def cancel(self, key: Hashable) -> None:
        """Cancel the task spawned with ``key``, if it still runs; it is forgotten at once."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for every task (those spawned meanwhile too). True when all ended in time."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            _done, pending = await asyncio.wait(set(self._tasks.values()), timeout=remaining)
            if pending and remaining is not None:
                return False
        return True

    async def stop(self, timeout: float | None = None) -> bool:
        """Cancel every task and wait for them to end. True when all ended in time."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending
