"""``BounceService`` servicer.

``ClassifyReplies`` classifies each reply of a batch (same order as the request).
Large batches are classified off the event loop so health checks and other calls stay
responsive; requests above ``MAX_REPLIES`` are refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from bounce import metrics
from bounce.classifier import ReplyClassifier
from petrel.rpc import abort_invalid
from petrel.v1 import bounce_pb2, bounce_pb2_grpc

SERVICE_NAME = "petrel.v1.BounceService"
MAX_REPLIES = 10_000
# Batches up to this size are classified inline (well under a millisecond).
INLINE_REPLIES = 64


class BounceServicer(bounce_pb2_grpc.BounceServiceServicer):
    def __init__(self, classifier: ReplyClassifier) -> None:
        self.classifier = classifier

    async def ClassifyReplies(self, request: bounce_pb2.ClassifyRepliesRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> bounce_pb2.ClassifyRepliesResponse:
        count = len(request.replies)
        if count > MAX_REPLIES:
            await abort_invalid(context, "replies",
                                f"{count} replies in one request, at most {MAX_REPLIES}")
        started = time.perf_counter()
        if count <= INLINE_REPLIES:
            response = self._classify_replies(request)
        else:
            response = await asyncio.to_thread(self._classify_replies, request)
        metrics.CLASSIFY_SECONDS.labels("ClassifyReplies").observe(
            time.perf_counter() - started)
        return response

    def _classify_replies(self, request: bounce_pb2.ClassifyRepliesRequest,
                          ) -> bounce_pb2.ClassifyRepliesResponse:
        out = []
        for reply in request.replies:
            result = self.classifier.classify(reply.code or None, reply.enhanced_code.strip(),
                                              reply.text)
            metrics.REPLIES.labels(result.category).inc()
            out.append(bounce_pb2.Classification(
                category=result.category, status=result.status,
                rule=result.rule.source if result.rule is not None else ""))
        return bounce_pb2.ClassifyRepliesResponse(classifications=out)

    async def ClassifyMessage(self, request: bounce_pb2.ClassifyMessageRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> bounce_pb2.ClassifyMessageResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ClassifyMessage is not available yet")
        raise AssertionError("unreachable")
