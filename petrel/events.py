"""Disposition events: KumoMTA-style log records written as JSON lines.

Record types: Reception, Delivery, TransientFailure, Bounce, Expiration, AdminBounce, OOB,
Feedback, Rejection. Field names follow KumoMTA's log records (id, sender, recipient, queue,
site, size, response{code, enhanced_code, content}, num_attempts, bounce_classification,
timestamp, ...) plus Petrel's tenant, campaign and trace_id.

``EventLog.write`` returns only once the records are flushed and fsynced, so a caller may
remove a message from the spool right after its final event was written. ``encode_records``
gives the bytes ``EventLog.append`` takes from a thread that already does blocking I/O (the
spool's writer appends the Reception records that ingress sends along with a message).
Files, rotation and retention: ``EventLog`` below and ``petrel.event_segments``; shipping to
webhooks: ``petrel.webhooks``; the whole story: docs/events.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from petrel.batching import GroupCommitter
from petrel.event_segments import (
    Segment,
    complete_length,
    first_needed_ms,
    fsync_directory,
    list_segments,
    segment_filename,
    stream_name,
)

if TYPE_CHECKING:
    from petrel.config import Config

log = logging.getLogger(__name__)

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


_second_shown: tuple[int, str] = (-1, "")


def event_time(now: float) -> str:
    """``now`` as KumoMTA's ``event_time``, ``2026-11-26T17:34:37.123Z`` (UTC, milliseconds).
    The part down to the second is formatted once per second."""
    global _second_shown
    second = int(now)
    shown, text = _second_shown
    if shown != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_shown = (second, text)
    return f"{text}.{int(now * 1000) % 1000:03d}Z"


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
        "event_time": event_time(now),
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


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """``records`` as the JSON lines an event log holds (one per record, each ending in LF,
    UTF-8). orjson writes them (about ten times faster than ``json``, once per message on the hot
    path); a record it refuses, such as text holding a lone surrogate from a server's
    undecodable reply, is written by ``json`` with escapes instead."""
    return b"".join(_encode_record(r) for r in records)


def _encode_record(record: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError: not UTF-8 text, or not a JSON type
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class EventLog:
    """Append-only JSON-lines log of one writer, in segments
    ``<dir>/<name>[.<instance>].<start_unix_ms>.jsonl`` (see ``petrel.event_segments``).

    ``write`` group-commits: records are written whole and fsynced before it returns. A new
    segment starts before a write that would take the current one past ``max_file_bytes``, or
    once it is ``max_file_age`` seconds old (0 disables either); a record is never split. After
    a rotation, closed segments that ended more than ``retention`` seconds ago are deleted,
    oldest first, unless a webhook named in ``webhooks`` has not shipped them yet. A restarted
    writer drops an unfinished last line (never acknowledged) and appends to its newest segment.
    Two live writers never share a stream: a second one adds its process id to the instance.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str, *, instance_id: str = "",
                 max_file_bytes: int = 0, max_file_age: float = 0.0, retention: float = 0.0,
                 webhooks: Sequence[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stream, self._lock_fd = _claim_stream(self.directory, name, instance_id)
        self.max_file_bytes = max_file_bytes
        self.max_file_age = max_file_age
        self.retention = retention
        self.webhooks = tuple(webhooks)
        self._clock = clock
        self._file: BinaryIO
        self._segment: Segment
        self._size = 0
        self._open_newest()
        self._apply_retention()
        self._committer: GroupCommitter[bytes, None] = GroupCommitter(self._flush)

    @classmethod
    def from_config(cls, config: Config, name: str) -> EventLog:
        """The log of service ``name`` as configured in ``[events]``."""
        events = config.events
        shipped = events.webhook_host != "none"
        return cls(config.events_dir, name,
                   instance_id=events.instance_id or socket.gethostname(),
                   max_file_bytes=events.max_file_bytes, max_file_age=events.max_file_age,
                   retention=events.retention,
                   webhooks=[w.name for w in events.webhooks] if shipped else ())

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self.directory / self._segment.filename

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append ``records``; returns once they are on disk."""
        if not records:
            return
        await self._committer.submit(encode_records(records))

    async def _flush(self, chunks: list[bytes]) -> list[None]:
        await asyncio.to_thread(self.append, b"".join(chunks))
        return [None] * len(chunks)

    def append(self, data: bytes) -> None:
        """Append whole JSON lines (``encode_records``) and fsync them; blocking. Calls must
        not overlap each other or ``write`` (one writing thread at a time)."""
        now = self._clock()
        if self._size and self._rotation_due(len(data), now):
            self._file.close()
            self._create_segment(now)
            self._apply_retention()
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size += len(data)

    def _rotation_due(self, incoming: int, now: float) -> bool:
        if self.max_file_bytes and self._size + incoming > self.max_file_bytes:
            return True
        age = now - self._segment.start_ms / 1000
        return bool(self.max_file_age) and age >= self.max_file_age

    def _open_newest(self) -> None:
        segments = list_segments(self.directory).get(self.stream)
        if not segments:
            self._create_segment(self._clock())
            return
        self._segment = segments[-1]
        path = self.directory / self._segment.filename
        self._file = open(path, "r+b")  # noqa: SIM115 - lives as long as the log
        self._size = self._file.seek(0, os.SEEK_END)
        complete = complete_length(self._file)
        if complete < self._size:
            # the tail of a write that crashed before its fsync returned: never acknowledged
            self._file.truncate(complete)
            os.fsync(self._file.fileno())
            self._size = complete
        self._file.seek(self._size)

    def _create_segment(self, now: float) -> None:
        existing = list_segments(self.directory).get(self.stream, [])
        start_ms = max(int(now * 1000), existing[-1].start_ms + 1 if existing else 0)
        while True:
            self._segment = Segment(self.stream, start_ms, segment_filename(self.stream, start_ms))
            try:
                self._file = open(self.directory / self._segment.filename, "xb")  # noqa: SIM115
                break
            except FileExistsError:
                start_ms += 1
        self._size = 0
        fsync_directory(self.directory)

    def _apply_retention(self) -> None:
        if self.retention <= 0:
            return
        segments = list_segments(self.directory).get(self.stream, [])
        horizon_ms = (self._clock() - self.retention) * 1000
        needed_ms = first_needed_ms(self.directory, self.webhooks, self.stream)
        for segment, following in itertools.pairwise(segments):
            if following.start_ms > horizon_ms or segment.start_ms >= needed_ms:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / segment.filename)

    async def close(self) -> None:
        await self._committer.close()
        self._file.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _claim_stream(directory: Path, name: str, instance_id: str) -> tuple[str, int | None]:
    """The stream this writer owns, locked (``flock`` on ``.<stream>.lock``) for its life.
    When another live process holds ``<name>.<instance_id>`` (replicas on one host with the
    same host name), the process id is added, so two writers never share a file."""
    pid = os.getpid()
    candidates = [instance_id, f"{instance_id}-{pid}",
                  *(f"{instance_id}-{pid}-{n}" for n in range(2, 100))]
    for candidate in candidates:
        stream = stream_name(name, candidate)
        fd = os.open(directory / f".{stream}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except OSError:  # a file system without flock: nothing to enforce with
            os.close(fd)
            return stream, None
        if candidate != instance_id:
            log.warning("event log %s is written by another process; this one writes %s "
                        "(set events.instance_id per replica)",
                        stream_name(name, instance_id), stream)
        return stream, fd
    raise RuntimeError(f"no free event log name for {name!r} in {directory}")


def read_events(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record in every segment of ``directory``, stream by stream, oldest segment first
    (tests and tools). An unfinished last line is left out."""
    records: list[dict[str, Any]] = []
    streams = list_segments(directory)
    for stream in sorted(streams):
        for segment in streams[stream]:
            try:
                data = (Path(directory) / segment.filename).read_bytes()
            except FileNotFoundError:
                continue
            for line in data[:data.rfind(b"\n") + 1].split(b"\n"):
                if line.strip():
                    records.append(json.loads(line))
    return records
