"""Prometheus metrics of the scheduler (served on ``scheduler.metrics_listen``; see
``petrel.metrics``).

Queue depths are sampled by ``QueueSampler``: one pass over the queued jobs on the event
loop (yielding as it goes), repeated every few seconds — less often on a large queue, so
sampling never takes more than a few percent of the loop. ``state`` is scheduled (waiting for
its due time), ready (due: routing or in its site's ready queue) or in_flight (handed to a
worker, or its result being recorded). Per-tenant and per-site depths keep the
``DEFAULT_LABEL_LIMIT`` largest values and sum the rest as ``other``; a value that empties
stays exported at 0 for ``ZERO_HOLD`` seconds so graphs fall to zero instead of vanishing.
The tenant of unnamed-tenant mail is ``none``; a job whose site is not known yet counts under
``unresolved``.

Dispositions are counted per recipient from the event records, once they are on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from petrel import metrics as petrel_metrics
from petrel.metrics import (
    DEFAULT_LABEL_LIMIT,
    QUEUE_BUCKETS,
    LabelCap,
    MetricsServer,
    ServiceMetrics,
    fold_top,
    observe,
)
from scheduler.state import DOMAIN_STATE_NAMES, Message

METRICS = ServiceMetrics("scheduler")
STATES = ("scheduled", "ready", "in_flight")
RECORD_OUTCOMES = {"Delivery": "delivered", "TransientFailure": "transient_failure",
                   "Bounce": "bounced", "Expiration": "expired", "AdminBounce": "admin_bounced"}
FINAL_OUTCOMES = ("delivered", "bounced", "expired", "admin_bounced")
# Traffic-shaping automation actions (KumoMTA's TSA vocabulary).
AUTOMATION_ACTIONS = ("suspend", "suspend_tenant", "suspend_campaign", "bounce",
                      "bounce_tenant", "bounce_campaign", "set_config", "set_domain_config")
REQUEUE_REASONS = ("worker_lost", "timeout")
ENQUEUE_SOURCES = ("enqueue", "rebuild", "reconcile")
NO_TENANT = "none"
UNRESOLVED_SITE = "unresolved"
ZERO_HOLD = 900.0
MIN_SAMPLE_INTERVAL = 2.0
# Sampling may use at most 1/SAMPLE_COST_RATIO of the loop's time.
SAMPLE_COST_RATIO = 20
SAMPLE_YIELD_EVERY = 20_000

QUEUED = METRICS.snapshot_gauge(
    "petrel_scheduler_queued_messages",
    "Queued jobs (one message's recipients at one domain), by state: scheduled, ready, "
    "in_flight. Sampled.", ["state"])
QUEUED_BY_TENANT = METRICS.snapshot_gauge(
    "petrel_scheduler_tenant_queued_messages",
    f"Queued jobs by state and tenant (top {DEFAULT_LABEL_LIMIT} tenants, the rest as "
    f"other; no tenant: {NO_TENANT}). Sampled.", ["state", "tenant"])
QUEUED_BY_SITE = METRICS.snapshot_gauge(
    "petrel_scheduler_site_queued_messages",
    f"Queued jobs by state and destination site (MX rollup; top {DEFAULT_LABEL_LIMIT} sites, "
    f"the rest as other; not routed yet: {UNRESOLVED_SITE}). Sampled.", ["state", "site"])
TASKS_IN_FLIGHT = METRICS.gauge("petrel_scheduler_tasks_in_flight",
                                "Delivery tasks handed to egress workers and not answered yet.")
TASKS_DISPATCHED = METRICS.counter("petrel_scheduler_tasks_dispatched",
                                   "Delivery tasks handed to egress workers.")
TASKS_REQUEUED = METRICS.counter(
    "petrel_scheduler_tasks_requeued",
    "Tasks put back in their ready queue unanswered, by reason: worker_lost (its stream "
    "ended), timeout (no result within task_timeout).",
    ["reason"], initial=[(r,) for r in REQUEUE_REASONS])
EGRESS_WORKERS = METRICS.gauge("petrel_scheduler_egress_workers",
                               "Egress workers connected (open Dispatch streams).")
ENQUEUED = METRICS.counter(
    "petrel_scheduler_enqueued_messages",
    "Messages queued, by source: enqueue (from ingress), rebuild (read from the spool at "
    "start), reconcile (found in the spool, never enqueued).",
    ["source"], initial=[(s,) for s in ENQUEUE_SOURCES])
DISPOSITIONS = METRICS.counter(
    "petrel_scheduler_dispositions",
    "Recipient outcomes recorded, by outcome: delivered, transient_failure (will be "
    "retried), bounced, expired, admin_bounced.",
    ["outcome"], initial=[(o,) for o in RECORD_OUTCOMES.values()])
FAILURES = METRICS.counter(
    "petrel_scheduler_failures",
    "Failed recipient attempts by outcome (transient_failure, bounced) and bounce category "
    f"(KumoMTA's names, e.g. InvalidRecipient; at most {DEFAULT_LABEL_LIMIT}, then other).",
    ["outcome", "category"])
QUEUE_SECONDS = METRICS.histogram(
    "petrel_scheduler_time_in_queue_seconds",
    "From reception to final disposition, per recipient, by outcome: delivered, bounced, "
    "expired, admin_bounced.",
    ["outcome"], buckets=QUEUE_BUCKETS, initial=[(o,) for o in FINAL_OUTCOMES],
    exemplars=True)
REBUILD_SECONDS = METRICS.gauge(
    "petrel_scheduler_rebuild_duration_seconds",
    "How long the last rebuild of the queues from the spool took (0 until it finished).")
AUTOMATION_ACTIONS_TAKEN = METRICS.counter(
    "petrel_scheduler_automation_actions",
    "Traffic-shaping automation actions taken, by action: " + ", ".join(AUTOMATION_ACTIONS)
    + ".", ["action"], initial=[(a,) for a in AUTOMATION_ACTIONS])

_categories = LabelCap()


SUPPRESSIONS = METRICS.counter(
    "petrel_scheduler_suppressions",
    "Hard bounces handed to the suppression list, by result: added (stored), dropped (the "
    "list stayed unreachable through every retry, or the backlog was full).",
    ["result"], initial=[("added",), ("dropped",)])


def describe() -> ServiceMetrics:
    return METRICS


def serve_metrics(listen: str) -> MetricsServer | None:
    """Serve this service's metrics on ``HOST:PORT`` (``""``: not at all)."""
    return petrel_metrics.serve_metrics(listen, METRICS)


def tenant_of(queue: str) -> str:
    """The tenant part of a scheduled queue name (``campaign:tenant@domain``)."""
    head, at, _ = queue.rpartition("@")
    return (head.rpartition(":")[2] if at else "") or NO_TENANT


def record_outcomes(records: Iterable[Mapping[str, Any]], created_ms: int, now_ms: int) -> None:
    """Count the event records of one job's outcome (after they were written)."""
    for record in records:
        outcome = RECORD_OUTCOMES.get(record.get("type", ""))
        if outcome is None:
            continue
        DISPOSITIONS.labels(outcome).inc()
        if outcome in ("transient_failure", "bounced"):
            category = record.get("bounce_classification") or "Uncategorized"
            FAILURES.labels(outcome, _categories(category)).inc()
        elif created_ms:
            observe(QUEUE_SECONDS.labels(outcome), max(now_ms - created_ms, 0) / 1000,
                    record.get("trace_id") or "")


class ZeroHold:
    """Keeps label sets that emptied at 0 for ``hold`` seconds (bounded as ``fold_top``)."""

    def __init__(self, position: int, hold: float = ZERO_HOLD,
                 limit: int = DEFAULT_LABEL_LIMIT) -> None:
        self.position = position
        self.hold = hold
        self.limit = limit
        self._seen: dict[tuple[str, ...], float] = {}

    def apply(self, values: Mapping[tuple[str, ...], float], now: float
              ) -> dict[tuple[str, ...], float]:
        for key in values:
            self._seen[key] = now
        for key in [k for k, seen in self._seen.items() if now - seen > self.hold]:
            del self._seen[key]
        out = dict(values)
        distinct = {key[self.position] for key in out}
        for key in self._seen:
            if key in out:
                continue
            if key[self.position] in distinct or len(distinct) <= self.limit:
                out[key] = 0
                distinct.add(key[self.position])
        return out


class QueueSampler:
    """Samples the queue depth gauges from ``messages()`` (the queued messages)."""

    def __init__(self, messages: Callable[[], list[Message]],
                 limit: int = DEFAULT_LABEL_LIMIT) -> None:
        self._messages = messages
        self._limit = limit
        self._tenants = ZeroHold(1, limit=limit)
        self._sites = ZeroHold(1, limit=limit)

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await self.sample()
            cost = time.perf_counter() - started
            await asyncio.sleep(max(MIN_SAMPLE_INTERVAL, cost * SAMPLE_COST_RATIO))

    async def sample(self) -> None:
        totals: dict[tuple[str, ...], float] = {(state,): 0 for state in STATES}
        tenants: dict[tuple[str, ...], float] = {}
        sites: dict[tuple[str, ...], float] = {}
        for count, message in enumerate(self._messages(), start=1):
            for job in message.jobs:
                state = DOMAIN_STATE_NAMES.get(job.state)
                if state is None:
                    continue
                totals[(state,)] += 1
                key = (state, tenant_of(job.queue))
                tenants[key] = tenants.get(key, 0) + 1
                key = (state, job.site or UNRESOLVED_SITE)
                sites[key] = sites.get(key, 0) + 1
            if count % SAMPLE_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        now = time.monotonic()
        QUEUED.set_all(totals)
        QUEUED_BY_TENANT.set_all(self._tenants.apply(fold_top(tenants, 1, self._limit), now))
        QUEUED_BY_SITE.set_all(self._sites.apply(fold_top(sites, 1, self._limit), now))


def bind(tasks_in_flight: Callable[[], int], egress_workers: Callable[[], int]) -> None:
    """Read the live gauges from the running scheduler (called once at start)."""
    TASKS_IN_FLIGHT.set_function(tasks_in_flight)
    EGRESS_WORKERS.set_function(egress_workers)
