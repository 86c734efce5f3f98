"""Every metric of the catalogue is on the services' /metrics endpoints after a run of the
whole pipeline (deliveries over SMTP, gRPC and REST, a deferral, a bounce, refusals), with
values that match the traffic; in OpenMetrics format the latency histograms carry exemplars
naming the traces of the messages."""

from __future__ import annotations

import re
import smtplib
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

import petrel
from petrel import metrics_catalogue
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import free_port, wait_for
from tests.support.pipeline import Pipeline
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
ENDPOINT_SERVICES = ("spool", "bounce", "scheduler", "ingress", "egress")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _url(pipeline: Pipeline, ports: dict[str, int], service: str) -> str:
    if service == "gateway":
        return f"{pipeline.http_url}/metrics"
    return f"http://127.0.0.1:{ports[service]}/metrics"


def _scrape(url: str) -> tuple[set[str], Samples]:
    """Family names that have samples, and every sample's value."""
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200, url
    names: set[str] = set()
    samples: Samples = {}
    for family in parse_text(reply.text):
        if family.samples:
            names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _exemplars(url: str, family_name: str) -> list[dict[str, str]]:
    reply = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=10)
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    found = []
    for family in parse_openmetrics(reply.text):
        if family.name == family_name:
            found += [s.exemplar.labels for s in family.samples if s.exemplar is not None]
    return found


def _refuse_bad_recipient(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt("not an address")[0] == 501


def test_every_catalogued_metric_is_exported_with_exemplars(make_pipeline,
                                                            sink: SmtpSink) -> None:
    ports = {service: free_port() for service in ENDPOINT_SERVICES}
    closed = free_port()
    pipeline = make_pipeline({
        **{f"PETREL_{s.upper()}__METRICS_LISTEN": f"127.0.0.1:{p}" for s, p in ports.items()},
        "PETREL_ROUTING__SMARTHOST": sink.address,
        "PETREL_ROUTING__ROUTES": f'{{"down.test": "127.0.0.1:{closed}"}}',
    })
    pipeline.start_all()

    for rcpt in ("one@dest.test", "flaky@dest.test", "nouser@dest.test",
                 "tempfail@dest.test", "x@down.test"):
        assert smtp_send(pipeline.smtp_port, SENDER, [rcpt],
                         make_message(SENDER, [rcpt]))[0] == 250, rcpt
    grpc_inject(pipeline.inject_address, SENDER, ["grpc@dest.test"],
                make_message(SENDER, ["grpc@dest.test"]), tenant="acme",
                traceparent=TRACEPARENT)
    reply = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
        "envelope_sender": SENDER, "recipients": [{"email": "rest@dest.test"}],
        "content": make_message(SENDER, ["rest@dest.test"]).decode(),
        "template_dialect": "Static"})
    assert reply.status_code == 200, reply.text
    _refuse_bad_recipient(pipeline.smtp_port)
    with pytest.raises(grpc.RpcError) as refused:
        grpc_inject(pipeline.inject_address, SENDER, [], make_message(SENDER, ["x@dest.test"]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    delivered = {"one@dest.test", "flaky@dest.test", "grpc@dest.test", "rest@dest.test"}
    wait_for(lambda: {e["recipient"] for e in pipeline.events_of("Delivery")} >= delivered
             and pipeline.events_of("Bounce")
             and {"tempfail@dest.test", "x@down.test"}
             <= {e["recipient"] for e in pipeline.events_of("TransientFailure")},
             timeout=60, message="deliveries, a bounce and deferrals")
    trace_ids = {e["trace_id"] for e in pipeline.events() if e.get("trace_id")}
    assert TRACE_ID in trace_ids

    catalogue = metrics_catalogue.families()
    scraped: dict[str, Samples] = {}

    def everything_present() -> list[str]:
        missing = []
        for service, families in catalogue.items():
            names, samples = _scrape(_url(pipeline, ports, service))
            scraped[service] = samples
            missing += [f"{service}: {f.name}" for f in families if f.name not in names]
        return missing

    # Queue depths are sampled every few seconds: poll until every family has samples.
    try:
        wait_for(lambda: not everything_present(), timeout=20, message="every metric")
    except TimeoutError:
        pytest.fail(f"missing from /metrics: {everything_present()}")

    for service in catalogue:
        assert _value(scraped[service], "petrel_build_info", service=service,
                      version=petrel.__version__) == 1
    ingress = scraped["ingress"]
    assert _value(ingress, "petrel_ingress_messages_received_total", protocol="esmtp") >= 5
    assert _value(ingress, "petrel_ingress_messages_received_total", protocol="grpc") >= 1
    assert _value(ingress, "petrel_ingress_messages_received_total", protocol="http") >= 1
    assert _value(ingress, "petrel_ingress_rejections_total", protocol="esmtp",
                  reason="bad_recipient", code_class="5xx") >= 1
    assert _value(ingress, "petrel_ingress_rejections_total", protocol="grpc",
                  reason="invalid_request", code_class="5xx") >= 1
    assert _value(ingress, "petrel_ingress_smtp_connections_total") >= 6
    spool = scraped["spool"]
    assert _value(spool, "petrel_spool_writes_total", op="put") >= 7
    assert _value(spool, "petrel_spool_writes_total", op="remove") >= 5
    assert 1 <= _value(spool, "petrel_spool_commits_total") \
        <= _value(spool, "petrel_spool_commit_batch_operations_sum")
    assert _value(spool, "petrel_spool_stored_messages") >= 2  # the two deferred ones
    assert _value(spool, "petrel_spool_disk_usage_bytes") > 0
    scheduler = scraped["scheduler"]
    assert _value(scheduler, "petrel_scheduler_dispositions_total", outcome="delivered") >= 4
    assert _value(scheduler, "petrel_scheduler_dispositions_total", outcome="bounced") >= 1
    assert _value(scheduler, "petrel_scheduler_dispositions_total",
                  outcome="transient_failure") >= 3
    assert _value(scheduler, "petrel_scheduler_failures_total", outcome="bounced",
                  category="InvalidRecipient") >= 1
    assert _value(scheduler, "petrel_scheduler_time_in_queue_seconds_count",
                  outcome="delivered") >= 4
    assert _value(scheduler, "petrel_scheduler_egress_workers") == 1
    assert _value(scheduler, "petrel_scheduler_enqueued_messages_total", source="enqueue") >= 7
    queued = sum(v for (name, _), v in scheduler.items()
                 if name == "petrel_scheduler_queued_messages")
    assert queued >= 2
    assert sum(v for (name, labels), v in scheduler.items()
               if name == "petrel_scheduler_tenant_queued_messages"
               and ("tenant", "none") in labels) >= 2
    egress = scraped["egress"]
    assert _value(egress, "petrel_egress_delivery_attempts_total", outcome="delivered") >= 4
    assert _value(egress, "petrel_egress_delivery_attempts_total",
                  outcome="permanent_failure") >= 1
    assert _value(egress, "petrel_egress_delivery_attempts_total",
                  outcome="transient_failure") >= 3
    assert _value(egress, "petrel_egress_smtp_connections_total", tls="false") >= 1
    assert _value(egress, "petrel_egress_smtp_connection_failures_total", reply_class="4xx") >= 1
    assert _value(egress, "petrel_egress_mx_lookups_total", result="smarthost") >= 1
    assert _value(egress, "petrel_egress_mx_lookups_total", result="route") >= 1
    assert _value(scraped["bounce"], "petrel_bounce_replies_classified_total",
                  category="InvalidRecipient") >= 1
    assert _value(scraped["gateway"], "petrel_gateway_injected_recipients_total",
                  outcome="accepted") >= 1

    # Exemplars (OpenMetrics only): trace ids of the messages measured.
    hex_id = re.compile(r"^[0-9a-f]{32}$")
    checks: list[tuple[str, str, Any]] = [
        ("scheduler", "petrel_scheduler_time_in_queue_seconds", trace_ids),
        ("egress", "petrel_egress_delivery_attempt_duration_seconds", None),
        ("ingress", "petrel_ingress_transaction_duration_seconds", None),
        ("ingress", "petrel_ingress_spool_write_duration_seconds", trace_ids),
    ]
    for service, family, known in checks:
        exemplars = _exemplars(_url(pipeline, ports, service), family)
        assert exemplars, family
        for labels in exemplars:
            assert hex_id.match(labels["trace_id"]), (family, labels)
            if known is not None:
                assert labels["trace_id"] in known, (family, labels)
    assert "trace_id" not in httpx.get(_url(pipeline, ports, "scheduler"), timeout=10).text


def test_ready_lines_name_the_metrics_endpoints(make_pipeline) -> None:
    port = free_port()
    pipeline = make_pipeline({"PETREL_SPOOL__METRICS_LISTEN": f"127.0.0.1:{port}"})
    proc = pipeline.start("spool")
    log = proc.log_path.read_text()
    ready = next(line for line in log.splitlines() if line.startswith('{"ready"'))
    assert f'"metrics": "127.0.0.1:{port}"' in ready
    assert "petrel_spool_stored_messages" in httpx.get(
        f"http://127.0.0.1:{port}/metrics", timeout=10).text
