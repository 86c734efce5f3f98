"""Ids, SMTP reply parsing, event records and group commit."""

import asyncio
import json
from pathlib import Path

import pytest

from petrel.batching import GroupCommitter
from petrel.events import EventLog, make_record, read_events, trace_id_of
from petrel.ids import id_timestamp_ms, is_message_id, new_message_id
from petrel.smtp_replies import parse_reply


def test_ids_are_time_ordered_hex() -> None:
    first, second = new_message_id(1_000), new_message_id(2_000)
    assert is_message_id(first) and first < second
    assert id_timestamp_ms(second) == 2_000
    assert not is_message_id("XYZ")


def test_parse_reply() -> None:
    reply = parse_reply("550 5.1.1 No such user here")
    assert (reply.code, reply.enhanced_code, reply.text) == (550, "5.1.1", "No such user here")
    assert reply.is_permanent and str(reply) == "550 5.1.1 No such user here"
    plain = parse_reply("421 closing")
    assert plain.is_transient and plain.enhanced_code == ""
    with pytest.raises(ValueError):
        parse_reply("hello")


def test_record_shape_matches_kumomta_fields() -> None:
    record = make_record("Bounce", message_id="a" * 32, sender="s@x", recipient="r@y",
                         queue="y", site="mx.y", size=10, code=550, enhanced_code="5.1.1",
                         content="no", num_attempts=1, bounce_classification="InvalidRecipient",
                         trace_context={"traceparent": f"00-{'b' * 32}-{'c' * 16}-01"})
    assert record["response"] == {"code": 550, "content": "no",
                                  "enhanced_code": {"class": 5, "subject": 1, "detail": 1}}
    assert record["trace_id"] == "b" * 32
    assert trace_id_of({}) == ""
    json.dumps(record)
    with pytest.raises(ValueError):
        make_record("Nope", message_id="x", sender="", recipient="")


async def test_event_log_appends_durably(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "test")
    records = [make_record("Reception", message_id=f"{i:032x}", sender="s", recipient="r")
               for i in range(50)]
    await asyncio.gather(*(log.write([r]) for r in records))
    await log.close()
    assert [r["id"] for r in read_events(tmp_path)] == [r["id"] for r in records]


async def test_group_commit_batches_concurrent_submitters() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=64)
    results = await asyncio.gather(*(committer.submit(i) for i in range(200)))
    await committer.close()
    assert results == [i * 2 for i in range(200)]
    assert len(flushed) < 20 and all(len(b) <= 64 for b in flushed)


async def test_group_commit_failure_reaches_every_submitter_of_the_batch() -> None:
    async def flush(items: list[int]) -> list[int]:
        raise OSError("disk gone")

    committer: GroupCommitter[int, int] = GroupCommitter(flush)
    outcomes = await asyncio.gather(*(committer.submit(i) for i in range(5)),
                                    return_exceptions=True)
    await committer.close()
    assert all(isinstance(o, OSError) for o in outcomes)


async def test_submit_many_answers_each_item_across_flushes() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        if 13 in items:
            raise OSError("bad batch")
        return [i * 2 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(flush, max_batch=10)
    results = await committer.submit_many(list(range(25)))
    await committer.close()
    assert [len(b) for b in flushed] == [10, 10, 5]
    assert results[:10] == [i * 2 for i in range(10)]
    assert all(isinstance(r, OSError) for r in results[10:20])
    assert results[20:] == [i * 2 for i in range(20, 25)]
