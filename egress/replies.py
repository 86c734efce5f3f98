"""SMTP replies as egress sees them: parsing what a server said and the replies egress makes up
itself when no server gave one (connection failures, timeouts, missing bodies).

``from_response`` turns an aiosmtplib ``(code, message)`` into a ``Reply`` with its enhanced
status code split off; ``to_proto`` / ``outcome_of`` map a reply onto the dispatch contract.
"""

from __future__ import annotations

import re

from petrel.smtp_replies import Reply
from petrel.v1 import common_pb2, scheduler_pb2

# RFC 3463 X.4.1 "No answer from host": the status of a connection that could not be made.
CONNECT_FAILED = "4.4.1"

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")

BODY_NOT_FOUND = Reply(554, "5.3.0", "message not found in spool")
BODY_UNAVAILABLE = Reply(451, "4.3.0", "message body unavailable")
TLS_NOT_OFFERED = Reply(451, "4.7.4", "TLS is required but the server does not offer STARTTLS")
SMTPUTF8_NOT_SUPPORTED = Reply(
    553, "5.6.7", "address needs SMTPUTF8 but the server does not support it")
SHUTTING_DOWN = Reply(451, "4.3.2", "delivery interrupted: egress worker shutting down")


def from_response(code: int, message: str) -> Reply:
    """An aiosmtplib ``(code, message)`` as a ``Reply``: ``(550, "5.1.1 No such user")`` →
    ``Reply(550, "5.1.1", "No such user")``. Multi-line text stays joined with newlines.

    The enhanced code is taken from the first line and stripped from continuation lines that
    repeat it (RFC 2034 servers prefix every line)."""
    lines = message.split("\n") if message else [""]
    match = _ENHANCED.match(lines[0])
    enhanced = match.group(1) if match else ""
    if enhanced:
        lines = [line[len(enhanced):] if line.startswith(enhanced) else line for line in lines]
    return Reply(code, enhanced, "\n".join(line.strip() for line in lines).strip())


def connect_failed(detail: str) -> Reply:
    return Reply(451, CONNECT_FAILED, detail)


def no_answer(domain: str, detail: str) -> Reply:
    """No host of ``domain`` could be reached or would take the message (KumoMTA's wording)."""
    return Reply(451, CONNECT_FAILED,
                 f"No answer from any hosts listed in MX for {domain}: {detail}")


def connection_lost(step: str, detail: str) -> Reply:
    return Reply(451, "4.4.2", f"Connection lost during {step}: {detail}")


def timed_out(step: str) -> Reply:
    return Reply(451, "4.4.2", f"Timed out waiting for the reply to {step}")


def outcome_of(reply: Reply) -> scheduler_pb2.DeliveryOutcome.ValueType:
    """The ``DeliveryOutcome`` a reply means: 2xx delivered, 5xx permanent, anything else
    (4xx, or a code we cannot interpret) transient."""
    if 200 <= reply.code < 300:
        return scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
    if reply.code >= 500:
        return scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE
    return scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE


def to_proto(reply: Reply) -> common_pb2.SmtpReply:
    return common_pb2.SmtpReply(code=reply.code, enhanced_code=reply.enhanced_code,
                                text=reply.text)
