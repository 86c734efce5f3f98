"""Scheduler metrics: queue depth sampling with bounded labels, disposition counting."""

from __future__ import annotations

from petrel.metrics import OTHER
from scheduler import metrics
from scheduler.metrics import QueueSampler, ZeroHold, record_outcomes, tenant_of
from scheduler.state import Job, JobState, Message

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _message(message_id: str, jobs: list[tuple[str, JobState, str]]) -> Message:
    message = Message(message_id, 0, b"")
    built = []
    for queue, state, site in jobs:
        job = Job(message, queue.rpartition("@")[2], queue, 0, 0)
        job.state = state
        job.site = site
        built.append(job)
    message.jobs = tuple(built)
    return message


def test_tenant_of_queue_names() -> None:
    assert tenant_of("example.com") == "none"
    assert tenant_of("acme@example.com") == "acme"
    assert tenant_of("spring:acme@example.com") == "acme"
    assert tenant_of("spring:@example.com") == "none"


async def test_sampler_counts_jobs_by_state_tenant_and_site() -> None:
    messages = [
        _message("m1", [("acme@a.test", JobState.SCHEDULED, ""),
                        ("acme@b.test", JobState.READY, "mx.b.test")]),
        _message("m2", [("c.test", JobState.IN_FLIGHT, "mx.c.test"),
                        ("c.test", JobState.DONE, "mx.c.test")]),
        _message("m3", [("beta@b.test", JobState.ROUTING, "")]),
    ]
    await QueueSampler(lambda: messages).sample()
    assert metrics.QUEUED.values() == {("scheduled",): 1, ("ready",): 2, ("in_flight",): 1}
    assert metrics.QUEUED_BY_TENANT.values() == {
        ("scheduled", "acme"): 1, ("ready", "acme"): 1, ("in_flight", "none"): 1,
        ("ready", "beta"): 1}
    assert metrics.QUEUED_BY_SITE.values() == {
        ("scheduled", "unresolved"): 1, ("ready", "mx.b.test"): 1,
        ("in_flight", "mx.c.test"): 1, ("ready", "unresolved"): 1}


async def test_sampler_bounds_sites_and_holds_emptied_ones_at_zero() -> None:
    messages = [_message(f"m{i}", [(f"d{i}.test", JobState.READY, f"mx.d{i}.test")] * (i + 1))
                for i in range(5)]
    sampler = QueueSampler(lambda: messages, limit=2)
    await sampler.sample()
    by_site = metrics.QUEUED_BY_SITE.values()
    assert by_site == {("ready", "mx.d4.test"): 5, ("ready", "mx.d3.test"): 4,
                       ("ready", OTHER): 6}
    messages[:] = messages[4:]
    await sampler.sample()
    assert metrics.QUEUED_BY_SITE.values() == {("ready", "mx.d4.test"): 5,
                                               ("ready", "mx.d3.test"): 0,
                                               ("ready", OTHER): 0}


def test_zero_hold_forgets_after_the_hold_and_stays_bounded() -> None:
    hold = ZeroHold(1, hold=10, limit=2)
    assert hold.apply({("ready", "a"): 1, ("ready", "b"): 1}, now=0) == {
        ("ready", "a"): 1, ("ready", "b"): 1}
    assert hold.apply({("ready", "c"): 1, ("ready", "d"): 1}, now=5) == {
        ("ready", "c"): 1, ("ready", "d"): 1, ("ready", "a"): 0}
    assert hold.apply({}, now=20) == {}


def _sample(name: str, labels: dict[str, str]) -> float:
    value = metrics.METRICS.registry.get_sample_value(name, labels)
    return value or 0.0


def test_record_outcomes_counts_dispositions_failures_and_time_in_queue() -> None:
    before = {
        "delivered": _sample("petrel_scheduler_dispositions_total", {"outcome": "delivered"}),
        "deferred": _sample("petrel_scheduler_failures_total",
                            {"outcome": "transient_failure", "category": "Uncategorized"}),
        "bounced": _sample("petrel_scheduler_failures_total",
                           {"outcome": "bounced", "category": "InvalidRecipient"}),
        "timed": _sample("petrel_scheduler_time_in_queue_seconds_count",
                         {"outcome": "delivered"}),
        "slow": _sample("petrel_scheduler_time_in_queue_seconds_bucket",
                        {"outcome": "delivered", "le": "5.0"}),
    }
    record_outcomes([
        {"type": "Delivery", "bounce_classification": "Uncategorized", "trace_id": TRACE_ID},
        {"type": "TransientFailure", "bounce_classification": ""},
        {"type": "Bounce", "bounce_classification": "InvalidRecipient"},
        {"type": "Reception"},
    ], created_ms=1_000_000, now_ms=1_010_000)
    assert _sample("petrel_scheduler_dispositions_total",
                   {"outcome": "delivered"}) == before["delivered"] + 1
    assert _sample("petrel_scheduler_failures_total",
                   {"outcome": "transient_failure", "category": "Uncategorized"}
                   ) == before["deferred"] + 1
    assert _sample("petrel_scheduler_failures_total",
                   {"outcome": "bounced", "category": "InvalidRecipient"}) == before["bounced"] + 1
    assert _sample("petrel_scheduler_time_in_queue_seconds_count",
                   {"outcome": "delivered"}) == before["timed"] + 1
    # ten seconds in the queue: above the 5 s bucket
    assert _sample("petrel_scheduler_time_in_queue_seconds_bucket",
                   {"outcome": "delivered", "le": "5.0"}) == before["slow"]
