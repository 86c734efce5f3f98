"""Inbound message analysis: what kind of message it is, and per recipient what happened.

``MessageAnalyser.analyse(raw)`` returns a ``MessageResult`` of one of five kinds:

* ``dsn`` — RFC 3464 report: recipients from its ``Final-Recipient`` fields, status from
  ``Status``, category from ``Diagnostic-Code`` (then the human-readable part, then the
  status, then the action);
* ``arf`` — RFC 5965 feedback report (and Microsoft's JMRP): the complaining recipients
  (``Original-Rcpt-To``), category ``FeedbackReport``;
* ``text-bounce`` — a bounce written as prose: recipients and replies found in the text
  (``bounce.prose``), ``X-Failed-Recipients`` when present;
* ``autoreply`` — RFC 3834 automatic reply: the replying address, ``AutoReply`` (or
  ``ChallengeResponse``);
* ``not-bounce`` — anything else, ``NotBounce``.

A report forwarded inside another message (attached, or quoted after "Forwarded message")
is analysed as the report it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from bounce.addresses import address_key, clean_address, find_addresses
from bounce.categories import Category
from bounce.classifier import ReplyClassifier
from bounce.detect import autoreply_kind, bounce_score, is_delay_notice
from bounce.dsn import DsnRecipient, parse_delivery_status
from bounce.fields import parse_fields
from bounce.mime import (
    DSN_TYPES,
    FEEDBACK_TYPE,
    ORIGINAL_TYPES,
    content_type,
    header,
    headers,
    html_to_text,
    parse_message,
    parse_message_text,
    part_text,
    report_block_text,
)
from bounce.prose import (
    clean_diagnostic,
    find_mentions,
    find_reply,
    notification_text,
    quoted_status,
    recipient_segments,
    select_recipients,
)
from bounce.reply import ParsedReply, infer_status, parse_reply
from bounce.rules import Rule

KINDS = ("dsn", "text-bounce", "arf", "autoreply", "not-bounce")
MAX_DEPTH = 3
BOUNCE_THRESHOLD = 3
# How much prose is classified when no SMTP reply says what happened.
MAX_CONTEXT = 4000
_DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
# Categories that say "it did not work this time" rather than why it never will: after a
# DSN gave up on them they are an expiry.
_RETRYABLE = frozenset({
    Category.TransientFailure, Category.NoAnswerFromHost, Category.BadConnection,
    Category.DNSFailure, Category.RoutingErrors, Category.Uncategorized,
})
_CORRELATION_HEADERS = ("message-id", "from", "to", "subject", "date", "return-path",
                        "x-kumoref", "list-id", "list-unsubscribe", "feedback-id")
# Delivery-status fields written into a text part instead of a message/delivery-status one.
_INLINE_DSN = re.compile(r"^[ \t]*final-recipient:[ \t]*\S+;.*\n(?:[ \t]*[\w-]+:.*\n){0,6}"
                         r"[ \t]*(?:action|status):", re.I | re.M)
_FORWARDED = re.compile(
    r"^[ \t>]*-{2,}\s*(?:forwarded message|original message|weitergeleitete nachricht"
    r"|message transféré|mensaje reenviado|mensagem encaminhada|messaggio inoltrato"
    r"|doorgestuurd bericht)\s*-{2,}[ \t]*$|^[ \t>]*begin forwarded message:[ \t]*$", re.I | re.M)


@dataclass
class RecipientResult:
    address: str
    status: str = ""
    category: str = Category.Uncategorized.value
    diagnostic: str = ""
    action: str = ""
    original_recipient: str = ""
    remote_mta: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "status": self.status or None,
                "category": self.category, "diagnostic": self.diagnostic or None}


@dataclass
class Feedback:
    feedback_type: str = ""
    user_agent: str = ""
    original_mail_from: str = ""
    original_rcpt_to: list[str] = field(default_factory=list)
    reported_domain: str = ""
    source_ip: str = ""
    arrival_date: str = ""
    reporting_mta: str = ""
    reported_uri: list[str] = field(default_factory=list)


@dataclass
class MessageResult:
    kind: str
    category: str
    recipients: list[RecipientResult] = field(default_factory=list)
    reporting_mta: str = ""
    feedback: Feedback | None = None
    original_message_id: str = ""
    original_envelope_id: str = ""
    original_headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The ``petrel bounce classify`` JSON object."""
        first = self.recipients[0] if self.recipients else None
        return {
            "category": self.category,
            "kind": self.kind,
            "recipients": [r.as_dict() for r in self.recipients],
            "recipient": first.address if first else None,
            "status": (first.status or None) if first else None,
        }


@dataclass
class _Parts:
    """The top level of a message's MIME tree (attached messages are not entered)."""

    dsn: list[Message] = field(default_factory=list)
    feedback: list[Message] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    originals: list[Message] = field(default_factory=list)

    @property
    def text(self) -> str:
        if self.plain and any(p.strip() for p in self.plain):
            return "\n\n".join(self.plain)
        return "\n\n".join(html_to_text(h) for h in self.html)


def _collect(msg: Message) -> _Parts:
    parts = _Parts()
    stack = [msg]
    while stack:
        part = stack.pop(0)
        ctype = content_type(part)
        if part.is_multipart() and ctype.startswith("multipart/"):
            stack[0:0] = [p for p in part.get_payload() if isinstance(p, Message)]
        elif ctype in DSN_TYPES:
            parts.dsn.append(part)
        elif ctype == FEEDBACK_TYPE:
            parts.feedback.append(part)
        elif ctype in ORIGINAL_TYPES:
            parts.originals.append(part)
        elif ctype == "text/plain" and not _is_attachment(part):
            parts.plain.append(part_text(part))
        elif ctype == "text/html" and not _is_attachment(part):
            parts.html.append(part_text(part))
        elif ctype == "text/plain" and part is msg:
            parts.plain.append(part_text(part))
    return parts


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").lower()
    return disposition.startswith("attachment") and bool(part.get_filename())


def _original(parts: _Parts, text_after_cut: str) -> Message | None:
    """The returned message (or its headers), attached or quoted after the notification."""
    for part in parts.originals:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        body = part_text(part)
        if body.strip():
            return parse_message_text(body.lstrip())
    quoted = text_after_cut.lstrip("\r\n")
    start = re.search(r"^(?:[A-Za-z][\w-]*:[ \t])", quoted, re.M)
    if start is not None:
        return parse_message_text(quoted[start.start():])
    return None


class MessageAnalyser:
    """Classifies whole messages with a ``ReplyClassifier`` for the replies inside them."""

    def __init__(self, classifier: ReplyClassifier) -> None:
        self.classifier = classifier

    def analyse(self, raw: bytes) -> MessageResult:
        return self._analyse(parse_message(raw), 0)

    def _analyse(self, msg: Message, depth: int) -> MessageResult:
        parts = _collect(msg)
        text = parts.text
        note = notification_text(text)
        original = _original(parts, text[len(note):])
        reports = [report_block_text(p) for p in parts.dsn] or (
            [text] if _INLINE_DSN.search(text) else [])
        if parts.feedback:
            result = self._arf(msg, parts, original)
        elif header(msg, "X-HmXmrOriginalRecipient"):
            result = self._jmrp(msg)
        elif reports and (dsn := self._dsn(msg, reports, note, original)) is not None:
            result = dsn
            if not parts.dsn:
                # Delivery-status fields written as text: a prose bounce that quotes them.
                result.kind = "text-bounce"
        else:
            inner = self._forwarded(msg, parts, text, depth)
            if inner is not None:
                return inner
            if bounce_score(msg, note) >= BOUNCE_THRESHOLD and (
                    (bounce := self._text_bounce(msg, note, original)) is not None):
                result = bounce
            else:
                result = self._other(msg, text)
        _add_correlation(result, original)
        return result

    # -- kinds ---------------------------------------------------------------------------

    def _dsn(self, msg: Message, reports: list[str], note: str,
             original: Message | None) -> MessageResult | None:
        message_fields: dict[str, str] = {}
        dsn_recipients: list[DsnRecipient] = []
        for block in reports:
            report = parse_delivery_status(block)
            for key, value in report.message_fields.items():
                message_fields.setdefault(key, value)
            dsn_recipients.extend(report.recipients)
        if not dsn_recipients:
            bounce = self._text_bounce(msg, note, original, force=True)
            if bounce is not None:
                bounce.kind = "dsn"
            return bounce
        exclude = _exclusions(msg, original, message_fields)
        mentions = find_mentions(note, exclude)
        addresses = [r.address for r in dsn_recipients]
        segments = recipient_segments(note, [m for m in mentions], addresses)
        delayed_notice = is_delay_notice(msg, note)
        seen: set[str] = set()
        results: list[RecipientResult] = []
        for item in dsn_recipients:
            key = address_key(item.address)
            if key in seen:
                continue
            seen.add(key)
            segment = segments.get(item.address, "")
            if not segment and len(dsn_recipients) == 1:
                segment = note
            results.append(self._dsn_recipient(item, segment, delayed_notice))
        result = MessageResult("dsn", results[0].category, results,
                               reporting_mta=_strip_type(message_fields.get("reporting-mta", "")))
        result.original_envelope_id = message_fields.get("original-envelope-id", "")
        return result

    def _dsn_recipient(self, item: DsnRecipient, segment: str,
                       delayed_notice: bool) -> RecipientResult:
        out = RecipientResult(item.address, action=item.action,
                              original_recipient=item.original_recipient,
                              remote_mta=item.remote_mta)
        diagnostic = re.sub(r"\s+", " ", item.diagnostic).strip()
        out.diagnostic = diagnostic
        status = item.status
        if item.action in _DELIVERED_ACTIONS or status.startswith("2."):
            out.category = Category.NotBounce.value
            out.status = status or "2.0.0"
            return out
        reply = _reply_in(diagnostic) if diagnostic else None
        status_class = _status_class(status, reply, item.action, delayed_notice)
        category = Category.Uncategorized.value
        if reply is not None:
            category = self.classifier.category(reply.code, _specific(reply.enhanced, status),
                                                reply.text)
        elif diagnostic:
            category = self.classifier.category(None, _specific("", status), diagnostic)
        if category == Category.Uncategorized and segment:
            prose = self._prose_recipient(item.address, segment, status_class)
            category = prose.category
            if not out.diagnostic:
                out.diagnostic = prose.diagnostic
            if not status and prose.status:
                status = prose.status
        if category == Category.Uncategorized and status and not status.endswith(".0.0"):
            category = self.classifier.category(None, status, "")
        if category == Category.Uncategorized and status_class == "4":
            category = Category.TransientFailure.value
        code_class = str(reply.code)[0] if reply is not None and reply.code else ""
        if (item.action == "failed" and "4" in (status[:1], code_class)
                and category in _RETRYABLE):
            category = Category.MessageExpired.value
        out.category = category
        if not status and reply is not None:
            status = reply.status
        out.status = status or infer_status(category, status_class)
        return out

    def _arf(self, msg: Message, parts: _Parts, original: Message | None) -> MessageResult:
        fields: dict[str, list[str]] = {}
        for part in parts.feedback:
            for item in parse_fields(report_block_text(part)):
                if item is not None:
                    fields.setdefault(item[0], []).append(item[1])

        def first(name: str) -> str:
            return fields.get(name, [""])[0]

        rcpt_to = [clean_address(v) for v in fields.get("original-rcpt-to", [])]
        rcpt_to += [clean_address(v) for v in fields.get("removal-recipient", [])]
        feedback = Feedback(
            feedback_type=first("feedback-type").lower(), user_agent=first("user-agent"),
            original_mail_from=clean_address(first("original-mail-from")),
            original_rcpt_to=[a for a in rcpt_to if a],
            reported_domain=first("reported-domain"), source_ip=first("source-ip"),
            arrival_date=first("arrival-date") or first("received-date"),
            reporting_mta=_strip_type(first("reporting-mta")),
            reported_uri=fields.get("reported-uri", []))
        addresses = _unique(feedback.original_rcpt_to)
        if not addresses and original is not None:
            found = [a for _, a in find_addresses(header(original, "To"))]
            if len(found) == 1:
                addresses = found
        recipients = [RecipientResult(a, category=Category.FeedbackReport.value,
                                      diagnostic=feedback.feedback_type or "abuse")
                      for a in addresses]
        return MessageResult("arf", Category.FeedbackReport.value, recipients,
                             reporting_mta=feedback.reporting_mta, feedback=feedback)

    def _jmrp(self, msg: Message) -> MessageResult:
        addresses = _unique([a for _, a in
                             find_addresses(header(msg, "X-HmXmrOriginalRecipient"))])
        recipients = [RecipientResult(a, category=Category.FeedbackReport.value,
                                      diagnostic="abuse") for a in addresses]
        return MessageResult("arf", Category.FeedbackReport.value, recipients,
                             feedback=Feedback(feedback_type="abuse",
                                               original_rcpt_to=addresses))

    def _text_bounce(self, msg: Message, note: str, original: Message | None,
                     force: bool = False) -> MessageResult | None:
        exclude = _exclusions(msg, original, {})
        mentions = find_mentions(note, exclude)
        if not mentions:
            # A test message sent to oneself: the bounce's addressee is also the recipient.
            exclude = _exclusions(msg, None, {}, addressee=False)
            mentions = find_mentions(note, exclude)
        failed_header = [a for value in headers(msg, "X-Failed-Recipients")
                         for _, a in find_addresses(value)]
        addresses = _unique(failed_header) or select_recipients(mentions)
        if not addresses and original is not None:
            # Some bounces never name the recipient: the returned message's only addressee.
            addressees = _unique([a for name in ("To", "Cc") for value in headers(original, name)
                                  for _, a in find_addresses(value)])
            addresses = [a for a in addressees if address_key(a) not in
                         {address_key(e) for e in exclude}]
            addresses = addresses if len(addresses) == 1 else []
        if not addresses and not force:
            return None
        delayed = is_delay_notice(msg, note)
        status_class = "4" if delayed else "5"
        segments = recipient_segments(note, mentions, addresses)
        context = header(msg, "Subject") + "\n" + note
        results = []
        for address in addresses:
            segment = segments.get(address, "")
            results.append(self._prose_recipient(
                address, segment or (note if len(addresses) == 1 else ""), status_class,
                context=context, whole=note if len(addresses) == 1 else ""))
        if results:
            category = results[0].category
        else:
            category = self.classifier.category(None, "", clean_diagnostic(context, "",
                                                                            MAX_CONTEXT))
        return MessageResult("text-bounce", category, results)

    def _prose_recipient(self, address: str, segment: str, status_class: str,
                         context: str = "", whole: str = "") -> RecipientResult:
        """One recipient of a prose bounce: the reply quoted in its segment (or anywhere in
        ``whole``, the text of a single-recipient bounce), else its segment's words, else
        the whole ``context``; status from the reply, a quoted status, or the category."""
        reply = find_reply(segment) or (find_reply(whole) if whole else None)
        status = ""
        category = Category.Uncategorized.value
        diagnostic = ""
        if reply is not None:
            category = self.classifier.category(reply.code, reply.enhanced, reply.text)
            status = reply.status
            diagnostic = reply.line()
            if reply.code:
                status_class = str(reply.code)[0]
        for source in (segment, context):
            if category != Category.Uncategorized or not source:
                continue
            prose = clean_diagnostic(source, address, MAX_CONTEXT)
            rule = self.classifier.ruleset.match(prose)
            if rule is not None:
                category = rule.category
                diagnostic = diagnostic or _sentence_around(prose, rule)
        if not status:
            status = quoted_status(segment)
        if category == Category.Uncategorized and status and not status.endswith(".0.0"):
            category = self.classifier.category(None, status, "")
        if category == Category.Uncategorized and status_class == "4":
            category = Category.TransientFailure.value
        if not status:
            status = infer_status(category, status_class)
        return RecipientResult(address, status, category,
                               diagnostic or clean_diagnostic(segment, address))

    def _forwarded(self, msg: Message, parts: _Parts, text: str,
                   depth: int) -> MessageResult | None:
        if depth >= MAX_DEPTH:
            return None
        for part in parts.originals:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                inner = self._analyse(payload[0], depth + 1)
                if inner.kind in ("dsn", "arf", "text-bounce"):
                    return inner
        marker = _FORWARDED.search(text)
        if marker is not None:
            quoted = text[marker.end():].lstrip("\r\n")
            quoted = re.sub(r"^[ \t]*>[ \t]?", "", quoted, flags=re.M)
            inner = self._analyse(parse_message_text(quoted), depth + 1)
            if inner.kind in ("dsn", "text-bounce", "arf"):
                return inner
        return None

    def _other(self, msg: Message, text: str) -> MessageResult:
        kind = autoreply_kind(msg, text)
        if kind:
            category = (Category.ChallengeResponse if kind == "challenge"
                        else Category.AutoReply).value
            addresses = [a for _, a in find_addresses(header(msg, "Reply-To")
                                                      or header(msg, "From"))][:1]
            recipients = [RecipientResult(a, category=category) for a in addresses]
            return MessageResult("autoreply", category, recipients)
        subject = header(msg, "Subject").strip().lower()
        if re.fullmatch(r"(?:re:\s*)?(?:unsubscribe|remove me|désinscription|abmelden)\b.*",
                        subject):
            return MessageResult("not-bounce", Category.Unsubscribe.value)
        return MessageResult("not-bounce", Category.NotBounce.value)


def _sentence_around(text: str, rule: Rule) -> str:
    """The sentence of ``text`` in which ``rule`` matched."""
    match = rule.regex.search(text)
    if match is None:
        return ""
    stop = text.rfind(". ", 0, match.start())
    start = max(stop + 2 if stop >= 0 else 0, match.start() - 200)
    end = text.find(". ", match.end())
    end = len(text) if end < 0 or end - match.end() > 200 else end + 1
    return text[start:end].strip()


def _reply_in(diagnostic: str) -> ParsedReply | None:
    reply = parse_reply(diagnostic)
    if reply.code is not None:
        return reply
    return find_reply(diagnostic)


def _specific(enhanced: str, status: str) -> str:
    """The more informative of a reply's enhanced code and a DSN's Status."""
    if enhanced and not enhanced.endswith(".0.0"):
        return enhanced
    if status and not status.endswith(".0.0"):
        return status
    return enhanced or status


def _status_class(status: str, reply: ParsedReply | None, action: str,
                  delayed_notice: bool) -> str:
    if status[:1] in ("4", "5"):
        return status[:1]
    if reply is not None and reply.code:
        return str(reply.code)[0]
    if action == "delayed" or (not action and delayed_notice):
        return "4"
    return "5"


def _strip_type(value: str) -> str:
    _kind, sep, rest = value.partition(";")
    return rest.strip() if sep else value.strip()


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        key = address_key(address)
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


def _exclusions(msg: Message, original: Message | None,
                message_fields: dict[str, str], addressee: bool = True) -> set[str]:
    """Addresses that are never the failed recipient: the bounce's own sender and
    addressee (our return path), and the original sender."""
    out: set[str] = set()
    names: tuple[str, ...] = ("From", "Sender", "Reply-To", "Return-Path", "Errors-To")
    if addressee:
        names += ("To", "Cc", "Delivered-To")
    for name in names:
        for value in headers(msg, name):
            out.update(a for _, a in find_addresses(value))
    if original is not None:
        for name in ("From", "Sender", "Reply-To", "Return-Path"):
            for value in headers(original, name):
                out.update(a for _, a in find_addresses(value))
    for name in ("x-postfix-sender", "original-mail-from", "x-original-sender"):
        if message_fields.get(name):
            out.update(a for _, a in find_addresses(message_fields[name]))
    return out


def _add_correlation(result: MessageResult, original: Message | None) -> None:
    if original is None:
        return
    for name in _CORRELATION_HEADERS:
        value = header(original, name)
        if value:
            result.original_headers[name] = value
    for name, value in original.items():
        if name.lower().startswith("x-petrel-"):
            result.original_headers[name.lower()] = str(value)
    result.original_message_id = header(original, "Message-ID").strip()
