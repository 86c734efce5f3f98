"""Make aiosmtpd's own replies canonical.

We advertise ENHANCEDSTATUSCODES, so every final reply to a command carries an RFC 3463
enhanced code. aiosmtpd writes some replies itself (syntax errors, its SIZE check, its line
length check, ...) without one or with texts other than ours; ``normalize_reply`` maps them:
the size, line-length, unknown-command (whose text would echo the client's input) and
address replies to our canonical ones, the rest by adding the enhanced code
that fits the basic code. The greeting, EHLO/HELO lines, 354 and AUTH challenges (334) pass
unchanged.
"""

from __future__ import annotations

import re

from petrel import smtp_replies

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?:\s|$)")
_DEFAULT_ENHANCED = {
    221: "2.0.0", 250: "2.0.0", 252: "2.5.0",
    421: "4.3.0", 451: "4.3.0", 452: "4.3.1", 454: "4.7.0",
    500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4", 530: "5.7.0",
    550: "5.0.0", 552: "5.3.4", 553: "5.1.3", 554: "5.5.0", 555: "5.5.4",
}
# Verbs whose 2xx replies are not plain status lines (greeting, capability lists).
_RAW_2XX_VERBS = {"EHLO", "HELO", "HELP"}


def normalize_reply(line: str, verb: str) -> str:
    """The reply to send instead of ``line`` (one line, no CRLF) while handling ``verb``."""
    if line[:1] == "2" and _HAS_ENHANCED.match(line):
        return line  # the common case: a success that already carries its enhanced code
    if line.startswith("552 Error:"):
        return smtp_replies.TOO_BIG
    if line.startswith("553 5.1.3 Error: malformed address"):
        return smtp_replies.BAD_SENDER_SYNTAX if verb == "MAIL" else \
            smtp_replies.BAD_RECIPIENT_SYNTAX
    if line.startswith("500 Line too long"):
        return smtp_replies.LINE_TOO_LONG
    if line.startswith("500 Command line too long"):
        return smtp_replies.COMMAND_TOO_LONG
    if line.startswith('500 Error: command "'):
        return smtp_replies.UNKNOWN_COMMAND  # aiosmtpd's text echoes the client's verb
    if len(line) < 4 or line[3] != " " or not line[:3].isdigit() or _HAS_ENHANCED.match(line):
        return line
    code = int(line[:3])
    if code < 300 and verb in _RAW_2XX_VERBS:
        return line
    enhanced = _DEFAULT_ENHANCED.get(code)
    return f"{line[:3]} {enhanced} {line[4:]}" if enhanced else line
