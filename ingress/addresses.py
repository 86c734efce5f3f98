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
