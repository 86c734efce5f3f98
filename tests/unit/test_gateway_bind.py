"""The gateway's listening socket gives every HTTP connection TCP_NODELAY (no Nagle delay
between a response's header and body writes on kept-alive connections)."""

from __future__ import annotations

import asyncio
import socket

from gateway.main import bind


async def test_accepted_connections_have_nagle_off() -> None:
    sock = bind("127.0.0.1:0")
    port = sock.getsockname()[1]
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        seen.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(seen, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
