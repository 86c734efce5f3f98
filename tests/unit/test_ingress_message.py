"""Message preparation: header parsing, stamping, routing headers, line endings, trace."""

from __future__ import annotations

import email.parser
import email.policy
from datetime import UTC, datetime

import pytest

from ingress import trace
from ingress.message import (
    InvalidMessage,
    Stamp,
    address_literal,
    normalize_line_endings,
    prepare_message,
    received_header,
    split_headers,
)

STAMP = Stamp("0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0", "mx.petrel.test", "ESMTP", "192.0.2.7",
              "client.example", datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC))
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def split_stamp(content: bytes) -> tuple[bytes, bytes]:
    """(our Received header, the rest)."""
    fields, _ = split_headers(content)
    assert fields[0].key == "received"
    return fields[0].raw, content[len(fields[0].raw):]


def test_split_headers_folded_fields_and_body_offset() -> None:
    raw = b"Subject: a\r\n  folded\r\nFrom: x@y.z\r\n\r\nbody: not a header\r\n"
    fields, offset = split_headers(raw)
    assert [f.name for f in fields] == ["Subject", "From"]
    assert fields[0].raw == b"Subject: a\r\n  folded\r\n"
    assert fields[0].value == "a folded"
    assert raw[offset:] == b"\r\nbody: not a header\r\n"


def test_split_headers_stops_at_a_non_header_line() -> None:
    fields, offset = split_headers(b"Subject: a\r\nthis is body\r\n")
    assert [f.name for f in fields] == ["Subject"]
    assert offset == len(b"Subject: a\r\n")


def test_prepare_keeps_everything_else_byte_exact_and_adds_message_id() -> None:
    raw = (b"From: A <a@example.com>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
           b"X-Tenant: acme\r\nX-Campaign: spring\r\n  sale\r\n\r\n"
           b"Body \xe9\xff binary-ish\r\n.dot\r\n\r\n")
    prepared = prepare_message(raw, STAMP)
    received, rest = split_stamp(prepared.content)
    assert received == (b"Received: from client.example ([192.0.2.7])\r\n\tby mx.petrel.test "
                        b"(Petrel) with ESMTP id 0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0;\r\n"
                        b"\tWed, 01 May 2024 12:00:00 +0000\r\n")
    assert rest == (b"Message-ID: <0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0@mx.petrel.test>\r\n"
                    b"From: A <a@example.com>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
                    b"Body \xe9\xff binary-ish\r\n.dot\r\n\r\n")
    assert (prepared.tenant, prepared.campaign) == ("acme", "spring sale")


def test_routing_headers_removed_whatever_the_case_and_caller_values_win() -> None:
    raw = b"x-tenant: fromheader\r\nX-CAMPAIGN: c1\r\nSubject: s\r\n\r\nb\r\n"
    prepared = prepare_message(raw, STAMP, tenant="given")
    assert (prepared.tenant, prepared.campaign) == ("given", "c1")
    assert b"x-tenant" not in prepared.content.lower()
    assert b"x-campaign" not in prepared.content.lower()
    assert prepared.content.endswith(b"Subject: s\r\n\r\nb\r\n")


def test_existing_message_id_is_kept() -> None:
    raw = b"Message-ID: <mine@example.com>\r\nSubject: s\r\n\r\nb\r\n"
    _, rest = split_stamp(prepare_message(raw, STAMP).content)
    assert rest == raw


def test_parses_as_email_with_our_headers() -> None:
    raw = b"Subject: hello\r\n\r\nbody\r\n"
    content = prepare_message(raw, STAMP).content
    msg = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(content)
    assert msg["Subject"] == "hello"
    assert "with ESMTP id" in str(msg["Received"])
    assert msg["Message-ID"] == f"<{STAMP.message_id}@mx.petrel.test>"
    assert msg.get_content().strip() == "body"


def test_message_without_headers_gets_a_separator_line() -> None:
    content = prepare_message(b"just a body line\r\n", STAMP).content
    assert content.endswith(b">\r\n\r\njust a body line\r\n")


def test_bad_tenant_header_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="tenant"):
        prepare_message(b"X-Tenant: a:b\r\n\r\nx\r\n", STAMP)


def test_received_for_grpc_and_ipv6_and_hostile_helo() -> None:
    grpc_stamp = Stamp("ab" * 16, "h.test", "GRPC", "::1")
    assert received_header(grpc_stamp).startswith(
        b"Received: from [IPv6:::1] ([IPv6:::1])\r\n\tby h.test (Petrel) with GRPC id ")
    weird = Stamp("ab" * 16, "h.test", "ESMTPA", "::ffff:10.0.0.1", "evil (x) \xe9")
    assert received_header(weird).startswith(b"Received: from evil??x??? ([10.0.0.1])")
    assert address_literal("nonsense") == "[unknown]"


def test_normalize_line_endings() -> None:
    assert normalize_line_endings(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert normalize_line_endings(b"no final newline") == b"no final newline\r\n"
    with pytest.raises(InvalidMessage, match="bare CR"):
        normalize_line_endings(b"a\rb\n")


def test_trace_context_precedence() -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    header = f"Traceparent: {PARENT}\r\nTracestate: k=v\r\n\r\nb\r\n".encode()
    from_header = prepare_message(header, STAMP).trace_context
    assert from_header == {"traceparent": PARENT, "tracestate": "k=v"}
    given = prepare_message(header, STAMP, trace_context={"traceparent": other})
    assert given.trace_context == {"traceparent": other}
    fresh = prepare_message(b"S: x\r\n\r\nb\r\n", STAMP).trace_context
    assert trace.parse_traceparent(fresh["traceparent"]) == fresh["traceparent"]


@pytest.mark.parametrize("value", [
    "", "00-xyz", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
])
def test_invalid_traceparent_ignored(value: str) -> None:
    assert trace.carrier(value) is None
    assert trace.carrier_from_metadata([("traceparent", value)]) is None


def test_traceparent_from_metadata() -> None:
    carrier = trace.carrier_from_metadata([("traceparent", PARENT.upper()),
                                           ("tracestate", "a=1")])
    assert carrier == {"traceparent": PARENT, "tracestate": "a=1"}
