"""petrel.telemetry: resource and exporter settings from OTEL_*, W3C carriers, trace ids in logs.

Spans here come from a local SDK provider (the global one stays untouched)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from petrel import telemetry
from petrel.events import make_record
from petrel.runtime import JsonFormatter
from petrel.v1 import common_pb2
from scheduler import tracing as scheduler_tracing
from spool import tracing as spool_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CARRIER = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "tracestate": "k=v"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


def test_resource_defaults_and_environment_overrides() -> None:
    defaults = telemetry.resource_attributes("egress", {})
    assert defaults["service.name"] == "petrel-egress"
    assert defaults["service.namespace"] == "petrel"
    assert len(defaults["service.instance.id"]) == 32
    assert defaults["service.instance.id"] != telemetry.resource_attributes("egress", {})[
        "service.instance.id"]
    env = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=x,"
                                       "team=mail%20ops,broken",
           "OTEL_SERVICE_NAME": "mta-egress"}
    attributes = telemetry.resource_attributes("egress", env)
    assert attributes["service.name"] == "mta-egress"
    assert attributes["deployment.environment"] == "prod"
    assert attributes["team"] == "mail ops"
    assert "broken" not in attributes
    assert telemetry.resource_attributes("egress", {"OTEL_RESOURCE_ATTRIBUTES": "service.name=x"}
                                         )["service.name"] == "x"


@pytest.mark.parametrize(("env", "wanted"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "console,otlp"},
     True),
])
def test_exporter_only_with_an_endpoint(env: dict[str, str], wanted: bool) -> None:
    assert telemetry.exporter_wanted(env) is wanted


def test_provider_without_endpoint_has_no_exporter() -> None:
    built = telemetry.build_provider("spool", {})
    assert built is not None
    provider, exporter = built
    assert exporter is None
    assert provider.resource.attributes["service.name"] == "petrel-spool"
    span = provider.get_tracer("t").start_span("x")
    assert span.get_span_context().is_valid and span.is_recording()
    span.end()
    provider.shutdown()
    assert telemetry.build_provider("spool", {"OTEL_SDK_DISABLED": "true"}) is None


def test_nothing_installed_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in telemetry.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert telemetry.setup_tracing("ingress") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    telemetry.shutdown_tracing()


def test_shutdown_is_bounded_when_the_collector_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    built = telemetry.build_provider("egress")
    assert built is not None
    provider, exporter = built
    assert exporter is not None
    provider.get_tracer("t").start_span("pending").end()
    started = time.monotonic()
    telemetry.stop_provider(provider, exporter, timeout=0.5)
    assert time.monotonic() - started < 3.0


def test_carrier_round_trip(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("reception") as span:
        carrier = telemetry.inject_carrier()
        assert telemetry.current_trace_id() == format(span.get_span_context().trace_id, "032x")
    assert carrier["traceparent"].split("-")[2] == format(span.get_span_context().span_id, "016x")
    assert telemetry.inject_carrier() == {}
    assert telemetry.current_trace_id() == ""
    child = tracer.start_span("later", context=telemetry.context_from_carrier(carrier))
    assert child.get_span_context().trace_id == span.get_span_context().trace_id
    assert child.parent is not None and child.parent.span_id == span.get_span_context().span_id
    child.end()


def test_stored_context_keeps_tracestate(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("x", context=telemetry.context_from_carrier(CARRIER)):
        carrier = telemetry.inject_carrier()
    assert carrier["traceparent"].split("-")[1] == TRACE_ID
    assert carrier["tracestate"] == "k=v"


@pytest.mark.parametrize("carrier", [None, {}, {"traceparent": "garbage"},
                                     {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}])
def test_bad_carrier_starts_a_new_trace_not_a_child_of_the_current_span(
        tracer: trace.Tracer, carrier: dict[str, str] | None) -> None:
    with tracer.start_as_current_span("unrelated") as current:
        span = tracer.start_span("message", context=telemetry.context_from_carrier(carrier))
    assert span.parent is None
    assert span.get_span_context().trace_id != current.get_span_context().trace_id
    span.end()
    assert telemetry.link_from_carrier(carrier) is None


def test_link_from_carrier() -> None:
    link = telemetry.link_from_carrier(CARRIER, {"petrel.attempt": 2})
    assert link is not None
    assert format(link.context.trace_id, "032x") == TRACE_ID
    assert link.context.is_remote and dict(link.attributes or {}) == {"petrel.attempt": 2}


def test_detached_hides_the_active_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("message"):
        with telemetry.detached():
            assert telemetry.current_trace_id() == ""
        assert telemetry.current_trace_id() != ""


def test_log_lines_carry_the_active_trace_id(tracer: trace.Tracer) -> None:
    formatter = JsonFormatter("egress")

    def line(**extra: str) -> dict[str, str]:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", (), None)
        record.__dict__.update(extra)
        return json.loads(formatter.format(record))

    assert "trace_id" not in line()
    with tracer.start_as_current_span("x", context=telemetry.context_from_carrier(CARRIER)):
        assert line()["trace_id"] == TRACE_ID
        assert line(trace_id="f" * 32)["trace_id"] == "f" * 32
        assert line(message_id="a" * 32)["message_id"] == "a" * 32


def test_spool_commit_links_are_bounded() -> None:
    carriers = [CARRIER, None, {"traceparent": "bad"}] * 200
    links = spool_tracing.links(carriers)
    assert len(links) == telemetry.MAX_LINKS
    assert all(format(link.context.trace_id, "032x") == TRACE_ID for link in links)


def test_disposition_spans_only_for_final_outcomes(tracer: trace.Tracer,
                                                   exporter: InMemorySpanExporter,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    meta = common_pb2.MessageMeta(id="a" * 32, trace_context=CARRIER)
    transient = make_record("TransientFailure", message_id=meta.id, sender="", recipient="r@x",
                            code=451, num_attempts=1)
    delivered = make_record("Delivery", message_id=meta.id, sender="", recipient="r@x",
                            code=250, num_attempts=2, queue="x", site="mx.x")
    monkeypatch.setattr(scheduler_tracing, "_tracer", tracer)
    scheduler_tracing.dispositions(meta, [transient])
    assert exporter.get_finished_spans() == ()
    scheduler_tracing.dispositions(meta, [transient, delivered])
    (span,) = exporter.get_finished_spans()
    assert span.name == "disposition"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.attributes is not None
    assert span.attributes["petrel.outcome"] == "delivered"
    assert span.attributes["petrel.attempt"] == 2


def test_recording_tells_sdk_tracers_from_no_op_ones(tracer: trace.Tracer) -> None:
    assert telemetry.recording(tracer)
    assert not telemetry.recording(trace.NoOpTracer())
    # The API's proxy tracer records only once an SDK provider is installed (none here).
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not telemetry.recording(trace.ProxyTracer("petrel.test"))


def test_current_context_only_makes_the_parent_current_for_logs_and_carriers() -> None:
    with telemetry.current_context_only(telemetry.context_from_carrier(CARRIER)) as span:
        assert not span.is_recording()
        assert telemetry.current_trace_id() == TRACE_ID
        assert telemetry.inject_carrier()["traceparent"] == CARRIER["traceparent"]
    assert telemetry.current_trace_id() == ""
    with telemetry.current_context_only(None):
        assert telemetry.inject_carrier() == {}
