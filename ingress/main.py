"""Entrypoint: ``petrel ingress`` / ``python -m ingress``.

SMTP on ``ingress.smtp_listen`` and gRPC (``InjectService``, health, reflection) on
``ingress.grpc_listen`` share one asyncio loop. On SIGTERM: health NOT_SERVING, the SMTP
listener closes and refuses new transactions, transactions and injects in flight finish
(bounded by the spool and enqueue deadlines), then everything stops.
"""

from __future__ import annotations

import asyncio
import logging

from ingress import metrics
from ingress.acceptor import Acceptor
from ingress.enqueuer import Enqueuer
from ingress.inject import InjectServicer
from ingress.reports import Reports
from ingress.smtp import SmtpListener
from ingress.spool_writer import SpoolWriter
from ingress.suppression import SuppressionChecker
from petrel.config import Config, split_hostport
from petrel.events import EventLog
from petrel.metrics import ready_fields
from petrel.rpc import create_channel, create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import ingress_pb2, ingress_pb2_grpc, suppression_pb2

log = logging.getLogger(__name__)

SERVICE_NAMES = [ingress_pb2.DESCRIPTOR.services_by_name["InjectService"].full_name]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Ingress:
    """The running service: build with a ``Config``, ``start()``, later ``stop()``.
    ``smtp_address`` and ``grpc_address`` hold the bound ``HOST:PORT`` once started."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.smtp_address = ""
        self.grpc_address = ""
        cfg = config.ingress
        self.grace = cfg.spool_deadline + cfg.enqueue_deadline + 1.0
        self._spool_channel = create_channel(config.spool.address)
        self._scheduler_channel = create_channel(config.scheduler.address)
        self.spool = SpoolWriter(self._spool_channel, cfg.spool_deadline)
        self.enqueuer = Enqueuer(self._scheduler_channel, cfg.enqueue_deadline)
        self.events = EventLog.from_config(config, "ingress")
        bounce = config.bounce
        self._bounce_channel = create_channel(bounce.address)
        self._suppression_channel = (
            self._bounce_channel if bounce.suppression_target == bounce.address
            else create_channel(bounce.suppression_target))
        checker = (SuppressionChecker(
            self._suppression_channel, ttl=cfg.suppression_cache_ttl,
            size=cfg.suppression_cache_size, deadline=cfg.suppression_deadline)
            if cfg.suppression_check else None)
        self.acceptor = Acceptor(cfg.hostname, self.spool, self.enqueuer, self.events,
                                 checker)
        self.reports = Reports(bounce, self._bounce_channel, self._suppression_channel,
                               self.events, on_suppressed=self._suppressed)
        self.smtp = SmtpListener(cfg, self.acceptor, self.reports)
        self.server, self.health, grpc_port = create_server(cfg.grpc_listen, [
            (ingress_pb2_grpc.add_InjectServiceServicer_to_server,
             InjectServicer(cfg, self.acceptor), SERVICE_NAMES[0]),
        ], reuse_port=cfg.reuse_port)
        self.grpc_address = _hostport(split_hostport(cfg.grpc_listen)[0], grpc_port)

    def _suppressed(self, entry: suppression_pb2.Suppression) -> None:
        if self.acceptor.suppression is not None:
            self.acceptor.suppression.remember(entry.tenant, entry.address, entry)

    async def start(self) -> None:
        await self.server.start()
        host, port = split_hostport(self.config.ingress.smtp_listen)
        bound_host, bound_port = await self.smtp.start(host, port)
        self.smtp_address = _hostport(bound_host, bound_port)
        await set_serving(self.health, SERVICE_NAMES, True)

    async def stop(self) -> None:
        await set_serving(self.health, SERVICE_NAMES, False)
        await self.smtp.stop(self.grace)
        await self.server.stop(self.grace)
        if not await self.acceptor.drain(self.grace):
            log.warning("stopping with %d submissions still in flight", self.acceptor.in_flight)
        await self.enqueuer.close()
        await self.spool.close()
        await self.events.close()
        await self._spool_channel.close()
        await self._scheduler_channel.close()
        await self._bounce_channel.close()
        if self._suppression_channel is not self._bounce_channel:
            await self._suppression_channel.close()


async def serve(config: Config, stop: asyncio.Event) -> None:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # aiosmtpd logs every command line at INFO; its warnings and errors still show.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    ingress = Ingress(config)
    await ingress.start()
    metrics.bind(lambda: len(ingress.smtp.connections), lambda: ingress.enqueuer.backlog)
    metrics_server = metrics.serve_metrics(config.ingress.metrics_listen)
    print_ready("ingress", smtp=ingress.smtp_address, grpc=ingress.grpc_address,
                **ready_fields(metrics_server))
    log.info("ingress listening: smtp %s, grpc %s", ingress.smtp_address, ingress.grpc_address)
    await stop.wait()
    log.info("ingress stopping")
    await ingress.stop()
    if metrics_server is not None:
        metrics_server.close()


def main(config: Config) -> None:
    run_service("ingress", lambda stop: serve(config, stop), config.log_level)
