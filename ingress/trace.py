"""W3C trace context capture (https://www.w3.org/TR/trace-context/).

Every message gets a carrier (``{"traceparent": ..., "tracestate": ...}``) stored in its
metadata: the caller's when a valid ``traceparent`` was given, otherwise a fresh one, so every
later stage (and every event) can refer to one trace per message.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
MAX_TRACESTATE = 512


def parse_traceparent(value: str) -> str | None:
    """The normalised ``traceparent`` or ``None`` when it is not a usable one."""
    match = _TRACEPARENT.match(value.strip().lower())
    if not match:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return match.group(0)


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def carrier(traceparent: str, tracestate: str = "") -> dict[str, str] | None:
    """A trace carrier from raw values, or ``None`` when ``traceparent`` is not valid.
    ``tracestate`` is kept only with a valid parent and when reasonably short."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    out = {"traceparent": parent}
    state = tracestate.strip()
    if state and len(state) <= MAX_TRACESTATE and state.isprintable():
        out["tracestate"] = state
    return out


def carrier_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str] | None:
    """Trace carrier from gRPC invocation metadata (keys are lower-case there)."""
    values = {key: value for key, value in metadata if isinstance(value, str)}
    return carrier(values.get("traceparent", ""), values.get("tracestate", ""))


def choose(*candidates: dict[str, str] | None) -> dict[str, str]:
    """The first valid carrier among ``candidates``, else a fresh trace."""
    for candidate in candidates:
        if candidate:
            return dict(candidate)
    return {"traceparent": new_traceparent()}
