"""The daemon's HTTP endpoints: ``/`` (the operator page), ``/status``, ``/metrics``,
``/healthz``, ``/readyz``, ``/decisions``.

A deliberately tiny HTTP/1.1 server on ``asyncio.start_server``: read-only GET routes, one
response per connection. A handler returns a ``Response``, or an awaitable of one (the page's
live explanation reads the control plane). It runs on the daemon's own event loop (no thread, no signal
handlers of its own, so SIGTERM/SIGHUP stay the daemon's), and binds to 127.0.0.1 by default:
exposing it is an explicit ``--http 0.0.0.0:9464``.

Nothing served here may carry a secret: ``/decisions`` serves the redacted decision records
and the settings' ``public()`` form, never the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Handler", "HttpServer", "Response", "html_response", "json_response"]

log = logging.getLogger("rerund.http")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(data, indent=2, default=str) + "\n").encode(), "application/json")


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/html; charset=utf-8")


Handler = Callable[[dict[str, list[str]]], Response | Awaitable[Response]]


class HttpServer:
    """Serves ``routes`` (path -> handler(query) -> Response) on ``host:port`` (0 = any free)."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self._host = host
        self._port = port
        self._routes = routes
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "the HTTP server is not started"
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3:
                resp = Response(400, b"bad request\n")
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
                        answer = handler(parse_qs(url.query))
                        resp = await answer if inspect.isawaitable(answer) else answer
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
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
