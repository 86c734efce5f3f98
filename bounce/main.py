"""Entry point of the bounce service: compile the rules once, serve ``BounceService``."""

from __future__ import annotations

import asyncio
import logging

from bounce.classifier import ReplyClassifier
from bounce.metrics import serve_metrics
from bounce.server import SERVICE_NAME, BounceServicer
from petrel.config import Config, split_hostport
from petrel.metrics import ready_fields
from petrel.rpc import create_server, set_serving
from petrel.runtime import print_ready, run_service
from petrel.v1 import bounce_pb2_grpc

log = logging.getLogger(__name__)

STOP_GRACE = 5.0


async def serve(config: Config, stop: asyncio.Event) -> None:
    classifier = await asyncio.to_thread(ReplyClassifier.from_files, config.bounce.rules_files)
    server, health_servicer, port = create_server(config.bounce.listen, [
        (bounce_pb2_grpc.add_BounceServiceServicer_to_server, BounceServicer(classifier),
         SERVICE_NAME)])
    metrics_server = serve_metrics(config.bounce.metrics_listen)
    await server.start()
    await set_serving(health_servicer, [SERVICE_NAME], True)
    host, _ = split_hostport(config.bounce.listen)
    print_ready("bounce", grpc=f"{host}:{port}", rules=len(classifier.ruleset),
                **ready_fields(metrics_server))
    log.info("bounce serving on %s:%d (%d rules)", host, port, len(classifier.ruleset))
    await stop.wait()
    await set_serving(health_servicer, [SERVICE_NAME], False)
    await server.stop(STOP_GRACE)
    if metrics_server is not None:
        metrics_server.close()


def main(config: Config) -> None:
    async def run(stop: asyncio.Event) -> None:
        await serve(config, stop)

    run_service("bounce", run, config.log_level)
