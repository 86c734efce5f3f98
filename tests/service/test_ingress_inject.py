"""gRPC InjectService against a real spool process: unary, streaming, idempotency keys,
field validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ingress.main import Ingress
from ingress.message import split_headers
from petrel.events import read_events
from petrel.rpc import create_channel
from petrel.v1 import ingress_pb2, ingress_pb2_grpc
from tests.service.test_ingress_harness import (
    SpoolProcess,
    ingress_config,
    running_ingress,
    spool_count,
    spool_message,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONTENT = b"From: a@example.com\r\nX-Tenant: header-tenant\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, max_message_size=4096, max_recipients=5)
    async with running_ingress(config) as running:
        yield running


@pytest.fixture
async def stub(ingress: Ingress) -> AsyncIterator[ingress_pb2_grpc.InjectServiceStub]:
    async with create_channel(ingress.grpc_address) as channel:
        yield ingress_pb2_grpc.InjectServiceStub(channel)


def request(**fields: object) -> ingress_pb2.InjectMessageRequest:
    base: dict[str, object] = {"sender": "a@example.com", "recipients": ["b@example.net"],
                               "content": CONTENT}
    base.update(fields)
    return ingress_pb2.InjectMessageRequest(**base)  # type: ignore[arg-type]


async def test_unary_inject_is_durable_and_stamped(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    response = await stub.InjectMessage(
        request(tenant="acme", campaign="c1", meta={"k": "v"},
                content=CONTENT.replace(b"\r\n", b"\n")),
        metadata=(("traceparent", PARENT),), timeout=10)
    assert not response.duplicate
    stored = await spool_message(spool.address, response.id)
    assert stored is not None
    fields, _ = split_headers(stored.body)
    assert f"with GRPC id {response.id}" in fields[0].value
    assert fields[1].key == "message-id"
    added = len(fields[0].raw) + len(fields[1].raw)
    assert stored.body[added:] == CONTENT.replace(b"X-Tenant: header-tenant\r\n", b"")
    meta = stored.meta
    assert (meta.tenant, meta.campaign, dict(meta.meta)) == ("acme", "c1", {"k": "v"})
    assert meta.reception_protocol == "GRPC"
    assert meta.peer_address == "127.0.0.1"
    assert meta.trace_context["traceparent"] == PARENT
    events = [e for e in read_events(spool.data_dir / "events") if e["id"] == response.id]
    assert [(e["type"], e["recipient"]) for e in events] == [("Reception", "b@example.net")]


async def test_front_end_reception_is_recorded(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    response = await stub.InjectMessage(
        request(reception_protocol="HTTP", peer_address="198.51.100.4"), timeout=10)
    stored = await spool_message(spool.address, response.id)
    assert stored is not None
    assert (stored.meta.reception_protocol, stored.meta.peer_address) == ("HTTP",
                                                                          "198.51.100.4")
    received = split_headers(stored.body)[0][0].value
    assert received.startswith("from [198.51.100.4] ([198.51.100.4]) by ")
    assert f"with HTTP id {response.id}" in received


async def test_traceparent_field_and_header_tenant(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    response = await stub.InjectMessage(request(traceparent=PARENT), timeout=10)
    stored = await spool_message(spool.address, response.id)
    assert stored is not None
    assert stored.meta.trace_context["traceparent"] == PARENT
    assert stored.meta.tenant == "header-tenant"


@pytest.mark.parametrize(("fields", "field"), [
    ({"sender": "nope"}, "sender"),
    ({"recipients": []}, "recipients"),
    ({"recipients": ["b@example.net", "@bad"]}, "recipients[1]"),
    ({"content": b""}, "content"),
    ({"content": b"x" * 5000}, "content"),
    ({"content": b"Subject: x\r\n\r\nbare\rcr\r\n"}, "content"),
    ({"content": b"X-Tenant: a:b\r\n\r\nbody\r\n"}, "content"),
])
async def test_invalid_unary_inject_names_the_field(
        stub: ingress_pb2_grpc.InjectServiceStub, fields: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.InjectMessage(request(**fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}: ")
    assert ("petrel-field", field) in tuple(info.value.trailing_metadata() or ())


async def test_streaming_inject_answers_every_request_by_seq(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    requests = [request(seq=n, recipients=[f"r{n}@example.net"]) for n in range(1, 31)]
    requests.append(request(seq=99, sender="broken"))
    before = await spool_count(spool.address)
    responses = {r.seq: r async for r in stub.InjectMessages(iter(requests), timeout=20)}
    assert set(responses) == {*range(1, 31), 99}
    bad = responses.pop(99)
    assert bad.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad.status.field == "sender"
    assert not bad.id
    assert all(r.status.code == 0 and r.id and not r.duplicate for r in responses.values())
    assert len({r.id for r in responses.values()}) == 30
    assert await spool_count(spool.address) == before + 30
    stored = await spool_message(spool.address, responses[7].id)
    assert stored is not None
    assert [r.address for r in stored.meta.recipients] == ["r7@example.net"]


async def test_idempotency_key_within_a_stream_and_across_a_retry(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    first = [request(seq=1, idempotency_key="key-1"), request(seq=2, idempotency_key="key-1"),
             request(seq=3, idempotency_key="key-2")]
    answers = {r.seq: r async for r in stub.InjectMessages(iter(first), timeout=20)}
    assert answers[1].id == answers[2].id
    assert sorted([answers[1].duplicate, answers[2].duplicate]) == [False, True]
    assert not answers[3].duplicate and answers[3].id != answers[1].id

    # The client retries the whole call (it never saw the answers, say): nothing new.
    retry = {r.seq: r async for r in stub.InjectMessages(iter(first), timeout=20)}
    assert all(r.duplicate for r in retry.values())
    assert [retry[n].id for n in (1, 2, 3)] == [answers[1].id, answers[1].id, answers[3].id]
    unary = await stub.InjectMessage(request(idempotency_key="key-2"), timeout=10)
    assert (unary.id, unary.duplicate) == (answers[3].id, True)
    assert await spool_count(spool.address) == before + 2
    receptions = [e for e in read_events(spool.data_dir / "events") if e["id"] == answers[1].id]
    assert len(receptions) == 1


async def test_concurrent_unary_calls_with_one_key_store_one_message(
        stub: ingress_pb2_grpc.InjectServiceStub, spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    results = await asyncio.gather(*(
        stub.InjectMessage(request(idempotency_key="burst"), timeout=10) for _ in range(8)))
    assert len({r.id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await spool_count(spool.address) == before + 1
