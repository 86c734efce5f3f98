"""gRPC channels and stubs the gateway calls: ingress (inject, health), scheduler (queue summary,
inspect), spool (message lookup) and the suppression list (bounce). Channels connect lazily,
so the gateway starts and answers (with 503 where needed) while any of them is down."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from petrel.config import Config
from petrel.rpc import create_channel
from petrel.v1 import ingress_pb2_grpc, scheduler_pb2_grpc, spool_pb2_grpc, suppression_pb2_grpc


@dataclass
class Backends:
    inject: ingress_pb2_grpc.InjectServiceStub
    ingress_health: health_pb2_grpc.HealthStub
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    spool: spool_pb2_grpc.SpoolServiceStub
    channels: tuple[grpc.aio.Channel, ...]
    suppression: suppression_pb2_grpc.SuppressionServiceStub | None = None

    @classmethod
    def connect(cls, config: Config) -> Backends:
        """Create the channels; must be called inside the event loop that will use them."""
        ingress = create_channel(config.ingress.address)
        scheduler = create_channel(config.scheduler.address)
        spool = create_channel(config.spool.address)
        suppression = create_channel(config.bounce.suppression_target)
        return cls(
            inject=ingress_pb2_grpc.InjectServiceStub(ingress),
            ingress_health=health_pb2_grpc.HealthStub(ingress),
            scheduler=scheduler_pb2_grpc.SchedulerServiceStub(scheduler),
            spool=spool_pb2_grpc.SpoolServiceStub(spool),
            channels=(ingress, scheduler, spool, suppression),
            suppression=suppression_pb2_grpc.SuppressionServiceStub(suppression),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
