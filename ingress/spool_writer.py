"""Durable writes through ``SpoolService.PutMessages``.

``SpoolWriter.put`` returns only once the spool acknowledged the write as synced, or raises
``StoreFailed`` carrying the gRPC code ingress answers with: ``RESOURCE_EXHAUSTED`` when the
spool reports it is full, ``UNAVAILABLE`` for everything else (spool down, stream broken,
no answer within the deadline, any other per-item error).
"""

from __future__ import annotations

import logging

import grpc

from petrel.rpc import StreamBroken, StreamCaller
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc

log = logging.getLogger(__name__)


class StoreFailed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class SpoolWriter:
    def __init__(self, channel: grpc.aio.Channel, deadline: float, *,
                 max_pending: int = 4096) -> None:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        self._caller: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
            StreamCaller(stub.PutMessages, max_pending=max_pending, name="spool-put")
        self._deadline = deadline

    async def put(self, meta: common_pb2.MessageMeta, body: bytes
                  ) -> spool_pb2.PutMessageResponse:
        request = spool_pb2.PutMessageRequest(meta=meta, body=body)
        try:
            response = await self._caller.call(request, timeout=self._deadline)
        except TimeoutError as exc:
            raise StoreFailed(grpc.StatusCode.UNAVAILABLE,
                              f"spool did not acknowledge within {self._deadline:g}s") from exc
        except StreamBroken as exc:
            code = (exc.code if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                    else grpc.StatusCode.UNAVAILABLE)
            raise StoreFailed(code, f"spool unavailable: {exc}") from exc
        if response.status.code != grpc.StatusCode.OK.value[0]:
            full = response.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
            log.warning("spool refused message %s: %s (code %d)", meta.id,
                        response.status.message, response.status.code,
                        extra={"message_id": meta.id})
            raise StoreFailed(code, f"spool refused the write: {response.status.message}")
        return response

    async def close(self) -> None:
        await self._caller.close()
