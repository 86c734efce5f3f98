"""Message ids: 32 lower-case hex digits, ordered by creation time.

The first 12 digits are the creation time in unix milliseconds, the remaining 20 are random,
so ids sort in arrival order (the spool enumerates in that order) and the creation time of any
message can be read from its id without touching the spool.
"""

from __future__ import annotations

import re
import secrets
import time

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def new_message_id(now_ms: int | None = None) -> str:
    """Return a fresh time-ordered message id."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(10)}"


def id_timestamp_ms(message_id: str) -> int:
    """Creation time (unix ms) encoded in ``message_id``."""
    return int(message_id[:12], 16)


def is_message_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
