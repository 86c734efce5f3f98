"""End to end: webhooks lose no event through a 30 s receiver outage and restarts of the
process that ships them (the scheduler), respect their filters, sign every batch, and deliver a
message's records in the order they happened."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from petrel.event_segments import list_segments
from petrel.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.messages import make_message, smtp_send
from tests.support.net import wait_for
from tests.support.pipeline import Pipeline, final_dispositions
from tests.support.sink import SmtpSink
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
# The receiver refuses connections for about 20 s, then answers 503: down at least this long.
OUTAGE = 30.0
SECRETS = {"/bounces": "bounce-secret", "/acme": "acme-secret"}
FAST = {"batch_size": 4, "max_batch_latency": "0.2s", "retry_initial": "0.2s",
        "retry_max": "1s", "timeout": "2s"}

# (recipient, tenant): acme and globex mail, delivered, deferred once, bounced
FIRST = [("ok1@dest.test", "acme"), ("ok2@dest.test", "acme"), ("flaky1@dest.test", "acme"),
         ("nouser1@dest.test", "acme"), ("ok3@dest.test", "globex"),
         ("nouser2@dest.test", "globex"), ("ok4@dest.test", "")]
SECOND = [("ok5@dest.test", "acme"), ("flaky2@dest.test", "acme"),
          ("nouser3@dest.test", "acme"), ("ok6@dest.test", "globex")]


def send(pipeline: Pipeline, messages: list[tuple[str, str]]) -> None:
    for rcpt, tenant in messages:
        headers = {"X-Tenant": tenant} if tenant else {}
        data = make_message(SENDER, [rcpt], extra_headers=headers)
        assert smtp_send(pipeline.smtp_port, SENDER, [rcpt], data)[0] == 250


def settled(pipeline: Pipeline, count: int) -> list[dict[str, Any]] | None:
    """The events on disk once ``count`` recipients have their final disposition."""
    events = pipeline.events()
    return events if len(final_dispositions(events)) >= count else None


def until(moment: float) -> None:
    wait_for(lambda: time.monotonic() >= moment, timeout=max(0.0, moment - time.monotonic()) + 5,
             interval=0.2)


def key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["type"], record["id"], record["recipient"], record["event_time"])


def first_arrivals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    unique = []
    for record in records:
        if record["event_id"] not in seen:
            seen.add(record["event_id"])
            unique.append(record)
    return unique


def test_outage_and_restarts_lose_no_event(make_pipeline, sink: SmtpSink) -> None:
    started = time.monotonic()
    receiver = WebhookReceiver()  # not listening yet: connections are refused
    webhooks = [
        {"name": "bounces", "url": receiver.url("/bounces"), "secret": SECRETS["/bounces"],
         "record_types": ["Bounce"], **FAST},
        {"name": "acme", "url": receiver.url("/acme"), "secret": SECRETS["/acme"],
         "tenants": ["acme"], **FAST},
    ]
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_EVENTS__WEBHOOKS": json.dumps(webhooks),
                              "PETREL_EVENTS__MAX_FILE_BYTES": "3000"})
    try:
        pipeline.start_all(skip=("gateway",))
        send(pipeline, FIRST)
        wait_for(lambda: settled(pipeline, len(FIRST)), timeout=30,
                 message="first messages settled")
        pipeline.restart("scheduler")  # graceful, in the middle of the outage
        until(started + OUTAGE - 10)
        receiver.status = 503
        receiver.start()
        send(pipeline, SECOND)
        events = wait_for(lambda: settled(pipeline, len(FIRST) + len(SECOND)), timeout=30,
                          message="second messages settled")
        until(max(started + OUTAGE, time.monotonic() + 3))
        refused = {p.path for p in receiver.posted() if p.status == 503}
        assert refused == {"/bounces", "/acme"}, "both webhooks retried during the outage"
        receiver.delay = 0.3  # slow answers, so the crash below comes mid-shipping
        receiver.status = 200
        wait_for(lambda: receiver.accepted("/acme"), timeout=15, message="shipping resumed")
        pipeline.restart("scheduler", sig=9)  # a crash while shipping
        expected = {
            "/bounces": [e for e in events if e["type"] == "Bounce"],
            "/acme": [e for e in events if e.get("tenant") == "acme"],
        }
        assert len(expected["/bounces"]) == 3
        wait_for(lambda: all({key(r) for r in receiver.accepted(path)}
                             >= {key(e) for e in wanted} for path, wanted in expected.items()),
                 timeout=30, message="every expected event at the receiver")
    finally:
        receiver.stop()

    for path, wanted in expected.items():
        got = receiver.accepted(path)
        assert {key(r) for r in got} == {key(e) for e in wanted}, f"{path}: filter or loss"
        duplicates = sum(n - 1 for n in Counter(r["event_id"] for r in got).values())
        print(f"{path}: {len(got)} records received, {duplicates} duplicates")
        by_event: dict[str, dict[str, Any]] = {}
        for record in got:
            assert by_event.setdefault(record["event_id"], record) == record, "changed copy"
    for posted in receiver.posted():
        assert verify_signature(SECRETS[posted.path], posted.body,
                                posted.headers[TIMESTAMP_HEADER],
                                posted.headers[SIGNATURE_HEADER], tolerance=60)

    # per message, the order on disk: Reception, then the scheduler's records as written
    shipped = first_arrivals(receiver.accepted("/acme"))
    for message_id in {e["id"] for e in expected["/acme"]}:
        on_disk = [e["type"] for e in expected["/acme"] if e["id"] == message_id]
        on_disk.sort(key=lambda t: t != "Reception")
        assert [r["type"] for r in shipped if r["id"] == message_id] == on_disk
    flows = Counter(tuple(r["type"] for r in shipped if r["id"] == m)
                    for m in {r["id"] for r in shipped})
    assert flows[("Reception", "TransientFailure", "Delivery")] == 2
    assert flows[("Reception", "Bounce")] == 2
    assert flows[("Reception", "Delivery")] == 3
    assert max(len(s) for s in list_segments(pipeline.events_dir).values()) > 1, "rotated"
