"""SMTP reply text as the classifier sees it.

``parse_reply`` reads a reply tolerantly: a DSN ``Diagnostic-Code`` type prefix
(``smtp;``), multi-line replies (``550-5.1.1 ...`` continuation lines, joined with spaces),
an enhanced code right after the basic code, or one quoted later in the text (qmail's
``(#5.1.1)``). ``reply_line`` builds KumoMTA's one-line form ``"<code> <enhanced> <text>"``
that rules are matched against. ``infer_status`` gives the enhanced status a result reports
when the reply carried none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bounce.categories import DEFAULT_STATUS_DETAIL

_DIAGNOSTIC_TYPE = re.compile(r"^\s*(?:smtp|esmtp|x-[\w.-]+|mta|unix|local)\s*;\s*", re.I)
_CODE = re.compile(r"^([2-5]\d\d)(?:[ \t-]+|$)")
_ENHANCED_LEAD = re.compile(r"^#?([245]\.\d{1,3}\.\d{1,3})(?![\d.]\d)\s*")
_ENHANCED_ANY = re.compile(r"(?<![\d.])#?([245]\.\d{1,3}\.\d{1,3})(?![\d]|\.\d)")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """A reply: basic code (None when the text has none), enhanced code ("" when none was
    given right after the code), the text, and the status quoted anywhere in it."""

    code: int | None
    enhanced: str
    text: str
    quoted_status: str = ""

    @property
    def status(self) -> str:
        """The enhanced status the reply states, leading or quoted ("" when none)."""
        return self.enhanced or self.quoted_status

    def line(self) -> str:
        return reply_line(self.code, self.enhanced, self.text)


def parse_reply(raw: str) -> ParsedReply:
    """Parse reply text such as ``"550-5.1.1 No such\\r\\n550 5.1.1 user"`` or
    ``"smtp; 550 user unknown"``; text without a code keeps ``code=None``."""
    text = _DIAGNOSTIC_TYPE.sub("", raw.strip(), count=1)
    code: int | None = None
    enhanced = ""
    parts: list[str] = []
    for raw_line in text.splitlines():
        piece = raw_line.strip()
        match = _CODE.match(piece)
        if match and (code is None or int(match.group(1)) == code):
            if code is None:
                code = int(match.group(1))
            piece = piece[match.end():]
            lead = _ENHANCED_LEAD.match(piece)
            if lead and (not enhanced or lead.group(1) == enhanced):
                if not enhanced and lead.group(0).lstrip()[:1] != "#":
                    enhanced = lead.group(1)
                if lead.group(1) == enhanced:
                    piece = piece[lead.end():]
        elif not parts and code is None:
            lead = _ENHANCED_LEAD.match(piece)
            if lead and lead.group(0)[:1] != "#":
                enhanced = lead.group(1)
                piece = piece[lead.end():]
        if piece:
            parts.append(piece)
    body = _SPACES.sub(" ", " ".join(parts)).strip()
    if code is not None:
        # A multi-line reply folded into one line ("550-5.1.1 a 550-5.1.1 b 550 5.1.1 c").
        repeated = (rf"{code}[ -]{re.escape(enhanced)}(?=\s|$)\s*" if enhanced
                    else rf"{code}-(?=\S)")
        body = re.sub(rf"(?:(?<=\s)|^){repeated}", "", body).strip()
    quoted = ""
    if not enhanced:
        found = _ENHANCED_ANY.search(body)
        if found and (code is None or found.group(1)[0] == str(code)[0]):
            quoted = found.group(1)
    return ParsedReply(code, enhanced, body, quoted)


def reply_line(code: int | None, enhanced: str, text: str) -> str:
    """KumoMTA's one-line reply: ``"550 5.1.1 text"`` (``"550 text"`` without an enhanced
    code). Without a basic code, one is taken from the enhanced code's class (451/550/250)
    so status rules still apply; with neither, the text alone."""
    text = _SPACES.sub(" ", text).strip()
    if code is None and enhanced:
        code = {"2": 250, "4": 451, "5": 550}.get(enhanced[0])
    if code is None:
        return text
    return " ".join(p for p in (str(code), enhanced, text) if p)


def infer_status(category: str, status_class: str) -> str:
    """The enhanced status a category stands for, in class ``status_class`` ("4" or "5")."""
    detail = DEFAULT_STATUS_DETAIL.get(category, "0.0")
    return f"{status_class}.{detail}"
