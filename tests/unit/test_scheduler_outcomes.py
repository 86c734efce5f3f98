"""Outcome planning: results become events, final recipient states and the next schedule."""

from __future__ import annotations

from petrel.v1 import common_pb2, scheduler_pb2
from scheduler.outcomes import Where, apply_outcome, pending_recipients, plan_expiry, plan_result
from scheduler.policy import RetryPolicy

DELIVERED = scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
TRANSIENT = scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE
PERMANENT = scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE
CREATED = 1_700_000_000_000
POLICY = RetryPolicy(60.0, 3600.0, 0.0, 86400.0)
WHERE = Where("x.test", "acme@x.test", "mx.x.test")


def _meta() -> common_pb2.MessageMeta:
    meta = common_pb2.MessageMeta(id="0" * 32, sender="s@src.test", tenant="acme", size=123,
                                  created_unix_ms=CREATED,
                                  trace_context={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
    for address in ("a@x.test", "b@x.test", "c@x.test", "d@y.test"):
        meta.recipients.add(address=address, state=common_pb2.RECIPIENT_STATE_PENDING)
    return meta


def _result(*items: tuple[str, int, int, str, str]) -> scheduler_pb2.DeliveryResult:
    result = scheduler_pb2.DeliveryResult(task_id="t", message_id="0" * 32, site="mx.x.test",
                                          peer="mx.x.test [127.0.0.1]:25", egress_source="src")
    for recipient, outcome, code, enhanced, classification in items:
        result.recipients.add(recipient=recipient, outcome=outcome,  # type: ignore[arg-type]
                              reply=common_pb2.SmtpReply(code=code, enhanced_code=enhanced,
                                                         text="text"),
                              bounce_classification=classification)
    return result


def test_mixed_result_plans_events_and_retry() -> None:
    meta = _meta()
    now = CREATED + 5_000
    outcome = plan_result(meta, WHERE, 0, _result(
        ("a@x.test", DELIVERED, 250, "2.0.0", ""),
        ("B@x.test", PERMANENT, 550, "5.1.1", "InvalidRecipient"),
        ("c@x.test", TRANSIENT, 451, "4.3.0", "")), POLICY, now)
    assert [(r["type"], r["recipient"]) for r in outcome.records] == [
        ("Delivery", "a@x.test"), ("Bounce", "b@x.test"), ("TransientFailure", "c@x.test")]
    bounce = outcome.records[1]
    assert bounce["bounce_classification"] == "InvalidRecipient"
    assert bounce["response"] == {"code": 550, "enhanced_code": {"class": 5, "subject": 1,
                                                                 "detail": 1}, "content": "text"}
    assert bounce["queue"] == "acme@x.test" and bounce["site"] == "mx.x.test"
    assert bounce["num_attempts"] == 1 and bounce["tenant"] == "acme" and bounce["size"] == 123
    assert bounce["trace_id"] == "ab" * 16
    assert bounce["peer_address"] == {"addr": "mx.x.test [127.0.0.1]:25"}
    assert outcome.finals == {"a@x.test": common_pb2.RECIPIENT_STATE_DELIVERED,
                              "b@x.test": common_pb2.RECIPIENT_STATE_BOUNCED}
    assert outcome.due_ms == now + 60_000 and outcome.attempts == 1

    assert apply_outcome(meta, "x.test", outcome)
    assert [r.state for r in meta.recipients] == [
        common_pb2.RECIPIENT_STATE_DELIVERED, common_pb2.RECIPIENT_STATE_BOUNCED,
        common_pb2.RECIPIENT_STATE_PENDING, common_pb2.RECIPIENT_STATE_PENDING]
    assert [(s.domain, s.attempts, s.due_unix_ms) for s in meta.schedules] == [
        ("x.test", 1, now + 60_000)]
    assert pending_recipients(meta, "x.test") == ["c@x.test"]


def test_missing_recipient_result_counts_as_transient() -> None:
    outcome = plan_result(_meta(), WHERE, 2, _result(("a@x.test", DELIVERED, 250, "", "")),
                          POLICY, CREATED)
    transient = [r for r in outcome.records if r["type"] == "TransientFailure"]
    assert [r["recipient"] for r in transient] == ["b@x.test", "c@x.test"]
    assert transient[0]["response"]["code"] == 451
    assert transient[0]["num_attempts"] == 3
    assert outcome.due_ms == CREATED + 4 * 60_000


def test_retry_past_max_age_expires_the_rest() -> None:
    policy = RetryPolicy(60.0, 3600.0, 0.0, max_age=100.0)
    outcome = plan_result(_meta(), WHERE, 0, _result(
        ("a@x.test", TRANSIENT, 421, "4.4.2", ""), ("b@x.test", DELIVERED, 250, "", ""),
        ("c@x.test", TRANSIENT, 421, "4.4.2", "")), policy, CREATED + 50_000)
    assert [r["type"] for r in outcome.records] == [
        "TransientFailure", "Delivery", "TransientFailure", "Expiration", "Expiration"]
    assert outcome.due_ms is None
    assert outcome.finals["a@x.test"] == common_pb2.RECIPIENT_STATE_EXPIRED


def test_expiry_and_final_message_state() -> None:
    meta = _meta()
    outcome = plan_expiry(meta, WHERE, 4, 100.0)
    assert [r["type"] for r in outcome.records] == ["Expiration"] * 3
    assert outcome.records[0]["num_attempts"] == 4
    assert outcome.records[0]["response"]["code"] == 551
    assert apply_outcome(meta, "x.test", outcome)  # y.test is still pending
    last = plan_result(meta, Where("y.test", "acme@y.test", "y"), 0,
                       _result(("d@y.test", DELIVERED, 250, "2.0.0", "")), POLICY, CREATED)
    assert not apply_outcome(meta, "y.test", last)
    assert not meta.schedules
