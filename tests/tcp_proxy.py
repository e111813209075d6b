"""A TCP proxy on 127.0.0.1 between one replica and PostgreSQL, to partition that replica from
the database without killing either (issue 25's chaos: "partition one replica").

- ``blackhole()``: nothing passes any more, in either direction, and nothing is refused — what a
  network partition looks like from both ends (no FIN, no RST). Bytes already sent wait in the
  proxy (as TCP would retransmit them) and pass on ``heal()``; a new connection is accepted but
  reaches nothing (a client gives up at its ``connect_timeout``). From PostgreSQL's side the
  proxy's socket stays up and answers TCP keepalives, as a userspace proxy or pooler in front of
  the database does (PgBouncer, a cloud SQL proxy): the server's keepalives cannot see the
  partition, only a server-side timeout can.
- ``cut()``: every connection is closed and reset at both ends, and new ones are reset at once —
  a refused, not a silent, partition.
- ``heal()``: traffic flows again (connections opened while black-holed connect upstream now).

One thread per direction per connection; ``close()`` resets everything and stops.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy", "address_of", "proxied_url", "tcp_proxy"]

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it (close would not)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream (opened once traffic may flow)."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.ready = threading.Event()  # upstream connected (or given up)
        self.closed = False

    def start(self) -> None:
        threading.Thread(target=self._open_then_pump, daemon=True).start()

    def _open_then_pump(self) -> None:
        if not self.proxy.wait_flowing(self):
            return
        try:
            self.upstream = socket.create_connection(self.proxy.target, timeout=5)
            self.upstream.settimeout(None)
        except OSError:
            self.close()
            return
        finally:
            self.ready.set()
        threading.Thread(target=self._pump, args=(self.upstream, self.client), daemon=True).start()
        self._pump(self.client, self.upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not self.proxy.wait_flowing(self):
                    return
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _reset(self.client)
        _reset(self.upstream)
        with self.proxy._cond:  # wake this link's other direction if it waits for traffic
            self.proxy._cond.notify_all()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until told otherwise (see the module)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self._listener.getsockname()[1])
        self._cond = threading.Condition()
        self._flowing = True
        self._refusing = False
        self._stopped = False
        self._links: list[_Link] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def state(self) -> str:
        with self._cond:
            return (
                "stopped"
                if self._stopped
                else "cut"
                if self._refusing
                else "flowing"
                if self._flowing
                else "blackholed"
            )

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._cond:
                if self._stopped or self._refusing:
                    _reset(client)
                    continue
                self.accepted += 1
                link = _Link(self, client)
                self._links.append(link)
            link.start()

    def wait_flowing(self, link: _Link) -> bool:
        """Block while black-holed; False once ``link`` is closed or the proxy stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self._flowing or link.closed or self._stopped)
            return not (link.closed or self._stopped)

    def blackhole(self) -> None:
        with self._cond:
            self._flowing = False

    def cut(self) -> None:
        with self._cond:
            self._refusing = True
            links, self._links = self._links, []
            self._cond.notify_all()
        for link in links:
            link.close()
        with self._cond:
            self._cond.notify_all()

    def heal(self) -> None:
        with self._cond:
            self._flowing = True
            self._refusing = False
            self._links = [link for link in self._links if not link.closed]
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()


def proxied_url(url: str, proxy: TcpProxy) -> str:
    """``url`` (``postgresql://user:pw@127.0.0.1:PORT/db``) through ``proxy``'s port."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def address_of(url: str) -> tuple[str, int]:
    """(host, port) of a ``postgresql://`` URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", int(parts.port or 5432)


@contextlib.contextmanager
def tcp_proxy(url: str) -> Iterator[TcpProxy]:
    """A proxy to the host and port of ``url``; closed when the block ends."""
    proxy = TcpProxy(address_of(url))
    try:
        yield proxy
    finally:
        proxy.close()
