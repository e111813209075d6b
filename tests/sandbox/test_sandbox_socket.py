"""The sandbox's listening socket: connections it accepts have TCP_NODELAY, so a response is
not held back by Nagle's algorithm until the client's delayed ACK (about 40 ms per RPC)."""

from __future__ import annotations

import asyncio
import socket

from rerund.sandbox.server import bind_socket


def test_connections_accepted_on_the_sandbox_socket_have_tcp_nodelay() -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    nodelay: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            nodelay.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if nodelay:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())

    assert sock.proto == socket.IPPROTO_TCP
    assert nodelay and nodelay[0] != 0
