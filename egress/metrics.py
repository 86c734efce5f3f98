"""Prometheus metrics of an egress worker (served on ``egress.metrics_listen`` when set).

Labels stay bounded: outcomes and SMTP reply classes, never sites, hosts or addresses.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from petrel.config import split_hostport

RECIPIENTS = Counter("petrel_egress_recipients", "Recipient results reported, by outcome",
                     ["outcome"])
TASKS = Counter("petrel_egress_tasks", "Delivery tasks finished")
CONNECTIONS = Counter("petrel_egress_smtp_connections", "SMTP connections opened")
CONNECTION_FAILURES = Counter("petrel_egress_smtp_connection_failures",
                              "Hosts that could not take a message, by reply class",
                              ["reply_class"])
REUSED = Counter("petrel_egress_smtp_sessions_reused", "Deliveries on a reused SMTP connection")
TASK_SECONDS = Histogram("petrel_egress_task_duration_seconds",
                         "Time from task receipt to result",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
IN_FLIGHT = Gauge("petrel_egress_tasks_in_flight", "Delivery tasks running")


def serve_metrics(listen: str) -> None:
    """Expose /metrics on ``HOST:PORT`` (a daemon thread; nothing to stop)."""
    host, port = split_hostport(listen)
    start_http_server(port, addr=host)
