"""Canonical SMTP replies: the one place their codes and texts are written.

Ingress answers with these, tests assert on them. Each is a complete reply line without CRLF,
as aiosmtpd handlers return them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OK = "250 2.0.0 OK"
RELAY_DENIED = "554 5.7.1 Relay access denied"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
BARE_LINE_ENDING = "550 5.6.0 Bare CR or LF in message data is not allowed"
SPOOL_UNAVAILABLE = "451 4.3.0 Temporary failure storing the message, try again later"
SPOOL_FULL = "452 4.3.1 Insufficient system storage, try again later"
BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
NO_RECIPIENTS = "554 5.5.1 No valid recipients"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
INVALID_CONTENT = "550 5.6.0 Message content not accepted"
LINE_TOO_LONG = "500 5.5.6 Line too long (RFC 5321 4.5.3.1.6)"
# Protocol strictness and resource limits (docs/hardening.md). None of these echo client input.
COMMAND_TOO_LONG = "500 5.5.2 Command line too long (RFC 5321 4.5.3.1.4)"
BARE_LINE_ENDING_COMMAND = "500 5.5.2 Bare CR or LF in command line is not allowed"
INVALID_CHARACTER = "500 5.5.2 NUL or control character in command line is not allowed"
UNKNOWN_COMMAND = "500 5.5.2 Command not recognized"
NUL_IN_DATA = "550 5.6.0 NUL character in message data is not allowed"
BAD_HELO = "501 5.5.2 Invalid EHLO/HELO name: a domain or an address literal is required"
NEED_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL"
VRFY_DISABLED = "502 5.5.1 VRFY command is disabled"
SYNC_ERROR = "554 5.5.0 SMTP protocol synchronization error"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_IP = "421 4.7.0 Too many connections from your address, try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TOO_MANY_JUNK_COMMANDS = "421 4.7.0 Too many junk commands, closing connection"
TIMEOUT = "421 4.4.2 Timeout exceeded, closing connection"
TLS_HANDSHAKE_FAILED = "454 4.7.0 TLS handshake failed"
# Suppression list and inbound reports (docs/bounces.md).
SUPPRESSED = "550 5.7.1 Recipient suppressed"
MIXED_REPORT_RECIPIENTS = ("452 4.5.3 Send reports to the bounce domain in their own "
                           "transaction")
REPORT_RECEIVED = "250 2.0.0 Report received"
REPORT_UNAVAILABLE = "451 4.3.0 Temporary failure processing the report, try again later"


def suppressed(description: str) -> str:
    """Refusal of a suppressed recipient, naming the entry (``tenant acme: bounce
    InvalidRecipient``); ASCII only, one line."""
    text = " ".join(description.split()).encode("ascii", "replace").decode()
    return f"{SUPPRESSED} ({text})" if text else SUPPRESSED


def queued(message_id: str) -> str:
    """Reply to a DATA that is now durable in the spool."""
    return f"250 2.0.0 {message_id} Message accepted for delivery"


_REPLY = re.compile(
    r"^(?P<code>[2-5]\d\d)[ -](?:(?P<enh>[245]\.\d{1,3}\.\d{1,3})\s+)?(?P<text>.*)$", re.S)


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply as data."""

    code: int
    enhanced_code: str
    text: str

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        enh = f"{self.enhanced_code} " if self.enhanced_code else ""
        return f"{self.code} {enh}{self.text}".rstrip()


def parse_reply(line: str) -> Reply:
    """Parse ``"550 5.1.1 No such user"`` (enhanced code optional) into a ``Reply``."""
    match = _REPLY.match(line.strip())
    if not match:
        raise ValueError(f"not an SMTP reply: {line!r}")
    return Reply(int(match["code"]), match["enh"] or "", match["text"].strip())
