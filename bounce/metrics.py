"""Prometheus metrics of the bounce service (served on ``bounce.metrics_listen``; see
``petrel.metrics``).

Labels stay bounded: categories come from the rule files (at most ``DEFAULT_LABEL_LIMIT``,
then ``other``), kinds and RPC names are fixed sets.
"""

from __future__ import annotations

from petrel import metrics as petrel_metrics
from petrel.metrics import LabelCap, MetricsServer, ServiceMetrics
from petrel.v1 import bounce_pb2

METRICS = ServiceMetrics("bounce")
# ClassifyMessage's kinds as the analyser names them: MESSAGE_KIND_TEXT_BOUNCE -> text-bounce.
KINDS = tuple(name.removeprefix("MESSAGE_KIND_").lower().replace("_", "-")
              for name in bounce_pb2.MessageKind.keys()  # noqa: SIM118 - an enum wrapper
              if not name.endswith("_UNSPECIFIED"))
RPCS = ("ClassifyReplies", "ClassifyMessage")

REPLIES = METRICS.counter(
    "petrel_bounce_replies_classified",
    "SMTP replies classified, by category (KumoMTA's names, e.g. InvalidRecipient, "
    "Uncategorized).", ["category"])
MESSAGES = METRICS.counter(
    "petrel_bounce_messages_classified",
    "Inbound messages analysed, by kind: " + ", ".join(KINDS) + ".", ["kind"],
    initial=[(k,) for k in KINDS])
CLASSIFY_SECONDS = METRICS.histogram(
    "petrel_bounce_classify_duration_seconds", "Time to answer one request, by rpc.", ["rpc"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
    initial=[(r,) for r in RPCS])

SUPPRESSION_SOURCES = ("bounce", "complaint", "manual")
SUPPRESSIONS_ADDED = METRICS.counter(
    "petrel_bounce_suppressions_added",
    "Suppression list entries added or replaced, by source: bounce, complaint, manual.",
    ["source"], initial=[(s,) for s in SUPPRESSION_SOURCES])
SUPPRESSIONS_REMOVED = METRICS.counter(
    "petrel_bounce_suppressions_removed", "Suppression list entries removed (expired or not).")
SUPPRESSION_CHECKS = METRICS.counter(
    "petrel_bounce_suppression_checks",
    "Addresses checked against the suppression list, by result: suppressed, clear.",
    ["result"], initial=[("suppressed",), ("clear",)])

category_label = LabelCap()


def describe() -> ServiceMetrics:
    return METRICS


def serve_metrics(listen: str) -> MetricsServer | None:
    """Serve this service's metrics on ``HOST:PORT`` (``""``: not at all)."""
    return petrel_metrics.serve_metrics(listen, METRICS)
