"""Which HTTP requests a local server answers: the Host rule against DNS rebinding, and how
many connections it holds open.

DNS rebinding: a web page at ``evil.example`` makes its own name resolve to 127.0.0.1, and the
browser then sends that page's requests, with ``Host: evil.example``, to the daemon or the
sandbox on this machine and lets the page read the answers. A rebinding needs a name the
attacker controls, so a request is answered only when its Host is an IP address, ``localhost``
(or a ``*.localhost`` name, which resolvers keep on this machine) or one of the names the
server was told to listen on.

Connections: every open connection is a file descriptor, and a process that runs out of them
cannot open the socket of its next control-plane call or its ledger. A server holds at most
``connection_cap`` connections, a number derived from the process's descriptor limit minus a
reserve kept for everything else.

Pure: no I/O (the callers read the limit and the header).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["FD_RESERVE", "MAX_CONNECTIONS", "connection_cap", "host_allowed", "host_name"]

MAX_CONNECTIONS = 512  # the most any server here holds open, whatever the descriptor limit
FD_RESERVE = 256  # descriptors kept for everything but the HTTP server (RPCs, ledger, logs, ...)
_MIN_CONNECTIONS = 8


def connection_cap(fd_limit: int, *, reserve: int = FD_RESERVE, ceiling: int = MAX_CONNECTIONS) -> int:
    """Connections a server may hold open in a process allowed ``fd_limit`` descriptors.

    At most ``ceiling``; at most half of what is left after ``reserve``, so the rest of the
    process keeps at least ``reserve`` descriptors plus as many as the server holds; and at
    least 8, so a tiny limit still serves a health check (the reserve then shrinks instead).
    """
    return max(_MIN_CONNECTIONS, min(ceiling, (fd_limit - reserve) // 2))


def host_name(host_header: str) -> str:
    """The name in a Host header, lower-case, without port, brackets or trailing dot."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8090
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host_header: str, names: Iterable[str] = ()) -> bool:
    """True when a request with this Host header may be answered (see the module docstring).

    An absent or empty Host (HTTP/1.0) is allowed: a browser always sends one.
    """
    host = host_name(host_header)
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host in {host_name(n) for n in names}
    return True
