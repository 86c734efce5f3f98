"""Entry point of the egress service (``petrel egress`` / ``python -m egress``).

egress serves no RPCs: it is a client of the scheduler (Dispatch), the spool (ReadMessages)
and bounce (ClassifyReplies). It announces itself with ``print_ready("egress", worker_id=...)``
as soon as the worker loop starts, whether or not the scheduler is up yet (the worker
connects and reconnects on its own). SIGTERM drains in-flight deliveries, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import grpc
from grpc_health.v1 import health as grpc_health

from egress.clients import BounceClassifier, SpoolBodies
from egress.delivery import SmtpDeliverer
from egress.metrics import route_looked_up, serve_metrics
from egress.pool import ConnectionPool
from egress.session import SessionOptions
from egress.stamp import Stamper
from egress.task import TaskRunner
from egress.worker import DispatchWorker
from petrel.config import Config
from petrel.metrics import ready_fields
from petrel.routing import Router
from petrel.rpc import create_channel, create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import scheduler_pb2_grpc

log = logging.getLogger(__name__)

# How long a delivery waits for its body while the spool is unreachable before reporting a
# transient failure (the scheduler retries the task later).
BODY_READ_DEADLINE = 15.0
# On SIGTERM, how long in-flight deliveries may take to finish; below the 10 s that
# `petrel up` (and docker's default) wait before SIGKILL.
DRAIN_TIMEOUT = 8.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(stop: asyncio.Event, config: Config, *,
                body_deadline: float = BODY_READ_DEADLINE,
                drain_timeout: float = DRAIN_TIMEOUT) -> None:
    egress = config.egress
    worker_id = egress.worker_id or default_worker_id()
    metrics_server = serve_metrics(egress.metrics_listen)
    spool_channel = create_channel(config.spool.address)
    bounce_channel = create_channel(config.bounce.address)
    scheduler_channel = create_channel(config.scheduler.address)
    pool = ConnectionPool(egress.max_deliveries_per_connection, egress.idle_timeout)
    bodies = SpoolBodies(spool_channel, body_deadline)
    runner = TaskRunner(Router(config.routing, observer=route_looked_up),
                        SmtpDeliverer(pool, SessionOptions.from_config(egress)),
                        bodies, BounceClassifier(bounce_channel),
                        stamper=Stamper.from_config(config.bounce))
    worker = DispatchWorker(scheduler_pb2_grpc.SchedulerServiceStub(scheduler_channel),
                            runner.run, worker_id, egress.max_inflight, drain_timeout)
    pool.start()
    health = await start_health_server(egress.listen) if egress.listen else None
    print_ready("egress", worker_id=worker_id, scheduler=config.scheduler.address,
                **ready_fields(metrics_server))
    try:
        await worker.run(stop)
    finally:
        if health is not None:
            await set_serving(health[1], [], False)
            await health[0].stop(0)
        await pool.close()
        await bodies.close()
        for channel in (scheduler_channel, spool_channel, bounce_channel):
            with contextlib.suppress(Exception):
                await channel.close()
        if metrics_server is not None:
            metrics_server.close()
    log.info("egress %s stopped: %d results sent, %d dropped", worker_id,
             worker.results_sent, worker.results_dropped)


async def start_health_server(listen: str
                              ) -> tuple[grpc.aio.Server, grpc_health.aio.HealthServicer]:
    """The optional gRPC health endpoint (``egress.listen``), SERVING until ``serve`` ends."""
    server, health, _ = create_server(listen, [])
    await server.start()
    await set_serving(health, [], True)
    return server, health


def main(config: Config) -> None:
    async def _serve(stop: asyncio.Event) -> None:
        await serve(stop, config)

    run_service("egress", _serve, config.log_level)
