"""Inbound reports as remote systems write them: an RFC 3464 DSN returning a message's
headers, an RFC 5965 feedback report returning the whole message, an auto-reply."""

from __future__ import annotations

import email.utils
import uuid
from datetime import datetime


def _date(when: datetime) -> str:
    return email.utils.format_datetime(when)


def header_block(message: bytes) -> bytes:
    """The header section of ``message`` (CRLF line endings, no separator line)."""
    return message.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def make_dsn(returned_headers: bytes, recipient: str, *, to: str, when: datetime,
             status: str = "5.1.1", reply: str = "550 5.1.1 <{rcpt}>: No such user here",
             action: str = "failed", mta: str = "mx.remote.test") -> bytes:
    """A Postfix-style DSN for ``recipient`` sent to ``to`` (the original return path),
    returning ``returned_headers`` (``b""``: nothing of the original)."""
    boundary = f"dsn-{uuid.uuid4().hex}"
    text = reply.format(rcpt=recipient)
    parts = [
        f"From: MAILER-DAEMON@{mta} (Mail Delivery System)",
        f"To: {to}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {_date(when)}",
        f"Message-ID: <{uuid.uuid4().hex}@{mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {mta}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients.",
        "",
        f"<{recipient}>: host {mta}[192.0.2.25] said: {text} (in reply to RCPT TO command)",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {mta}",
        f"Arrival-Date: {_date(when)}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        f"Remote-MTA: dns; {mta}",
        f"Diagnostic-Code: smtp; {text}",
        "",
    ]
    head = "\r\n".join(parts).encode() + b"\r\n"
    tail = b""
    if returned_headers:
        tail = (f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode()
                + returned_headers + b"\r\n")
    return head + tail + f"--{boundary}--\r\n".encode()


def make_arf(original: bytes, complainer: str, *, to: str, when: datetime,
             sender: str = "sender@petrel.test", feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 complaint about ``original`` (returned whole) from ``complainer``."""
    boundary = f"arf-{uuid.uuid4().hex}"
    parts = [
        "From: <feedback@fbl.isp.test>",
        f"To: <{to}>",
        "Subject: FW: complaint about a message",
        f"Date: {_date(when)}",
        f"Message-ID: <{uuid.uuid4().hex}@fbl.isp.test>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is an email abuse report for an email message received from IP",
        "192.0.2.1 on " + _date(when) + ".",
        "",
        f"--{boundary}",
        "Content-Type: message/feedback-report",
        "",
        f"Feedback-Type: {feedback_type}",
        "User-Agent: ExampleFBL/1.0",
        "Version: 1",
        f"Original-Mail-From: <{sender}>",
        f"Original-Rcpt-To: <{complainer}>",
        f"Arrival-Date: {_date(when)}",
        "Reporting-MTA: dns; fbl.isp.test",
        "Source-IP: 192.0.2.1",
        "",
        f"--{boundary}",
        "Content-Type: message/rfc822",
        "Content-Disposition: inline",
        "",
    ]
    return ("\r\n".join(parts).encode() + b"\r\n" + original.rstrip(b"\r\n") + b"\r\n"
            + f"--{boundary}--\r\n".encode())


def make_autoreply(to: str, *, when: datetime, sender: str = "someone@dest.test") -> bytes:
    return "\r\n".join([
        f"From: <{sender}>", f"To: <{to}>", "Subject: Automatic reply: hello",
        f"Date: {_date(when)}", "Auto-Submitted: auto-replied", "",
        "I am out of the office until next week.", ""]).encode()
