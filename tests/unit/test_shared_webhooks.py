"""Webhook signing and filters."""

from __future__ import annotations

import json

from petrel.config import WebhookConfig
from petrel.event_segments import Entry, Position
from petrel.webhooks import accepts, encode_batch, sign, verify_signature


def hook(**fields: object) -> WebhookConfig:
    return WebhookConfig.model_validate({"name": "h", "url": "http://127.0.0.1:1/", **fields})


def test_signature_covers_timestamp_and_body() -> None:
    body = b'[{"type":"Delivery"}]'
    signature = sign("s3cret", 1_700_000_000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature("s3cret", body, "1700000000", signature, now=1_700_000_100)
    assert not verify_signature("other", body, "1700000000", signature, now=1_700_000_100)
    assert not verify_signature("s3cret", body + b" ", "1700000000", signature,
                                now=1_700_000_100)
    assert not verify_signature("s3cret", body, "1700000001", signature, now=1_700_000_100)
    assert not verify_signature("s3cret", body, "1700000000", signature, now=1_700_001_000)
    assert verify_signature("s3cret", body, "1700000000", signature, tolerance=0, now=0)
    assert not verify_signature("s3cret", body, "soon", signature)


def test_filters_by_record_type_and_tenant() -> None:
    bounces = hook(record_types=["Bounce", "Expiration"])
    assert accepts(bounces, {"type": "Bounce"}) and not accepts(bounces, {"type": "Delivery"})
    acme = hook(tenants=["acme", ""])
    assert accepts(acme, {"type": "Delivery", "tenant": "acme"})
    assert accepts(acme, {"type": "Delivery", "tenant": None})
    assert not accepts(acme, {"type": "Delivery", "tenant": "globex"})
    both = hook(record_types=["Delivery"], tenants=["acme"])
    assert not accepts(both, {"type": "Bounce", "tenant": "acme"})
    assert accepts(hook(), {"type": "OOB"})


def test_batch_is_a_json_array_with_event_ids() -> None:
    entry = Entry({"type": "Delivery", "id": "m"}, "scheduler", "scheduler.1:0",
                  Position("scheduler.1.jsonl", 10), "k")
    assert json.loads(encode_batch([entry])) == [
        {"type": "Delivery", "id": "m", "event_id": "scheduler.1:0"}]
