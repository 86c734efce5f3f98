"""Generate Petrel's labelled bounce-message corpus (messages/*.eml + labels.json).

Written for Petrel: each template reproduces the layout of one widely deployed MTA's or
provider's bounce (Postfix, Exim, qmail, Sendmail, Courier, Exchange / Microsoft 365, Gmail,
Yahoo, Domino, GroupWise, MDaemon, Amazon SES, localized Exchange NDRs...), feedback reports,
auto-replies and ordinary mail that is not a bounce. Labels come from how each message is
built (which recipients failed, with which reply), never from the parser under test.
Replies come from replies.tsv. Hand-written messages in hand/ (with hand/labels.json) are
copied in as hand-*.eml. Output is deterministic:

    python tests/data/bounces/make_corpus.py
"""
# Templates are data: long lines and non-Latin text are intended.
# ruff: noqa: E501, RUF001

from __future__ import annotations

import json
import random
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "messages"
ADDRESS = re.compile(r"[\w.+-]+@[\w.-]+\.[a-z]{2,}")

FIRST = ["anna", "ben", "carla", "dmitri", "elena", "farid", "grace", "hiro", "ines", "jonas",
         "kate", "liam", "maria", "noah", "olga", "pedro", "quinn", "rosa", "sven", "tariq",
         "ursula", "victor", "wen", "xavier", "yusuf", "zoe", "amelie", "bruno", "chloe", "diego"]
LAST = ["smith", "mueller", "rossi", "garcia", "dubois", "tanaka", "kowalski", "jansen",
        "silva", "ivanova", "nguyen", "oconnor", "larsen", "novak", "haddad", "kim"]
DEST_DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com",
                "corp.example", "shop.example", "uni.example.edu", "example.co.uk",
                "example.de", "example.fr", "example.es", "example.it", "example.com.br",
                "example.nl", "example.jp", "example.ru", "mx-test.example", "acme.test"]
SENDERS = ["news@mail.shop.example", "alerts@notify.bank.example", "hello@brand.example",
           "support@saas.example", "team@startup.example", "billing@invoices.example"]
RETURN_PATH_DOMAIN = "bounce.petrel.example"
SUBJECTS = ["Your weekly digest", "Invoice 2024-0042", "Welcome aboard!", "Spring sale: 20% off",
            "Password reset request", "Your order has shipped", "Meeting notes",
            "Account statement for March", "New features this month", "Event reminder"]


@dataclass
class Reply:
    category: str
    text: str  # may contain "\n" between the lines of a multi-line reply

    @property
    def code(self) -> str:
        return self.text[:3]

    @property
    def enhanced(self) -> str:
        match = re.match(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b", self.text)
        return match.group(1) if match else ""

    def lines(self) -> list[str]:
        return self.text.split("\n")

    def one_line(self) -> str:
        parts = []
        for index, line in enumerate(self.lines()):
            parts.append(line if index == 0 else re.sub(r"^\d{3}[ -](?:\d\.\d+\.\d+ )?", "",
                                                         line))
        return " ".join(p.strip() for p in parts)


def load_replies() -> dict[str, list[Reply]]:
    table: dict[str, list[Reply]] = {}
    for line in (HERE / "replies.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        category, text = line.split("\t", 1)
        table.setdefault(category, []).append(Reply(category, text.replace("\\n", "\n")))
    return table


REPLIES = load_replies()


@dataclass
class Case:
    name: str
    text: str
    kind: str
    category: str
    recipients: list[dict[str, str | None]] = field(default_factory=list)

    def label(self) -> dict[str, object]:
        first = self.recipients[0] if self.recipients else None
        return {"kind": self.kind, "category": self.category,
                "recipients": self.recipients,
                "recipient": first["address"] if first else None,
                "status": first["status"] if first else None}


class Gen:
    """Random but reproducible details."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def pick(self, items):  # type: ignore[no-untyped-def]
        return self.r.choice(items)

    def person(self, domain: str | None = None) -> str:
        first, last = self.pick(FIRST), self.pick(LAST)
        local = self.pick([f"{first}.{last}", f"{first}", f"{first[0]}{last}",
                           f"{first}_{last}", f"{last}.{first}", f"{first}{self.r.randint(1, 99)}"])
        if self.r.random() < 0.12:
            local = local.capitalize()
        return f"{local}@{domain or self.pick(DEST_DOMAINS)}"

    def ip(self) -> str:
        return f"{self.pick(['192.0.2', '198.51.100', '203.0.113'])}.{self.r.randint(2, 250)}"

    def hexid(self, n: int) -> str:
        return "".join(self.pick("0123456789ABCDEF") for _ in range(n))

    def date(self) -> str:
        day = self.r.randint(1, 28)
        hour, minute, second = self.r.randint(0, 23), self.r.randint(0, 59), self.r.randint(0, 59)
        month = self.pick(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Sep", "Oct", "Nov"])
        wd = self.pick(["Mon", "Tue", "Wed", "Thu", "Fri"])
        zone = self.pick(["+0000", "+0100", "+0200", "-0400", "-0500", "+0900"])
        return f"{wd}, {day} {month} 2024 {hour:02d}:{minute:02d}:{second:02d} {zone}"

    def reply(self, category: str) -> Reply:
        return self.pick(REPLIES[category])

    def boundary(self) -> str:
        return f"{self.hexid(8)}.{self.r.randint(1000000000, 1999999999)}/{self.pick(['mx1', 'mail', 'smtp'])}.example"


def personalize(reply: Reply, recipient: str, sender: str) -> Reply:
    def swap(match: re.Match[str]) -> str:
        return sender if reply.category == "InvalidSender" else recipient
    return Reply(reply.category, ADDRESS.sub(swap, reply.text))


def original_message(g: Gen, sender: str, to: list[str], subject: str, *,
                     headers_only: bool = False, extra_to: list[str] | None = None) -> str:
    msgid = f"<{g.hexid(16).lower()}@{sender.split('@')[1]}>"
    all_to = to + (extra_to or [])
    lines = [
        f"Return-Path: <bounces+{g.hexid(10).lower()}@{RETURN_PATH_DOMAIN}>",
        f"Received: from out-{g.r.randint(1, 9)}.petrel.example (out.petrel.example [{g.ip()}])",
        f"\tby mx.{sender.split('@')[1]} with ESMTPS id {g.hexid(10)}; {g.date()}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender.split('@')[1]}; s=k1;",
        f"\th=from:to:subject:date:message-id; bh={g.hexid(20)}=; b={g.hexid(40)}",
        f"From: \"{sender.split('@')[0].title()}\" <{sender}>",
        f"To: {', '.join(all_to)}",
        f"Subject: {subject}",
        f"Date: {g.date()}",
        f"Message-ID: {msgid}",
        f"X-Petrel-Id: {g.hexid(32).lower()}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if headers_only:
        return "\n".join(lines) + "\n"
    body = g.pick(["Hello,\n\nThank you for being a customer. Here is your update.\n\nBest regards,\nThe team",
                   "Hi there,\n\nThis is a reminder about your upcoming appointment on Friday.\n\nCheers",
                   "Dear customer,\n\nYour statement is ready. Reply to this e-mail if you have questions.\n"])
    return "\n".join(lines) + "\n\n" + body + "\n"


def dsn_block(recipient: str, action: str, status: str, diagnostic: str | None,
              remote_mta: str | None = None, original: str | None = None,
              extra: list[str] | None = None) -> str:
    lines = []
    if original:
        lines.append(f"Original-Recipient: rfc822;{original}")
    lines.append(f"Final-Recipient: rfc822; {recipient}")
    lines.append(f"Action: {action}")
    lines.append(f"Status: {status}")
    if remote_mta:
        lines.append(f"Remote-MTA: dns; {remote_mta}")
    if diagnostic:
        diag_lines = diagnostic.split("\n")
        lines.append(f"Diagnostic-Code: smtp; {diag_lines[0]}")
        lines.extend(f"    {d}" for d in diag_lines[1:])
    lines.extend(extra or [])
    return "\n".join(lines)


def fold(text: str, width: int = 72, indent: str = "    ") -> str:
    wrapped = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    return ("\n" + indent).join(wrapped)


def status_of(reply: Reply, fallback: str) -> str:
    return reply.enhanced or fallback


def rcpt(address: str, category: str, status: str | None) -> dict[str, str | None]:
    return {"address": address, "category": category, "status": status}


REASONS = (["InvalidRecipient"] * 14 + ["QuotaIssues"] * 5 + ["InactiveMailbox"] * 3
           + ["SpamBlock"] * 3 + ["SpamContent"] * 2 + ["PolicyRelated"] * 2
           + ["AuthenticationFailed"] * 2 + ["BadDomain"] * 2 + ["RelayDenied"]
           + ["VirusRelated", "ProhibitedAttachment", "ContentRelated", "TooManyRecipients",
              "RoutingErrors", "BadConfiguration", "InvalidSender"])
PERMANENT_REASONS = [r for r in REASONS]


def permanent_reply(g: Gen, category: str | None = None) -> Reply:
    category = category or g.pick(PERMANENT_REASONS)
    candidates = [r for r in REPLIES[category] if r.code.startswith("5")] or REPLIES[category]
    return g.pick(candidates)


# ---------------------------------------------------------------------------------------
# Templates. Each returns (raw message, kind, category, recipients).

Template = Callable[[Gen], tuple[str, str, str, list[dict[str, str | None]]]]


def postfix_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.net", "smtp.relay.example", "mx-out.example.org"])
    sender = g.pick(SENDERS)
    return_path = f"bounces+{g.hexid(10).lower()}@{RETURN_PATH_DOMAIN}"
    n = g.pick([1, 1, 1, 2, 3])
    recipients = [g.person() for _ in range(n)]
    replies = [personalize(permanent_reply(g), r, sender) for r in recipients]
    boundary = g.boundary()
    queue = g.hexid(10)
    problems = []
    blocks = []
    labels = []
    for address, reply in zip(recipients, replies, strict=True):
        mx = f"mx{g.r.randint(1, 3)}.{address.split('@')[1]}"
        stage = g.pick(["RCPT TO", "RCPT TO", "end of DATA", "MAIL FROM"])
        problems.append(f"<{address}>: host {mx}[{g.ip()}] said: "
                        + fold(f"{reply.one_line()} (in reply to {stage} command)"))
        status = status_of(reply, "5.0.0")
        blocks.append(dsn_block(address, "failed", status, reply.one_line(), mx,
                                original=address if g.r.random() < 0.5 else None))
        labels.append(rcpt(address, reply.category, status))
    text = f"""From: MAILER-DAEMON@{host} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {return_path}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: <{g.r.randint(10**13, 10**14)}.{queue}@{host}>
Date: {g.date()}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {host}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

{chr(10).join(p + chr(10) for p in problems)}
--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
X-Postfix-Queue-ID: {queue}
X-Postfix-Sender: rfc822; {return_path}
Arrival-Date: {g.date()}

{(chr(10) + chr(10)).join(blocks)}

--{boundary}
Content-Description: Undelivered Message
Content-Type: message/rfc822

{original_message(g, sender, recipients, g.pick(SUBJECTS), extra_to=[g.person()])}
--{boundary}--
"""
    return text, "dsn", labels[0]["category"] or "", labels


def postfix_local(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.com", "mx.corp.example", "imap.uni.example.edu"])
    sender = g.pick(SENDERS)
    user = g.pick(FIRST)
    address = f"{user}@{host.split('.', 1)[1]}"
    variant = g.pick(["unknown", "quota", "alias"])
    if variant == "unknown":
        prose = f"<{address}>: unknown user: \"{user}\""
        diag = f"X-Postfix; unknown user: \"{user}\""
        status, category = "5.1.1", "InvalidRecipient"
    elif variant == "quota":
        prose = (f"<{address}>: cannot update mailbox /var/mail/{user} for user {user}.\n"
                 f"    error writing message: File too large")
        diag = f"X-Postfix; cannot update mailbox /var/mail/{user} for user {user}. error writing message: File too large"
        status, category = "5.2.2", "QuotaIssues"
    else:
        alias = f"info@{host.split('.', 1)[1]}"
        prose = (f"<{address}> (expanded from <{alias}>): maildir delivery failed:\n"
                 f"    Sorry, the user's maildir has overdrawn his diskspace quota")
        diag = "X-Postfix; maildir delivery failed: Sorry, the user's maildir has overdrawn his diskspace quota"
        status, category = "5.2.2", "QuotaIssues"
    boundary = g.boundary()
    text = f"""Return-Path: <>
From: MAILER-DAEMON@{host} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Date: {g.date()}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {host}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

{prose}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
X-Postfix-Queue-ID: {g.hexid(10)}
X-Postfix-Sender: rfc822; {sender}
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Action: failed
Status: {status}
Diagnostic-Code: {diag}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{original_message(g, sender, [address], g.pick(SUBJECTS), headers_only=True)}
--{boundary}--
"""
    return text, "dsn", category, [rcpt(address, category, status)]


def postfix_delayed(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.net", "relay.example.org"])
    sender = g.pick(SENDERS)
    address = g.person()
    mx = f"mx.{address.split('@')[1]}"
    reason, status, category = g.pick([
        (f"connect to {mx}[{g.ip()}]:25: Connection timed out", "4.4.1", "NoAnswerFromHost"),
        (f"connect to {mx}[{g.ip()}]:25: Connection refused", "4.4.1", "NoAnswerFromHost"),
        (f"host {mx}[{g.ip()}] said: 450 4.2.0 <{address}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{address.split('@')[1]}.html (in reply to RCPT TO command)", "4.2.0", "TransientFailure"),
        (f"host {mx}[{g.ip()}] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)", "4.2.2", "QuotaIssues"),
        (f"Host or domain name not found. Name service error for name={address.split('@')[1]} type=MX: Host not found, try again", "4.4.3", "DNSFailure"),
        (f"lost connection with {mx}[{g.ip()}] while receiving the initial server greeting", "4.4.2", "BadConnection"),
    ])
    boundary = g.boundary()
    text = f"""From: MAILER-DAEMON@{host} (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Date: {g.date()}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {host}.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

For further assistance, please send mail to postmaster.

                   The mail system

<{address}>: {fold(reason)}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
X-Postfix-Queue-ID: {g.hexid(10)}
X-Postfix-Sender: rfc822; {sender}
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Original-Recipient: rfc822;{address}
Action: delayed
Status: {status}
Diagnostic-Code: X-Postfix; {reason}
Will-Retry-Until: {g.date()}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{original_message(g, sender, [address], g.pick(SUBJECTS), headers_only=True)}
--{boundary}--
"""
    return text, "dsn", category, [rcpt(address, category, status)]


def exim_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.org", "server1.hosting.example", "mx.isp.example"])
    sender = g.pick(SENDERS)
    n = g.pick([1, 1, 2])
    recipients = [g.person() for _ in range(n)]
    blocks, labels = [], []
    for address in recipients:
        kind = g.pick(["smtp", "smtp", "smtp", "local", "unrouteable"])
        if kind == "smtp":
            reply = personalize(permanent_reply(g), address, sender)
            mx = f"mx.{address.split('@')[1]}"
            reply_lines = "\n".join(f"    {line}" for line in reply.lines())
            blocks.append(f"  {address}\n    host {mx} [{g.ip()}]\n"
                          f"    SMTP error from remote mail server after RCPT TO:<{address}>:\n"
                          f"{reply_lines}")
            labels.append(rcpt(address, reply.category, reply.enhanced or None))
        elif kind == "local":
            blocks.append(f"  {address}\n    No Such User Here")
            labels.append(rcpt(address, "InvalidRecipient", None))
        else:
            blocks.append(f"  {address}\n    Unrouteable address")
            labels.append(rcpt(address, "RoutingErrors", None))
    failed_header = g.r.random() < 0.6
    text = f"""Return-path: <>
Envelope-to: {sender}
Delivery-date: {g.date()}
Received: from mailnull by {host} with local (Exim 4.96)
\tid 1{g.hexid(5)}-{g.hexid(6)}-{g.hexid(2)}
\tfor {sender}; {g.date()}
From: Mail Delivery System <Mailer-Daemon@{host}>
To: {sender}
{"X-Failed-Recipients: " + ", ".join(recipients) + chr(10) if failed_header else ""}Auto-Submitted: auto-replied
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1{g.hexid(5)}-{g.hexid(6)}-{g.hexid(2)}@{host}>
Date: {g.date()}

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

{(chr(10) + chr(10)).join(blocks)}

------ This is a copy of the message, including all the headers. ------

{original_message(g, sender, recipients, g.pick(SUBJECTS), extra_to=[g.person()])}"""
    return text, "text-bounce", labels[0]["category"] or "", labels


def exim_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["smtp.example.net", "mail2.example.com"])
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    boundary = f"{g.r.randint(1700000000, 1799999999)}-eximdsn-{g.r.randint(1000000, 9999999)}"
    mx = f"mx.{address.split('@')[1]}"
    reply_lines = "\n".join(f"    {line}" for line in reply.lines())
    text = f"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@{host}>
To: {sender}
Content-Type: multipart/report; report-type=delivery-status; boundary={boundary}
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied
X-Failed-Recipients: {address}
Date: {g.date()}

--{boundary}
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {address}
    host {mx} [{g.ip()}]
    SMTP error from remote mail server after RCPT TO:<{address}>:
{reply_lines}

--{boundary}
Content-type: message/delivery-status

Reporting-MTA: dns; {host}

Action: failed
Final-Recipient: rfc822;{address}
Status: 5.0.0
Remote-MTA: dns; {mx}
Diagnostic-Code: smtp; {reply.one_line()}

--{boundary}
Content-type: message/rfc822

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "dsn", reply.category, [rcpt(address, reply.category, "5.0.0")]


def exim_delay(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.org", "mx3.hosting.example"])
    sender = g.pick(SENDERS)
    address = g.person()
    mx = f"mx.{address.split('@')[1]}"
    reason, category = g.pick([
        (f"Delay reason: SMTP error from remote mail server after RCPT TO:<{address}>:\n    451 4.7.1 Greylisting in action, please come back later", "TransientFailure"),
        ("Connection timed out", "NoAnswerFromHost"),
        (f"Delay reason: SMTP error from remote mail server after RCPT TO:<{address}>:\n    452 4.2.2 Mailbox full", "QuotaIssues"),
        ("Remote host closed connection in response to initial connection", "BadConnection"),
    ])
    status = {"TransientFailure": "4.7.1", "QuotaIssues": "4.2.2"}.get(category)
    text = f"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@{host}>
To: {sender}
Subject: Warning: message 1{g.hexid(5)}-{g.hexid(6)}-{g.hexid(2)} delayed 24 hours
Auto-Submitted: auto-replied
References: <{g.hexid(12).lower()}@{sender.split('@')[1]}>
Date: {g.date()}

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on {host}.

The message identifier is:     1{g.hexid(5)}-{g.hexid(6)}-{g.hexid(2)}
The subject of the message is: {g.pick(SUBJECTS)}
The date of the message is:    {g.date()}

The address to which the message has not yet been delivered is:

  {address}
    host {mx} [{g.ip()}]
    {reason}

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
"""
    return text, "text-bounce", category, [rcpt(address, category, status)]


def qmail_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.net", "qmail.isp.example", "smtp.example.org"])
    sender = g.pick(SENDERS)
    n = g.pick([1, 1, 1, 2])
    recipients = [g.person() for _ in range(n)]
    blocks, labels = [], []
    for address in recipients:
        variant = g.pick(["remote", "remote", "local", "nohost", "quota", "noconn"])
        ip = g.ip()
        if variant == "remote":
            reply = personalize(permanent_reply(g), address, sender)
            blocks.append(f"<{address}>:\n{ip} does not like recipient.\n"
                          f"Remote host said: {reply.one_line()}\nGiving up on {ip}.")
            labels.append(rcpt(address, reply.category, reply.enhanced or None))
        elif variant == "local":
            blocks.append(f"<{address}>:\nSorry, no mailbox here by that name. (#5.1.1)")
            labels.append(rcpt(address, "InvalidRecipient", "5.1.1"))
        elif variant == "nohost":
            blocks.append(f"<{address}>:\nSorry, I couldn't find any host named "
                          f"{address.split('@')[1]}. (#5.1.2)")
            labels.append(rcpt(address, "BadDomain", "5.1.2"))
        elif variant == "quota":
            blocks.append(f"<{address}>:\nThe users mailfolder is over the allowed quota "
                          f"(size). (#5.2.2)")
            labels.append(rcpt(address, "QuotaIssues", "5.2.2"))
        else:
            blocks.append(f"<{address}>:\nSorry, I wasn't able to establish an SMTP "
                          f"connection. (#4.4.1)\nI'm not going to try again; this message "
                          f"has been in the queue too long.")
            labels.append(rcpt(address, "MessageExpired", "4.4.1"))
    text = f"""Return-Path: <>
Received: (qmail {g.r.randint(1000, 99999)} invoked for bounce); {g.date()}
Date: {g.date()}
From: MAILER-DAEMON@{host}
To: {sender}
Subject: failure notice

Hi. This is the qmail-send program at {host}.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

{(chr(10) + chr(10)).join(blocks)}

--- Below this line is a copy of the message.

{original_message(g, sender, recipients, g.pick(SUBJECTS))}"""
    return text, "text-bounce", labels[0]["category"] or "", labels


def yahoo_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    text = f"""Return-Path: <>
From: MAILER-DAEMON@yahoo.com
To: {sender}
Subject: Failure Notice
Date: {g.date()}
Message-ID: <{g.hexid(20).lower()}@mta{g.r.randint(1000, 9999)}.mail.ne1.yahoo.com>

Sorry, we were unable to deliver your message to the following address.

<{address}>:
Remote host said: {reply.one_line()} [RCPT_TO]

--- Below this line is a copy of the message.

{original_message(g, sender, [address], g.pick(SUBJECTS))}"""
    return text, "text-bounce", reply.category, [rcpt(address, reply.category,
                                                       reply.enhanced or None)]


def sendmail_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.edu", "smtp.example.com", "gw.example.net"])
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    mx = f"mx.{address.split('@')[1]}"
    boundary = f"{g.hexid(8)}.{g.r.randint(100000000, 999999999)}/{host}"
    status = status_of(reply, "5.0.0")
    text = f"""Return-Path: <MAILER-DAEMON>
Date: {g.date()}
From: Mail Delivery Subsystem <MAILER-DAEMON@{host}>
Message-Id: <{g.r.randint(10**11, 10**12)}.{g.hexid(6)}@{host}>
To: <{sender}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)

This is a MIME-encapsulated message

--{boundary}

The original message was received at {g.date()}
from out.petrel.example [{g.ip()}]

   ----- The following addresses had permanent fatal errors -----
<{address}>
    (reason: {reply.one_line()})

   ----- Transcript of session follows -----
... while talking to {mx}.:
>>> DATA
<<< {reply.one_line()}
{reply.code} {status} <{address}>... {reply.one_line()[4:][:60]}
<<< 503 5.0.0 Need RCPT (recipient)

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
Received-From-MTA: DNS; out.petrel.example
Arrival-Date: {g.date()}

Final-Recipient: RFC822; {address}
Action: failed
Status: {status}
Remote-MTA: DNS; {mx}
Diagnostic-Code: SMTP; {reply.one_line()}
Last-Attempt-Date: {g.date()}

--{boundary}
Content-Type: message/rfc822

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "dsn", reply.category, [rcpt(address, reply.category, status)]


def sendmail_warning(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.edu", "relay.example.com"])
    sender = g.pick(SENDERS)
    address = g.person()
    mx = f"mx.{address.split('@')[1]}"
    boundary = f"{g.hexid(8)}.{g.r.randint(100000000, 999999999)}/{host}"
    text = f"""Date: {g.date()}
From: Mail Delivery Subsystem <MAILER-DAEMON@{host}>
To: <{sender}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Subject: Warning: could not send message for past 4 hours
Auto-Submitted: auto-generated (warning-timeout)

This is a MIME-encapsulated message

--{boundary}

    **********************************************
    **      THIS IS A WARNING MESSAGE ONLY      **
    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **
    **********************************************

The original message was received at {g.date()}
from out.petrel.example [{g.ip()}]

   ----- Transcript of session follows -----
<{address}>... Deferred: Connection timed out with {mx}.
Warning: message still undelivered after 4 hours
Will keep trying until message is 5 days old

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
Arrival-Date: {g.date()}

Final-Recipient: RFC822; {address}
Action: delayed
Status: 4.4.1
Remote-MTA: DNS; {mx}
Last-Attempt-Date: {g.date()}
Will-Retry-Until: {g.date()}

--{boundary}
Content-Type: text/rfc822-headers

{original_message(g, sender, [address], g.pick(SUBJECTS), headers_only=True)}
--{boundary}--
"""
    return text, "dsn", "NoAnswerFromHost", [rcpt(address, "NoAnswerFromHost", "4.4.1")]


def sendmail_expired(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.edu", "relay.example.com"])
    sender = g.pick(SENDERS)
    address = g.person()
    mx = f"mx.{address.split('@')[1]}"
    boundary = f"{g.hexid(8)}.{g.r.randint(100000000, 999999999)}/{host}"
    text = f"""Date: {g.date()}
From: Mail Delivery Subsystem <MAILER-DAEMON@{host}>
To: <{sender}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Subject: Returned mail: Cannot send message for 5 days
Auto-Submitted: auto-generated (failure)

This is a MIME-encapsulated message

--{boundary}

The original message was received at {g.date()}
from out.petrel.example [{g.ip()}]

   ----- The following addresses had permanent fatal errors -----
<{address}>
    (reason: Connection timed out with {mx}.)

   ----- Transcript of session follows -----
<{address}>... Deferred: Connection timed out with {mx}.
Message could not be delivered for 5 days
Message will be deleted from queue

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
Arrival-Date: {g.date()}

Final-Recipient: RFC822; {address}
Action: failed
Status: 4.4.7
Remote-MTA: DNS; {mx}
Last-Attempt-Date: {g.date()}

--{boundary}--
"""
    return text, "dsn", "MessageExpired", [rcpt(address, "MessageExpired", "4.4.7")]


def courier_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.com", "courier.example.net"])
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    mx = f"mx.{address.split('@')[1]}"
    boundary = f"=_courier-{g.r.randint(10000, 99999)}-{g.r.randint(1000000000, 1999999999)}-0001"
    status = status_of(reply, "5.0.0")
    text = f"""From: "Courier mail server at {host}" <@>
To: {sender}
Subject: NOTICE: mail delivery status.
Mime-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
    boundary="{boundary}"
Content-Transfer-Encoding: 7bit
Date: {g.date()}

This is a MIME-formatted message.  If you see this text it means that your
E-mail software does not support MIME-formatted messages.

--{boundary}
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

This is a delivery status notification from {host},
running the Courier mail server, version 1.1.

The original message was received on {g.date()}
from out.petrel.example [{g.ip()}]

---------------------------------------------------------------------------

                           UNDELIVERABLE MAIL

Your message to the following recipients cannot be delivered:

<{address}>:
    {mx} [{g.ip()}]:
>>> RCPT TO:<{address}>
<<< {reply.one_line()}

---------------------------------------------------------------------------

If your message was also sent to additional recipients, their delivery
status is not included in this report.  You may or may not receive
other delivery status notifications for additional recipients.

The original message follows as a separate attachment.

--{boundary}
Content-Type: message/delivery-status
Content-Transfer-Encoding: 7bit

Reporting-MTA: dns; {host}
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Action: failed
Status: {status}
Remote-MTA: dns; {mx}
Diagnostic-Code: smtp; {reply.one_line()}

--{boundary}
Content-Type: message/rfc822
Content-Transfer-Encoding: 7bit

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "dsn", reply.category, [rcpt(address, reply.category, status)]


M365_TEXT = {
    "InvalidRecipient": ("{user} wasn't found at {domain}.",
                         "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"),
    "QuotaIssues": ("The recipient's mailbox is full and can't accept messages now.",
                    "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded"),
    "PolicyRelated": ("Your message can't be delivered because delivery to this address is restricted.",
                      "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized"),
    "RoutingErrors": ("Your message couldn't be delivered because a mail loop was detected.",
                      "554 5.4.14 Hop count exceeded - possible mail loop ATTR34"),
    "SpamBlock": ("Your message wasn't delivered because the recipient's email provider rejected it.",
                  "550 5.7.1 Service unavailable, Client host [{ip}] blocked using Spamhaus."),
    "AuthenticationFailed": ("Your message wasn't delivered because the sending domain failed DMARC.",
                             "550 5.7.509 Access denied, sending domain {sdomain} does not pass DMARC verification and has a DMARC policy of reject."),
}


def m365_ndr(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    category = g.pick(["InvalidRecipient", "InvalidRecipient", "InvalidRecipient", "QuotaIssues",
                       "PolicyRelated", "RoutingErrors", "SpamBlock", "AuthenticationFailed"])
    address = g.person()
    user, domain = address.split("@")
    summary, reply = M365_TEXT[category]
    summary = summary.format(user=user, domain=domain)
    reply = reply.format(ip=g.ip(), sdomain=sender.split("@")[1])
    status = re.match(r"\d{3} (\d\.\d+\.\d+)", reply).group(1)  # type: ignore[union-attr]
    server = f"{g.pick(['DM6PR', 'AM7PR', 'SN1PR', 'BY5PR'])}{g.r.randint(10, 99)}MB{g.r.randint(1000, 9999)}.namprd{g.r.randint(10, 20)}.prod.outlook.com"
    outer = f"_{g.hexid(3)}_{g.hexid(12)}_"
    alt = f"_{g.hexid(3)}_{g.hexid(12)}_alt"
    html_reply = reply.replace("<", "&lt;").replace(">", "&gt;")
    text = f"""From: Microsoft Outlook <postmaster@{domain if g.r.random() < 0.5 else 'outlook.com'}>
To: <{sender}>
Subject: Undeliverable: {g.pick(SUBJECTS)}
Date: {g.date()}
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{outer}"
MIME-Version: 1.0
Message-ID: <{g.hexid(8)}-{g.hexid(4)}@{server}>
X-MS-Exchange-Message-Is-Ndr:
Auto-Submitted: auto-replied
X-MS-Exchange-Organization-SCL: -1

--{outer}
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="{alt}"

--{alt}
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to {address} couldn't be delivered.

{summary}

{user}
Office 365
Action Required
Recipient

How to Fix It
Check the address, or contact the recipient directly.

More Info for Email Admins
Status code: {status}

Original Message Details
Created Date:   {g.date()}
Sender Address: {sender}
Recipient Address:      {address}
Subject:        {g.pick(SUBJECTS)}

Error Details
Error:  {reply}
Message rejected by:    {server}

Notification Details
Sent by:        {server}

Diagnostic information for administrators:

Generating server: {server}

{address}
Remote server returned '{reply}'

Original message headers:

{original_message(g, sender, [address], g.pick(SUBJECTS), headers_only=True)}
--{alt}
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to <a href=3D"mailto:{address}">{address}</a> couldn't be delivered.</p>
<p>{summary}</p><p>Diagnostic information for administrators:</p><p>{html_reply}</p></body></html>

--{alt}--

--{outer}
Content-Type: message/delivery-status

Reporting-MTA: dns;{server}
Received-From-MTA: dns;out.petrel.example
Arrival-Date: {g.date()}

Final-Recipient: rfc822;{address}
Action: failed
Status: {status}
Diagnostic-Code: smtp;{reply}

--{outer}
Content-Type: message/rfc822

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{outer}--
"""
    return text, "dsn", category, [rcpt(address, category, status)]


def exchange2010_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    host = g.pick(["EXCH01.corp.example", "mail.corp.example"])
    n = g.pick([1, 1, 2])
    recipients = [g.person("corp.example") for _ in range(n)]
    variant = g.pick(["notfound", "quota", "relay"])
    if variant == "notfound":
        line = "The e-mail address you entered couldn't be found. Please check the recipient's e-mail address and try to resend the message. If the problem continues, please contact your helpdesk."
        reply, category, status = "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", "InvalidRecipient", "5.1.1"
    elif variant == "quota":
        line = "The recipient's mailbox is full and can't accept messages now. Please try resending this message later, or contact the recipient directly."
        reply, category, status = "#550 5.2.2 STOREDRV.Deliver; recipient mailbox is full ##", "QuotaIssues", "5.2.2"
    else:
        line = "The e-mail system was unable to deliver the message, but didn't report a specific reason. Check the address and try again."
        reply, category, status = "#550 5.7.1 Unable to relay ##", "RelayDenied", "5.7.1"
    listing = "\n\n".join(f"{r}\n{line}" for r in recipients)
    diag = "\n\n".join(f"{r}\n{reply}" for r in recipients)
    text = f"""From: System Administrator <postmaster@corp.example>
To: {sender}
Subject: Undeliverable: {g.pick(SUBJECTS)}
Date: {g.date()}
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Auto-Submitted: auto-replied

Delivery has failed to these recipients or groups:

{listing}






Diagnostic information for administrators:

Generating server: {host}

{diag}

Original message headers:

{original_message(g, sender, recipients, g.pick(SUBJECTS), headers_only=True)}"""
    return text, "text-bounce", category, [rcpt(r, category, status) for r in recipients]


def exchange2003_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    address = g.person("legacy.example")
    subject = g.pick(SUBJECTS)
    variant = g.pick(["account", "quota", "smtp"])
    if variant == "account":
        explanation = ("The e-mail account does not exist at the organization this message was "
                       "sent to.  Check the e-mail address, or contact the recipient directly "
                       "to find out the correct address.\n            <mail.legacy.example #5.1.1>")
        category, status = "InvalidRecipient", "5.1.1"
    elif variant == "quota":
        explanation = ("The recipient's mailbox is full and can't accept messages now.\n"
                       "            <mail.legacy.example #5.2.2>")
        category, status = "QuotaIssues", "5.2.2"
    else:
        explanation = ("There was a SMTP communication problem with the recipient's email "
                       "server.  Please contact your system administrator.\n"
                       "            <mail.legacy.example #5.5.0 smtp;550 5.7.1 Message rejected as spam by Content Filtering.>")
        category, status = "SpamContent", "5.7.1"
    text = f"""From: System Administrator <postmaster@legacy.example>
To: {sender}
Subject: Undeliverable: {subject}
Date: {g.date()}
MIME-Version: 1.0
Content-Type: text/plain; charset="iso-8859-1"
X-MS-Has-Attach:
X-MS-TNEF-Correlator:

Your message did not reach some or all of the intended recipients.

      Subject:\t{subject}
      Sent:\t{g.r.randint(1, 12)}/{g.r.randint(1, 28)}/2024 {g.r.randint(1, 12)}:{g.r.randint(10, 59)} AM

The following recipient(s) cannot be reached:

      {address} on {g.r.randint(1, 12)}/{g.r.randint(1, 28)}/2024 {g.r.randint(1, 12)}:{g.r.randint(10, 59)} AM
            {explanation}
"""
    return text, "text-bounce", category, [rcpt(address, category,
                                                None if variant == "smtp" else status)]


GMAIL_HEADLINES = {
    "InvalidRecipient": ("Address not found",
                         "Your message wasn't delivered to {a} because the address couldn't be found, or is unable to receive mail."),
    "QuotaIssues": ("Message not delivered",
                    "Your message couldn't be delivered to {a} because the recipient's inbox is full."),
    "BadDomain": ("Address not found",
                  "Your message wasn't delivered to {a} because the domain {d} couldn't be found. Check for typos or unnecessary spaces and try again."),
}


def gmail_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = f"{g.pick(FIRST)}.{g.pick(LAST)}@gmail.com"
    address = g.person()
    domain = address.split("@")[1]
    category = g.pick(["InvalidRecipient", "InvalidRecipient", "QuotaIssues", "BadDomain",
                       "SpamBlock", "PolicyRelated", "InactiveMailbox", "SpamContent"])
    if category == "BadDomain":
        reply_text = f"DNS Error: DNS type 'mx' lookup of {domain} responded with code NXDOMAIN Domain name not found: {domain}"
        reply = Reply("BadDomain", reply_text)
        status, remote = "5.1.2", None
    else:
        reply = personalize(permanent_reply(g, category), address, sender)
        status, remote = status_of(reply, "5.0.0"), f"mx.{domain}."
    headline, sentence = GMAIL_HEADLINES.get(category, (
        "Message blocked", "Your message to {a} has been blocked. See technical details below for more information."))
    sentence = sentence.format(a=address, d=domain)
    outer = f"0000000000{g.hexid(16).lower()}"
    related = f"0000000000{g.hexid(16).lower()}"
    reply_block = "\n".join(reply.lines())
    diag_lines = reply.lines()
    diag = diag_lines[0] + "".join(f"\n {line}" for line in diag_lines[1:])
    text = f"""Delivered-To: {sender}
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {sender}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <{g.hexid(24).lower()}@mail.gmail.com>
In-Reply-To: <{g.hexid(24).lower()}@mail.gmail.com>
X-Failed-Recipients: {address}
Message-ID: <{g.hexid(12).lower()}.050a0220.{g.hexid(4).lower()}@mx.google.com>
Date: {g.date()}
MIME-Version: 1.0
Content-Type: multipart/report; boundary="{outer}"; report-type=delivery-status

--{outer}
Content-Type: multipart/related; boundary="{related}"

--{related}
Content-Type: multipart/alternative; boundary="{related}alt"

--{related}alt
Content-Type: text/plain; charset="UTF-8"


** {headline} **

{sentence}

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

{reply_block}

--{related}alt
Content-Type: text/html; charset="UTF-8"

<html><body><h2>{headline}</h2><p>{sentence}</p><p>The response was:</p><p>{reply.one_line()}</p></body></html>

--{related}alt--

--{related}--

--{outer}
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; {sender}
Arrival-Date: {g.date()}
X-Original-Message-ID: <{g.hexid(24).lower()}@mail.gmail.com>

Final-Recipient: rfc822; {address}
Action: failed
Status: {status}
{"Remote-MTA: dns; " + remote + chr(10) if remote else ""}Diagnostic-Code: smtp; {diag}
Last-Attempt-Date: {g.date()}

--{outer}
Content-Type: message/rfc822

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{outer}--
"""
    return text, "dsn", category, [rcpt(address, category, status)]


def gmail_old_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = f"{g.pick(FIRST)}{g.r.randint(1, 99)}@gmail.com"
    address = g.person()
    domain = address.split("@")[1]
    reply = personalize(permanent_reply(g), address, sender)
    reply_block = "\n".join(reply.lines())
    text = f"""Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {sender}
Subject: Delivery Status Notification (Failure)
Date: {g.date()}
Content-Type: text/plain; charset=ISO-8859-1
X-Failed-Recipients: {address}

Delivery to the following recipient failed permanently:

     {address}

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient domain {domain} by mx.{domain}. [{g.ip()}].

The error that the other server returned was:
{reply_block}

----- Original message -----

{original_message(g, sender, [address], g.pick(SUBJECTS))}"""
    return text, "text-bounce", reply.category, [rcpt(address, reply.category,
                                                       reply.enhanced or None)]


def gmail_delay(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = f"{g.pick(FIRST)}{g.r.randint(1, 99)}@gmail.com"
    address = g.person()
    domain = address.split("@")[1]
    reason, category, status = g.pick([
        (f"The recipient server did not accept our requests to connect. Learn more at https://support.google.com/mail/answer/7720 [mx.{domain}. {g.ip()}: timed out]", "NoAnswerFromHost", "4.4.1"),
        ("421-4.7.0 Try again later, closing connection.", "TransientFailure", "4.7.0"),
        (f"DNS Error: DNS server returned answer with no data for {domain}", "DNSFailure", "4.4.3"),
    ])
    boundary = f"0000000000{g.hexid(16).lower()}"
    text = f"""Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {sender}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Delay)
Date: {g.date()}
MIME-Version: 1.0
Content-Type: multipart/report; boundary="{boundary}"; report-type=delivery-status

--{boundary}
Content-Type: text/plain; charset="UTF-8"


** Delivery incomplete **

There was a temporary problem delivering your message to {address}. Gmail will retry for 47 more hours. You'll be notified if the delivery fails permanently.

The response was:

{reason}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Action: delayed
Status: {status}
Diagnostic-Code: smtp; {reason}
Last-Attempt-Date: {g.date()}
Will-Retry-Until: {g.date()}

--{boundary}--
"""
    return text, "dsn", category, [rcpt(address, category, status)]


def domino_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    user = f"{g.pick(FIRST).title()} {g.pick(LAST).title()}"
    address = g.person("notes.example")
    subject = g.pick(SUBJECTS)
    variant = g.pick(["directory", "loop", "full"])
    if variant == "directory":
        reason = f"User {user} ({address}) not listed in Domino Directory"
        category = "InvalidRecipient"
    elif variant == "loop":
        reason = "Maximum hop count exceeded.  Message probably in a routing loop."
        category = "RoutingErrors"
    else:
        reason = "Unable to deliver message; recipient's mailbox is full"
        category = "QuotaIssues"
    text = f"""From: Postmaster@notes.example
To: {sender}
Date: {g.date()}
Subject: DELIVERY FAILURE: {reason}
MIME-Version: 1.0
Content-Type: text/plain; charset=US-ASCII

Your message

  Subject: {subject}

was not delivered to:

  {address}

because:

  {reason}
"""
    return text, "text-bounce", category, [rcpt(address, category, None)]


def groupwise_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    address = g.person("gw.example")
    text = f"""From: Mail Administrator <postmaster@gw.example>
To: {sender}
Date: {g.date()}
Subject: Message status - undeliverable
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

The message that you sent was undeliverable to the following:
\t{address} (user not found)

Possibly truncated original message follows:

{original_message(g, sender, [address], g.pick(SUBJECTS))}"""
    return text, "text-bounce", "InvalidRecipient", [rcpt(address, "InvalidRecipient", None)]


def mdaemon_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    mx = f"mx.{address.split('@')[1]}"
    text = f"""From: MDaemon@mail.smallbiz.example
To: {sender}
Date: {g.date()}
Subject: Permanent Delivery Failure
X-MDaemon-Deliver-To: {sender}
X-MDDSN-Message: Yes
Content-Type: text/plain; charset=us-ascii

The attached message had PERMANENT fatal delivery errors!

After one or more unsuccessful delivery attempts the attached message has
been removed from the mail queue on this server.  The number and frequency
of delivery attempts are determined by local configuration parameters.

YOU DO NOT NEED TO RESEND THIS MESSAGE.

--- Session Transcript ---
 {g.date()} Session {g.r.randint(1000, 9999)}; child 1
 Parsing message <mail.smallbiz.example\\pd50000{g.r.randint(100, 999)}.msg>
 *  From: {sender}
 *  To: {address}
 Attempting SMTP connection to [{mx} : 25]
 Waiting for socket connection...
 *  Connection established ({g.ip()}:2525 --> {g.ip()}:25)
 --> MAIL From:<{sender}>
 <-- 250 2.1.0 Ok
 --> RCPT To:<{address}>
 <-- {reply.one_line()}
 --> QUIT
--- End Transcript ---
"""
    return text, "text-bounce", reply.category, [rcpt(address, reply.category,
                                                       reply.enhanced or None)]


def ses_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    address = g.person()
    reply = personalize(permanent_reply(g), address, sender)
    boundary = f"=_{g.hexid(8)}-{g.hexid(4)}"
    status = status_of(reply, "5.0.0")
    text = f"""From: MAILER-DAEMON@amazonses.com
To: {sender}
Subject: Delivery Status Notification (Failure)
Date: {g.date()}
Message-ID: <0100018{g.hexid(13).lower()}-{g.hexid(8).lower()}-000000@email.amazonses.com>
MIME-Version: 1.0
Content-Type: multipart/report; boundary="{boundary}"; report-type=delivery-status

--{boundary}
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit
Content-Description: Notification

An error occurred while trying to deliver the mail to the following recipients:
{address}
--{boundary}
Content-Type: message/delivery-status
Content-Description: Delivery Status Notification

Reporting-MTA: dns; a{g.r.randint(10, 99)}-{g.r.randint(10, 99)}.smtp-out.amazonses.com

Action: failed
Final-Recipient: rfc822; {address}
Diagnostic-Code: smtp; {reply.one_line()}
Status: {status}

--{boundary}--
"""
    return text, "dsn", reply.category, [rcpt(address, reply.category, status)]


LOCALIZED = [
    ("de", "Unzustellbar: {s}", "Die Zustellung an folgende Empfänger oder Gruppen ist fehlgeschlagen:",
     "Die eingegebene E-Mail-Adresse wurde nicht gefunden. Überprüfen Sie die E-Mail-Adresse des Empfängers, und versuchen Sie, die Nachricht erneut zu senden.",
     "Diagnoseinformationen für Administratoren:", "Generierender Server:"),
    ("fr", "Non remis : {s}", "La remise des messages à ces destinataires ou groupes a échoué :",
     "L'adresse de messagerie que vous avez entrée est introuvable. Vérifiez l'adresse de messagerie du destinataire et essayez de renvoyer le message.",
     "Informations de diagnostic pour les administrateurs :", "Serveur de génération :"),
    ("es", "No se puede entregar: {s}", "Error en la entrega a estos destinatarios o grupos:",
     "No se encontró la dirección de correo electrónico que escribió. Compruebe la dirección de correo del destinatario e intente enviar el mensaje de nuevo.",
     "Información de diagnóstico para administradores:", "Servidor de generación:"),
    ("pt", "Não é possível entregar: {s}", "Falha na entrega para estes destinatários ou grupos:",
     "O endereço de email que você inseriu não foi encontrado. Verifique o endereço de email do destinatário e tente reenviar a mensagem.",
     "Informações de diagnóstico para administradores:", "Servidor de geração:"),
    ("it", "Non recapitabile: {s}", "Recapito non riuscito per i seguenti destinatari o gruppi:",
     "Impossibile trovare l'indirizzo di posta elettronica immesso. Verificare l'indirizzo del destinatario e provare a inviare di nuovo il messaggio.",
     "Informazioni di diagnostica per gli amministratori:", "Server di generazione:"),
    ("nl", "Onbestelbaar: {s}", "Bezorging is mislukt voor deze ontvangers of groepen:",
     "Het e-mailadres dat u hebt ingevoerd, is niet gevonden. Controleer het e-mailadres van de ontvanger en probeer het bericht opnieuw te verzenden.",
     "Diagnostische gegevens voor beheerders:", "Genererende server:"),
]


def localized_exchange(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    lang, subject, intro, explanation, diag_title, server_label = g.pick(LOCALIZED)
    sender = g.pick(SENDERS)
    address = g.person(f"example.{lang if lang != 'pt' else 'com.br'}")
    host = f"EX{g.r.randint(1, 9)}.example.{lang}"
    reply = "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##"
    body = f"""{intro}

{address}
{explanation}






{diag_title}

{server_label} {host}

{address}
{reply}

"""
    encoded = body.encode("utf-8")
    import base64
    b64 = base64.encodebytes(encoded).decode("ascii")
    boundary = f"_{g.hexid(3)}_{g.hexid(12)}_"
    text = f"""From: Microsoft Exchange <postmaster@example.{lang}>
To: {sender}
Subject: =?utf-8?B?{base64.b64encode(subject.format(s=g.pick(SUBJECTS)).encode()).decode()}?=
Date: {g.date()}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{boundary}"
Auto-Submitted: auto-replied

--{boundary}
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

{b64}
--{boundary}
Content-Type: message/rfc822

{original_message(g, sender, [address], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "text-bounce", "InvalidRecipient", [rcpt(address, "InvalidRecipient", "5.1.1")]


def localized_postfix(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = g.pick(["mail.example.de", "smtp.example.fr", "mx.example.jp"])
    sender = g.pick(SENDERS)
    address = g.person(host.split(".", 1)[1])
    reply = personalize(permanent_reply(g, g.pick(["InvalidRecipient", "QuotaIssues",
                                                   "SpamBlock"])), address, sender)
    intro = {
        "de": ("Dies ist der Mailserver auf dem Rechner {h}.\n\nLeider konnte Ihre Nachricht an einen oder mehrere Empfänger\nnicht zugestellt werden. Sie ist unten angehängt.", "Unzustellbare Nachricht"),
        "fr": ("Ceci est le système de messagerie du serveur {h}.\n\nVotre message n'a pas pu être remis à un ou plusieurs destinataires.\nIl est joint ci-dessous.", "Message non remis"),
        "jp": ("このメールは {h} のメールシステムから自動送信されています。\n\n申し訳ありませんが、お送りいただいたメッセージを\n以下の宛先に配信できませんでした。", "配信不能メール"),
    }[host.rsplit(".", 1)[1]]
    boundary = g.boundary()
    status = status_of(reply, "5.0.0")
    text = f"""From: MAILER-DAEMON@{host} (Mail Delivery System)
Subject: {intro[1]} / Undelivered Mail Returned to Sender
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Date: {g.date()}

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

{intro[0].format(h=host)}

<{address}>: host mx.{address.split('@')[1]}[{g.ip()}] said: {fold(reply.one_line())}
    (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {reply.one_line()}

--{boundary}--
"""
    return text, "dsn", reply.category, [rcpt(address, reply.category, status)]


def provider_text(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    """Smaller providers' own prose (mail.ru, Yandex, QQ, Zoho, iCloud...) without a DSN."""
    sender = g.pick(SENDERS)
    address = g.person()
    style = g.pick(["mailru", "yandex", "zoho", "icloud", "qq"])
    reply = personalize(permanent_reply(g), address, sender)
    if style == "mailru":
        body = (f"Это письмо создано автоматически\nсервером Mail.Ru, отвечать на него не нужно.\n\n"
                f"К сожалению, Ваше письмо не может быть доставлено одному или нескольким получателям:\n\n"
                f"{address}\nMessage was not accepted -- invalid mailbox.  Local mailbox {address} is unavailable: user not found\n")
        frm, subject, category, status = "mailer-daemon@corp.mail.ru", "Undelivered Mail Returned to Sender", "InvalidRecipient", None
    elif style == "yandex":
        body = (f"This message was created automatically by mail delivery software.\n\n"
                f"A message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error.\n\n"
                f"<{address}>: host mx.{address.split('@')[1]}[{g.ip()}] said: {reply.one_line()}\n")
        frm, subject, category, status = "mailer-daemon@yandex.ru", "Недоставленное сообщение", reply.category, reply.enhanced or None
    elif style == "zoho":
        body = (f"This message was created automatically by mail delivery software.\n\n"
                f"A message that you sent could not be delivered to one or more of its recipients. This is a permanent error. The following address(es) failed:\n\n"
                f"{address}, ERROR CODE :{reply.code} - {reply.one_line()[4:]}\n")
        frm, subject, category, status = "mailer-daemon@mail.zoho.com", "Undelivered Mail Returned to Sender", reply.category, reply.enhanced or None
    elif style == "icloud":
        body = (f"Sorry, your message could not be delivered to the following address:\n\n"
                f"{address}\nReason: {reply.one_line()}\n")
        frm, subject, category, status = "MAILER-DAEMON@icloud.com", "Delivery Status Notification (Failure)", reply.category, reply.enhanced or None
    else:
        body = (f"很抱歉您的邮件没有发送成功 / Sorry, your message could not be delivered.\n\n"
                f"收件人 / Recipient: {address}\n"
                f"退信原因 / Reason: {reply.one_line()}\n")
        frm, subject, category, status = "postmaster@qq.com", "退信 / Undelivered Mail Returned to Sender", reply.category, reply.enhanced or None
    import base64
    b64 = base64.encodebytes(body.encode("utf-8")).decode("ascii")
    text = f"""From: Mail Delivery System <{frm}>
To: {sender}
Subject: =?utf-8?B?{base64.b64encode(subject.encode()).decode()}?=
Date: {g.date()}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64}"""
    return text, "text-bounce", category, [rcpt(address, category, status)]


def forwarded_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    """A person forwards a bounce they got, as an attachment."""
    inner, kind, category, labels = postfix_dsn(g)
    boundary = f"------------{g.hexid(24)}"
    person = g.person("helpdesk.example")
    text = f"""From: {person.split('@')[0].title()} <{person}>
To: deliverability@{RETURN_PATH_DOMAIN}
Subject: Fwd: Undelivered Mail Returned to Sender
Date: {g.date()}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{boundary}"

This is a multi-part message in MIME format.
--{boundary}
Content-Type: text/plain; charset=UTF-8

Hi, we got this bounce for a customer mailing, can you check?

--{boundary}
Content-Type: message/rfc822
Content-Disposition: attachment; filename="Undelivered Mail Returned to Sender.eml"

{inner}
--{boundary}--
"""
    return text, kind, category, labels


def inline_forwarded(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    inner, kind, category, labels = qmail_text(g)
    person = g.person("helpdesk.example")
    quoted = inner
    text = f"""From: {person}
To: support@saas.example
Subject: Fwd: failure notice
Date: {g.date()}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

FYI, this one keeps bouncing.

---------- Forwarded message ---------
{quoted}"""
    return text, kind, category, labels


def arf(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    provider, agent = g.pick([("yahoo", "Yahoo!-Mail-Feedback/2.0"), ("aol", "AOL SComp"),
                              ("comcast", "ReturnPathFBL/2.0"), ("generic", "FBL/1.0"),
                              ("fastmail", "Fastmail-FBL/1.1")])
    sender = g.pick(SENDERS)
    complainer = g.person()
    feedback_type = g.pick(["abuse", "abuse", "abuse", "fraud", "other"])
    boundary = f"----=_Part_{g.r.randint(1000000, 9999999)}_{g.r.randint(100000000, 999999999)}.{g.r.randint(10**12, 10**13)}"
    redacted = provider == "aol" and g.r.random() < 0.5
    to_header = "redacted@aol.com" if redacted else complainer
    # Without Original-Rcpt-To the complainer is the returned message's addressee, as given.
    labels = [rcpt(to_header, "FeedbackReport", None)]
    rcpt_line = "" if redacted else f"Original-Rcpt-To: {complainer}\n"
    text = f"""From: {"staff@hotmail.com" if provider == "generic" else "feedback@" + provider + ".example"}
To: fbl@{RETURN_PATH_DOMAIN}
Date: {g.date()}
Subject: Abuse Report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
\tboundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP {g.ip()} on {g.date()}.
For more information about this format please see http://www.mipassoc.org/arf/.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: {agent}
Version: 1
Original-Mail-From: <bounces+{g.hexid(10).lower()}@{RETURN_PATH_DOMAIN}>
{rcpt_line}Arrival-Date: {g.date()}
Reporting-MTA: dns; mx.{provider}.example
Source-IP: {g.ip()}
Reported-Domain: {sender.split('@')[1]}

--{boundary}
Content-Type: message/rfc822
Content-Disposition: inline

{original_message(g, sender, [to_header], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "arf", "FeedbackReport", labels


def jmrp(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    complainer = g.person("hotmail.example")
    boundary = f"_{g.hexid(3)}_{g.hexid(12)}_"
    text = f"""From: staff@hotmail.com
To: jmrp@{RETURN_PATH_DOMAIN}
Subject: complaint about message from {g.ip()}
Date: {g.date()}
X-HmXmrOriginalRecipient: <{complainer}>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is a Junk Mail Reporting Program report.

--{boundary}
Content-Type: message/rfc822
Content-Disposition: attachment

{original_message(g, sender, ["undisclosed-recipients:;"], g.pick(SUBJECTS))}
--{boundary}--
"""
    return text, "arf", "FeedbackReport", [rcpt(complainer, "FeedbackReport", None)]


AUTOREPLY_BODIES = [
    ("Automatic reply: {s}", "Thank you for your message. I am out of the office until Monday {d} with limited access to email. For urgent matters please contact my colleague.", "en"),
    ("Out of Office: {s}", "I'm currently on vacation and will return on the 14th. I will respond to your email as soon as possible after my return.", "en"),
    ("Abwesenheitsnotiz: {s}", "Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich Freitag nicht im Büro und habe keinen Zugriff auf meine E-Mails.", "de"),
    ("Réponse automatique : {s}", "Bonjour, je suis absent du bureau jusqu'au 3 septembre. Je vous répondrai dès mon retour.", "fr"),
    ("Respuesta automática: {s}", "Gracias por su mensaje. Estoy fuera de la oficina hasta el lunes y responderé a mi regreso.", "es"),
    ("Auto: {s}", "I am away from my desk and will be back next week.", "en"),
    ("Re: {s}", "This is an automated response. We have received your email and a member of our team will reply within 2 business days. Your ticket number is #{n}.", "en"),
]


def autoreply(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    person = g.person()
    subject, body, _lang = g.pick(AUTOREPLY_BODIES)
    subject = subject.format(s=g.pick(SUBJECTS))
    body = body.format(d=g.r.randint(1, 28), n=g.r.randint(10000, 99999))
    style = g.pick(["rfc3834", "exchange", "xautoreply", "precedence"])
    extra = {
        "rfc3834": "Auto-Submitted: auto-replied\n",
        "exchange": "Auto-Submitted: auto-generated\nX-Auto-Response-Suppress: All\nX-MS-Exchange-Inbox-Rules-Loop: " + person + "\n",
        "xautoreply": "X-Autoreply: yes\nX-Autorespond: " + person + "\n",
        "precedence": "Precedence: auto_reply\n",
    }[style]
    if subject.startswith("Re:") and style == "precedence":
        extra += "Auto-Submitted: auto-replied\n"
    text = f"""From: {person.split('@')[0].replace('.', ' ').title()} <{person}>
To: <{sender}>
Subject: {subject}
Date: {g.date()}
Message-ID: <{g.hexid(16).lower()}@{person.split('@')[1]}>
In-Reply-To: <{g.hexid(16).lower()}@{sender.split('@')[1]}>
{extra}MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

{body}
"""
    return text, "autoreply", "AutoReply", [rcpt(person, "AutoReply", None)]


def challenge(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    sender = g.pick(SENDERS)
    person = g.person()
    text = f"""From: {person}
To: {sender}
Subject: Please confirm your message
Date: {g.date()}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hello,

I use a spam protection service. Your message is awaiting verification and has
not been delivered yet. Please click the link below to confirm you are a human
and your message will be delivered:

https://verify.example/c/{g.hexid(16).lower()}

Thank you.
"""
    return text, "autoreply", "ChallengeResponse", [rcpt(person, "ChallengeResponse", None)]


NOT_BOUNCES = [
    ("newsletter", "Weekly deals you can't miss", "Hi {n},\n\nThis week's picks are here. Shop now and save!\n\nTo stop receiving these e-mails, unsubscribe here: https://brand.example/u/{h}\n"),
    ("human", "Re: {s}", "Thanks, that works for me. See you Friday.\n\n{n}\n\nOn {d}, support@saas.example wrote:\n> Could you confirm the time?\n"),
    ("shipping", "Delivery attempt failed for your parcel", "Hello,\n\nWe tried to deliver your parcel today but it could not be delivered because nobody was at home.\nWe will try again tomorrow. Tracking number: {h}.\n\nYour Parcel Service\n"),
    ("password", "Reset your password", "Someone requested a password reset for your account. If this was you, click the link below.\n\nhttps://saas.example/reset/{h}\n"),
    ("invoice", "Your invoice is ready", "Dear customer,\n\nYour invoice for March is attached. The amount will be charged on the 5th.\n"),
    ("discussion", "Re: undelivered mail problem", "Hi,\n\nWe looked into why some of your messages were undeliverable last week; the\nproblem was a DNS change on our side. Everything is fixed now.\n\nBest,\n{n}\n"),
    ("list", "[dev-list] Digest, Vol 12, Issue 4", "Send dev-list mailing list submissions to\n\tdev-list@lists.example\n\nToday's Topics:\n\n   1. Re: build failure (Jane)\n   2. release planning (Bob)\n"),
    ("calendar", "Invitation: Quarterly review", "You have been invited to the following event.\n\nQuarterly review\nWhen: Thursday 10:00 - 11:00\nWho: {n}\n"),
    ("vacation-talk", "Vacation photos", "Hi all,\n\nHere are the pictures from our vacation in Portugal. I'm back in the office on Monday.\n\n{n}\n"),
]


def not_bounce(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    kind, subject, body = g.pick(NOT_BOUNCES)
    person = g.person()
    name = person.split("@")[0].split(".")[0].title()
    subject = subject.format(s=g.pick(SUBJECTS))
    body = body.format(n=name, h=g.hexid(12).lower(), d=g.date())
    frm = {"newsletter": "Brand <news@brand.example>", "shipping": "Parcel Service <noreply@parcel.example>",
           "password": "SaaS <no-reply@saas.example>", "invoice": "Billing <billing@invoices.example>",
           "list": "dev-list-request@lists.example", "calendar": "Calendar <calendar-notification@calendar.example>"}.get(kind, person)
    extra = ""
    if kind == "newsletter":
        extra = f"List-Unsubscribe: <mailto:unsub+{g.hexid(8).lower()}@brand.example>\nPrecedence: bulk\n"
    elif kind == "list":
        extra = "Precedence: list\nList-Id: Developers <dev-list.lists.example>\n"
    elif kind in ("password", "invoice", "shipping"):
        extra = "Auto-Submitted: auto-generated\n"
    text = f"""From: {frm}
To: {g.person()}
Subject: {subject}
Date: {g.date()}
Message-ID: <{g.hexid(16).lower()}@mail.example>
{extra}MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

{body}"""
    return text, "not-bounce", "NotBounce", []


def mdn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    person = g.person()
    sender = g.pick(SENDERS)
    boundary = f"=_mdn_{g.hexid(10)}"
    text = f"""From: {person}
To: {sender}
Subject: Read: {g.pick(SUBJECTS)}
Date: {g.date()}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

Your message was displayed on {g.date()}.

--{boundary}
Content-Type: message/disposition-notification

Reporting-UA: mail.example; Thunderbird
Final-Recipient: rfc822;{person}
Original-Message-ID: <{g.hexid(16).lower()}@{sender.split('@')[1]}>
Disposition: manual-action/MDN-sent-manually; displayed

--{boundary}--
"""
    return text, "not-bounce", "NotBounce", []


def delivered_dsn(g: Gen) -> tuple[str, str, str, list[dict[str, str | None]]]:
    host = "mail.example.net"
    sender = g.pick(SENDERS)
    address = g.person()
    boundary = g.boundary()
    text = f"""From: MAILER-DAEMON@{host} (Mail Delivery System)
Subject: Successful Mail Delivery Report
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Date: {g.date()}

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {host}.

Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system

<{address}>: delivery via mx.{address.split('@')[1]}[{g.ip()}]:25: 250 2.0.0 Ok: queued
    as {g.hexid(10)}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {host}
Arrival-Date: {g.date()}

Final-Recipient: rfc822; {address}
Action: relayed
Status: 2.0.0
Remote-MTA: dns; mx.{address.split('@')[1]}
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as {g.hexid(10)}

--{boundary}--
"""
    return text, "dsn", "NotBounce", [rcpt(address, "NotBounce", "2.0.0")]


TEMPLATES: list[tuple[str, Template, int]] = [
    ("postfix-dsn", postfix_dsn, 16),
    ("postfix-local", postfix_local, 5),
    ("postfix-delayed", postfix_delayed, 6),
    ("exim-text", exim_text, 12),
    ("exim-dsn", exim_dsn, 5),
    ("exim-delay", exim_delay, 4),
    ("qmail-text", qmail_text, 10),
    ("yahoo-text", yahoo_text, 5),
    ("sendmail-dsn", sendmail_dsn, 6),
    ("sendmail-warning", sendmail_warning, 3),
    ("sendmail-expired", sendmail_expired, 3),
    ("courier-dsn", courier_dsn, 4),
    ("m365-ndr", m365_ndr, 10),
    ("exchange2010-text", exchange2010_text, 5),
    ("exchange2003-text", exchange2003_text, 4),
    ("gmail-dsn", gmail_dsn, 10),
    ("gmail-old-text", gmail_old_text, 4),
    ("gmail-delay", gmail_delay, 3),
    ("domino-text", domino_text, 4),
    ("groupwise-text", groupwise_text, 2),
    ("mdaemon-text", mdaemon_text, 3),
    ("ses-dsn", ses_dsn, 3),
    ("localized-exchange", localized_exchange, 6),
    ("localized-postfix", localized_postfix, 4),
    ("provider-text", provider_text, 8),
    ("forwarded-dsn", forwarded_dsn, 3),
    ("inline-forwarded", inline_forwarded, 2),
    ("arf", arf, 8),
    ("jmrp", jmrp, 2),
    ("autoreply", autoreply, 10),
    ("challenge", challenge, 2),
    ("not-bounce", not_bounce, 12),
    ("mdn", mdn, 2),
    ("delivered-dsn", delivered_dsn, 2),
]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.eml"):
        old.unlink()
    labels: dict[str, object] = {}
    seed = 7
    for name, template, count in TEMPLATES:
        for index in range(count):
            seed += 1
            text, kind, category, recipients = template(Gen(seed))
            filename = f"{name}-{index + 1:02d}.eml"
            (OUT / filename).write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
            labels[filename] = Case(filename, text, kind, category, recipients).label()
    hand = json.loads((HERE / "hand" / "labels.json").read_text())
    for filename, label in sorted(hand.items()):
        text = (HERE / "hand" / filename).read_text(encoding="utf-8")
        (OUT / f"hand-{filename}").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
        labels[f"hand-{filename}"] = label
    (HERE / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(labels)} messages")


if __name__ == "__main__":
    main()
