"""Entry point: serve the REST API on ``gateway.http_listen`` with uvicorn inside our own loop.

uvicorn runs as a task of the service's asyncio loop (``Server.serve``), sharing it with the
grpc.aio channels; the process's signals stay with ``petrel.runtime`` (uvicorn's own signal
capture is disabled). On stop: health answers 503, uvicorn stops accepting, in-flight requests
finish (up to the request deadline), then the channels close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.clients import Backends
from petrel.config import Config, split_hostport
from petrel.runtime import print_ready, run_service

# Concurrent connections+requests beyond which uvicorn answers 503 at once (bounded memory).
MAX_CONCURRENCY = 1000


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the service runtime owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(listen: str) -> socket.socket:
    """Listening socket for ``HOST:PORT`` (port 0 picks a free one)."""
    host, port = split_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections
    # whose socket says TCP. With Nagle on, a response written as headers + body waits for the
    # client's delayed ACK: 40 ms per request on a kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app: FastAPI, config: Config) -> EmbeddedServer:
    return EmbeddedServer(uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False,
        http="httptools", ws="none", limit_concurrency=MAX_CONCURRENCY,
        timeout_graceful_shutdown=int(config.gateway.request_deadline) + 1))


async def serve(config: Config, stop: asyncio.Event) -> None:
    backends = Backends.connect(config)
    app = create_app(config, backends)
    sock = bind(config.gateway.http_listen)
    host, port = sock.getsockname()[:2]
    server = make_server(app, config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print_ready("gateway", http=address)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            task.result()
            raise RuntimeError("the HTTP server stopped unexpectedly")
        app.state.draining = True
        server.should_exit = True
        await task
    finally:
        if not task.done():
            server.should_exit = True
            server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await backends.close()


def main(config: Config) -> None:
    async def run(stop: asyncio.Event) -> None:
        await serve(config, stop)

    run_service("gateway", run, config.log_level)
