"""The benchmark's keep-alive HTTP client against real loopback servers: a connection the
server closed while it sat idle is replaced once; a server that never answers is an error."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.loadgen import HttpConnection

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return True


async def test_a_connection_closed_while_idle_is_replaced_once() -> None:
    connections = 0
    closed = asyncio.Event()

    async def answer_once_then_close(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(RESPONSE)  # keep-alive promised, then closed as after an idle timeout
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server = await asyncio.start_server(answer_once_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpConnection("127.0.0.1", port)
    try:
        assert await client.post("/x", b"{}") == (200, b"{}")
        await asyncio.wait_for(closed.wait(), 5)
        assert await client.post("/x", b"{}") == (200, b"{}")
        assert connections == 2
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_new_connection_without_an_answer_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpConnection("127.0.0.1", port)
    try:
        with pytest.raises(ConnectionError, match="closed by server"):
            await client.post("/x", b"{}")
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
