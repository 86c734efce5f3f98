"""Two ingress processes share the SMTP and inject ports (``ingress.reuse_port``, what
``petrel up --ingress-replicas 2`` sets): the kernel spreads connections over both, each
accepts its share, and every message is delivered once."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from petrel.events import read_events
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import free_port, wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
SHARED = {"PETREL_INGRESS__REUSE_PORT": "true"}


def test_two_ingress_processes_share_the_ports(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all(skip=("ingress", "gateway"))
    metrics_ports = [free_port(), free_port()]
    for name, port in zip(("ingress", "ingress-2"), metrics_ports, strict=True):
        pipeline.start("ingress", name, extra_env={
            **SHARED, "PETREL_INGRESS__METRICS_LISTEN": f"127.0.0.1:{port}"})

    recipients = [f"r{i}@dest.test" for i in range(40)]
    for rcpt in recipients:  # a connection per message: the kernel picks a process for each
        code, _ = smtp_send(pipeline.smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))
        assert code == 250
    injected = "grpc@dest.test"
    grpc_inject(pipeline.inject_address, SENDER, [injected], make_message(SENDER, [injected]))

    wanted = [*recipients, injected]
    wait_for(lambda: all(sink.received_for(r) for r in wanted), timeout=60,
             message="every message at the sink")
    assert all(len(sink.received_for(r)) == 1 for r in wanted)
    receptions = Counter(r["recipient"] for r in read_events(pipeline.events_dir)
                         if r["type"] == "Reception")
    assert receptions == Counter(wanted)
    # Both processes took connections, as each one's own metrics say.
    per_process = [smtp_connections(port) for port in metrics_ports]
    assert all(per_process) and sum(per_process) >= len(recipients), per_process


def smtp_connections(metrics_port: int) -> float:
    """``petrel_ingress_smtp_connections_total`` of the ingress serving that metrics port."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "petrel_ingress_smtp_connections_total")
