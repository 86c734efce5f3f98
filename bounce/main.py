"""Entry point of the bounce service: compile the rules once, serve ``BounceService``, and
(``bounce.suppression``) keep the suppression list and serve ``SuppressionService``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bounce.classifier import ReplyClassifier
from bounce.metrics import serve_metrics
from bounce.server import SERVICE_NAME, BounceServicer
from bounce.suppression_server import SERVICE_NAME as SUPPRESSION_SERVICE
from bounce.suppression_server import SuppressionServicer, purge_loop
from bounce.suppression_store import SuppressionStore
from petrel.config import Config, split_hostport
from petrel.metrics import ready_fields
from petrel.rpc import create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import bounce_pb2_grpc, suppression_pb2_grpc

log = logging.getLogger(__name__)

STOP_GRACE = 5.0


async def serve(config: Config, stop: asyncio.Event) -> None:
    classifier = await asyncio.to_thread(ReplyClassifier.from_files, config.bounce.rules_files)
    services: list[tuple[Any, Any, str]] = [(bounce_pb2_grpc.add_BounceServiceServicer_to_server,
                 BounceServicer(classifier), SERVICE_NAME)]
    store = None
    if config.bounce.suppression:
        store = await asyncio.to_thread(SuppressionStore, config.suppression_path)
        services.append((suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
                         SuppressionServicer(store), SUPPRESSION_SERVICE))
    names = [name for _, _, name in services]
    server, health_servicer, port = create_server(config.bounce.listen, services)
    metrics_server = serve_metrics(config.bounce.metrics_listen)
    await server.start()
    await set_serving(health_servicer, names, True)
    purger = asyncio.create_task(purge_loop(store), name="suppression-purge") if store else None
    host, _ = split_hostport(config.bounce.listen)
    print_ready("bounce", grpc=f"{host}:{port}", rules=len(classifier.ruleset),
                suppression=str(store.path) if store is not None else "",
                **ready_fields(metrics_server))
    log.info("bounce serving on %s:%d (%d rules)", host, port, len(classifier.ruleset))
    await stop.wait()
    await set_serving(health_servicer, names, False)
    await server.stop(STOP_GRACE)
    if purger is not None:
        purger.cancel()
    if store is not None:
        await asyncio.to_thread(store.close)
    if metrics_server is not None:
        metrics_server.close()


def main(config: Config) -> None:
    async def run(stop: asyncio.Event) -> None:
        await serve(config, stop)

    run_service("bounce", run, config.log_level)
