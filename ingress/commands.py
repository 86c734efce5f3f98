"""SMTP command lines: the strict line rules, the pipelining rules and EHLO names.

Pure functions over what the client sent; ``ingress.reader`` applies them to every command
line before aiosmtpd parses it.

* ``check_command_line``: a command line ends with CRLF and holds no other CR or LF (bare line
  endings are how SMTP smuggling starts), no NUL and no other control character, and is at
  most ``limit`` octets including the CRLF (RFC 5321 4.5.3.1.4: 512). ``MAIL`` may be longer
  by the octets RFC 1870 (SIZE), RFC 6152 (BODY) and RFC 6531 (SMTPUTF8) allow for the
  parameters we advertise. A refusal is a canonical reply that never echoes the line.
* ``breaks_synchronization``: RFC 2920 lets a client pipeline only after it saw PIPELINING in
  the EHLO reply, and only when the command does not end a group (EHLO, HELO, DATA, NOOP,
  VRFY, EXPN must be last). Input already waiting behind such a command is a protocol
  violation (Postfix's ``smtpd_forbid_unauth_pipelining``).
* ``is_valid_helo``: an EHLO/HELO argument is a host name (LDH labels, ASCII) or an address
  literal, so nothing raw reaches a ``Received:`` header.
"""

from __future__ import annotations

import ipaddress
import re

from petrel import smtp_replies

MAX_COMMAND_LINE = 512
# RFC 1870 (SIZE=) 26 + RFC 6152 (BODY=8BITMIME) 14 + RFC 6531 (SMTPUTF8) 10.
MAIL_PARAMETER_OCTETS = 26 + 14 + 10
CRLF = b"\r\n"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# Commands after which nothing may be pipelined (RFC 2920 3.1; STARTTLS per RFC 3207 is
# handled by discarding the plaintext buffer instead; QUIT ends the session anyway).
GROUP_ENDING_VERBS = frozenset({"EHLO", "HELO", "DATA", "NOOP", "VRFY", "EXPN"})
# Commands that move no mail (Postfix's junk commands, plus HELP).
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP", "ETRN"})
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_HOST_NAME = 253


def verb_of(line: bytes) -> str:
    """The upper-cased command verb of a raw line ("" when it is not ASCII)."""
    word = line.split(b" ", 1)[0].rstrip(b"\r\n")
    try:
        return word.decode("ascii").upper()
    except UnicodeDecodeError:
        return ""


def line_limit(verb: str, limit: int = MAX_COMMAND_LINE) -> int:
    """Octets (CRLF included) allowed for a command line starting with ``verb``."""
    return limit + MAIL_PARAMETER_OCTETS if verb == "MAIL" else limit


def check_command_line(line: bytes, limit: int = MAX_COMMAND_LINE,
                       verb: str | None = None) -> str | None:
    """The canonical refusal for ``line`` (read up to and including its first LF), or
    ``None`` when it is acceptable. ``verb``: ``verb_of(line)`` when the caller has it."""
    if not line.endswith(CRLF) or b"\r" in line[:-2] or b"\n" in line[:-2]:
        return smtp_replies.BARE_LINE_ENDING_COMMAND
    if _CONTROL.search(line, 0, len(line) - 2):
        return smtp_replies.INVALID_CHARACTER
    if len(line) > limit and len(line) > line_limit(verb_of(line) if verb is None else verb,
                                                    limit):
        return smtp_replies.COMMAND_TOO_LONG
    return None


def breaks_synchronization(verb: str, pending: int, pipelining: bool) -> bool:
    """True when ``pending`` octets already wait behind a ``verb`` command that may not be
    followed by pipelined input (``pipelining``: the client saw our EHLO reply)."""
    if pending <= 0 or verb in ("QUIT", "STARTTLS"):
        return False
    return not pipelining or verb in GROUP_ENDING_VERBS


def is_valid_host_name(name: str) -> bool:
    """LDH labels separated by dots (one trailing dot allowed), at most 253 octets."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > MAX_HOST_NAME or not name.isascii():
        return False
    labels = name.split(".")
    if labels[-1].isdigit():
        return False  # "192.0.2.1" is an address, and addresses must be bracketed
    return all(_LABEL.fullmatch(label) for label in labels)


def is_address_literal(text: str) -> bool:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3)."""
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.ip_address(inner[5:]).version == 6 and "%" not in inner
        return ipaddress.IPv4Address(inner) is not None and inner.count(".") == 3
    except ValueError:
        return False


def is_valid_helo(name: str) -> bool:
    """True when ``name`` may be used as the client's EHLO/HELO identity."""
    return is_valid_host_name(name) or is_address_literal(name)
