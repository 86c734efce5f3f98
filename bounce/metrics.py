"""Prometheus metrics of the bounce service (served on ``bounce.metrics_listen`` when set).

Labels stay bounded: categories come from the rule files, kinds are a fixed set.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from petrel.config import split_hostport

REPLIES = Counter("petrel_bounce_replies_classified", "SMTP replies classified, by category",
                  ["category"])
MESSAGES = Counter("petrel_bounce_messages_classified", "Bounce messages parsed, by kind",
                   ["kind"])
CLASSIFY_SECONDS = Histogram("petrel_bounce_classify_duration_seconds",
                             "Time to classify one request", ["rpc"],
                             buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1))


def serve_metrics(listen: str) -> None:
    """Expose /metrics on ``HOST:PORT`` (a daemon thread; nothing to stop)."""
    host, port = split_hostport(listen)
    start_http_server(port, addr=host)
