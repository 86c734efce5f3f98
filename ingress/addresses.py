"""Envelope address syntax: RFC 5321 ``Mailbox`` with RFC 6531 (SMTPUTF8) characters.

``is_valid_mailbox`` accepts ``local@domain`` where the local part is a dot-atom or a quoted
string and the domain is a host name (ASCII or UTF-8 labels) or an address literal
(``[192.0.2.1]``, ``[IPv6:2001:db8::1]``). Source routes and bare local parts are refused.
"""

from __future__ import annotations

import ipaddress
import re

_NON_ASCII = "\u0080-\ud7ff\ue000-\U0010ffff"  # excludes surrogates (undecodable bytes)
_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_NON_ASCII}]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_LOCAL = re.compile(rf"(?:{_DOT_ATOM}|{_QUOTED})")
_LDH = rf"A-Za-z0-9{_NON_ASCII}"
_LABEL = rf"[{_LDH}](?:[{_LDH}\-]{{0,61}}[{_LDH}])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 253


def split_mailbox(address: str) -> tuple[str, str]:
    """``"a@b"`` → ``("a", "b")``, splitting at the last ``@`` (quoted local parts may hold
    one)."""
    local, _, domain = address.rpartition("@")
    return local, domain


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def is_valid_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                return ipaddress.ip_address(literal[5:]).version == 6
            return ipaddress.ip_address(literal).version == 4
        except ValueError:
            return False
    return _octets(domain) <= MAX_DOMAIN_OCTETS and _DOMAIN.fullmatch(domain) is not None


def is_valid_mailbox(address: str) -> bool:
    """True when ``address`` is a syntactically valid ``local@domain`` mailbox."""
    if "@" not in address or _octets(address) > MAX_ADDRESS_OCTETS:
        return False
    local, domain = split_mailbox(address)
    if not local or _octets(local) > MAX_LOCAL_OCTETS or _LOCAL.fullmatch(local) is None:
        return False
    return is_valid_domain(domain)


def domain_of(address: str) -> str:
    """The lower-cased domain of a valid mailbox."""
    return split_mailbox(address)[1].lower()


# Characters that turn a local part into a route to another host (RFC 1123 5.2.16's "%"
# hack, UUCP bang paths, "user@other"@ourdomain): refused in SMTP paths.
_ROUTING_CHARACTERS = frozenset("%!@")
_QUOTED_PAIR = re.compile(r"\\(.)")


class PathError(ValueError):
    """A MAIL/RCPT path is refused. ``needs_smtputf8``: the only problem is a non-ASCII
    address in a transaction that did not declare SMTPUTF8."""

    def __init__(self, reason: str, *, needs_smtputf8: bool = False) -> None:
        super().__init__(reason)
        self.needs_smtputf8 = needs_smtputf8


def unquote_local_part(local: str) -> str:
    """The local part as the mailbox owner sees it (quotes and backslash escapes removed)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def _closing_bracket(text: str) -> int:
    """Index of the ``>`` closing the path that starts ``text`` (``-1`` when unclosed); a
    quoted local part may hold ``>``."""
    pos = 1
    if text[1:2] == '"':
        pos = 2
        while pos < len(text) and text[pos] != '"':
            pos += 2 if text[pos] == "\\" else 1
        pos += 1
    return text.find(">", pos)


def parse_path(text: str, *, null_allowed: bool, smtputf8: bool) -> tuple[str, str]:
    """Parse the argument of ``MAIL FROM:`` / ``RCPT TO:`` strictly: ``<mailbox>``
    optionally followed by SP and parameters. Returns ``(mailbox, parameters)``, the mailbox
    ``""`` for the null path ``<>`` when ``null_allowed``. Raises ``PathError`` for a path
    without angle brackets, an unclosed bracket, text glued to the ``>``, a null path where
    none is allowed, a source route (``<@a,@b:u@d>``), a local part holding ``%``, ``!`` or
    ``@`` (quoted or not), anything ``is_valid_mailbox`` refuses, and a non-ASCII address
    unless ``smtputf8``."""
    if not text.startswith("<"):
        raise PathError("angle brackets required")
    end = _closing_bracket(text)
    if end < 0:
        raise PathError("unclosed angle bracket")
    inner, rest = text[1:end], text[end + 1:]
    if rest and not rest.startswith(" "):
        raise PathError("text after the closing bracket")
    parameters = rest.strip(" ")
    if not inner:
        if null_allowed:
            return "", parameters
        raise PathError("null path")
    if inner.startswith("@"):
        raise PathError("source route")
    if not is_valid_mailbox(inner):
        raise PathError("not a valid mailbox")
    local, _ = split_mailbox(inner)
    if _ROUTING_CHARACTERS.intersection(unquote_local_part(local)):
        raise PathError("routing characters in the local part")
    if not inner.isascii() and not smtputf8:
        raise PathError("non-ASCII address without SMTPUTF8", needs_smtputf8=True)
    return inner, parameters
