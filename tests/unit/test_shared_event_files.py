"""Event log files: segment names, rotation, retention, cursors, reading and merging rounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from petrel.config import load_config
from petrel.event_segments import (
    Entry,
    Position,
    cursor_path,
    end_positions,
    first_needed_ms,
    list_segments,
    load_cursor,
    merge,
    parse_segment,
    read_round,
    save_cursor,
    stream_name,
)
from petrel.events import EventLog, make_record, read_events


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rec(record_type: str, message: int, at: float, recipient: str = "r@x") -> dict[str, Any]:
    return make_record(record_type, message_id=f"{message:032x}", sender="s@x",
                       recipient=recipient, timestamp=at)


def test_names_sort_in_write_order_and_parse_back() -> None:
    assert stream_name("ingress", "web-1.example.com") == "ingress.web-1-example-com"
    assert stream_name("scheduler") == "scheduler"
    with pytest.raises(ValueError):
        stream_name("in.gress")
    segment = parse_segment("ingress.web-1.1700000000123.jsonl")
    assert segment is not None
    assert (segment.stream, segment.start_ms) == ("ingress.web-1", 1_700_000_000_123)
    legacy = parse_segment("ingress.jsonl")
    assert legacy is not None and (legacy.stream, legacy.start_ms) == ("ingress", 0)
    assert parse_segment("cursors") is None and parse_segment("x.json") is None


async def test_rotates_by_size_without_splitting_records(tmp_path: Path) -> None:
    clock = Clock()
    log = EventLog(tmp_path, "ingress", instance_id="a", max_file_bytes=1000, clock=clock)
    records = [rec("Reception", i, clock.now) for i in range(40)]
    for record in records:
        await log.write([record])
        clock.now += 0.001
    big = [rec("Reception", 100 + i, clock.now) for i in range(6)]
    await log.write(big)  # one group bigger than a segment: written whole
    await log.close()
    segments = list_segments(tmp_path)["ingress.a"]
    assert len(segments) > 5
    for segment in segments[:-1]:
        data = (tmp_path / segment.filename).read_bytes()
        assert data.endswith(b"\n")
        assert len(data) <= 1000
    assert (tmp_path / segments[-1].filename).stat().st_size > 1000
    assert [r["id"] for r in read_events(tmp_path)] == [r["id"] for r in records + big]


async def test_rotates_by_age_and_retention_spares_unshipped_segments(tmp_path: Path) -> None:
    clock = Clock()
    log = EventLog(tmp_path, "scheduler", max_file_age=60, retention=3600,
                   webhooks=["hook"], clock=clock)
    for i in range(5):
        await log.write([rec("Delivery", i, clock.now)])
        clock.now += 61
    assert len(list_segments(tmp_path)["scheduler"]) == 5
    segments = list_segments(tmp_path)["scheduler"]
    clock.now += 7200
    await log.write([rec("Delivery", 9, clock.now)])  # rotates; everything old is expired
    assert len(list_segments(tmp_path)["scheduler"]) == 6, "no cursor: nothing may go"
    save_cursor(cursor_path(tmp_path, "hook"), "hook",
                {"scheduler": Position(segments[3].filename, 10)})
    clock.now += 61
    await log.write([rec("Delivery", 10, clock.now)])
    left = list_segments(tmp_path)["scheduler"]
    assert [s.filename for s in left[:2]] == [s.filename for s in segments[3:]]
    assert len(left) == 4
    await log.close()


async def test_restart_drops_unfinished_line_and_appends(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "ingress")
    await log.write([rec("Reception", 1, 1.0)])
    await log.close()
    path = log.path
    _write(path, [], tail=b'{"type":"Recep')  # a crash in the middle of a write
    again = EventLog(tmp_path, "ingress")
    assert again.path == path
    await again.write([rec("Reception", 2, 2.0)])
    await again.close()
    assert [r["id"][-1] for r in read_events(tmp_path)] == ["1", "2"]


def test_from_config_names_the_instance(tmp_path: Path) -> None:
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "events": {
        "instance_id": "replica 7", "max_file_bytes": 5000}})
    log = EventLog.from_config(config, "ingress")
    assert log.stream == "ingress.replica-7" and log.max_file_bytes == 5000
    assert log.path.parent == tmp_path / "events"
    assert EventLog.from_config(load_config(env={}, overrides={"data_dir": str(tmp_path)}),
                                "ingress").stream.startswith("ingress.")


def test_cursor_round_trip_and_needed_segments(tmp_path: Path) -> None:
    path = cursor_path(tmp_path, "hook")
    assert load_cursor(path) is None
    positions = {"ingress.a": Position("ingress.a.2000.jsonl", 17)}
    save_cursor(path, "hook", positions)
    assert load_cursor(path) == positions
    assert json.loads(path.read_text())["webhook"] == "hook"
    assert first_needed_ms(tmp_path, ["hook"], "ingress.a") == 2000
    assert first_needed_ms(tmp_path, ["hook"], "scheduler") == 0
    assert first_needed_ms(tmp_path, ["hook", "other"], "ingress.a") == 0
    assert first_needed_ms(tmp_path, [], "ingress.a") == float("inf")


def _write(path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> None:
    with open(path, "ab") as fh:
        for record in records:
            fh.write(json.dumps(record).encode() + b"\n")
        fh.write(tail)


def test_round_reads_from_positions_across_segments(tmp_path: Path) -> None:
    _write(tmp_path / "scheduler.1000.jsonl", [rec("Delivery", 1, 10.0)])
    _write(tmp_path / "scheduler.2000.jsonl", [rec("Delivery", 2, 20.0)], tail=b'{"ty')
    _write(tmp_path / "ingress.1000.jsonl", [rec("Reception", 1, 5.0), rec("Reception", 2, 6.0)])
    first = read_round(tmp_path, {})
    assert [(e.type, e.message_id[-1]) for e in first.entries] == [
        ("Reception", "1"), ("Reception", "2"), ("Delivery", "1"), ("Delivery", "2")]
    assert not first.more
    size = (tmp_path / "scheduler.2000.jsonl").stat().st_size
    assert first.end["scheduler"] == Position("scheduler.2000.jsonl", size - 4)
    # the last record of a closed segment points at the next segment's start
    assert first.entries[2].position == Position("scheduler.2000.jsonl", 0)
    assert first.entries[2].event_id == "scheduler.1000:0"
    assert read_round(tmp_path, first.end).entries == []
    with open(tmp_path / "scheduler.2000.jsonl", "ab") as fh:
        fh.write(b'pe":"Bounce","id":"3","timestamp":30}\n')
    assert [e.message_id for e in read_round(tmp_path, first.end).entries] == ["3"]


def test_unfinished_line_in_a_closed_segment_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "scheduler.1000.jsonl", [rec("Delivery", 1, 10.0)], tail=b'{"broken')
    _write(tmp_path / "scheduler.2000.jsonl", [rec("Delivery", 2, 20.0)])
    found = read_round(tmp_path, {})
    assert [e.message_id[-1] for e in found.entries] == ["1", "2"]


def test_round_limited_in_bytes_keeps_time_order(tmp_path: Path) -> None:
    _write(tmp_path / "ingress.1.jsonl", [rec("Reception", i, float(i)) for i in range(50)])
    _write(tmp_path / "scheduler.1.jsonl", [rec("Delivery", i, i + 0.5) for i in range(50)])
    seen: list[Entry] = []
    cursor: dict[str, Position] = {}
    for _ in range(100):
        found = read_round(tmp_path, cursor, max_bytes=2000)
        seen += found.entries
        cursor = found.end
        if not found.more:
            break
    assert len(seen) == 100 and len({e.event_id for e in seen}) == 100
    assert [e.key for e in seen] == sorted(e.key for e in seen)
    assert read_round(tmp_path, cursor).entries == []


def _entries(stream: str, items: list[tuple[str, int, str]]) -> list[Entry]:
    return [Entry({"type": t, "id": str(m)}, stream, f"{stream}:{i}",
                  Position(f"{stream}.1.jsonl", i + 1), key)
            for i, (t, m, key) in enumerate(items)]


def test_merge_orders_by_time_and_keeps_each_stream_in_order() -> None:
    ingress = _entries("ingress.a", [("Reception", 1, "01"), ("Reception", 2, "03")])
    scheduler = _entries("scheduler", [("Delivery", 1, "02"), ("TransientFailure", 3, "01"),
                                       ("Delivery", 2, "04")])
    merged = merge({"scheduler": scheduler, "ingress.a": ingress})
    assert [(e.type, e.message_id) for e in merged] == [
        ("Reception", "1"), ("Delivery", "1"), ("TransientFailure", "3"), ("Reception", "2"),
        ("Delivery", "2")]


def test_merge_puts_reception_first_even_when_clocks_disagree() -> None:
    ingress = _entries("ingress.b", [("Reception", 7, "01"), ("Reception", 8, "09")])
    scheduler = _entries("scheduler", [("Delivery", 8, "05"), ("Delivery", 7, "06")])
    merged = merge({"ingress.b": ingress, "scheduler": scheduler})
    order = [(e.type, e.message_id) for e in merged]
    assert order.index(("Reception", "8")) < order.index(("Delivery", "8"))
    assert order.index(("Reception", "7")) < order.index(("Delivery", "7"))


def test_end_positions_skip_unfinished_line(tmp_path: Path) -> None:
    _write(tmp_path / "ingress.5.jsonl", [rec("Reception", 1, 1.0)], tail=b"{")
    size = (tmp_path / "ingress.5.jsonl").stat().st_size
    assert end_positions(tmp_path) == {"ingress": Position("ingress.5.jsonl", size - 1)}


async def test_two_live_writers_never_share_a_stream(tmp_path: Path) -> None:
    first = EventLog(tmp_path, "ingress", instance_id="host")
    second = EventLog(tmp_path, "ingress", instance_id="host")
    assert first.stream == "ingress.host"
    assert second.stream.startswith("ingress.host-") and second.path != first.path
    await first.write([rec("Reception", 1, 1.0)])
    await second.write([rec("Reception", 2, 2.0)])
    await first.close()
    await second.close()
    again = EventLog(tmp_path, "ingress", instance_id="host")
    assert again.stream == "ingress.host"  # released on close
    await again.close()
    assert sorted(r["id"][-1] for r in read_events(tmp_path)) == ["1", "2"]
