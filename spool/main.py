"""Entry point of the spool service: open the backend, serve gRPC, close the store cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health

from petrel.config import Config, split_hostport
from petrel.events import EventLog
from petrel.metrics import ready_fields
from petrel.rpc import create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import spool_pb2_grpc
from spool import metrics
from spool.backend import open_backend
from spool.server import SERVICE_NAME, SpoolServicer
from spool.store import FreeSpaceGuard, Spool

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0
STOP_GRACE = 5.0


async def _watch_health(spool: Spool, health_servicer: health.aio.HealthServicer,
                        interval: float) -> None:
    serving = True
    while True:
        await asyncio.sleep(interval)
        healthy = await spool.healthy()
        if healthy != serving:
            serving = healthy
            log.warning("spool backend %s", "recovered" if healthy else "is unhealthy")
            await set_serving(health_servicer, [SERVICE_NAME], healthy)


async def serve(config: Config, stop: asyncio.Event) -> None:
    # Opening enumerates the store (message count), which may take a while on a large spool.
    backend = await asyncio.to_thread(open_backend, config)
    free_space = FreeSpaceGuard(
        config.spool_path if config.spool.backend == "rocksdb" else None,
        config.spool.min_free_bytes)
    # Where the Reception records that ingress sends with each message are written.
    events = await asyncio.to_thread(EventLog.from_config, config, "spool")
    spool = Spool(backend, max_batch=config.spool.group_commit_max_batch,
                  max_delay=config.spool.group_commit_max_delay, free_space=free_space,
                  events=events)
    try:
        server, health_servicer, port = create_server(config.spool.listen, [
            (spool_pb2_grpc.add_SpoolServiceServicer_to_server, SpoolServicer(spool),
             SERVICE_NAME)])
        await server.start()
        # create_server registers the health service but leaves every status unset.
        await set_serving(health_servicer, [SERVICE_NAME], True)
        host, _ = split_hostport(config.spool.listen)
        location = str(config.spool_path) if backend.name == "rocksdb" else ""
        metrics.bind(backend.count, config.spool_path if backend.name == "rocksdb" else None)
        metrics_server = metrics.serve_metrics(config.spool.metrics_listen)
        print_ready("spool", grpc=f"{host}:{port}", backend=backend.name, path=location,
                    messages=backend.count(), **ready_fields(metrics_server))
        log.info("spool serving on %s:%d (%s, %d messages)", host, port, backend.name,
                 backend.count())
        watcher = asyncio.create_task(_watch_health(spool, health_servicer, HEALTH_INTERVAL))
        await stop.wait()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await set_serving(health_servicer, [SERVICE_NAME], False)
        await server.stop(STOP_GRACE)
        if metrics_server is not None:
            metrics_server.close()
    finally:
        await spool.close()
    log.info("spool closed (%d commits, %d writes)", spool.commits, spool.committed_writes)


def main(config: Config) -> None:
    async def run(stop: asyncio.Event) -> None:
        await serve(config, stop)

    run_service("spool", run, config.log_level)
