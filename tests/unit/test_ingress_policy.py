"""Address syntax, relay networks, reply normalisation and inject validation."""

from __future__ import annotations

import pytest

from ingress.addresses import domain_of, is_valid_mailbox
from ingress.replies import normalize_reply
from ingress.smtp import RelayPolicy
from ingress.validation import FieldError, validate_inject
from petrel import smtp_replies
from petrel.v1 import ingress_pb2


@pytest.mark.parametrize("address", [
    "user@example.com", "first.last+tag@sub.example.co", '"quoted user"@example.com',
    "user@[192.0.2.1]", "user@[IPv6:2001:db8::1]", "ünïcode@bücher.example", "a@localhost",
    "o'neil@example.com",
])
def test_valid_mailboxes(address: str) -> None:
    assert is_valid_mailbox(address)


@pytest.mark.parametrize("address", [
    "", "user", "@example.com", "user@", "a..b@example.com", ".a@example.com",
    "a@-example.com", "a@example-.com", "a@exa mple.com", "a b@example.com",
    "a@[300.1.1.1]", "a@[IPv6:1.2.3.4]", "x" * 65 + "@example.com",
    "a@" + "b" * 64 + ".com", "bad\udce9@example.com", "a@b..com",
])
def test_invalid_mailboxes(address: str) -> None:
    assert not is_valid_mailbox(address)


def test_domain_of() -> None:
    assert domain_of("A@Example.COM") == "example.com"


def test_relay_policy() -> None:
    policy = RelayPolicy(("127.0.0.1/32", "10.0.0.0/8", "::1/128"))
    assert policy.allows("127.0.0.1")
    assert policy.allows("10.1.2.3")
    assert policy.allows("::ffff:10.1.2.3")
    assert policy.allows("::1")
    assert not policy.allows("127.0.0.2")
    assert not policy.allows("2001:db8::1")
    assert not policy.allows("")


@pytest.mark.parametrize(("line", "verb", "expected"), [
    ("552 Error: message size exceeds fixed maximum message size", "MAIL", smtp_replies.TOO_BIG),
    ("552 Error: Too much mail data", "", smtp_replies.TOO_BIG),
    ("553 5.1.3 Error: malformed address", "MAIL", smtp_replies.BAD_SENDER_SYNTAX),
    ("553 5.1.3 Error: malformed address", "RCPT", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("500 Line too long (see RFC5321 4.5.3.1.6)", "", smtp_replies.LINE_TOO_LONG),
    ("501 Syntax: MAIL FROM: <address>", "MAIL", "501 5.5.4 Syntax: MAIL FROM: <address>"),
    ('500 Error: command "FOO" not recognized', "", smtp_replies.UNKNOWN_COMMAND),
    ("500 Command line too long", "", smtp_replies.COMMAND_TOO_LONG),
    ("503 Error: need RCPT command", "", "503 5.5.1 Error: need RCPT command"),
    ("250 OK", "", "250 2.0.0 OK"),
    ("221 Bye", "", "221 2.0.0 Bye"),
    ("220 host Petrel ESMTP", "", "220 host Petrel ESMTP"),
    ("354 End data with <CR><LF>.<CR><LF>", "", "354 End data with <CR><LF>.<CR><LF>"),
    ("250-SIZE 100", "EHLO", "250-SIZE 100"),
    ("250 SMTPUTF8", "EHLO", "250 SMTPUTF8"),
    ("250 host", "HELO", "250 host"),
    ("334 VXNlciBOYW1lAA==", "", "334 VXNlciBOYW1lAA=="),
    (smtp_replies.RELAY_DENIED, "RCPT", smtp_replies.RELAY_DENIED),
    (smtp_replies.queued("abc"), "", smtp_replies.queued("abc")),
])
def test_normalize_reply(line: str, verb: str, expected: str) -> None:
    assert normalize_reply(line, verb) == expected


def request(**fields: object) -> ingress_pb2.InjectMessageRequest:
    base: dict[str, object] = {"sender": "a@example.com", "recipients": ["b@example.net"],
                               "content": b"Subject: x\r\n\r\nbody\r\n"}
    base.update(fields)
    return ingress_pb2.InjectMessageRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "field"), [
    ({"sender": "not an address"}, "sender"),
    ({"recipients": []}, "recipients"),
    ({"recipients": ["ok@example.com", "broken@"]}, "recipients[1]"),
    ({"recipients": ["r@example.com"] * 11}, "recipients"),
    ({"content": b""}, "content"),
    ({"content": b"x" * 2000}, "content"),
    ({"content": b"Subject: x\r\n\rbody\r\n"}, "content"),
    ({"tenant": "a@b"}, "tenant"),
    ({"campaign": "has\ttab"}, "campaign"),
    ({"idempotency_key": "k" * 300}, "idempotency_key"),
    ({"reception_protocol": "SMTP"}, "reception_protocol"),
    ({"peer_address": "not-an-ip"}, "peer_address"),
])
def test_inject_validation_names_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as info:
        validate_inject(request(**fields), max_message_size=1024, max_recipients=10)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_inject_validation_accepts_null_sender_and_normalises_lf() -> None:
    content = validate_inject(request(sender="", content=b"Subject: x\n\nbody\n"),
                              max_message_size=1024, max_recipients=10)
    assert content == b"Subject: x\r\n\r\nbody\r\n"
