"""Reading inbound messages leniently: headers, decoded text parts, report parts.

Bounces are machine-written and often slightly broken (bad charsets, stray 8-bit bytes,
missing boundaries); everything here degrades to "best text we can get" instead of raising.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import html
import quopri
import re
from email.header import decode_header, make_header
from email.message import Message
from html.parser import HTMLParser

# Content types carrying a DSN's machine-readable part (RFC 3464, RFC 6533).
DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
FEEDBACK_TYPE = "message/feedback-report"
ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers",
                  "message/global-headers", "message/partial")


def parse_message(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def parse_message_text(text: str) -> Message:
    return email.message_from_string(text, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    """A header's decoded text ("" when absent), folded lines joined."""
    value = msg.get(name)
    if value is None:
        return ""
    return decode_header_text(str(value))


def headers(msg: Message, name: str) -> list[str]:
    return [decode_header_text(str(v)) for v in msg.get_all(name) or []]


def decode_header_text(value: str) -> str:
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return re.sub(r"\s*\r?\n\s*", " ", text).strip()


def content_type(part: Message) -> str:
    return part.get_content_type().lower()


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part (transfer encoding and charset undone,
    line endings made ``\n``)."""
    return _decoded(part).replace("\r\n", "\n").replace("\r", "\n")


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, list):
            return "\n\n".join(_message_text(p) for p in raw if isinstance(p, Message))
        return str(raw or "")
    if not isinstance(payload, bytes):
        return str(payload)
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8", "cp1252", "latin-1"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


def _message_text(msg: Message) -> str:
    """Header block of a parsed sub-message as text (delivery-status blocks come like that)."""
    return "".join(f"{k}: {v}\n" for k, v in msg.items())


def report_block_text(part: Message) -> str:
    """The text of a message/delivery-status or feedback-report part, whatever shape the
    parser gave it (a list of header blocks, or a payload string)."""
    raw = part.get_payload()
    if isinstance(raw, list):
        blocks = []
        for sub in raw:
            if isinstance(sub, Message):
                block = _message_text(sub)
                body = sub.get_payload()
                if isinstance(body, str) and body.strip():
                    block += body
                blocks.append(block)
        return _undo_transfer_encoding(part, "\n".join(blocks)).replace("\r\n", "\n")
    return part_text(part)


def _undo_transfer_encoding(part: Message, text: str) -> str:
    """A report part that was base64 or quoted-printable encoded is parsed as garbage
    header blocks by the email package; decode the text it kept."""
    encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            data = base64.b64decode("".join(text.split()), validate=False)
        elif encoding == "quoted-printable":
            data = quopri.decodestring(text.encode("latin-1", "replace"))
        else:
            return text
    except (ValueError, binascii.Error):
        return text
    return data.decode("utf-8", "replace")


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset({"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4",
                         "blockquote", "pre", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self._BREAKS:
            self.out.append("\n")
        elif tag == "td":
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BREAKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient, but never let markup break a bounce
        return html.unescape(re.sub(r"<[^>]+>", " ", markup))
    text = "".join(parser.out).replace("\xa0", " ")
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text)
