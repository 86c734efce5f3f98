"""The spans of one message's reception.

``reception_span`` is the message's span in ingress: ``receive smtp`` (SERVER: there is no
other server span for an SMTP transaction) or ``inject grpc`` (CONSUMER, below the gRPC
server span; REST injections through the gateway arrive this way too). Its parent is the
caller's context (gRPC metadata, the request's ``traceparent``, a ``Traceparent:`` header),
else it starts a new trace. Its context is what ingress stores with the message. ``step``
spans are its children: ``spool write`` and ``enqueue``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from petrel import telemetry

_tracer = telemetry.tracer("petrel.ingress")

MESSAGING_SYSTEM = "petrel"
_STEP_KINDS = {"spool write": SpanKind.CLIENT, "enqueue": SpanKind.PRODUCER}


def reception_name(reception_protocol: str) -> tuple[str, SpanKind]:
    if reception_protocol == "ESMTP":
        return "receive smtp", SpanKind.SERVER
    return "inject grpc", SpanKind.CONSUMER


@contextmanager
def reception_span(reception_protocol: str, parent: Context | None, *, message_id: str,
                   recipients: int, size: int, peer: str = "",
                   tenant: str = "") -> Iterator[Span]:
    if not telemetry.recording(_tracer):
        with telemetry.current_context_only(parent) as span:
            yield span
        return
    name, kind = reception_name(reception_protocol)
    attributes: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "receive",
        "messaging.message.id": message_id,
        "messaging.message.body.size": size,
        "petrel.recipients": recipients,
        "petrel.reception_protocol": reception_protocol,
    }
    if peer:
        attributes["client.address"] = peer
    if tenant:
        attributes["petrel.tenant"] = tenant
    with _tracer.start_as_current_span(name, context=parent or Context(), kind=kind,
                                       attributes=attributes) as span:
        yield span


# What a step is while nothing is recorded: no span, and attributes set on it go nowhere.
_NO_STEP = nullcontext(trace.INVALID_SPAN)


def step(name: str) -> AbstractContextManager[Span]:
    """A child span of the current (reception) span, when spans are recorded."""
    if not telemetry.recording(_tracer):
        return _NO_STEP
    return _tracer.start_as_current_span(name, kind=_STEP_KINDS.get(name, SpanKind.INTERNAL))
