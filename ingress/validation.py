"""Validation of ``InjectMessageRequest``: each problem names the offending field.

``validate_inject`` returns the content ready for preparation (line endings normalised, see
``ingress.message.normalize_line_endings``) or raises ``FieldError``.
"""

from __future__ import annotations

import ipaddress

from ingress.addresses import is_valid_mailbox
from ingress.message import InvalidMessage, check_label, normalize_line_endings
from petrel.v1 import ingress_pb2

MAX_IDEMPOTENCY_KEY = 256
MAX_META_BYTES = 64 * 1024
FRONT_END_PROTOCOLS = ("", "GRPC", "HTTP")


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_inject(request: ingress_pb2.InjectMessageRequest, max_message_size: int,
                    max_recipients: int) -> bytes:
    if request.sender and not is_valid_mailbox(request.sender):
        raise FieldError("sender", f"not a valid address: {request.sender!r}")
    if not request.recipients:
        raise FieldError("recipients", "at least one recipient is required")
    if len(request.recipients) > max_recipients:
        raise FieldError("recipients", f"more than {max_recipients} recipients")
    for index, rcpt in enumerate(request.recipients):
        if not is_valid_mailbox(rcpt):
            raise FieldError(f"recipients[{index}]", f"not a valid address: {rcpt!r}")
    if not request.content:
        raise FieldError("content", "must not be empty")
    if len(request.content) > max_message_size:
        raise FieldError("content", f"larger than the limit of {max_message_size} bytes")
    try:
        content = normalize_line_endings(request.content)
    except InvalidMessage as exc:
        raise FieldError("content", str(exc)) from exc
    if len(content) > max_message_size:
        raise FieldError("content", f"larger than the limit of {max_message_size} bytes")
    for name in ("tenant", "campaign"):
        try:
            check_label(getattr(request, name), name)
        except InvalidMessage as exc:
            raise FieldError(name, str(exc)) from exc
    if len(request.idempotency_key.encode()) > MAX_IDEMPOTENCY_KEY:
        raise FieldError("idempotency_key", f"longer than {MAX_IDEMPOTENCY_KEY} bytes")
    if sum(len(k) + len(v) for k, v in request.meta.items()) > MAX_META_BYTES:
        raise FieldError("meta", f"larger than {MAX_META_BYTES} bytes")
    if request.reception_protocol not in FRONT_END_PROTOCOLS:
        raise FieldError("reception_protocol", "expected \"HTTP\", \"GRPC\" or empty")
    if request.peer_address:
        try:
            ipaddress.ip_address(request.peer_address)
        except ValueError as exc:
            raise FieldError("peer_address", "not an IP address") from exc
    return content
