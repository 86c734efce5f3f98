"""petrel.metrics: declarations, bounded labels, exemplars and the /metrics endpoint."""

from __future__ import annotations

import socket

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import petrel
from petrel.metrics import (
    OTHER,
    LabelCap,
    ServiceMetrics,
    fold_top,
    observe,
    serve_metrics,
    trace_exemplar,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_declarations_enforce_the_naming_convention() -> None:
    metrics = ServiceMetrics("unit", runtime=False)
    with pytest.raises(ValueError, match="without _total"):
        metrics.counter("petrel_unit_things_total", "x")
    with pytest.raises(ValueError, match="petrel_<subsystem>"):
        metrics.gauge("unit_things", "x")
    metrics.counter("petrel_unit_things", "x")
    with pytest.raises(ValueError, match="twice"):
        metrics.counter("petrel_unit_things", "x")
    assert [f.exposed_name for f in metrics.families] == [
        "petrel_build_info", "petrel_unit_things_total"]


def test_build_info_and_initial_label_values_are_exported() -> None:
    metrics = ServiceMetrics("unit", runtime=False)
    metrics.counter("petrel_unit_results", "x", ["outcome"], initial=[("ok",), ("failed",)])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in metrics.registry.collect() for s in family.samples}
    assert samples[("petrel_build_info", (("service", "unit"),
                                          ("version", petrel.__version__)))] == 1
    assert samples[("petrel_unit_results_total", (("outcome", "failed"),))] == 0
    assert samples[("petrel_unit_results_total", (("outcome", "ok"),))] == 0


def test_fold_top_keeps_the_largest_values_and_sums_the_rest() -> None:
    counts = {("ready", "a"): 5.0, ("scheduled", "a"): 1.0, ("ready", "b"): 4.0,
              ("ready", "c"): 1.0, ("scheduled", "d"): 2.0}
    assert fold_top(counts, 1, limit=2) == {("ready", "a"): 5.0, ("scheduled", "a"): 1.0,
                                            ("ready", "b"): 4.0, ("ready", OTHER): 1.0,
                                            ("scheduled", OTHER): 2.0}
    assert fold_top(counts, 1, limit=4) == counts


def test_label_cap_folds_new_values_past_the_limit() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "b", "d")] == ["a", "b", OTHER, "a", "b", OTHER]


def test_snapshot_gauge_replaces_every_sample_at_once() -> None:
    metrics = ServiceMetrics("unit", runtime=False)
    gauge = metrics.snapshot_gauge("petrel_unit_depth_messages", "x", ["site"])
    gauge.set_all({("a",): 3, ("b",): 1})
    gauge.set_all({("b",): 2})
    (family,) = [f for f in metrics.registry.collect() if f.name == "petrel_unit_depth_messages"]
    assert [(s.labels, s.value) for s in family.samples] == [({"site": "b"}, 2)]


def test_exemplar_prefers_the_active_span_then_the_given_trace_id() -> None:
    assert trace_exemplar() is None
    assert trace_exemplar("not-a-trace-id") is None
    assert trace_exemplar("0" * 32) is None
    assert trace_exemplar(TRACE_ID) == {"trace_id": TRACE_ID}
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        active = trace.format_trace_id(span.get_span_context().trace_id)
        assert trace_exemplar(TRACE_ID) == {"trace_id": active}


def test_endpoint_negotiates_openmetrics_with_exemplars() -> None:
    metrics = ServiceMetrics("unit")
    histogram = metrics.histogram("petrel_unit_work_duration_seconds", "x", exemplars=True)
    observe(histogram, 0.02, TRACE_ID)
    server = serve_metrics("127.0.0.1:0", metrics)
    assert server is not None
    try:
        url = f"http://{server.address}/metrics"
        plain = httpx.get(url, timeout=5)
        assert plain.headers["content-type"].startswith("text/plain")
        assert "petrel_unit_work_duration_seconds_bucket" in plain.text
        assert "trace_id" not in plain.text
        assert "process_cpu_seconds_total" in plain.text
        open_metrics = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5)
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        exemplars = [s.exemplar for family in text_string_to_metric_families(open_metrics.text)
                     for s in family.samples if s.exemplar is not None]
        assert [(e.labels, e.value) for e in exemplars] == [({"trace_id": TRACE_ID}, 0.02)]
    finally:
        server.close()


def test_endpoint_off_or_unbindable_leaves_the_service_running() -> None:
    metrics = ServiceMetrics("unit", runtime=False)
    assert serve_metrics("", metrics) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_metrics(f"127.0.0.1:{port}", metrics) is None
