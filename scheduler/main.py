"""Entry point of the scheduler service.

``SchedulerApp`` wires the engine to its gRPC server, the spool channel and the event log; it
is what ``serve`` runs and what tests start in-process. SIGTERM: NOT_SERVING, stop dispatching,
finish writing events and spool updates (bounded), stop.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from petrel.config import Config, split_hostport
from petrel.events import EventLog
from petrel.metrics import ready_fields
from petrel.routing import Router
from petrel.rpc import create_channel, create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import scheduler_pb2_grpc, spool_pb2_grpc
from petrel.webhooks import Shipper
from scheduler import metrics
from scheduler.core import Scheduler
from scheduler.policy import RetryPolicy
from scheduler.server import SERVICE_NAME, SchedulerServicer
from scheduler.suppressor import Suppressor

log = logging.getLogger(__name__)

STOP_GRACE = 5.0


class SchedulerApp:
    def __init__(self, config: Config, *, policy: RetryPolicy | None = None) -> None:
        self.config = config
        self._policy = policy
        self.port = 0
        self._channel: grpc.aio.Channel | None = None
        self._suppression_channel: grpc.aio.Channel | None = None
        self._events: EventLog | None = None
        self._shipper: Shipper | None = None
        self._server: grpc.aio.Server | None = None
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None, "not started"
        return self._scheduler

    @property
    def address(self) -> str:
        host, _ = split_hostport(self.config.scheduler.listen)
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Listen and start rebuilding the queues from the spool (dispatch starts with the first
        messages the rebuild reads)."""
        self._channel = create_channel(self.config.spool.address)
        self._events = EventLog.from_config(self.config, "scheduler")
        bounce = self.config.bounce
        suppressor = None
        if bounce.suppress_bounces and bounce.suppress_categories:
            self._suppression_channel = create_channel(bounce.suppression_target)
            suppressor = Suppressor(self._suppression_channel, bounce)
        self._scheduler = Scheduler(
            self.config.scheduler, spool_pb2_grpc.SpoolServiceStub(self._channel),
            Router(self.config.routing), self._events, policy=self._policy,
            suppressor=suppressor)
        self._server, self._health, self.port = create_server(self.config.scheduler.listen, [
            (scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server,
             SchedulerServicer(self._scheduler), SERVICE_NAME)])
        await self._server.start()
        await self._scheduler.start()
        # the scheduler is the one instance in every deployment: it ships the webhooks
        self._shipper = Shipper.from_config(self.config, "scheduler")
        if self._shipper is not None:
            self._shipper.start()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        if self._server is not None:
            await set_serving(self._health, [SERVICE_NAME], False)
        if self._shipper is not None:
            await self._shipper.stop()
        if self._scheduler is not None:
            await self._scheduler.stop(grace)
        if self._server is not None:
            # the worker streams are closed already; what is left are short unary calls
            await self._server.stop(1.0)
        if self._events is not None:
            await self._events.close()
        if self._channel is not None:
            await self._channel.close()
        if self._suppression_channel is not None:
            await self._suppression_channel.close()


async def serve(config: Config, stop: asyncio.Event) -> None:
    app = SchedulerApp(config)
    await app.start()
    metrics_server = metrics.serve_metrics(config.scheduler.metrics_listen)
    print_ready("scheduler", grpc=app.address, **ready_fields(metrics_server))
    log.info("scheduler serving on %s (spool %s)", app.address, config.spool.address)
    await stop.wait()
    await app.stop()
    if metrics_server is not None:
        metrics_server.close()
    log.info("scheduler stopped: %d dispatched, %d results, %d put back",
             app.scheduler.dispatched, app.scheduler.results, app.scheduler.requeued)


def main(config: Config) -> None:
    async def run(stop: asyncio.Event) -> None:
        await serve(config, stop)

    run_service("scheduler", run, config.log_level)
