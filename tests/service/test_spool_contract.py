"""One contract suite for every spool backend: the backend interface itself, then the gRPC
service on top of it (real server on a free port in-process, real RocksDB under tmp_path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from petrel.config import load_config
from petrel.events import EventLog, encode_records, make_record, read_events
from petrel.ids import new_message_id
from petrel.rpc import StreamCaller, create_channel, create_server
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.backend import (
    PutOp,
    QuarantineOp,
    RemoveOp,
    ReplaceMetaOp,
    SpoolBackend,
    open_backend,
)
from spool.server import SERVICE_NAME, SpoolServicer
from spool.store import Spool

BACKENDS = ["memory", "rocksdb"]
TIMEOUT = 10.0


def open_named(name: str, path: Path) -> SpoolBackend:
    config = load_config(env={}, overrides={"spool": {"backend": name, "path": str(path)}})
    return open_backend(config)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpoolBackend]:
    store = open_named(request.param, tmp_path / "spool")
    yield store
    store.close()


def put_op(message_id: str, body: bytes = b"body", key: str = "", sender: str = "") -> PutOp:
    meta = common_pb2.MessageMeta(id=message_id, idempotency_key=key, sender=sender,
                                  size=len(body))
    return PutOp(message_id, meta.SerializeToString(), body, key)


def ids(count: int) -> list[str]:
    return [f"{i:032x}" for i in range(1, count + 1)]


# --- backend contract ------------------------------------------------------------------------

def test_backend_name_matches_config(backend: SpoolBackend) -> None:
    assert backend.name in BACKENDS
    assert backend.health()


def test_batch_stores_meta_and_body_together(backend: SpoolBackend) -> None:
    a, b = ids(2)
    results = backend.write([put_op(a, b"first"), put_op(b, b"second")])
    assert [(r.id, r.duplicate) for r in results] == [(a, False), (b, False)]
    stored = backend.get(a)
    assert stored is not None and stored.body == b"first"
    assert common_pb2.MessageMeta.FromString(stored.meta).id == a
    meta_only = backend.get(b, want_body=False)
    assert meta_only is not None and meta_only.body is None
    assert backend.get(ids(3)[2]) is None
    assert backend.count() == 2


def test_idempotency_key_across_and_within_batches(backend: SpoolBackend) -> None:
    a, b, c = ids(3)
    first = backend.write([put_op(a, key="k1"), put_op(b, key="k1")])
    assert [(r.id, r.duplicate) for r in first] == [(a, False), (a, True)]
    later = backend.write([put_op(c, key="k1")])
    assert [(r.id, r.duplicate) for r in later] == [(a, True)]
    assert backend.get(b) is None and backend.get(c) is None
    assert backend.count() == 1


def test_put_of_stored_id_keeps_what_is_stored(backend: SpoolBackend) -> None:
    (a,) = ids(1)
    backend.write([put_op(a, b"original")])
    [result] = backend.write([put_op(a, b"retry")])
    assert result.duplicate
    stored = backend.get(a)
    assert stored is not None and stored.body == b"original"


def test_scan_in_id_order_with_paging(backend: SpoolBackend) -> None:
    all_ids = ids(10)
    backend.write([put_op(i) for i in reversed(all_ids[5:])])
    backend.write([put_op(i) for i in all_ids[:5]])
    seen: list[str] = []
    after = ""
    while page := backend.scan(after, 3):
        assert len(page) <= 3
        assert all(common_pb2.MessageMeta.FromString(m).id == i for i, m in page)
        page_ids = [i for i, _ in page]
        seen += page_ids
        after = page_ids[-1]
    assert seen == all_ids
    assert [i for i, _ in backend.scan(all_ids[7], 100)] == all_ids[8:]


def test_quarantine_moves_a_damaged_record_aside(backend: SpoolBackend) -> None:
    a, b = ids(2)
    backend.write([put_op(a, key="qa"), put_op(b)])
    assert [r.found for r in backend.write([QuarantineOp(a, "damaged metadata")])] == [True]
    assert backend.get(a) is None
    assert [i for i, _ in backend.scan("", 10)] == [b]
    assert backend.count() == 1
    assert [r.found for r in backend.write([QuarantineOp(a, "again")])] == [False]


def test_a_damaged_meta_does_not_break_removal_in_the_same_batch(backend: SpoolBackend) -> None:
    a, b = ids(2)
    backend.write([PutOp(a, b"\xff\xff not protobuf", b"body"), put_op(b)])
    results = backend.write([RemoveOp(a), RemoveOp(b)])
    assert [r.found for r in results] == [True, True]
    assert backend.count() == 0


def test_remove_deletes_meta_body_and_key(backend: SpoolBackend) -> None:
    a, b = ids(2)
    backend.write([put_op(a, key="k")])
    assert [r.found for r in backend.write([RemoveOp(a)])] == [True]
    assert backend.get(a) is None
    assert backend.scan("", 10) == []
    assert backend.count() == 0
    assert [r.found for r in backend.write([RemoveOp(a)])] == [False]
    [again] = backend.write([put_op(b, key="k")])
    assert (again.id, again.duplicate) == (b, False)


def test_replace_meta_keeps_body(backend: SpoolBackend) -> None:
    a, b = ids(2)
    backend.write([put_op(a, b"the body", key="k")])
    new_meta = common_pb2.MessageMeta(id=a, sender="new@example.com")
    new_meta.schedules.add(domain="example.com", attempts=2, due_unix_ms=1234)
    [result] = backend.write([ReplaceMetaOp(a, new_meta.SerializeToString())])
    assert result.found
    stored = backend.get(a)
    assert stored is not None and stored.body == b"the body"
    meta = common_pb2.MessageMeta.FromString(stored.meta)
    assert (meta.sender, meta.schedules[0].attempts, meta.size, meta.idempotency_key) \
        == ("new@example.com", 2, len(b"the body"), "k")
    [missing] = backend.write([ReplaceMetaOp(b, new_meta.SerializeToString())])
    assert not missing.found and backend.get(b) is None


def test_put_and_remove_in_one_batch(backend: SpoolBackend) -> None:
    a, b = ids(2)
    results = backend.write([put_op(a), put_op(b), RemoveOp(a)])
    assert [r.found for r in results] == [True, True, True]
    assert backend.get(a) is None and backend.get(b) is not None
    assert backend.count() == 1


def test_closed_backend_raises(backend: SpoolBackend) -> None:
    backend.close()
    with pytest.raises(Exception, match="closed"):
        backend.write([put_op(ids(1)[0])])
    assert not backend.health()


def test_rocksdb_keeps_everything_across_reopen(tmp_path: Path) -> None:
    store = open_named("rocksdb", tmp_path / "spool")
    all_ids = ids(5)
    store.write([put_op(i, i.encode(), key=f"k{i}") for i in all_ids])
    store.write([RemoveOp(all_ids[0])])
    store.close()
    reopened = open_named("rocksdb", tmp_path / "spool")
    try:
        assert reopened.count() == 4
        stored = reopened.get(all_ids[1])
        assert stored is not None and stored.body == all_ids[1].encode()
        assert [r.duplicate for r in reopened.write([put_op(ids(6)[5], key=f"k{all_ids[2]}")])] \
            == [True]
    finally:
        reopened.close()


# --- gRPC service ----------------------------------------------------------------------------

class Running:
    def __init__(self, spool: Spool, stub: spool_pb2_grpc.SpoolServiceStub) -> None:
        self.spool = spool
        self.stub = stub

    def putter(self) -> StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse]:
        return StreamCaller(self.stub.PutMessages, name="put")

    async def get(self, message_id: str) -> spool_pb2.GetMessageResponse:
        return await self.stub.GetMessage(
            spool_pb2.GetMessageRequest(id=message_id, want_body=True), timeout=TIMEOUT)

    async def stats(self) -> spool_pb2.GetSpoolStatsResponse:
        return await self.stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)


@pytest.fixture
async def service(backend: SpoolBackend, tmp_path: Path) -> AsyncIterator[Running]:
    spool = Spool(backend, events=EventLog(tmp_path / "events", "spool"))
    server, _, port = create_server("127.0.0.1:0", [
        (spool_pb2_grpc.add_SpoolServiceServicer_to_server, SpoolServicer(spool), SERVICE_NAME)])
    await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield Running(spool, spool_pb2_grpc.SpoolServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)
        await spool.close()


def put_request(body: bytes, **meta: str) -> spool_pb2.PutMessageRequest:
    return spool_pb2.PutMessageRequest(meta=common_pb2.MessageMeta(**meta), body=body)


async def test_concurrent_streams_are_acked_and_readable(service: Running) -> None:
    callers = [service.putter() for _ in range(4)]
    bodies = {(c, n): f"message {c}-{n}\r\n".encode() * (n + 1)
              for c in range(4) for n in range(25)}

    async def put(caller: int, n: int) -> tuple[bytes, spool_pb2.PutMessageResponse]:
        request = put_request(bodies[caller, n], sender=f"s{caller}@example.com")
        return bodies[caller, n], await callers[caller].call(request, TIMEOUT)

    try:
        acks = await asyncio.gather(*(put(c, n) for c, n in bodies))
    finally:
        for caller in callers:
            await caller.close()
    assert all(r.status.code == 0 and not r.duplicate for _, r in acks)
    assert len({r.id for _, r in acks}) == 100
    for body, response in acks[::7]:
        stored = await service.get(response.id)
        assert stored.body == body
        assert (stored.meta.id, stored.meta.size) == (response.id, len(body))
    assert (await service.stats()).messages == 100


async def test_group_commit_batches_concurrent_puts(service: Running) -> None:
    callers = [service.putter() for _ in range(4)]
    try:
        acks = await asyncio.gather(*(
            callers[n % 4].call(put_request(b"x" * 2048), TIMEOUT) for n in range(200)))
    finally:
        for caller in callers:
            await caller.close()
    assert all(r.status.code == 0 for r in acks)
    stats = await service.stats()
    assert stats.committed_writes == 200
    assert 1 <= stats.commits <= 50
    assert stats.backend == service.spool.backend.name


async def test_seq_is_echoed_on_a_raw_stream(service: Running) -> None:
    async def requests() -> AsyncIterator[spool_pb2.PutMessageRequest]:
        for seq in (7, 8, 9):
            request = put_request(b"body")
            request.seq = seq
            yield request

    responses = [r async for r in service.stub.PutMessages(requests(), timeout=TIMEOUT)]
    assert sorted(r.seq for r in responses) == [7, 8, 9]
    assert all(r.id and r.status.code == 0 for r in responses)


async def test_idempotency_key_over_grpc(service: Running) -> None:
    caller = service.putter()
    try:
        first = await caller.call(put_request(b"one", idempotency_key="req-1"), TIMEOUT)
        second = await caller.call(put_request(b"two", idempotency_key="req-1"), TIMEOUT)
    finally:
        await caller.close()
    assert (second.id, second.duplicate, first.duplicate) == (first.id, True, False)
    assert (await service.get(first.id)).body == b"one"


def reception(message_id: str, recipient: str) -> dict[str, object]:
    return make_record("Reception", message_id=message_id, sender="s@example.com",
                       recipient=recipient, code=250)


async def test_reception_records_are_written_with_the_message_they_came_with(
        service: Running, tmp_path: Path) -> None:
    """A put's records are on disk when it is answered; a duplicate (nothing stored) and a
    put without records write none."""
    ids = [new_message_id() for _ in range(3)]
    caller = service.putter()
    try:
        first = put_request(b"one", id=ids[0], idempotency_key="k-1")
        first.records = encode_records([reception(ids[0], "a@example.net"),
                                        reception(ids[0], "b@example.net")])
        stored = await caller.call(first, TIMEOUT)
        again = put_request(b"one", id=ids[1], idempotency_key="k-1")
        again.records = encode_records([reception(ids[1], "a@example.net")])
        duplicate = await caller.call(again, TIMEOUT)
        plain = await caller.call(put_request(b"two", id=ids[2]), TIMEOUT)
    finally:
        await caller.close()
    assert (stored.duplicate, duplicate.duplicate, plain.duplicate) == (False, True, False)
    written = [(e["type"], e["id"], e["recipient"]) for e in read_events(tmp_path / "events")]
    assert written == [("Reception", ids[0], "a@example.net"),
                       ("Reception", ids[0], "b@example.net")]


async def test_a_failed_record_append_does_not_fail_the_stored_message(
        service: Running) -> None:
    assert service.spool.events is not None
    await service.spool.events.close()  # every later append fails
    message_id = new_message_id()
    request = put_request(b"body", id=message_id)
    request.records = encode_records([reception(message_id, "a@example.net")])
    caller = service.putter()
    try:
        answer = await caller.call(request, TIMEOUT)
    finally:
        await caller.close()
    assert (answer.status.code, answer.id) == (0, message_id)
    assert (await service.get(message_id)).body == b"body"


async def test_invalid_items_name_the_field(service: Running) -> None:
    putter = service.putter()
    updater: StreamCaller[spool_pb2.UpdateMessageRequest, spool_pb2.UpdateMessageResponse] = \
        StreamCaller(service.stub.UpdateMessages, name="update")
    try:
        bad_id = await putter.call(put_request(b"x", id="NOT-AN-ID"), TIMEOUT)
        ok = await putter.call(put_request(b"x"), TIMEOUT)
        no_op = await updater.call(spool_pb2.UpdateMessageRequest(), TIMEOUT)
        bad_remove = await updater.call(spool_pb2.UpdateMessageRequest(remove_id="x"), TIMEOUT)
        bad_replace = await updater.call(spool_pb2.UpdateMessageRequest(
            replace_meta=common_pb2.MessageMeta(id=new_message_id().upper())), TIMEOUT)
    finally:
        await putter.close()
        await updater.close()
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (bad_id.status.code, bad_id.status.field, bad_id.id) == (invalid, "meta.id", "")
    assert ok.status.code == 0 and ok.id
    assert (no_op.status.code, no_op.status.field) == (invalid, "op")
    assert (bad_remove.status.code, bad_remove.status.field) == (invalid, "remove_id")
    assert (bad_replace.status.code, bad_replace.status.field) == (invalid, "replace_meta.id")
    assert (await service.stats()).messages == 1


async def test_given_id_is_kept(service: Running) -> None:
    message_id = new_message_id()
    caller = service.putter()
    try:
        response = await caller.call(put_request(b"x", id=message_id), TIMEOUT)
    finally:
        await caller.close()
    assert response.id == message_id


async def test_get_message_errors(service: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await service.get(new_message_id())
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await service.get("nope")
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_read_update_and_remove(service: Running) -> None:
    putter = service.putter()
    reader: StreamCaller[spool_pb2.ReadMessageRequest, spool_pb2.ReadMessageResponse] = \
        StreamCaller(service.stub.ReadMessages, name="read")
    updater: StreamCaller[spool_pb2.UpdateMessageRequest, spool_pb2.UpdateMessageResponse] = \
        StreamCaller(service.stub.UpdateMessages, name="update")
    try:
        put = await putter.call(put_request(b"hello", sender="a@example.com"), TIMEOUT)
        read = await reader.call(spool_pb2.ReadMessageRequest(id=put.id, want_body=True), TIMEOUT)
        assert (read.found, read.body, read.meta.sender) == (True, b"hello", "a@example.com")
        meta_only = await reader.call(spool_pb2.ReadMessageRequest(id=put.id), TIMEOUT)
        assert (meta_only.found, meta_only.body) == (True, b"")
        missing = await reader.call(spool_pb2.ReadMessageRequest(id=new_message_id()), TIMEOUT)
        assert (missing.found, missing.status.code) == (False, 0)

        new_meta = common_pb2.MessageMeta(id=put.id, sender="b@example.com")
        replaced = await updater.call(spool_pb2.UpdateMessageRequest(replace_meta=new_meta),
                                      TIMEOUT)
        assert replaced.found and replaced.status.code == 0
        stored = await service.get(put.id)
        assert (stored.meta.sender, stored.meta.size, stored.body) \
            == ("b@example.com", 5, b"hello")

        removed = await updater.call(spool_pb2.UpdateMessageRequest(remove_id=put.id), TIMEOUT)
        assert removed.found
        again = await updater.call(spool_pb2.UpdateMessageRequest(remove_id=put.id), TIMEOUT)
        assert not again.found and again.status.code == 0
    finally:
        for caller in (putter, reader, updater):
            await caller.close()
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await service.get(put.id)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


async def test_scan_messages_in_batches(service: Running) -> None:
    caller = service.putter()
    try:
        acks = [await caller.call(put_request(b"x"), TIMEOUT) for _ in range(25)]
    finally:
        await caller.close()
    stored_ids = sorted(a.id for a in acks)
    batches = [r async for r in service.stub.ScanMessages(
        spool_pb2.ScanMessagesRequest(batch_size=10), timeout=TIMEOUT)]
    assert [len(b.messages) for b in batches] == [10, 10, 5]
    assert [m.id for b in batches for m in b.messages] == stored_ids
    rest = [m.id async for b in service.stub.ScanMessages(
        spool_pb2.ScanMessagesRequest(after_id=stored_ids[19]), timeout=TIMEOUT)
        for m in b.messages]
    assert rest == stored_ids[20:]
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        _ = [r async for r in service.stub.ScanMessages(
            spool_pb2.ScanMessagesRequest(after_id="bad"), timeout=TIMEOUT)]
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_store_failure_answers_unavailable_and_service_stays_up(service: Running) -> None:
    service.spool.backend.close()
    putter = service.putter()
    reader: StreamCaller[spool_pb2.ReadMessageRequest, spool_pb2.ReadMessageResponse] = \
        StreamCaller(service.stub.ReadMessages, name="read")
    try:
        failed = await asyncio.gather(*(
            putter.call(put_request(b"x"), TIMEOUT) for _ in range(5)))
        read = await reader.call(spool_pb2.ReadMessageRequest(id=new_message_id()), TIMEOUT)
    finally:
        await putter.close()
        await reader.close()
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    assert all(r.status.code == unavailable and not r.id for r in failed)
    assert (read.found, read.status.code) == (False, unavailable)
    with pytest.raises(grpc.aio.AioRpcError) as get_failed:
        await service.get(new_message_id())
    assert get_failed.value.code() is grpc.StatusCode.UNAVAILABLE
    stats = await service.stats()
    assert stats.commits == 0


