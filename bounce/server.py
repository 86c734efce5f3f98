"""``BounceService`` servicer.

``ClassifyReplies`` classifies each reply of a batch (same order as the request).
``ClassifyMessage`` parses one inbound message (DSN, feedback report, auto-reply, prose
bounce or none of these) into its kind, category and per-recipient results, plus what is
needed to correlate it with the message we sent. Large batches and every message are
handled off the event loop so health checks and other calls stay responsive; requests above
``MAX_REPLIES`` replies or ``MAX_MESSAGE_BYTES`` bytes are refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from bounce import metrics
from bounce.classifier import ReplyClassifier
from bounce.message import MessageAnalyser, MessageResult
from petrel import telemetry
from petrel.rpc import abort_invalid
from petrel.v1 import bounce_pb2, bounce_pb2_grpc

SERVICE_NAME = "petrel.v1.BounceService"
MAX_REPLIES = 10_000
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Batches up to this size are classified inline (well under a millisecond).
INLINE_REPLIES = 64
_tracer = telemetry.tracer("petrel.bounce")


class BounceServicer(bounce_pb2_grpc.BounceServiceServicer):
    def __init__(self, classifier: ReplyClassifier) -> None:
        self.classifier = classifier
        self.analyser = MessageAnalyser(classifier)

    async def ClassifyReplies(self, request: bounce_pb2.ClassifyRepliesRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> bounce_pb2.ClassifyRepliesResponse:
        count = len(request.replies)
        if count > MAX_REPLIES:
            await abort_invalid(context, "replies",
                                f"{count} replies in one request, at most {MAX_REPLIES}")
        started = time.perf_counter()
        with _tracer.start_as_current_span("classify", attributes={"petrel.replies": count}
                                           ) as span:
            if count <= INLINE_REPLIES:
                response = self._classify_replies(request)
            else:
                response = await asyncio.to_thread(self._classify_replies, request)
            span.set_attribute("petrel.bounce.categories", sorted(
                {c.category for c in response.classifications}))
        metrics.CLASSIFY_SECONDS.labels("ClassifyReplies").observe(
            time.perf_counter() - started)
        return response

    def _classify_replies(self, request: bounce_pb2.ClassifyRepliesRequest,
                          ) -> bounce_pb2.ClassifyRepliesResponse:
        out = []
        for reply in request.replies:
            result = self.classifier.classify(reply.code or None, reply.enhanced_code.strip(),
                                              reply.text)
            metrics.REPLIES.labels(metrics.category_label(result.category)).inc()
            out.append(bounce_pb2.Classification(
                category=result.category, status=result.status,
                rule=result.rule.source if result.rule is not None else ""))
        return bounce_pb2.ClassifyRepliesResponse(classifications=out)

    async def ClassifyMessage(self, request: bounce_pb2.ClassifyMessageRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> bounce_pb2.ClassifyMessageResponse:
        size = len(request.message)
        if not size:
            await abort_invalid(context, "message", "empty message")
        if size > MAX_MESSAGE_BYTES:
            await abort_invalid(context, "message",
                                f"{size} bytes, at most {MAX_MESSAGE_BYTES}")
        started = time.perf_counter()
        with _tracer.start_as_current_span("classify message",
                                           attributes={"petrel.message.size": size}) as span:
            result = await asyncio.to_thread(self.analyser.analyse, request.message)
            span.set_attributes({"petrel.bounce.kind": result.kind,
                                 "petrel.bounce.category": result.category})
        metrics.CLASSIFY_SECONDS.labels("ClassifyMessage").observe(
            time.perf_counter() - started)
        metrics.MESSAGES.labels(result.kind).inc()
        return to_proto(result)


_KINDS = {
    "dsn": bounce_pb2.MESSAGE_KIND_DSN,
    "text-bounce": bounce_pb2.MESSAGE_KIND_TEXT_BOUNCE,
    "arf": bounce_pb2.MESSAGE_KIND_ARF,
    "autoreply": bounce_pb2.MESSAGE_KIND_AUTOREPLY,
    "not-bounce": bounce_pb2.MESSAGE_KIND_NOT_BOUNCE,
}


def to_proto(result: MessageResult) -> bounce_pb2.ClassifyMessageResponse:
    response = bounce_pb2.ClassifyMessageResponse(
        kind=_KINDS[result.kind], category=result.category,
        reporting_mta=result.reporting_mta, original_message_id=result.original_message_id,
        original_envelope_id=result.original_envelope_id,
        original_headers=result.original_headers,
        recipients=[bounce_pb2.BounceRecipient(
            address=r.address, status=r.status, category=r.category, diagnostic=r.diagnostic,
            action=r.action, original_recipient=r.original_recipient, remote_mta=r.remote_mta)
            for r in result.recipients])
    if result.feedback is not None:
        f = result.feedback
        response.feedback.CopyFrom(bounce_pb2.FeedbackReport(
            feedback_type=f.feedback_type, user_agent=f.user_agent,
            original_mail_from=f.original_mail_from, original_rcpt_to=f.original_rcpt_to,
            reported_domain=f.reported_domain, source_ip=f.source_ip,
            arrival_date=f.arrival_date, reporting_mta=f.reporting_mta,
            reported_uri=f.reported_uri))
    return response
