"""OpenTelemetry tracing shared by every service: SDK setup and W3C carrier helpers.

``setup_tracing(service)`` installs the SDK ``TracerProvider`` as the global one, configured
from the standard ``OTEL_*`` variables: the resource from ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` over Petrel's defaults (``service.name = petrel-<service>``,
``service.namespace = petrel``, a random ``service.instance.id``), the sampler from
``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``), and an OTLP/gRPC exporter behind
a ``BatchSpanProcessor`` only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_TRACES_EXPORTER`` is not ``none``).
Without an endpoint (or with ``OTEL_SDK_DISABLED=true``) the SDK is not installed at all: the
API's no-op tracer costs next to nothing and still passes each message's stored context on
(a span started from it is that context), so trace ids keep reaching events and log lines.
``shutdown_tracing()`` flushes (bounded) and stops the exporter.

A message's trace context travels as a W3C carrier dict (``traceparent``, ``tracestate``)
stored in its metadata: ``inject_carrier()`` captures the current span,
``context_from_carrier()`` turns a stored carrier into a parent context (an invalid or empty
carrier gives an empty context, i.e. a new root, never the caller's current span) and
``link_from_carrier()`` into a span link. ``current_trace_id()`` is the active span's trace id
(log lines, metric exemplars). ``detached()`` suspends the current span while a background
task is created, so work that outlives one message does not inherit that message's trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from petrel.v1 import scheduler_pb2

log = logging.getLogger(__name__)

NAMESPACE = "petrel"
MESSAGING_SYSTEM = "petrel"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Bounded so that a failing collector cannot hold a stopping service for long.
SHUTDOWN_TIMEOUT = 3.0
# OpenTelemetry's default span link limit: a batch span links to at most this many messages.
MAX_LINKS = 128

# The stored carrier is W3C Trace Context only, whatever OTEL_PROPAGATORS says for RPCs.
_W3C = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_exporter: OTLPSpanExporter | None = None


def tracer(name: str) -> trace.Tracer:
    """The tracer of a Petrel module (works before and without ``setup_tracing``)."""
    return trace.get_tracer(name)


def parse_resource_attributes(value: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-encoded) as a dict;
    malformed pairs are skipped."""
    attributes: dict[str, str] = {}
    for item in value.split(","):
        key, sep, raw = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(raw.strip())
    return attributes


def resource_attributes(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Petrel's defaults overridden by ``OTEL_RESOURCE_ATTRIBUTES``, then ``OTEL_SERVICE_NAME``."""
    attributes = {
        "service.name": f"petrel-{service}",
        "service.namespace": NAMESPACE,
        "service.instance.id": uuid.uuid4().hex,
    }
    attributes.update(parse_resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    if environ.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"].strip()
    return attributes


def exporter_wanted(environ: Mapping[str, str]) -> bool:
    """True when an OTLP endpoint is configured and the traces exporter is not turned off."""
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def build_provider(service: str, environ: Mapping[str, str] | None = None,
                   ) -> tuple[TracerProvider, OTLPSpanExporter | None] | None:
    """A configured SDK ``TracerProvider`` (not installed globally) and its exporter
    (``None`` without an endpoint), or ``None`` when the SDK is disabled. The sampler and the
    exporter's own settings come from ``os.environ``."""
    env = os.environ if environ is None else environ
    if sdk_disabled(env):
        return None
    provider = TracerProvider(resource=Resource.create(resource_attributes(service, env)),
                              shutdown_on_exit=False)
    exporter = None
    if exporter_wanted(env):
        exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def setup_tracing(service: str) -> TracerProvider | None:
    """Install the tracer provider for ``service`` when traces are to be exported (see the
    module docstring); idempotent within a process. Returns the provider, or ``None``."""
    global _provider, _exporter
    if _provider is not None:
        return _provider
    if not exporter_wanted(os.environ):
        return None
    built = build_provider(service)
    if built is None:
        return None
    _provider, _exporter = built
    trace.set_tracer_provider(_provider)
    log.info("exporting traces over OTLP to %s", next(
        os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v, "").strip()))
    return _provider


def shutdown_tracing(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Export what is buffered and stop the exporter, within about ``timeout`` seconds."""
    global _provider, _exporter
    provider, exporter = _provider, _exporter
    _provider = _exporter = None
    if provider is not None:
        stop_provider(provider, exporter, timeout)


def stop_provider(provider: TracerProvider, exporter: OTLPSpanExporter | None,
                  timeout: float) -> None:
    # The SDK's shutdown waits up to 30 s (plus export retries) for a collector that does
    # not answer; past ``timeout`` the exporter is shut down, which ends its retries.
    stopper = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive() and exporter is not None:
        log.warning("trace export did not finish within %.0fs; dropping the rest", timeout)
        exporter.shutdown()
        stopper.join(1.0)


def recording(tracer: trace.Tracer) -> bool:
    """Whether spans of ``tracer`` are recorded: it is an SDK tracer, or the API's proxy
    tracer (what ``tracer()`` returns) and an SDK provider is installed (by
    ``setup_tracing`` or a test). Otherwise every span is a non-recording stand-in for its
    parent's context, so per-message code may skip building span names and attributes."""
    if isinstance(tracer, trace.NoOpTracer):
        return False
    if isinstance(tracer, trace.ProxyTracer):
        return _provider is not None or _global_provider_installed()
    return True


_provider_seen = False
_provider_checked = float("-inf")
# How often ``recording`` looks for a global provider installed by other code than
# ``setup_tracing`` (the API's lookup reads the environment on every call).
PROVIDER_RECHECK = 1.0


def _global_provider_installed() -> bool:
    """Whether an SDK provider is the global one; once it is, it stays (the API lets the
    global provider be set only once)."""
    global _provider_seen, _provider_checked
    if _provider_seen:
        return True
    now = time.monotonic()
    if now - _provider_checked >= PROVIDER_RECHECK:
        _provider_checked = now
        _provider_seen = not isinstance(trace.get_tracer_provider(),
                                        trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return _provider_seen


@contextlib.contextmanager
def current_context_only(parent: Context | None) -> Iterator[trace.Span]:
    """What a span started under ``parent`` amounts to while nothing is recorded: the
    parent's span context becomes the current span (log lines, exemplars and carriers see
    its trace id), nothing else is built."""
    span = trace.get_current_span(parent) if parent is not None else trace.INVALID_SPAN
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def inject_carrier(ctx: Context | None = None) -> dict[str, str]:
    """The W3C carrier of ``ctx`` (default: the current context); ``{}`` without a valid span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    return carrier


def span_context_from_carrier(carrier: Mapping[str, str] | None) -> SpanContext | None:
    if not carrier or not carrier.get("traceparent"):
        return None
    span_context = trace.get_current_span(_W3C.extract(carrier, context=Context())) \
        .get_span_context()
    return span_context if span_context.is_valid else None


def context_from_carrier(carrier: Mapping[str, str] | None) -> Context:
    """A parent context from a stored carrier; an empty context (a new trace) when the
    carrier is missing or invalid."""
    if not carrier or not carrier.get("traceparent"):
        return Context()
    return _W3C.extract(carrier, context=Context())


def link_from_carrier(carrier: Mapping[str, str] | None,
                      attributes: Mapping[str, str | int] | None = None) -> Link | None:
    span_context = span_context_from_carrier(carrier)
    if span_context is None:
        return None
    return Link(span_context, dict(attributes) if attributes else None)


def task_attributes(task: scheduler_pb2.DeliveryTask, operation: str) -> dict[str, Any]:
    """The attributes of a span about one delivery task, ``operation`` its
    ``messaging.operation.type``: the scheduler's dispatch and egress's attempt describe the
    task alike."""
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.destination.name": task.site,
        "messaging.message.id": task.message_id,
        "petrel.attempt": task.attempt,
        "petrel.domain": task.domain,
        "petrel.queue": task.queue,
        "petrel.recipients": len(task.recipients),
        "petrel.task_id": task.task_id,
    }


def current_trace_id() -> str:
    """The 32-hex trace id of the active span, or ``""``."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Run the block with no active span (e.g. while creating a long-lived task)."""
    token = otel_context.attach(Context())
    try:
        yield
    finally:
        otel_context.detach(token)
