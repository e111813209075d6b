"""The process's open-file limit, raised once at start by the daemon and the sandbox.

Every socket and file is a descriptor; the soft limit is often 1,024 while the hard limit is
far higher. Each HTTP server derives how many connections it holds from the soft limit
(``rerund.core.hosts.connection_cap``), so raising it first leaves more room for both the
server and everything else (control-plane calls, the ledger, logs).

A leaf like ``rerund.errors`` and ``rerund.clock``: it imports no other rerund module, so the
sandbox may use it too.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["CappedAcceptor", "raise_fd_limit", "soft_fd_limit"]

log = logging.getLogger("rerund")

_TARGET_WHEN_UNLIMITED = 1 << 16


def soft_fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` in force."""
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (65,536 when the hard limit is
    unlimited); return the soft limit in force. A refusal is logged and the limit kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _TARGET_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if target <= soft:
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning(
            "cannot raise the open-file limit from %d to %d (%s); keeping %d", soft, target, exc, soft
        )
        return int(soft)
    return int(target)


class CappedAcceptor:
    """Accepts connections on listening sockets and never holds more than ``limit`` of them open.

    asyncio's (and uvloop's) own servers accept whatever the listen queue holds, each socket a
    descriptor, however many connections the server's protocol is about to close: a cap a
    protocol enforces after the fact is soft, and under a flood on a busy machine the accepted
    sockets piled up beyond it (719 descriptors for a cap of 512). Here the accept itself is
    gated: at ``limit`` open connections the listening sockets are no longer watched, further
    clients wait in the kernel's listen queue (no descriptor of this process), and watching
    resumes on the loop turn after one closes (its descriptor released by then).

    A connection counts from ``accept()`` until its protocol's ``connection_lost``, or until
    handing it to the loop failed (e.g. a TLS handshake). It counts before its protocol sees
    it, so a TLS server wants an ``ssl_handshake_timeout`` as short as its head timeout, or
    silent TLS clients hold the slots for asyncio's 60 s. Each accepted socket goes to
    ``protocol_factory()`` through ``loop.connect_accepted_socket`` (asyncio and uvloop).
    """

    _ACCEPT_RETRY_S = 1.0  # after EMFILE and its like, as asyncio does

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        limit: int,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        backlog: int = 100,
    ) -> None:
        self._sockets = sockets
        self._factory = protocol_factory
        self.limit = limit
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout if ssl is not None else None
        self._backlog = backlog
        self.open = 0  # accepted and not yet closed
        self._watching = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in self._sockets:
            sock.setblocking(False)
            sock.listen(self._backlog)
        self._watch()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (connections already open stay)."""
        self._closed = True
        self._unwatch()
        for sock in self._sockets:
            sock.close()

    def _watch(self) -> None:
        if self._watching or self._closed or self.open >= self.limit:
            return
        assert self._loop is not None
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
        self._watching = True

    def _unwatch(self) -> None:
        if not self._watching or self._loop is None:
            return
        for sock in self._sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
        self._watching = False

    def _accept(self, listener: socket.socket) -> None:
        assert self._loop is not None
        while self.open < self.limit and not self._closed:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: try again in a while
                log.warning(
                    "cannot accept a connection (%s); trying again in %.0f s", exc, self._ACCEPT_RETRY_S
                )
                self._unwatch()
                self._loop.call_later(self._ACCEPT_RETRY_S, self._watch)
                return
            self.open += 1
            self._hand_over(conn)
        self._unwatch()  # at the limit: the rest wait in the listen queue

    def _hand_over(self, conn: socket.socket) -> None:
        assert self._loop is not None
        counted = _Counted(self._factory(), self._released)

        def protocol() -> asyncio.Protocol:
            return counted

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if task.cancelled() or task.exception() is not None:
                counted.release()  # the loop closes the socket (e.g. a failed TLS handshake)

        task = self._loop.create_task(
            self._loop.connect_accepted_socket(
                protocol, conn, ssl=self._ssl, ssl_handshake_timeout=self._ssl_handshake_timeout
            )
        )
        self._tasks.add(task)
        task.add_done_callback(done)

    def _released(self) -> None:
        self.open -= 1
        assert self._loop is not None
        # the next turn: asyncio closes a transport's socket right after connection_lost returns
        self._loop.call_soon(self._watch)


class _Counted(asyncio.Protocol):
    """``inner``, with ``released`` called once when its connection is gone."""

    def __init__(self, inner: asyncio.Protocol, released: Callable[[], None]) -> None:
        self._inner = inner
        self._released: Callable[[], None] | None = released

    def release(self) -> None:
        if self._released is not None:
            released, self._released = self._released, None
            released()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self.release()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
