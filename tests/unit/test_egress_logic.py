"""egress pure logic: reply parsing, outcome mapping, host ordering, address encoding, results."""

from __future__ import annotations

import random

import pytest

from egress.delivery import MAX_ADDRESSES, Attempt, SmtpDeliverer, candidates
from egress.replies import from_response, outcome_of, to_proto
from egress.session import HostFailed, Peer, encode_address
from egress.task import build_result, failed_replies
from petrel.routing import Host, Route
from petrel.smtp_replies import Reply
from petrel.v1 import scheduler_pb2

DELIVERED = scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
TRANSIENT = scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE
PERMANENT = scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE


@pytest.mark.parametrize(("code", "message", "expected"), [
    (550, "5.1.1 No such user here", Reply(550, "5.1.1", "No such user here")),
    (250, "2.0.0 OK queued as 123", Reply(250, "2.0.0", "OK queued as 123")),
    (421, "mx.example closing connection", Reply(421, "", "mx.example closing connection")),
    (552, "5.2.2 Mailbox full\n5.2.2 try later", Reply(552, "5.2.2", "Mailbox full\ntry later")),
    (451, "4.7.1 first\nsecond line", Reply(451, "4.7.1", "first\nsecond line")),
    (554, "5.7.1", Reply(554, "5.7.1", "")),
    (250, "", Reply(250, "", "")),
    (550, "5.1.10 null MX", Reply(550, "5.1.10", "null MX")),
])
def test_reply_parsing(code: int, message: str, expected: Reply) -> None:
    assert from_response(code, message) == expected


def test_outcomes_by_reply_class() -> None:
    assert outcome_of(Reply(250, "2.0.0", "ok")) == DELIVERED
    assert outcome_of(Reply(251, "", "forwarded")) == DELIVERED
    assert outcome_of(Reply(421, "4.3.2", "busy")) == TRANSIENT
    assert outcome_of(Reply(452, "4.2.2", "full")) == TRANSIENT
    assert outcome_of(Reply(550, "5.1.1", "no")) == PERMANENT
    assert outcome_of(Reply(0, "", "no code")) == TRANSIENT
    proto = to_proto(Reply(550, "5.1.1", "no"))
    assert (proto.code, proto.enhanced_code, proto.text) == (550, "5.1.1", "no")


def mx_route(*hosts: Host, kind: str = "mx") -> Route:
    return Route("example.test", "site", kind, tuple(hosts))


def test_candidates_follow_preference_then_address_order() -> None:
    route = mx_route(Host("backup", 25, 20, ("192.0.2.20",)),
                     Host("primary", 25, 10, ("192.0.2.10", "192.0.2.11")))
    assert candidates(route) == [Peer("primary", "192.0.2.10", 25),
                                 Peer("primary", "192.0.2.11", 25),
                                 Peer("backup", "192.0.2.20", 25)]


def test_equal_preference_hosts_are_shuffled() -> None:
    route = mx_route(Host("a", 25, 10, ("192.0.2.1",)), Host("b", 25, 10, ("192.0.2.2",)),
                     Host("z", 25, 30, ("192.0.2.9",)))
    firsts = {candidates(route, random.Random(seed))[0].host for seed in range(40)}
    assert firsts == {"a", "b"}
    assert all(candidates(route, random.Random(s))[-1].host == "z" for s in range(40))


def test_candidates_drop_duplicates_and_unresolved_mx_hosts_and_are_capped() -> None:
    route = mx_route(Host("one", 25, 10, ("192.0.2.1",)), Host("alias", 25, 20, ("192.0.2.1",)),
                     Host("unresolved", 25, 30, ()),
                     Host("many", 25, 40, tuple(f"192.0.2.{i}" for i in range(100, 110))))
    peers = candidates(route)
    assert [p.address for p in peers[:2]] == ["192.0.2.1", "192.0.2.100"]
    assert "unresolved" not in {p.host for p in peers}
    assert len(peers) == MAX_ADDRESSES


def test_static_route_by_name_connects_to_the_name() -> None:
    route = mx_route(Host("relay.example", 587, 0, ()), kind="smarthost")
    assert candidates(route) == [Peer("relay.example", "relay.example", 587)]


def test_peer_text() -> None:
    assert str(Peer("mx.example", "192.0.2.1", 25)) == "mx.example [192.0.2.1]:25"


@pytest.mark.parametrize(("address", "smtputf8", "expected"), [
    ("user@example.com", False, b"<user@example.com>"),
    ("", False, b"<>"),
    ("user@b\u00fccher.example", False, b"<user@xn--bcher-kva.example>"),
    ("j\u00f6rg@example.com", False, None),
    ("j\u00f6rg@example.com", True, "<j\u00f6rg@example.com>".encode()),
])
def test_address_encoding(address: str, smtputf8: bool, expected: bytes | None) -> None:
    assert encode_address(address, smtputf8) == expected


def task(*recipients: str) -> scheduler_pb2.DeliveryTask:
    return scheduler_pb2.DeliveryTask(task_id="t1", message_id="m" * 32, sender="s@x.test",
                                      recipients=list(recipients), domain="x.test",
                                      site="task-site")


def test_result_carries_one_entry_per_recipient_with_categories_for_failures() -> None:
    attempt = Attempt((Reply(250, "2.0.0", "ok"), Reply(550, "5.1.1", "no such user"),
                       Reply(451, "4.3.0", "later"), Reply(250, "2.0.0", "ok")),
                      "mx.x.test", "mx.x.test [192.0.2.1]:25", tls=True)
    assert failed_replies(attempt) == [attempt.replies[1], attempt.replies[2]]
    result = build_result(task("a@x.test", "b@x.test", "c@x.test", "d@x.test"), attempt,
                          ["InvalidRecipient", "Uncategorized"], "unspecified")
    assert [(r.recipient, r.outcome, r.reply.code, r.bounce_classification)
            for r in result.recipients] == [
        ("a@x.test", DELIVERED, 250, ""),
        ("b@x.test", PERMANENT, 550, "InvalidRecipient"),
        ("c@x.test", TRANSIENT, 451, "Uncategorized"),
        ("d@x.test", DELIVERED, 250, ""),
    ]
    assert (result.task_id, result.message_id) == ("t1", "m" * 32)
    assert (result.site, result.peer, result.tls, result.egress_source) == (
        "mx.x.test", "mx.x.test [192.0.2.1]:25", True, "unspecified")


def test_result_site_falls_back_to_the_task_and_missing_categories_are_uncategorized() -> None:
    attempt = Attempt.uniform(Reply(556, "5.1.10", "null MX"), 2, "")
    result = build_result(task("a@x.test", "b@x.test"), attempt, ["Other"], "src")
    assert result.site == "task-site" and result.peer == ""
    assert [r.bounce_classification for r in result.recipients] == ["Other", "Uncategorized"]


def failure(reply: Reply, from_server: bool) -> HostFailed:
    return HostFailed(reply, Peer("h", "192.0.2.1", 25), from_server=from_server)


def test_when_every_host_fails_the_last_server_reply_wins() -> None:
    route = mx_route(Host("h", 25, 10, ("192.0.2.1",)))
    refused = failure(Reply(451, "4.4.1", "Connection to h failed"), False)
    busy = failure(Reply(421, "4.3.2", "busy"), True)
    tls = failure(Reply(451, "4.7.4", "TLS is required"), False)
    assert SmtpDeliverer._all_failed(route, [busy, refused], 1).replies[0].code == 421
    only_refused = SmtpDeliverer._all_failed(route, [refused, refused], 2)
    assert [r.enhanced_code for r in only_refused.replies] == ["4.4.1", "4.4.1"]
    assert only_refused.replies[0].text.startswith("No answer from any hosts")
    assert only_refused.peer == ""
    assert SmtpDeliverer._all_failed(route, [refused, tls], 1).replies[0].enhanced_code == "4.7.4"
    assert SmtpDeliverer._all_failed(route, [], 1).replies[0].code == 451
