"""W3C Trace Context headers of incoming HTTP requests (https://www.w3.org/TR/trace-context/).

The gateway does not start traces of its own here; it passes the caller's context on to ingress
(request field and gRPC metadata) so the message's trace starts at the caller.
"""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def valid_traceparent(value: str | None) -> str:
    """The header value when it is a valid ``traceparent``, else "" (the spec says an invalid
    one is ignored, as if absent)."""
    if not value:
        return ""
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if not match:
        return ""
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return ""
    if version == "00" and rest:
        return ""
    return value


def valid_tracestate(value: str | None, max_length: int = 512) -> str:
    """``tracestate`` travels only with a valid ``traceparent``; oversized values are dropped."""
    if not value or len(value) > max_length or "\n" in value or "\r" in value:
        return ""
    return value.strip()
