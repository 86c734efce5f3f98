"""Suppression list vocabulary shared by its clients (ingress, scheduler, gateway, CLI) and
its keeper (bounce): source names, address matching, and how an entry is named in replies.
The service itself: ``SuppressionService`` (protos/petrel/v1/suppression.proto)."""

from __future__ import annotations

from datetime import UTC, datetime

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


def _time(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def entry_dict(entry: suppression_pb2.Suppression) -> dict[str, str | None]:
    """An entry as JSON (the REST API's and the CLI's shape; times RFC 3339 UTC)."""
    return {"address": entry.address, "tenant": entry.tenant, "reason": entry.reason,
            "source": SOURCE_NAMES.get(entry.source, "manual"),
            "created": _time(entry.created_unix_ms) or "",
            "expires": _time(entry.expires_unix_ms),
            "message_id": entry.message_id or None, "detail": entry.detail or None}
