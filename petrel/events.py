"""Disposition events: KumoMTA-style log records written as JSON lines.

Record types: Reception, Delivery, TransientFailure, Bounce, Expiration, AdminBounce, OOB,
Feedback, Rejection. Field names follow KumoMTA's log records (id, sender, recipient, queue,
site, size, response{code, enhanced_code, content}, num_attempts, bounce_classification,
timestamp, ...) plus Petrel's tenant, campaign and trace_id.

``EventLog.write`` returns only once the records are flushed and fsynced, so a caller may
remove a message from the spool right after its final event was written.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from petrel.batching import GroupCommitter

RECORD_TYPES = (
    "Reception", "Delivery", "TransientFailure", "Bounce", "Expiration", "AdminBounce",
    "OOB", "Feedback", "Rejection",
)


def trace_id_of(trace_context: Mapping[str, str]) -> str:
    """The 32-hex trace id inside a W3C ``traceparent`` carrier, or ``""``."""
    parts = trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def enhanced_code_dict(enhanced: str) -> dict[str, int] | None:
    """``"5.1.1"`` → ``{"class": 5, "subject": 1, "detail": 1}`` (KumoMTA's shape)."""
    try:
        cls, subject, detail = (int(p) for p in enhanced.split("."))
    except ValueError:
        return None
    return {"class": cls, "subject": subject, "detail": detail}


def make_record(record_type: str, *, message_id: str, sender: str, recipient: str,
                queue: str = "", site: str = "", size: int = 0, code: int = 0,
                enhanced_code: str = "", content: str = "", num_attempts: int = 0,
                bounce_classification: str = "", tenant: str = "", campaign: str = "",
                trace_context: Mapping[str, str] | None = None,
                meta: Mapping[str, str] | None = None, created_ms: int = 0,
                peer: str = "", egress_source: str = "", reception_protocol: str = "",
                timestamp: float | None = None, **extra: Any) -> dict[str, Any]:
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record type {record_type!r}")
    now = time.time() if timestamp is None else timestamp
    record: dict[str, Any] = {
        "type": record_type,
        "id": message_id,
        "sender": sender,
        "recipient": recipient,
        "queue": queue,
        "site": site,
        "size": size,
        "response": {
            "code": code,
            "enhanced_code": enhanced_code_dict(enhanced_code),
            "content": content,
        },
        "peer_address": {"addr": peer} if peer else None,
        "timestamp": int(now),
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
        "created": created_ms // 1000 if created_ms else None,
        "num_attempts": num_attempts,
        "bounce_classification": bounce_classification or "Uncategorized",
        "egress_source": egress_source or None,
        "reception_protocol": reception_protocol or None,
        "tenant": tenant or None,
        "campaign": campaign or None,
        "meta": dict(meta or {}),
        "trace_id": trace_id_of(trace_context or {}) or None,
    }
    record.update(extra)
    return record


class EventLog:
    """Append-only JSON-lines file ``<dir>/<name>.jsonl`` with group-committed fsync."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.path = Path(directory) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the log
        self._committer: GroupCommitter[bytes, None] = GroupCommitter(self._flush)

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append ``records``; returns once they are on disk."""
        if not records:
            return
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        await self._committer.submit(data)

    async def _flush(self, chunks: list[bytes]) -> list[None]:
        await asyncio.to_thread(self._write_sync, b"".join(chunks))
        return [None] * len(chunks)

    def _write_sync(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    async def close(self) -> None:
        await self._committer.close()
        self._file.close()


def read_events(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record in every ``*.jsonl`` file of ``directory`` (tests and tools)."""
    records: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    records.append(json.loads(line))
    return records
