"""Suppression list rules, as pure functions: what an entry may hold, how it is keyed.

An entry suppresses one address for one tenant; tenant ``""`` is global (every tenant, and
mail without a tenant). Addresses match case-insensitively: the key is the address in lower
case. Keys in the store (``bounce.suppression_store``)::

    e\\0<tenant>\\0<address key>   -> the entry (a serialized ``Suppression``)
    a\\0<address key>\\0<tenant>   -> b""  (index: one address across tenants)

Tenants hold no ``:``, ``@`` or control characters (as ingress requires of tenant names);
addresses no control characters or spaces, so ``\\0`` separates the parts unambiguously.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from petrel.suppression import SOURCE_NAMES, address_key
from petrel.v1 import suppression_pb2

MAX_ADDRESS = 320
MAX_TENANT = 128
MAX_REASON = 200
MAX_DETAIL = 1000
MAX_BATCH = 10_000
MAX_CHECK = 1_000
MAX_PAGE = 1_000
DEFAULT_PAGE = 100

ENTRY = b"e\0"
INDEX = b"a\0"
SEP = b"\0"



class InvalidEntry(ValueError):
    """A request field is not acceptable; ``field`` names it (``entries[3].address``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def entry_key(tenant: str, address: str) -> bytes:
    return ENTRY + tenant.encode() + SEP + address_key(address).encode()


def index_key(address: str, tenant: str) -> bytes:
    return INDEX + address_key(address).encode() + SEP + tenant.encode()


def tenant_of_index(key: bytes) -> tuple[str, str]:
    """``(address key, tenant)`` of an index key."""
    address, _, tenant = key[len(INDEX):].partition(SEP)
    return address.decode(), tenant.decode()


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def check_address(address: str, field: str) -> str:
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not address:
        raise InvalidEntry(field, "an address is required")
    if len(address) > MAX_ADDRESS:
        raise InvalidEntry(field, f"longer than {MAX_ADDRESS} characters")
    if not (at and local and domain) or any(ch.isspace() for ch in address) \
            or not _printable(address):
        raise InvalidEntry(field, f"not an email address: {address!r}")
    return address


def check_tenant(tenant: str, field: str) -> str:
    if len(tenant) > MAX_TENANT:
        raise InvalidEntry(field, f"longer than {MAX_TENANT} characters")
    if any(ch in ":@" or not ch.isprintable() for ch in tenant):
        raise InvalidEntry(field, "must not contain ':', '@' or control characters")
    return tenant


def clean_text(text: str, limit: int) -> str:
    """One line of printable text, at most ``limit`` characters (replies and reports can hold
    anything; an entry's text ends up in SMTP replies)."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text[:limit]


def normalize_entry(entry: suppression_pb2.Suppression, field: str, now_ms: int,
                    ) -> suppression_pb2.Suppression:
    """A validated copy of ``entry`` ready to store (``created_unix_ms`` = ``now_ms``; the
    store keeps the older one when the entry exists). Raises ``InvalidEntry``."""
    address = check_address(entry.address, f"{field}.address")
    tenant = check_tenant(entry.tenant, f"{field}.tenant")
    reason = entry.reason.strip()
    if len(reason) > MAX_REASON:
        raise InvalidEntry(f"{field}.reason", f"longer than {MAX_REASON} characters")
    if not _printable(reason):
        raise InvalidEntry(f"{field}.reason", "must not contain control characters")
    if entry.expires_unix_ms < 0:
        raise InvalidEntry(f"{field}.expires_unix_ms", "must not be negative")
    if entry.source not in SOURCE_NAMES and entry.source != 0:
        raise InvalidEntry(f"{field}.source", f"unknown source {entry.source}")
    return suppression_pb2.Suppression(
        address=address, tenant=tenant, reason=reason,
        source=entry.source or suppression_pb2.SUPPRESSION_SOURCE_MANUAL,
        created_unix_ms=now_ms, expires_unix_ms=entry.expires_unix_ms,
        message_id=clean_text(entry.message_id, 64), detail=clean_text(entry.detail, MAX_DETAIL))


def is_active(entry: suppression_pb2.Suppression, now_ms: int) -> bool:
    return not entry.expires_unix_ms or entry.expires_unix_ms > now_ms


@dataclass(frozen=True, slots=True)
class ListScope:
    """Where one listing reads: its key prefix, and where this page starts."""

    prefix: bytes
    start: bytes
    by_index: bool


def list_scope(tenant: str, all_tenants: bool, address_prefix: str,
               page_token: str) -> ListScope:
    """Raises ``InvalidEntry`` for a bad tenant or page token."""
    address_prefix = address_key(address_prefix)
    if all_tenants:
        prefix = INDEX + address_prefix.encode()
    else:
        prefix = ENTRY + check_tenant(tenant, "tenant").encode() + SEP + address_prefix.encode()
    start = prefix
    if page_token:
        try:
            last = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidEntry("page_token", "not a token this listing returned") from exc
        if not last.startswith(prefix):
            raise InvalidEntry("page_token", "not a token this listing returned")
        start = last + SEP  # the first key after it (no key holds SEP where this one ends)
    return ListScope(prefix, start, all_tenants)


def page_token(last_key: bytes) -> str:
    return base64.urlsafe_b64encode(last_key).decode().rstrip("=")
