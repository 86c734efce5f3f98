"""RFC 3464 delivery status notifications: the machine-readable part.

``parse_delivery_status(text)`` returns the per-message fields and one ``DsnRecipient`` per
recipient block. Blocks are split on blank lines as the RFC says, and also whenever a new
``Final-Recipient`` starts, because some MTAs leave the blank lines out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bounce.addresses import clean_address
from bounce.fields import parse_fields

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_RECIPIENT_FIELDS = frozenset({
    "final-recipient", "original-recipient", "action", "status", "diagnostic-code",
    "remote-mta", "last-attempt-date", "will-retry-until", "final-log-id", "x-display-name",
    "x-supplementary-info", "x-actual-recipient",
})


@dataclass
class DsnRecipient:
    final_recipient: str = ""
    original_recipient: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""
    diagnostic_type: str = ""
    remote_mta: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.final_recipient or self.original_recipient


@dataclass
class DeliveryStatus:
    message_fields: dict[str, str]
    recipients: list[DsnRecipient]


def normalize_status(value: str) -> str:
    """``"5.0.0 (permanent failure)"`` → ``"5.0.0"``; ``"5.1.01"`` → ``"5.1.1"``;
    "" when there is no status in the text."""
    match = _STATUS.search(value)
    if not match:
        return ""
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def _diagnostic(value: str) -> tuple[str, str]:
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][\w.-]*\s*", kind):
        return kind.strip().lower(), rest.strip()
    return "", value.strip()


def parse_delivery_status(text: str) -> DeliveryStatus:
    message_fields: dict[str, str] = {}
    recipients: list[DsnRecipient] = []
    current: DsnRecipient | None = None
    for item in parse_fields(text):
        if item is None:
            current = None
            continue
        name, value = item
        if name not in _RECIPIENT_FIELDS:
            if current is None:
                message_fields.setdefault(name, value)
            else:
                current.extra.setdefault(name, value)
            continue
        # Without blank lines between recipients, a field seen twice starts the next one.
        starts_new = current is None or bool(
            (name == "final-recipient" and current.final_recipient)
            or (name == "original-recipient" and current.original_recipient)
            or (name == "action" and current.action)
            or (name == "status" and current.status))
        if starts_new:
            current = DsnRecipient()
            recipients.append(current)
        assert current is not None
        if name == "final-recipient":
            current.final_recipient = clean_address(value)
        elif name == "original-recipient":
            current.original_recipient = clean_address(value)
        elif name == "action":
            current.action = value.split()[0].lower().strip(";") if value.split() else ""
        elif name == "status":
            current.status = normalize_status(value)
        elif name == "diagnostic-code":
            current.diagnostic_type, current.diagnostic = _diagnostic(value)
        elif name == "remote-mta":
            current.remote_mta = _diagnostic(value)[1]
        else:
            current.extra[name] = value
    recipients = [r for r in recipients if r.address]
    return DeliveryStatus(message_fields, recipients)
