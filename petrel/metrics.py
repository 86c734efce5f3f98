"""Prometheus metrics shared by every service: one registry per service, the build-info gauge,
exemplars carrying trace ids, bounded label values and the ``/metrics`` endpoint.

Each service declares its families in ``<service>/metrics.py`` through a ``ServiceMetrics``
and exposes it with ``describe()`` (``petrel.metrics_catalogue`` walks them to write
``docs/metrics.md``). Conventions (style rule 11), checked when a family is declared:

* names are ``petrel_<subsystem>_<what>_<unit>``; counters are declared without ``_total``
  (the client library appends it); durations are ``_seconds`` histograms;
* labels are bounded: fixed sets of values (outcomes, protocols, reply classes), values from
  configuration (bounce categories, capped by ``LabelCap``), or the top N by volume with the
  rest folded into ``"other"`` (``fold_top`` + ``SnapshotGauge``, for tenants and sites).
  Never addresses, message ids or raw domains.

The endpoint (``serve_metrics``) runs in a daemon thread beside the service's event loop and
answers in the Prometheus text format, or in OpenMetrics when the scraper sends
``Accept: application/openmetrics-text`` — only that format carries exemplars. Histograms that
time one message's work are observed with ``observe(histogram, seconds, trace_id)``: the
exemplar names the active span's trace, else the message's own trace id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace as otel_trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import petrel
from petrel.config import split_hostport

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
OTHER = "other"
# Most label values a bounded label keeps before folding the rest into "other".
DEFAULT_LABEL_LIMIT = 50
# Short operations (RPCs, spool commits, classification).
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)
# SMTP dialogues with remote hosts: slow MX hosts take minutes.
SMTP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Time a message spends queued: seconds for a direct delivery, days before it expires.
QUEUE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
                 12 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)

_NAME = re.compile(r"^petrel_[a-z][a-z0-9]*(_[a-z0-9]+)+$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Family:
    """What the catalogue says about one metric family."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # Observed with trace-id exemplars (``observe``).
    exemplars: bool = False

    @property
    def exposed_name(self) -> str:
        """The name queries use (counters gain ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


class SnapshotGauge(Collector):
    """A labelled gauge whose samples are replaced all at once (``set_all``), so a scrape
    never sees a half-updated set and label values that disappeared stop being exported."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._values: Mapping[tuple[str, ...], float] = {}

    def set_all(self, values: Mapping[tuple[str, ...], float]) -> None:
        self._values = dict(values)

    def values(self) -> Mapping[tuple[str, ...], float]:
        return self._values

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self._values.items():
            family.add_metric(list(key), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)


class ServiceMetrics:
    """The metric families of one service, in the service's own registry.

    Every registry also carries ``petrel_build_info{version,service}`` (always 1) and, unless
    ``runtime=False``, the standard ``process_*`` and ``python_*`` collectors."""

    def __init__(self, service: str, *, runtime: bool = True) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.families: list[Family] = []
        if runtime:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        build = self.gauge("petrel_build_info",
                           "Always 1; the labels name the running version and service.",
                           ["version", "service"])
        build.labels(petrel.__version__, service).set(1)

    def _declare(self, name: str, kind: Kind, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float] = (), exemplars: bool = False) -> None:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not petrel_<subsystem>_<what>_<unit>")
        if kind == "counter" and name.endswith("_total"):
            raise ValueError(f"counter {name!r}: declare it without _total")
        if any(f.name == name for f in self.families):
            raise ValueError(f"metric {name!r} declared twice")
        self.families.append(Family(name, kind, documentation, tuple(labels), tuple(buckets),
                                    exemplars))

    def counter(self, name: str, documentation: str, labels: Sequence[str] = (), *,
                initial: Iterable[Sequence[str]] = ()) -> Counter:
        """A counter; ``initial`` label values are exported at 0 from the start."""
        self._declare(name, "counter", documentation, labels)
        counter = Counter(name, documentation, list(labels), registry=self.registry)
        for values in initial:
            counter.labels(*values)
        return counter

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = (), *,
              function: Callable[[], float] | None = None) -> Gauge:
        """A gauge; with ``function`` (no labels) its value is read at each scrape, in the
        endpoint's thread: the function must be cheap and safe to call from there."""
        self._declare(name, "gauge", documentation, labels)
        gauge = Gauge(name, documentation, list(labels), registry=self.registry)
        if function is not None:
            gauge.set_function(function)
        return gauge

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = (), *,
                  buckets: Sequence[float] = FAST_BUCKETS,
                  initial: Iterable[Sequence[str]] = (), exemplars: bool = False) -> Histogram:
        """A histogram; ``exemplars`` documents that it is observed with ``observe``."""
        self._declare(name, "histogram", documentation, labels, buckets, exemplars)
        histogram = Histogram(name, documentation, list(labels), registry=self.registry,
                              buckets=list(buckets))
        for values in initial:
            histogram.labels(*values)
        return histogram

    def snapshot_gauge(self, name: str, documentation: str,
                       labels: Sequence[str]) -> SnapshotGauge:
        self._declare(name, "gauge", documentation, labels)
        gauge = SnapshotGauge(name, documentation, labels)
        self.registry.register(gauge)
        return gauge


def trace_exemplar(trace_id: str = "") -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the active span, else of ``trace_id`` (a message's stored
    trace), else ``None``."""
    context = otel_trace.get_current_span().get_span_context()
    if context.is_valid:
        return {"trace_id": otel_trace.format_trace_id(context.trace_id)}
    if _TRACE_ID.match(trace_id) and trace_id != "0" * 32:
        return {"trace_id": trace_id}
    return None


def observe(histogram: Histogram, value: float, trace_id: str = "") -> None:
    """Observe ``value`` with a trace-id exemplar when one is known (see ``trace_exemplar``)."""
    histogram.observe(value, exemplar=trace_exemplar(trace_id))


class LabelCap:
    """Bounds a label fed by values the code does not control: the first ``limit`` distinct
    values are kept, later new ones become ``"other"``."""

    def __init__(self, limit: int = DEFAULT_LABEL_LIMIT) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


def fold_top(counts: Mapping[tuple[str, ...], float], position: int,
             limit: int = DEFAULT_LABEL_LIMIT) -> dict[tuple[str, ...], float]:
    """Bound the label at ``position`` of every key: the ``limit`` values with the largest
    totals keep their name, the others are summed under ``"other"``."""
    totals: dict[str, float] = {}
    for key, value in counts.items():
        totals[key[position]] = totals.get(key[position], 0) + value
    if len(totals) <= limit:
        return dict(counts)
    kept = set(sorted(totals, key=lambda v: (-totals[v], v))[:limit])
    folded: dict[tuple[str, ...], float] = {}
    for key, value in counts.items():
        if key[position] not in kept:
            key = (*key[:position], OTHER, *key[position + 1:])
        folded[key] = folded.get(key, 0) + value
    return folded


@dataclass
class MetricsServer:
    """A running endpoint; ``address`` is the bound ``HOST:PORT``."""

    address: str
    httpd: WSGIServer

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ready_fields(server: MetricsServer | None) -> dict[str, str]:
    """What a service adds to its ready line: ``{"metrics": HOST:PORT}`` when serving."""
    return {"metrics": server.address} if server is not None else {}


def serve_metrics(listen: str, metrics: ServiceMetrics) -> MetricsServer | None:
    """Serve ``metrics`` on ``HOST:PORT`` (any path; port 0 picks a free one). ``""`` serves
    nothing. A port that cannot be bound is logged and the service runs on without metrics:
    losing observability must not stop mail."""
    if not listen:
        return None
    host, port = split_hostport(listen)
    try:
        httpd, _ = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s; continuing without them", listen, exc)
        return None
    bound = f"[{host}]:{httpd.server_port}" if ":" in host else f"{host}:{httpd.server_port}"
    log.info("metrics on http://%s/metrics", bound)
    return MetricsServer(bound, httpd)
