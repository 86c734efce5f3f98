"""egress's gRPC clients: message bodies from the spool, classification from bounce.

``SpoolBodies.read(id)`` returns the body, ``None`` when the spool does not have the message,
and raises ``BodyUnavailable`` when the spool cannot be asked within the deadline (down, slow, read
error); reads share one ``ReadMessages`` stream, each with its own deadline, and a broken
stream is reopened and the read retried while the deadline allows.

``BounceClassifier.classify(replies)`` asks ``ClassifyReplies`` once for a batch within a short
deadline. Classification is advisory: when bounce is unavailable every reply is
``Uncategorized`` and, for ``BACKOFF`` seconds, bounce is not asked again, so an outage does
not slow every failed delivery by a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import grpc

from petrel.rpc import StreamBroken, StreamCaller
from petrel.smtp_replies import Reply
from petrel.v1 import bounce_pb2, bounce_pb2_grpc, common_pb2, spool_pb2, spool_pb2_grpc

log = logging.getLogger(__name__)

UNCATEGORIZED = "Uncategorized"


# A read on a busy read stream is held this long, so the reads of that time share one stream
# message (``petrel.rpc.Pacer``).
READ_LINGER = 0.010


class BodyUnavailable(Exception):
    """The spool could not be asked for a body (down, deadline passed, read error)."""


class SpoolBodies:
    def __init__(self, channel: grpc.aio.Channel, deadline: float = 15.0) -> None:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        self._caller: StreamCaller[spool_pb2.ReadMessageRequest, spool_pb2.ReadMessageResponse]
        self._caller = StreamCaller(stub.ReadMessageBatches, name="spool-read",
                                     batch=spool_pb2.ReadMessageBatch, pace=READ_LINGER)
        self.deadline = deadline

    async def read(self, message_id: str) -> bytes | None:
        request = spool_pb2.ReadMessageRequest(id=message_id, want_body=True)
        deadline = time.monotonic() + self.deadline
        delay = 0.1
        while True:
            try:
                response = await self._caller.call(request, timeout=deadline - time.monotonic())
                break
            except StreamBroken as exc:
                # A restarted spool breaks the shared stream; the next call opens a new one.
                # Retrying within the deadline keeps a short outage from costing a whole
                # retry interval.
                if time.monotonic() + delay >= deadline:
                    raise BodyUnavailable(str(exc)) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except TimeoutError as exc:
                raise BodyUnavailable(f"no answer within {self.deadline}s") from exc
        status = response.status.code
        if status == grpc.StatusCode.INVALID_ARGUMENT.value[0]:
            return None
        if status != 0:
            raise BodyUnavailable(response.status.message or f"status {status}")
        return response.body if response.found else None

    async def close(self) -> None:
        await self._caller.close()


class BounceClassifier:
    BACKOFF = 5.0

    def __init__(self, channel: grpc.aio.Channel, deadline: float = 2.0) -> None:
        self._stub = bounce_pb2_grpc.BounceServiceStub(channel)
        self.deadline = deadline
        self._skip_until = 0.0

    async def classify(self, replies: Sequence[Reply]) -> list[str]:
        if not replies:
            return []
        if time.monotonic() < self._skip_until:
            return [UNCATEGORIZED] * len(replies)
        request = bounce_pb2.ClassifyRepliesRequest(replies=[
            common_pb2.SmtpReply(code=r.code, enhanced_code=r.enhanced_code, text=r.text)
            for r in replies])
        try:
            response = await self._stub.ClassifyReplies(request, timeout=self.deadline)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("bounce classification unavailable (%s); using %s for %.0fs",
                        detail, UNCATEGORIZED, self.BACKOFF)
            self._skip_until = time.monotonic() + self.BACKOFF
            return [UNCATEGORIZED] * len(replies)
        categories = [c.category or UNCATEGORIZED for c in response.classifications]
        if len(categories) != len(replies):
            log.warning("bounce returned %d classifications for %d replies",
                        len(categories), len(replies))
            categories = (categories + [UNCATEGORIZED] * len(replies))[:len(replies)]
        return categories
