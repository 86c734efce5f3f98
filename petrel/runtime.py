"""Process runtime shared by every service: logging, the event loop, signals, graceful stop.

``run_service(name, serve)`` configures logging and tracing (``petrel.telemetry``), runs
``serve(stop)`` on one asyncio loop and sets the ``stop`` event on SIGTERM or SIGINT; ``serve``
is expected to mark itself NOT_SERVING, drain, and return. Buffered spans are exported before
the process exits.

Development aid: with ``PETREL_PROFILE_DIR`` set, the service runs under ``cProfile`` and
writes ``<dir>/<name>-<pid>.prof`` when it stops (``benchmarks/profile.py --cprofile``). It
slows the service several times over; never set it in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from grpc_health.v1 import health

from petrel import telemetry
from petrel.rpc import set_serving

log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message and any ``extra`` ids.
    ``trace_id`` defaults to the active span's trace."""

    EXTRA_FIELDS = ("message_id", "trace_id", "queue", "site", "peer")

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self.EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if "trace_id" not in entry:
            trace_id = telemetry.current_trace_id()
            if trace_id:
                entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


def use_event_loop(kind: str) -> None:
    """Choose the event loop ``run_service`` runs on: ``"uvloop"`` (libuv, less CPU per
    socket event; see BENCHMARKS.md) or ``"asyncio"`` (the standard library's)."""
    global _loop_factory
    if kind == "uvloop":
        import uvloop

        _loop_factory = uvloop.new_event_loop
    else:
        _loop_factory = None


def run_service(name: str, serve: Callable[[asyncio.Event], Awaitable[None]],
                log_level: str = "INFO") -> None:
    """Run ``serve(stop)`` until it returns; SIGTERM/SIGINT set ``stop``."""
    setup_logging(name, log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    telemetry.setup_tracing(name)
    started = time.monotonic()
    try:
        with _profiled(name), asyncio.Runner(loop_factory=_loop_factory) as runner:
            runner.run(main())
    finally:
        telemetry.shutdown_tracing()
    log.info("%s stopped after %.1fs", name, time.monotonic() - started)


@contextlib.contextmanager
def _profiled(name: str) -> Iterator[None]:
    directory = os.environ.get("PETREL_PROFILE_DIR")
    if not directory:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(os.path.join(directory, f"{name}-{os.getpid()}.prof"))


async def serve_grpc_until(stop: asyncio.Event, server: grpc.aio.Server,
                           health_servicer: health.aio.HealthServicer,
                           service_names: list[str], grace: float = 5.0) -> None:
    """Start ``server`` and mark it SERVING, wait for ``stop``, then go NOT_SERVING and stop
    with ``grace``."""
    await server.start()
    await set_serving(health_servicer, service_names, True)
    await stop.wait()
    await set_serving(health_servicer, service_names, False)
    await server.stop(grace)


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far (modules, gRPC and protobuf machinery, the
    service's own set-up) from the cyclic garbage collector: a service keeps all of it until
    it exits, and every full collection under load would walk it again (30 to 40 ms a pass in
    ingress and egress, ≈ 50 ms in the gateway, whose FastAPI and pydantic models make the
    largest heap; such a pass stalls every request in flight). Frozen objects are still freed
    by reference counting. ``print_ready`` calls it: a service announces readiness once, when
    its set-up is done. The garbage of the set-up is collected first."""
    gc.collect()
    gc.freeze()


def print_ready(service: str, **addresses: object) -> None:
    """Announce listening addresses on stdout as one JSON line (the supervisor and tests read
    it to learn bound ports). Call once, when set-up is done: the start-up heap is frozen first
    (``freeze_startup_heap``)."""
    freeze_startup_heap()
    print(json.dumps({"ready": service, **addresses}), flush=True)
