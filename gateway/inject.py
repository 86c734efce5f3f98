"""Sending a request's messages to ingress: one ``InjectMessages`` stream per HTTP request.

Messages are composed lazily, one recipient at a time in a worker thread (templating and MIME
encoding are CPU work that must not stall the event loop), and handed to the stream as gRPC's
flow control asks for them, so memory stays bounded by the stream's window, not by the number of
recipients. Each response is matched to its recipient by ``seq`` (recipient index + 1).

The whole stream has the request deadline. When the stream fails, every recipient without an
answer fails with the stream's status: its outcome is unknown to us (it may have been stored),
which is what the per-recipient idempotency key is for when the client retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from gateway.compose import ComposeError, Composer
from petrel.v1 import ingress_pb2, ingress_pb2_grpc

log = logging.getLogger(__name__)

_STATUS_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
# Failures that say "ingress (or what it depends on) cannot take mail now", not "bad message".
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class RecipientResult:
    email: str
    id: str | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.id is not None


def status_code(value: int) -> grpc.StatusCode:
    return _STATUS_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def all_retryable(results: Sequence[RecipientResult]) -> bool:
    """True when nothing was accepted and every failure is ingress being unavailable."""
    return bool(results) and all(not r.ok and r.code in RETRYABLE for r in results)


async def inject_all(stub: ingress_pb2_grpc.InjectServiceStub, composer: Composer, *,
                     sender: str, tenant: str, campaign: str, deadline: float,
                     traceparent: str = "", tracestate: str = "",
                     client_address: str = "") -> list[RecipientResult]:
    """Compose and inject every recipient's message; one result per recipient, in order.
    ``client_address`` is the HTTP client's IP, recorded by ingress as the message's peer."""
    recipients = composer.request.recipients
    results: list[RecipientResult | None] = [None] * len(recipients)

    async def requests() -> AsyncIterator[ingress_pb2.InjectMessageRequest]:
        for index, recipient in enumerate(recipients):
            try:
                composed = (composer.compose(index) if composer.precomposed(index)
                            else await asyncio.to_thread(composer.compose, index))
            except ComposeError as exc:
                results[index] = RecipientResult(recipient.email, None,
                                                 grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                continue
            except Exception as exc:
                log.exception("composing the message for recipient %d failed", index)
                results[index] = RecipientResult(recipient.email, None,
                                                 grpc.StatusCode.INTERNAL, str(exc))
                continue
            yield ingress_pb2.InjectMessageRequest(
                seq=index + 1, sender=sender, recipients=[composed.recipient],
                content=composed.content, tenant=tenant, campaign=campaign,
                meta=composed.meta, idempotency_key=composed.idempotency_key,
                traceparent=traceparent, reception_protocol="HTTP",
                peer_address=client_address)

    metadata: list[tuple[str, str]] = []
    if traceparent:
        metadata.append(("traceparent", traceparent))
        if tracestate:
            metadata.append(("tracestate", tracestate))
    failure = (grpc.StatusCode.UNKNOWN, "ingress closed the stream without answering")
    call = stub.InjectMessages(requests(), timeout=deadline, metadata=metadata)
    try:
        async for response in call:
            index = response.seq - 1
            if not 0 <= index < len(results):
                log.warning("ingress answered unknown seq %d", response.seq)
                continue
            email = recipients[index].email
            if response.status.code:
                results[index] = RecipientResult(email, None, status_code(response.status.code),
                                                 response.status.message)
            else:
                results[index] = RecipientResult(email, response.id)
    except grpc.aio.AioRpcError as exc:
        failure = (exc.code(), exc.details() or exc.code().name)
        log.warning("inject stream failed: %s: %s", failure[0].name, failure[1])
    finally:
        call.cancel()
    return [result or RecipientResult(recipients[i].email, None, *failure)
            for i, result in enumerate(results)]
