"""Event log files on disk: segment names, webhook cursors, and reading new records in order.

A writer (one process instance of one service) owns a *stream* ``<service>[.<instance>]`` and
appends to its newest segment ``<stream>.<start_unix_ms>.jsonl``; it never writes to an older
segment once a newer one exists, so every segment but the newest is closed. A legacy
``<stream>.jsonl`` counts as the stream's first segment.

A reader's place in a stream is a ``Position`` (segment file name, byte offset after the last
record consumed). ``read_round`` reads what was appended after a set of positions and merges
the streams into one list that keeps each stream's order, orders records by time, and puts a
message's Reception before its other records. Why that is enough for per-message order is
argued in docs/events.md ("Order").

Webhook cursors live in ``<events dir>/cursors/<webhook>.json`` so that writers can see, before
deleting an old segment, whether every webhook has shipped it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
CURSOR_DIR = "cursors"
# Services whose records causally precede every other service's records of the same message
# (a Reception is on disk before the message can be scheduled): the spool writes Receptions
# with the messages it stores; ingress writes the records of refused recipients and reports.
UPSTREAM_SERVICES = frozenset({"ingress", "spool"})
DEFAULT_ROUND_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 64 * 1024


def sanitize_instance(value: str) -> str:
    """An instance id usable inside a file name: letters, digits, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-")


def stream_name(service: str, instance: str = "") -> str:
    if not service or not re.fullmatch(r"[A-Za-z0-9_-]+", service):
        raise ValueError(f"event log name must be letters, digits, _ or -: {service!r}")
    instance = sanitize_instance(instance)
    return f"{service}.{instance}" if instance else service


def service_of(stream: str) -> str:
    return stream.split(".", 1)[0]


@dataclass(frozen=True, order=True)
class Segment:
    stream: str
    start_ms: int
    filename: str = field(compare=False)

    @property
    def stem(self) -> str:
        return self.filename[: -len(SUFFIX)]


def segment_filename(stream: str, start_ms: int) -> str:
    return f"{stream}.{start_ms}{SUFFIX}"


def parse_segment(filename: str) -> Segment | None:
    if not filename.endswith(SUFFIX) or filename.startswith("."):
        return None
    stem = filename[: -len(SUFFIX)]
    head, _, tail = stem.rpartition(".")
    if head and tail.isdigit():
        return Segment(head, int(tail), filename)
    return Segment(stem, 0, filename) if stem else None


def list_segments(directory: str | os.PathLike[str]) -> dict[str, list[Segment]]:
    """Every stream in ``directory`` with its segments, oldest first."""
    streams: dict[str, list[Segment]] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return streams
    for name in names:
        segment = parse_segment(name)
        if segment is not None:
            streams.setdefault(segment.stream, []).append(segment)
    for segments in streams.values():
        segments.sort()
    return streams


# --- positions and cursors -------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    segment: str  # file name of the segment
    offset: int  # bytes of that segment already consumed

    @property
    def start_ms(self) -> int:
        parsed = parse_segment(self.segment)
        return parsed.start_ms if parsed else 0


Positions = dict[str, Position]


def cursor_path(directory: str | os.PathLike[str], webhook: str) -> Path:
    return Path(directory) / CURSOR_DIR / f"{webhook}.json"


def load_cursor(path: Path) -> Positions | None:
    """The positions saved in ``path``, or None when the webhook has no cursor yet."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return {stream: Position(str(p["segment"]), int(p["offset"]))
            for stream, p in data.get("streams", {}).items()}


def save_cursor(path: Path, webhook: str, positions: Mapping[str, Position]) -> None:
    """Replace the cursor atomically and durably (write, fsync, rename, fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"webhook": webhook, "updated_unix_ms": int(time.time() * 1000),
            "streams": {s: {"segment": p.segment, "offset": p.offset}
                        for s, p in sorted(positions.items())}}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(json.dumps(data, indent=1).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def first_needed_ms(directory: str | os.PathLike[str], webhooks: Iterable[str],
                    stream: str) -> float:
    """Segments of ``stream`` starting before this are shipped by every webhook in ``webhooks``
    (``inf`` without webhooks, 0 when one of them has no position in the stream yet)."""
    needed = float("inf")
    for webhook in webhooks:
        try:
            positions = load_cursor(cursor_path(directory, webhook))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable cursor of webhook %s: keeping every segment", webhook)
            return 0
        position = (positions or {}).get(stream)
        if position is None:
            return 0
        needed = min(needed, position.start_ms)
    return needed


def end_positions(directory: str | os.PathLike[str]) -> Positions:
    """The current end of every stream (where a webhook that starts at "newest" begins)."""
    ends: Positions = {}
    for stream, segments in list_segments(directory).items():
        last = segments[-1]
        try:
            with open(Path(directory) / last.filename, "rb") as fh:
                size = complete_length(fh)
        except FileNotFoundError:
            continue
        ends[stream] = Position(last.filename, size)
    return ends


def complete_length(fh: BinaryIO) -> int:
    """Bytes of the open file ``fh`` up to and including its last newline."""
    pos = fh.seek(0, os.SEEK_END)
    while pos > 0:
        step = min(_READ_CHUNK, pos)
        fh.seek(pos - step)
        cut = fh.read(step).rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


# --- reading new records ------------------------------------------------------------------


def sort_key(record: Mapping[str, Any]) -> str:
    """The record's time as a sortable string (``event_time`` has milliseconds)."""
    event_time = record.get("event_time")
    if isinstance(event_time, str):
        return event_time
    timestamp = record.get("timestamp")
    if isinstance(timestamp, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))
    return ""


@dataclass(frozen=True)
class Entry:
    record: dict[str, Any]
    stream: str
    # "<segment stem>:<offset>": where the record starts, unique and stable across restarts.
    event_id: str
    # The stream's position once this record is consumed.
    position: Position
    key: str

    @property
    def type(self) -> str:
        return str(self.record.get("type", ""))

    @property
    def message_id(self) -> str:
        return str(self.record.get("id", ""))


@dataclass
class Round:
    entries: list[Entry]
    # Positions after every entry of the round (and after any skipped bytes).
    end: Positions
    # True when more was on disk than the round read: read again without waiting.
    more: bool = False


Snapshot = dict[str, list[tuple[Segment, int]]]


def snapshot(directory: str | os.PathLike[str]) -> Snapshot:
    """Segments and sizes of every stream; downstream streams are listed and measured before
    upstream ones, so a record in the snapshot finds its upstream predecessors in it too."""
    sizes: Snapshot = {}
    for upstream in (False, True):
        for stream, segments in list_segments(directory).items():
            if (service_of(stream) in UPSTREAM_SERVICES) != upstream:
                continue
            sized = []
            for segment in segments:
                try:
                    sized.append((segment, os.stat(Path(directory) / segment.filename).st_size))
                except FileNotFoundError:  # deleted by retention meanwhile
                    continue
            if sized:
                sizes[stream] = sized
    return sizes


@dataclass
class _StreamRead:
    entries: list[Entry]
    start: Position
    end: Position
    truncated: bool


def _read_stream(directory: Path, stream: str, sized: Sequence[tuple[Segment, int]],
                 start: Position | None, budget: int) -> _StreamRead:
    first = sized[0][0]
    if start is not None and start.start_ms < first.start_ms:
        log.warning("stream %s: segment %s is gone; continuing at %s",
                    stream, start.segment, first.filename)
        start = None
    begin = start or Position(first.filename, 0)
    result = _StreamRead([], begin, begin, False)
    for index, (segment, size) in enumerate(sized):
        if segment.start_ms < begin.start_ms:
            continue
        offset = begin.offset if segment.filename == begin.segment else 0
        following = sized[index + 1][0] if index + 1 < len(sized) else None
        if offset < size:
            if budget <= 0:
                result.truncated = True
                break
            data = _read_lines(directory / segment.filename, offset, size, budget)
            cut = data.rfind(b"\n") + 1
            _parse(data[:cut], stream, segment, offset, result.entries)
            offset += cut
            budget -= cut
            if offset < size:
                if offset + len(data) - cut < size:
                    result.end = Position(segment.filename, offset)
                    result.truncated = True
                    break
                if following is None:  # a record being written: wait for its newline
                    result.end = Position(segment.filename, offset)
                    break
                log.warning("segment %s ends with %d bytes of an unfinished record; skipped",
                            segment.filename, size - offset)
                offset = size
        if following is None:
            result.end = Position(segment.filename, offset)
            break
        # a closed segment fully read: the next place to read is the next segment's start
        result.end = Position(following.filename, 0)
        entries = result.entries
        if entries and entries[-1].position == Position(segment.filename, size):
            entries[-1] = replace(entries[-1], position=result.end)
    return result


def _read_lines(path: Path, offset: int, size: int, budget: int) -> bytes:
    """Up to ``budget`` bytes from ``offset`` (never past ``size``), extended to hold at least
    one whole line when the first line is longer than the budget."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(min(size - offset, budget))
        while b"\n" not in data and offset + len(data) < size:
            more = fh.read(min(_READ_CHUNK, size - offset - len(data)))
            if not more:
                break
            data += more
    return data


def _parse(data: bytes, stream: str, segment: Segment, offset: int,
           out: list[Entry]) -> None:
    start = 0
    while start < len(data):
        end = data.index(b"\n", start) + 1
        line = data[start:end].strip()
        if line:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                out.append(Entry(record, stream, f"{segment.stem}:{offset + start}",
                                 Position(segment.filename, offset + end), sort_key(record)))
            else:
                log.warning("segment %s: skipped a malformed line at offset %d",
                            segment.filename, offset + start)
        start = end


def merge(streams: Mapping[str, Sequence[Entry]], watermark: str | None = None) -> list[Entry]:
    """One list of the streams' entries: each stream's order is kept; otherwise oldest first
    (upstream first on equal times), except that a record whose message has a Reception still
    waiting in another stream lets that stream go first. Stops before an entry newer than
    ``watermark`` (after at least one entry)."""
    heads = {stream: 0 for stream, entries in streams.items() if entries}
    waiting: dict[str, list[str]] = {}
    for stream, entries in streams.items():
        for entry in entries:
            if entry.type == "Reception":
                waiting.setdefault(entry.message_id, []).append(stream)

    def rank(stream: str) -> tuple[str, int, str]:
        upstream = service_of(stream) in UPSTREAM_SERVICES
        return (streams[stream][heads[stream]].key, 0 if upstream else 1, stream)

    merged: list[Entry] = []
    while heads:
        stream = min(heads, key=rank)
        tried = {stream}
        while True:
            entry = streams[stream][heads[stream]]
            holders = waiting.get(entry.message_id) if entry.type != "Reception" else None
            if not holders or holders[0] in tried:
                break
            stream = holders[0]
            tried.add(stream)
        entry = streams[stream][heads[stream]]
        if watermark is not None and merged and entry.key > watermark:
            break
        merged.append(entry)
        if entry.type == "Reception":
            holders = waiting[entry.message_id]
            holders.remove(stream)
            if not holders:
                del waiting[entry.message_id]
        heads[stream] += 1
        if heads[stream] == len(streams[stream]):
            del heads[stream]
    return merged


def read_round(directory: str | os.PathLike[str], start: Mapping[str, Position], *,
               max_bytes: int = DEFAULT_ROUND_BYTES) -> Round:
    """Records appended after ``start`` (at most about ``max_bytes`` per stream), merged.

    Blocking: call it in a worker thread."""
    directory = Path(directory)
    reads = {stream: _read_stream(directory, stream, sized, start.get(stream), max_bytes)
             for stream, sized in snapshot(directory).items()}
    truncated_keys = [r.entries[-1].key for r in reads.values() if r.truncated and r.entries]
    watermark = min(truncated_keys) if truncated_keys else None
    entries = merge({s: r.entries for s, r in reads.items()}, watermark)
    emitted: dict[str, list[Entry]] = {}
    for entry in entries:
        emitted.setdefault(entry.stream, []).append(entry)
    end: Positions = dict(start)
    for stream, read in reads.items():
        taken = emitted.get(stream, [])
        if len(taken) == len(read.entries):
            end[stream] = read.end
        else:
            end[stream] = taken[-1].position if taken else read.start
    more = len(entries) < sum(len(r.entries) for r in reads.values()) or any(
        r.truncated for r in reads.values())
    return Round(entries, end, more)
