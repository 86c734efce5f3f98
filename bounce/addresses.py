"""Finding e-mail addresses in bounce text, and telling recipients from everything else.

``find_addresses`` returns the addresses in a text in order with their positions.
``is_role_address`` is true for the mail system's own addresses (postmaster,
MAILER-DAEMON...), which are never the failed recipient. ``clean_address`` strips the
decoration bounces put around an address (``rfc822;``, ``<...>``, quotes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LOCAL_CHARS = r"[\w!#$%&'*+/=?^`{|}~.-]"
ADDRESS = re.compile(
    r"(?<![\w.+%=&'/-])"
    rf"({_LOCAL_CHARS}{{1,128}}@(?:\[(?:IPv6:)?[0-9A-Fa-f:.]+\]"
    r"|(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_][\w-]{0,61}[^\W_]|xn--[\w-]+)))",
    re.UNICODE)

ROLE_LOCAL_PARTS = frozenset({
    "postmaster", "mailer-daemon", "mailer_daemon", "mailerdaemon", "maildaemon",
    "mail-daemon", "mail_daemon", "double-bounce", "mdaemon", "mailerd", "mailadmin",
    "microsoftexchange",
})
_ROLE_PREFIXES = ("microsoftexchange", "mailer-daemon", "postmaster")


def clean_address(value: str) -> str:
    """``" rfc822; <User@Example.COM>"`` → ``"User@Example.COM"`` (case kept)."""
    text = value.strip()
    if ";" in text:
        kind, _, rest = text.partition(";")
        if "@" not in kind or "@" in rest:
            text = rest.strip()
    text = text.strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.strip("'\"` \t").rstrip(".,;:")
    if "@" in text and not ADDRESS.fullmatch(text):
        # "user@example.com (John Doe)", "John <user@example.com>": the address inside.
        found = next(find_addresses(text), None)
        if found is not None:
            return found[1]
    return text


def find_addresses(text: str) -> Iterator[tuple[int, str]]:
    """``(position, address)`` for each address in ``text``, in order."""
    for match in ADDRESS.finditer(text):
        address = match.group(1)
        start = match.start(1)
        stripped = address.lstrip("'`.")
        start += len(address) - len(stripped)
        address = stripped.rstrip(".")
        if "@" in address and not address.startswith("@"):
            yield start, address


def is_role_address(address: str) -> bool:
    local = address.rsplit("@", 1)[0].lower()
    return local in ROLE_LOCAL_PARTS or local.startswith(_ROLE_PREFIXES)


def address_key(address: str) -> str:
    """Comparison key: case-insensitive, without angle brackets."""
    return address.strip("<> ").lower()
