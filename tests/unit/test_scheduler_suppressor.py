"""Which records of a finished batch put a recipient on the suppression list."""

from __future__ import annotations

from typing import Any

from petrel.config import BounceConfig
from petrel.events import make_record
from petrel.v1 import suppression_pb2
from scheduler.suppressor import bounce_suppressions

NOW = 1_700_000_000_000


def record(record_type: str, recipient: str, category: str, code: int = 550,
           tenant: str = "acme") -> dict[str, Any]:
    return make_record(record_type, message_id="m" * 32, sender="s@petrel.test",
                       recipient=recipient, code=code, enhanced_code=f"{code // 100}.1.1",
                       content="No such user", bounce_classification=category, tenant=tenant)


def test_only_permanent_hard_bounces_with_their_tenant() -> None:
    records = [
        record("Bounce", "dead@x.test", "InvalidRecipient"),
        record("Bounce", "gone@x.test", "InactiveMailbox", tenant=""),
        record("Bounce", "nodomain@x.test", "BadDomain"),
        record("Bounce", "full@x.test", "QuotaIssues"),
        record("Bounce", "spam@x.test", "SpamBlock"),
        record("TransientFailure", "later@x.test", "InvalidRecipient", code=450),
        record("Bounce", "odd@x.test", "InvalidRecipient", code=450),
        record("Delivery", "ok@x.test", ""),
        record("Bounce", "a b@x.test", "InvalidRecipient"),
    ]
    entries = bounce_suppressions(records, BounceConfig(), NOW)
    assert [(e.address, e.tenant, e.reason) for e in entries] == [
        ("dead@x.test", "acme", "InvalidRecipient"), ("gone@x.test", "", "InactiveMailbox"),
        ("nodomain@x.test", "acme", "BadDomain")]
    first = entries[0]
    assert first.source == suppression_pb2.SUPPRESSION_SOURCE_BOUNCE
    assert first.message_id == "m" * 32 and first.expires_unix_ms == 0
    assert first.detail == "550 5.1.1 No such user"


def test_configuration_turns_it_off_or_changes_it() -> None:
    records = [record("Bounce", "dead@x.test", "InvalidRecipient"),
               record("Bounce", "full@x.test", "QuotaIssues")]
    assert bounce_suppressions(records, BounceConfig(suppress_bounces=False), NOW) == []
    custom = BounceConfig(suppress_categories=("QuotaIssues",), suppression_expiry=3600)
    [entry] = bounce_suppressions(records, custom, NOW)
    assert entry.address == "full@x.test" and entry.expires_unix_ms == NOW + 3_600_000
