"""A small, real HTTP forward proxy for tests: what a corporate egress proxy does, on 127.0.0.1.

``ForwardProxy`` serves from its own thread and event loop (so a daemon subprocess can use it
too) and handles the two ways clients use a forward proxy:

- ``CONNECT host:port`` (HTTPS): answers ``200 Connection established`` and relays bytes both
  ways; the TLS session is the client's with the server, so the proxy sees tunnels, not RPCs.
- absolute-URI requests (``POST http://host:port/path HTTP/1.1``, plain HTTP): forwards each
  request in origin form, without the ``Proxy-*`` headers, and relays the answer.

With ``credentials`` it asks for them as a real proxy does: a request without the right
``Proxy-Authorization: Basic`` is answered ``407 Proxy Authentication Required`` and closed.

``routes`` maps an address the client asks for onto the address really connected to. A test
gives the client an endpoint where nothing listens (``hold_closed_port``) and routes it to the
control plane: the endpoint is then reachable only through the proxy, so a client that
bypassed the proxy would fail, not quietly succeed.

``stop()`` closes the listener *and* every open connection and tunnel (a proxy that is down
carries nothing); ``start()`` listens again on the same port.

Counters (read from the test thread): ``tunnels`` and ``requests`` per target, ``refused``
(407 answers), ``authorizations`` (every ``Proxy-Authorization`` value seen).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

__all__ = ["ForwardProxy", "hold_closed_port"]

_HOP_BY_HOP = {b"proxy-authorization", b"proxy-connection", b"proxy-authenticate"}
_MAX_HEAD = 64 * 1024


@contextlib.contextmanager
def hold_closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for as long as the block runs: the socket
    is bound (so no one else gets the port) but never listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


class ForwardProxy:
    """See the module docstring."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        routes: Mapping[tuple[str, int], tuple[str, int]] | None = None,
    ) -> None:
        self._credentials = credentials
        self._routes = dict(routes or {})
        self.port = 0
        self.tunnels: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.refused = 0
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="forward-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    # -- the test's side ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://[user:password@]127.0.0.1:port``."""
        auth = f"{self._credentials[0]}:{self._credentials[1]}@" if self._credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        self._on_loop(self._listen())
        return self

    def stop(self) -> None:
        self._on_loop(self._close())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def total(self) -> int:
        """Tunnels opened plus requests forwarded."""
        with self._lock:
            return sum(self.tunnels.values()) + sum(self.requests.values())

    def _on_loop(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    # -- the proxy's side (on its loop) ---------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, limit=_MAX_HEAD
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def _route(self, host: str, port: int) -> tuple[str, int]:
        return self._routes.get((host, port), (host, port))

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        seen = headers.get(b"proxy-authorization")
        if seen is not None:
            with self._lock:
                self.authorizations.append(seen.decode("latin-1"))
        if self._credentials is None:
            return True
        want = "Basic " + base64.b64encode(":".join(self._credentials).encode()).decode()
        return seen is not None and seen.decode("latin-1") == want

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, headers = _parse_head(head)
            if not self._authorized(headers):
                with self._lock:
                    self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                await writer.drain()
                return
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                up_reader, upstream = await asyncio.open_connection(*self._route(host, int(port)))
                self._open.add(upstream)
                with self._lock:
                    self.tunnels[target.decode()] += 1
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await _relay_both(reader, writer, up_reader, upstream)
                return
            url = urlsplit(target.decode())
            origin = (url.hostname or "", url.port or 80)
            up_reader, upstream = await asyncio.open_connection(*self._route(*origin))
            self._open.add(upstream)
            answers = asyncio.ensure_future(_relay(up_reader, writer))
            try:
                while True:
                    with self._lock:
                        self.requests[f"{origin[0]}:{origin[1]}{url.path}"] += 1
                    await _forward_request(method, url.path, url.query, headers, head, reader, upstream)
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError:
                        break
                    method, target, headers = _parse_head(head)
                    url = urlsplit(target.decode())
                    if (url.hostname or "", url.port or 80) != origin or not self._authorized(headers):
                        break
            finally:
                answers.cancel()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._open.discard(w)
                    w.transport.abort()


def _parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ", 2)
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _forward_request(
    method: bytes,
    path: str,
    query: str,
    headers: dict[bytes, bytes],
    head: bytes,
    reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """One request in origin form (``POST /path HTTP/1.1``), without the proxy's headers, and its
    body (by ``content-length`` or chunked)."""
    lines = head.split(b"\r\n")
    target = (path or "/") + (f"?{query}" if query else "")
    out = [method + b" " + target.encode() + b" HTTP/1.1"]
    out += [ln for ln in lines[1:] if ln and ln.partition(b":")[0].strip().lower() not in _HOP_BY_HOP]
    upstream.write(b"\r\n".join(out) + b"\r\n\r\n")
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            upstream.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    upstream.write(trailer)
                upstream.write(b"\r\n")
                break
            upstream.write(await reader.readexactly(size + 2))
    else:
        length = int(headers.get(b"content-length", b"0"))
        if length:
            upstream.write(await reader.readexactly(length))
    await upstream.drain()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


async def _relay_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_relay(a_reader, b_writer), _relay(b_reader, a_writer))
