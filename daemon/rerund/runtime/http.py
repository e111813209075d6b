"""The daemon's HTTP endpoints: ``/`` (the operator page), ``/status``, ``/metrics``,
``/healthz``, ``/readyz``, ``/decisions``.

A deliberately tiny HTTP/1.1 server on asyncio streams: read-only GET routes, one
response per connection. A handler returns a ``Response``, or an awaitable of one (the page's
live explanation reads the control plane). It binds to 127.0.0.1 by default: exposing it is
an explicit ``--http 0.0.0.0:9464``. No signal handlers of its own: SIGTERM/SIGHUP stay the
daemon's.

Where it runs: on the event loop that starts it, or — given ``thread_paths`` — on a thread of
its own with its own event loop, answering those paths there (``/healthz``: a liveness probe
is answered however long the daemon's loop is busy deciding) and handing every other route to
the loop that started it (their handlers read the daemon's state, which only that loop changes).

Nothing served here may carry a secret: ``/decisions`` serves the redacted decision records
and the settings' ``public()`` form, never the API key.

Bounded (``rerund.core.hosts``): at most ``max_connections`` connections are held open, a
number derived from the descriptor limit so that descriptors stay for the control plane and
the ledger; a new connection beyond it closes the oldest one still waiting for its request
head (idle sockets cannot starve ``/healthz``), and is refused with 503 only when every held
connection is being answered. The cap is hard: the accept itself stops at
``max_connections`` + ``SPARE_CONNECTIONS`` open sockets (``rerund.fdlimit.CappedAcceptor``),
so a flood waits in the kernel's listen queue however busy the loop is. The request head
must arrive within ``HEAD_TIMEOUT_S`` and fit in 64 KiB. A request whose Host is not an IP
address, ``localhost`` or the bind name is refused (403): a DNS-rebinding web page cannot read
the operator's pages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rerund.core import times
from rerund.core.hosts import connection_cap, host_allowed, host_name
from rerund.fdlimit import CappedAcceptor, soft_fd_limit

__all__ = ["Handler", "HttpServer", "Response", "html_response", "json_response"]

log = logging.getLogger("rerund.http")

HEAD_TIMEOUT_S = 10.0  # the request line and headers must arrive within this
_REFUSED_LINGER_S = 1.0  # how long a connection refused with 503 is kept for its answer to arrive
# Sockets accepted beyond the held connections: each one a newcomer that closes the oldest idle
# connection or is answered 503. The accept stops at max_connections + this (CappedAcceptor).
SPARE_CONNECTIONS = 8
_BACKLOG = 100

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_BUSY_BODY = b"every HTTP connection is being answered; try again\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _json_value(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: a time as ISO-8601 UTC with a ``Z`` (the one
    form rerund writes times in, ``rerund.core.times.iso``), anything else as its text."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return times.iso(value)
    return str(value)


def json_response(data: Any, status: int = 200) -> Response:
    """``data`` as a JSON answer; every aware datetime in it written with a ``Z``."""
    return Response(
        status, (json.dumps(data, indent=2, default=_json_value) + "\n").encode(), "application/json"
    )


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/html; charset=utf-8")


Handler = Callable[[dict[str, list[str]]], Response | Awaitable[Response]]


async def _respond(handler: Handler, query: dict[str, list[str]]) -> Response:
    answer = handler(query)
    return await answer if inspect.isawaitable(answer) else answer


class HttpServer:
    """Serves ``routes`` (path -> handler(query) -> Response) on ``host:port`` (0 = any free).

    ``max_connections``: the most connections held open (default: ``connection_cap`` of the
    soft descriptor limit now); ``hosts``: Host names answered besides ``host``, IP addresses
    and ``localhost``; ``thread_paths``: serve from a thread of its own, answering these paths
    there and the other routes on the loop that called ``start`` (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: dict[str, Handler],
        *,
        max_connections: int | None = None,
        hosts: tuple[str, ...] = (),
        thread_paths: Collection[str] | None = None,
    ) -> None:
        self._thread_paths = frozenset(thread_paths) if thread_paths is not None else None
        self._home: asyncio.AbstractEventLoop | None = None  # the loop other routes run on
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's own (threaded)
        self._thread: threading.Thread | None = None
        self._host = host
        self._port = port
        self._routes = routes
        self._acceptor: CappedAcceptor | None = None
        self._sockets: list[socket.socket] = []
        self.max_connections = max_connections or connection_cap(soft_fd_limit())
        self._names = (host, *hosts)
        # Every open connection -> True while it still waits for its request head (insertion
        # order: the oldest first, the one a new connection beyond the cap closes).
        self._connections: dict[asyncio.StreamWriter, bool] = {}
        self._evicted = 0

    @property
    def address(self) -> tuple[str, int]:
        assert self._sockets, "the HTTP server is not started"
        sock = self._sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    async def start(self) -> None:
        """Bind and accept; raises ``OSError`` when the address cannot be bound."""
        self._home = asyncio.get_running_loop()
        if self._thread_paths is None:
            await self._listen()
            return
        bound: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_thread, args=(bound,), name="rerund-http", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(bound)

    def _run_thread(self, bound: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                bound.set_exception(exc)
                return
            bound.set_result(None)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._sockets = await _listening_sockets(self._host, self._port)

        def protocol() -> asyncio.Protocol:
            reader = asyncio.StreamReader(loop=loop)
            return asyncio.StreamReaderProtocol(reader, self._serve, loop=loop)

        self._acceptor = CappedAcceptor(
            self._sockets, protocol, self.max_connections + SPARE_CONNECTIONS, backlog=_BACKLOG
        )
        self._acceptor.start()

    @property
    def open_connections(self) -> int:
        """Sockets accepted and not yet closed (at most ``max_connections`` + 8)."""
        return self._acceptor.open if self._acceptor is not None else 0

    @property
    def held_connections(self) -> tuple[int, int]:
        """Connections held open, and how many of them wait for a request (idle: the ones a
        newcomer at the cap may close)."""
        return len(self._connections), sum(self._connections.values())

    async def stop(self) -> None:
        if self._thread is not None and self._loop is not None:
            loop, thread = self._loop, self._thread
            self._thread = None

            def close() -> None:
                if self._acceptor is not None:
                    self._acceptor.close()
                    self._acceptor = None
                loop.stop()  # the thread then cancels what it was still answering

            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(close)
            await asyncio.to_thread(thread.join, 10)
            return
        if self._acceptor is not None:
            self._acceptor.close()  # connections being answered finish on their own
            self._acceptor = None

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Hold ``writer``'s connection, closing the oldest idle one when at the cap; False when
        every held connection is being answered (the new one is refused)."""
        if len(self._connections) >= self.max_connections:
            idle = next((w for w, waiting in self._connections.items() if waiting), None)
            if idle is None:
                return False
            del self._connections[idle]
            idle.transport.abort()  # its handler ends on the closed stream
            if self._evicted % 1000 == 0:
                log.warning(
                    "HTTP connections reached the cap of %d: closing the oldest that sent no request yet "
                    "(%d closed so far); many idle clients, or a flood",
                    self.max_connections,
                    self._evicted + 1,
                )
            self._evicted += 1
        self._connections[writer] = True
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            # Answer 503, then read (and drop) what the client sent for at most a second:
            # closing with its request unread would reset the connection before it reads the 503.
            writer.write(_BUSY)
            with contextlib.suppress(Exception):
                writer.write_eof()
                await asyncio.wait_for(reader.read(), timeout=_REFUSED_LINGER_S)
            writer.close()
            return
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=HEAD_TIMEOUT_S)
            if writer in self._connections:
                self._connections[writer] = False  # answering now: never closed for a newcomer
            lines = head.split(b"\r\n")
            request_line = lines[0].decode("latin-1")
            host = next(
                (
                    line.split(b":", 1)[1].decode("latin-1").strip()
                    for line in lines[1:]
                    if line[:5].lower() == b"host:"
                ),
                "",
            )
            parts = request_line.split(" ")
            if len(parts) != 3:
                resp = Response(400, b"bad request\n")
            elif not host_allowed(host, self._names):
                resp = Response(
                    403,
                    f"Host {host_name(host)!r} is not this machine's name; rerund answers requests for "
                    "localhost, an IP address or its --http host only (a DNS-rebinding web page uses a "
                    "name of its own)\n".encode(),
                )
            elif parts[0] not in ("GET", "HEAD"):
                resp = Response(405, b"only GET\n")
            else:
                url = urlsplit(parts[1])
                handler = self._routes.get(url.path)
                if handler is None:
                    known = ", ".join(sorted(self._routes))
                    resp = Response(404, f"no such path; try {known}\n".encode())
                else:
                    try:
                        resp = await self._answer(url.path, handler, parse_qs(url.query))
                    except Exception:
                        log.exception("HTTP handler for %s failed", url.path)
                        resp = Response(503, b"internal error\n")
            reason = _REASONS.get(resp.status, "OK")
            body = b"" if parts and parts[0] == "HEAD" else resp.body
            writer.write(
                f"HTTP/1.1 {resp.status} {reason}\r\nContent-Type: {resp.content_type}\r\n"
                f"Content-Length: {len(resp.body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, path: str, handler: Handler, query: dict[str, list[str]]) -> Response:
        """The handler's response: computed here, or on the home loop for a route that is not
        one of ``thread_paths`` when the server runs on its own thread."""
        if self._thread_paths is None or self._home is None or path in self._thread_paths:
            return await _respond(handler, query)
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(_respond(handler, query), self._home)
        )


async def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound TCP sockets for every address ``host`` names (as ``asyncio.start_server`` binds)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
