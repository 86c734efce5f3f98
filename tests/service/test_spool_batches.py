"""The spool's ``...Batches`` streams over a real gRPC server (in-process, free port) on RocksDB
under tmp_path: several items per stream message each way, per-item answers and errors, and
response messages cut to the batch byte bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from petrel.ids import new_message_id
from petrel.rpc import BATCH_MAX_BYTES, StreamCaller, create_channel, create_server
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.server import SERVICE_NAME, SpoolServicer
from spool.store import Spool
from tests.service.test_spool_contract import open_named, put_request

TIMEOUT = 10.0
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class RecordingServicer(SpoolServicer):
    """The real servicer, recording how many items each stream message carried. With
    ``hold_reads`` set, reads answer only once that many have been read, all at the same
    moment (so one ready group holds them all)."""

    def __init__(self, spool: Spool) -> None:
        super().__init__(spool)
        self.received: dict[str, list[int]] = {"put": [], "read": [], "update": []}
        self.sent: dict[str, list[int]] = {"put": [], "read": [], "update": []}
        self.hold_reads = 0
        self._reads_done = 0
        self._reads_released = asyncio.Event()

    async def _recorded(self, name: str, requests: AsyncIterator[Any],
                        answer: Callable[[AsyncIterator[Any], Any], AsyncIterator[Any]],
                        context: Any) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[Any]:
            async for batch in requests:
                self.received[name].append(len(batch.items))
                yield batch

        async for response in answer(counted(), context):
            self.sent[name].append(len(response.items))
            yield response

    async def PutMessageBatches(self, request_iterator: Any, context: Any) -> Any:
        async for response in self._recorded("put", request_iterator,
                                             super().PutMessageBatches, context):
            yield response

    async def ReadMessageBatches(self, request_iterator: Any, context: Any) -> Any:
        async for response in self._recorded("read", request_iterator,
                                             super().ReadMessageBatches, context):
            yield response

    async def UpdateMessageBatches(self, request_iterator: Any, context: Any) -> Any:
        async for response in self._recorded("update", request_iterator,
                                             super().UpdateMessageBatches, context):
            yield response

    async def _read(self, request: spool_pb2.ReadMessageRequest,
                    ) -> spool_pb2.ReadMessageResponse:
        response = await super()._read(request)
        if self.hold_reads:
            self._reads_done += 1
            if self._reads_done >= self.hold_reads:
                self._reads_released.set()
            await self._reads_released.wait()
        return response


@dataclass
class Running:
    servicer: RecordingServicer
    stub: spool_pb2_grpc.SpoolServiceStub

    def putter(self) -> StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse]:
        return StreamCaller(self.stub.PutMessageBatches, name="put",
                            batch=spool_pb2.PutMessageBatch)

    def reader(self) -> StreamCaller[spool_pb2.ReadMessageRequest, spool_pb2.ReadMessageResponse]:
        return StreamCaller(self.stub.ReadMessageBatches, name="read",
                            batch=spool_pb2.ReadMessageBatch)

    def updater(self) -> StreamCaller[spool_pb2.UpdateMessageRequest,
                                      spool_pb2.UpdateMessageResponse]:
        return StreamCaller(self.stub.UpdateMessageBatches, name="update",
                            batch=spool_pb2.UpdateMessageBatch)

    async def put_all(self, bodies: list[bytes]) -> list[str]:
        caller = self.putter()
        try:
            acks = await asyncio.gather(*(caller.call(put_request(b), TIMEOUT) for b in bodies))
        finally:
            await caller.close()
        assert all(a.status.code == 0 and a.id for a in acks)
        return [a.id for a in acks]

    async def stats(self) -> spool_pb2.GetSpoolStatsResponse:
        return await self.stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Running]:
    spool = Spool(open_named("rocksdb", tmp_path / "spool"))
    servicer = RecordingServicer(spool)
    server, _, port = create_server("127.0.0.1:0", [
        (spool_pb2_grpc.add_SpoolServiceServicer_to_server, servicer, SERVICE_NAME)])
    await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield Running(servicer, spool_pb2_grpc.SpoolServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)
        await spool.close()


async def one_batch(open_stream: Callable[..., Any], batch: Any) -> list[Any]:
    """Send ``batch`` as the only message of a raw stream; the response messages."""
    async def requests() -> AsyncIterator[Any]:
        yield batch

    return [m async for m in open_stream(requests(), timeout=TIMEOUT)]


def items_by_seq(messages: list[Any]) -> dict[int, Any]:
    answers = [item for message in messages for item in message.items]
    by_seq = {item.seq: item for item in answers}
    assert len(by_seq) == len(answers), "one answer per request"
    return by_seq


async def test_concurrent_puts_travel_in_batches_and_are_all_acknowledged(
        service: Running) -> None:
    caller = service.putter()
    bodies = [f"message {n}\r\n".encode() * (n % 7 + 1) for n in range(200)]
    try:
        acks = await asyncio.gather(*(caller.call(put_request(b), TIMEOUT) for b in bodies))
    finally:
        await caller.close()
    assert all(a.status.code == 0 and not a.duplicate for a in acks)
    assert len({a.id for a in acks}) == 200
    received = service.servicer.received["put"]
    assert sum(received) == 200
    assert max(received) > 1, received
    assert sum(service.servicer.sent["put"]) == 200
    assert (await service.stats()).messages == 200
    get = service.stub.GetMessage
    for ack, body in list(zip(acks, bodies, strict=True))[::17]:
        stored = await get(spool_pb2.GetMessageRequest(id=ack.id, want_body=True),
                           timeout=TIMEOUT)
        assert (stored.body, stored.meta.id) == (body, ack.id)


async def test_read_batches_return_the_exact_bodies(service: Running) -> None:
    bodies = [bytes([n]) * (1 + n * 997) for n in range(60)]
    ids = await service.put_all(bodies)
    missing = new_message_id()
    reader = service.reader()
    try:
        reads = await asyncio.gather(*(
            reader.call(spool_pb2.ReadMessageRequest(id=i, want_body=True), TIMEOUT)
            for i in [*ids, missing]))
    finally:
        await reader.close()
    *found, absent = reads
    assert [(r.found, r.status.code, r.meta.id) for r in found] == [(True, 0, i) for i in ids]
    assert [r.body for r in found] == bodies
    assert [r.meta.size for r in found] == [len(b) for b in bodies]
    assert (absent.found, absent.status.code, absent.body) == (False, 0, b"")
    assert max(service.servicer.received["read"]) > 1


async def test_update_batches_remove_then_report_not_found(service: Running) -> None:
    ids = await service.put_all([f"body {n}".encode() for n in range(30)])
    updater = service.updater()
    try:
        removed = await asyncio.gather(*(
            updater.call(spool_pb2.UpdateMessageRequest(remove_id=i), TIMEOUT) for i in ids))
        again = await asyncio.gather(*(
            updater.call(spool_pb2.UpdateMessageRequest(remove_id=i), TIMEOUT) for i in ids))
    finally:
        await updater.close()
    assert [(r.found, r.status.code) for r in removed] == [(True, 0)] * 30
    assert [(r.found, r.status.code) for r in again] == [(False, 0)] * 30
    assert (await service.stats()).messages == 0
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await service.stub.GetMessage(spool_pb2.GetMessageRequest(id=ids[0]), timeout=TIMEOUT)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    assert max(service.servicer.received["update"]) > 1


async def test_update_batch_replaces_meta_and_keeps_the_body(service: Running) -> None:
    [message_id] = await service.put_all([b"the body"])
    meta = common_pb2.MessageMeta(id=message_id, sender="new@example.com")
    messages = await one_batch(service.stub.UpdateMessageBatches, spool_pb2.UpdateMessageBatch(
        items=[spool_pb2.UpdateMessageRequest(seq=1, replace_meta=meta)]))
    assert items_by_seq(messages)[1].found
    stored = await service.stub.GetMessage(
        spool_pb2.GetMessageRequest(id=message_id, want_body=True), timeout=TIMEOUT)
    assert (stored.meta.sender, stored.body) == ("new@example.com", b"the body")


async def test_put_batch_item_error_leaves_the_other_items_stored(service: Running) -> None:
    batch = spool_pb2.PutMessageBatch(items=[
        spool_pb2.PutMessageRequest(seq=1, body=b"one"),
        spool_pb2.PutMessageRequest(seq=2, body=b"bad", meta=common_pb2.MessageMeta(
            id="NOT-AN-ID")),
        spool_pb2.PutMessageRequest(seq=3, body=b"three"),
    ])
    answers = items_by_seq(await one_batch(service.stub.PutMessageBatches, batch))
    assert sorted(answers) == [1, 2, 3]
    assert (answers[2].status.code, answers[2].status.field, answers[2].id) \
        == (INVALID, "meta.id", "")
    assert all(answers[s].status.code == 0 and answers[s].id for s in (1, 3))
    assert service.servicer.received["put"] == [3]
    assert (await service.stats()).messages == 2


async def test_read_and_update_batch_item_errors_are_per_item(service: Running) -> None:
    [kept, removed] = await service.put_all([b"kept", b"removed"])
    read = items_by_seq(await one_batch(service.stub.ReadMessageBatches, spool_pb2.ReadMessageBatch(
        items=[spool_pb2.ReadMessageRequest(seq=1, id="bad", want_body=True),
               spool_pb2.ReadMessageRequest(seq=2, id=kept, want_body=True)])))
    assert (read[1].status.code, read[1].status.field, read[1].found) == (INVALID, "id", False)
    assert (read[2].status.code, read[2].found, read[2].body) == (0, True, b"kept")

    update = items_by_seq(await one_batch(
        service.stub.UpdateMessageBatches, spool_pb2.UpdateMessageBatch(items=[
            spool_pb2.UpdateMessageRequest(seq=1, remove_id=removed),
            spool_pb2.UpdateMessageRequest(seq=2, remove_id=removed.upper()),
            spool_pb2.UpdateMessageRequest(seq=3),
        ])))
    assert (update[1].status.code, update[1].found) == (0, True)
    assert (update[2].status.code, update[2].status.field) == (INVALID, "remove_id")
    assert (update[3].status.code, update[3].status.field) == (INVALID, "op")
    assert service.servicer.received["read"] == [2]
    assert service.servicer.received["update"] == [3]
    assert (await service.stats()).messages == 1


async def test_response_batches_respect_the_byte_bound(service: Running) -> None:
    body_size, count = 200 * 1024, 40
    bodies = [bytes([65 + n % 26]) * body_size for n in range(count)]
    ids = await service.put_all(bodies)
    service.servicer.hold_reads = count
    batch = spool_pb2.ReadMessageBatch(items=[
        spool_pb2.ReadMessageRequest(seq=n + 1, id=i, want_body=True) for n, i in enumerate(ids)])
    messages = await one_batch(service.stub.ReadMessageBatches, batch)

    answers = items_by_seq(messages)
    assert [answers[n + 1].body for n in range(count)] == bodies
    # all 40 answers were ready together (8 MB): cut into several bounded messages
    assert len(messages) >= 2
    assert max(len(m.items) for m in messages) > 1
    for message in messages:
        assert sum(item.ByteSize() for item in message.items) <= BATCH_MAX_BYTES
        assert message.ByteSize() <= BATCH_MAX_BYTES + body_size
    assert service.servicer.received["read"] == [count]
    assert service.servicer.sent["read"] == [len(m.items) for m in messages]


async def test_seq_is_echoed_per_item(service: Running) -> None:
    batch = spool_pb2.PutMessageBatch(items=[
        spool_pb2.PutMessageRequest(seq=seq, body=b"x") for seq in (70, 8, 900)])
    answers = items_by_seq(await one_batch(service.stub.PutMessageBatches, batch))
    assert sorted(answers) == [8, 70, 900]
    assert all(a.status.code == 0 and a.id for a in answers.values())


async def test_empty_request_batch_is_answered_by_nothing(service: Running) -> None:
    async def requests() -> AsyncIterator[spool_pb2.PutMessageBatch]:
        yield spool_pb2.PutMessageBatch()
        yield spool_pb2.PutMessageBatch(items=[spool_pb2.PutMessageRequest(seq=5, body=b"x")])

    messages = [m async for m in service.stub.PutMessageBatches(requests(), timeout=TIMEOUT)]
    assert [[(i.seq, i.status.code) for i in m.items] for m in messages] == [[(5, 0)]]
    assert service.servicer.received["put"] == [0, 1]
