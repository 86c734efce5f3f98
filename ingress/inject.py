"""``InjectService``: message injection over gRPC for internal services and the gateway.

* ``InjectMessage`` (unary): a success means the message is durable. Bad input fails with
  ``INVALID_ARGUMENT`` naming the field (details ``"<field>: ..."`` and trailer
  ``petrel-field``); a store failure with ``UNAVAILABLE`` (``RESOURCE_EXHAUSTED`` when the
  spool is full).
* ``InjectMessages`` (bidi): requests are processed concurrently (at most
  ``MAX_CONCURRENT_PER_STREAM`` at once); each gets exactly one response carrying its ``seq``,
  in completion order. Failures are per item, in ``status`` (code, message, field); the
  stream itself stays open.

A front end that received the message itself (the REST gateway) sets
``reception_protocol = "HTTP"`` and ``peer_address`` to its client's address; they are
recorded instead of this call's ("GRPC", the gateway's address).

Content with bare LF line endings is normalised to CRLF (and given a final CRLF); a bare CR
is refused.

A recipient on the suppression list (for the request's tenant, or globally) fails the request
with ``FAILED_PRECONDITION``: details ``recipients[<i>]: <address> suppressed (tenant acme:
bounce InvalidRecipient)`` for the first one, trailer ``petrel-field``; nothing is stored and
each suppressed recipient gets a ``Rejection`` record. The caller retries without them.

The trace context comes from the ``traceparent``/``tracestate`` gRPC metadata,
else from the request's ``traceparent`` field, else a new trace is started (for unary calls:
the trace of the gRPC server span). The same
``idempotency_key`` twice yields one message: the second answer carries the original id and
``duplicate = true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from ingress import metrics, trace
from ingress.acceptor import Accepted, Acceptor, RecipientsSuppressed, Submission
from ingress.message import InvalidMessage
from ingress.spool_writer import StoreFailed
from ingress.validation import FieldError, validate_inject
from petrel import telemetry
from petrel.config import IngressConfig
from petrel.events import trace_id_of
from petrel.metrics import observe
from petrel.rpc import abort_invalid
from petrel.v1 import common_pb2, ingress_pb2, ingress_pb2_grpc

log = logging.getLogger(__name__)

MAX_CONCURRENT_PER_STREAM = 256


def peer_ip(context: grpc.aio.ServicerContext) -> str:
    """``"ipv4:127.0.0.1:5000"`` / ``"ipv6:[::1]:5000"`` → the address part."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


def _status(code: grpc.StatusCode, message: str, field: str = "") -> common_pb2.ItemStatus:
    return common_pb2.ItemStatus(code=code.value[0], message=message, field=field)


def _suppressed(request: ingress_pb2.InjectMessageRequest,
                exc: RecipientsSuppressed) -> tuple[str, str]:
    """``(field, details)`` naming the first suppressed recipient."""
    first = next(iter(exc.refused))
    index = list(request.recipients).index(first)
    field = f"recipients[{index}]"
    more = f" (and {len(exc.refused) - 1} more)" if len(exc.refused) > 1 else ""
    return field, f"{field}: {exc}{more}"


class InjectServicer(ingress_pb2_grpc.InjectServiceServicer):
    def __init__(self, config: IngressConfig, acceptor: Acceptor) -> None:
        self._config = config
        self._acceptor = acceptor

    def _submission(self, request: ingress_pb2.InjectMessageRequest,
                    context: grpc.aio.ServicerContext) -> Submission:
        """Validate ``request``; raises ``FieldError``."""
        content = validate_inject(request, self._config.max_message_size,
                                  self._config.max_recipients)
        given = (trace.carrier_from_metadata(context.invocation_metadata() or ())
                 or trace.carrier(request.traceparent))
        # A unary call runs in the gRPC server span (a child of the caller's context, when
        # metadata carried one): the message's reception span goes below it.
        current = telemetry.inject_carrier()
        if current and (not given or trace_id_of(given) == trace_id_of(current)):
            given = current
        return Submission(
            sender=request.sender, recipients=tuple(request.recipients), content=content,
            protocol=request.reception_protocol or "GRPC",
            peer_ip=request.peer_address or peer_ip(context), tenant=request.tenant,
            campaign=request.campaign, meta=dict(request.meta),
            idempotency_key=request.idempotency_key,
            trace_context=given or {})

    async def _accept(self, request: ingress_pb2.InjectMessageRequest,
                      context: grpc.aio.ServicerContext) -> Accepted:
        """``Acceptor.accept`` of the request, counted: its duration, or why it failed."""
        started = time.perf_counter()
        protocol = request.reception_protocol or "GRPC"
        try:
            accepted = await self._acceptor.accept(self._submission(request, context))
        except FieldError:
            metrics.rejected(protocol, "invalid_request", permanent=True)
            raise
        except InvalidMessage:
            metrics.rejected(protocol, "invalid_content", permanent=True)
            raise
        except RecipientsSuppressed:
            metrics.rejected(protocol, "suppressed", permanent=True)
            raise
        except StoreFailed as exc:
            full = exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            metrics.rejected(protocol, "spool_full" if full else "spool_unavailable",
                             permanent=False)
            raise
        except Exception:
            metrics.rejected(protocol, "local_error", permanent=False)
            raise
        observe(metrics.TRANSACTION_SECONDS.labels(metrics.protocol_label(protocol)),
                time.perf_counter() - started, accepted.trace_id)
        return accepted

    async def InjectMessage(self, request: ingress_pb2.InjectMessageRequest,
                            context: grpc.aio.ServicerContext
                            ) -> ingress_pb2.InjectMessageResponse:
        try:
            accepted = await self._accept(request, context)
        except FieldError as exc:
            await abort_invalid(context, exc.field, exc.message)
            raise AssertionError("unreachable") from exc
        except InvalidMessage as exc:
            await abort_invalid(context, "content", str(exc))
            raise AssertionError("unreachable") from exc
        except StoreFailed as exc:
            await context.abort(exc.code, exc.details)
            raise AssertionError("unreachable") from exc
        except RecipientsSuppressed as exc:
            field, message = _suppressed(request, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message,
                                trailing_metadata=(("petrel-field", field),))
            raise AssertionError("unreachable") from exc
        return self._response(request.seq, accepted)

    @staticmethod
    def _response(seq: int, accepted: Accepted) -> ingress_pb2.InjectMessageResponse:
        return ingress_pb2.InjectMessageResponse(seq=seq, id=accepted.id,
                                                 duplicate=accepted.duplicate)

    async def _one(self, request: ingress_pb2.InjectMessageRequest,
                   context: grpc.aio.ServicerContext) -> ingress_pb2.InjectMessageResponse:
        seq = request.seq
        try:
            accepted = await self._accept(request, context)
        except FieldError as exc:
            return ingress_pb2.InjectMessageResponse(
                seq=seq, status=_status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field))
        except InvalidMessage as exc:
            return ingress_pb2.InjectMessageResponse(
                seq=seq, status=_status(grpc.StatusCode.INVALID_ARGUMENT, f"content: {exc}",
                                        "content"))
        except StoreFailed as exc:
            return ingress_pb2.InjectMessageResponse(seq=seq, status=_status(exc.code,
                                                                             exc.details))
        except RecipientsSuppressed as exc:
            field, message = _suppressed(request, exc)
            return ingress_pb2.InjectMessageResponse(
                seq=seq, status=_status(grpc.StatusCode.FAILED_PRECONDITION, message, field))
        except Exception as exc:
            log.exception("inject of seq %d failed", seq)
            return ingress_pb2.InjectMessageResponse(
                seq=seq, status=_status(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}"))
        return self._response(seq, accepted)

    async def InjectMessages(self, request_iterator: AsyncIterator[
                                 ingress_pb2.InjectMessageRequest],
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[ingress_pb2.InjectMessageResponse]:
        responses: asyncio.Queue[ingress_pb2.InjectMessageResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_CONCURRENT_PER_STREAM)

        async def handle(request: ingress_pb2.InjectMessageRequest) -> None:
            responses.put_nowait(await self._one(request, context))

        async def pump() -> None:
            try:
                async with asyncio.TaskGroup() as group:
                    async for request in request_iterator:
                        await slots.acquire()
                        group.create_task(handle(request))
            finally:
                responses.put_nowait(None)

        reader = asyncio.create_task(pump(), name="inject-stream")
        try:
            while (response := await responses.get()) is not None:
                yield response
                # Released only once written, so a client that stops reading also stops
                # the intake (responses waiting to be sent are bounded too).
                slots.release()
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
