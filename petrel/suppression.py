"""Suppression list vocabulary shared by its clients (ingress, scheduler, gateway, CLI) and
its keeper (bounce): source names, address matching, and how an entry is named in replies.
The service itself: ``SuppressionService`` (protos/petrel/v1/suppression.proto)."""

from __future__ import annotations

from petrel.v1 import suppression_pb2

SOURCE_NAMES: dict[int, str] = {
    suppression_pb2.SUPPRESSION_SOURCE_BOUNCE: "bounce",
    suppression_pb2.SUPPRESSION_SOURCE_COMPLAINT: "complaint",
    suppression_pb2.SUPPRESSION_SOURCE_MANUAL: "manual",
}
SOURCES: dict[str, int] = {name: value for value, name in SOURCE_NAMES.items()}


def address_key(address: str) -> str:
    """Addresses match case-insensitively."""
    return address.strip().lower()


def describe(entry: suppression_pb2.Suppression) -> str:
    """``tenant acme: bounce InvalidRecipient`` (``global: manual ...`` for tenant ``""``),
    as SMTP replies and errors name an entry."""
    scope = f"tenant {entry.tenant}" if entry.tenant else "global"
    source = SOURCE_NAMES.get(entry.source, "manual")
    return f"{scope}: {source} {entry.reason}".rstrip()
