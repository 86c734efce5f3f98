"""SuppressionService on a real in-process gRPC server over RocksDB in tmp_path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from bounce.main import serve
from bounce.suppression_server import SERVICE_NAME, SuppressionServicer
from bounce.suppression_store import SuppressionStore
from petrel.config import load_config
from petrel.rpc import create_channel, create_server, set_serving
from petrel.v1 import suppression_pb2 as pb
from petrel.v1 import suppression_pb2_grpc
from tests.support.net import async_wait_for, free_port, port_open

DEADLINE = 5.0
Stub = suppression_pb2_grpc.SuppressionServiceStub


class Running:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: SuppressionStore | None = None
        self.server: grpc.aio.Server | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: Stub

    async def start(self) -> Running:
        self.store = SuppressionStore(self.path)
        self.server, health, port = create_server("127.0.0.1:0", [
            (suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
             SuppressionServicer(self.store), SERVICE_NAME)])
        await self.server.start()
        await set_serving(health, [SERVICE_NAME], True)
        self.channel = create_channel(f"127.0.0.1:{port}")
        self.stub = Stub(self.channel)
        return self

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop(None)
        if self.store is not None:
            self.store.close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    service = await Running(tmp_path / "suppression").start()
    try:
        yield service
    finally:
        await service.stop()


def entry(address: str, tenant: str = "", reason: str = "", **fields: object) -> pb.Suppression:
    return pb.Suppression(address=address, tenant=tenant, reason=reason, **fields)  # type: ignore[arg-type]


async def check(stub: Stub, tenant: str, *addresses: str) -> list[pb.SuppressionMatch]:
    response = await stub.CheckSuppressed(
        pb.CheckSuppressedRequest(tenant=tenant, addresses=addresses), timeout=DEADLINE)
    return list(response.results)


async def test_add_check_tenant_before_global_case_insensitive(running: Running) -> None:
    stub = running.stub
    added = await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=[
        entry("Bob@Example.com", "acme", "InvalidRecipient",
              source=pb.SUPPRESSION_SOURCE_BOUNCE, message_id="m1"),
        entry("bob@example.com", "", "do not mail"),
        entry("carol@example.com", "acme", "abuse", source=pb.SUPPRESSION_SOURCE_COMPLAINT),
    ]), timeout=DEADLINE)
    assert (added.added, added.updated) == (3, 0)
    acme = await check(stub, "acme", "BOB@example.com", "carol@example.com", "dave@x.test")
    assert [m.suppressed for m in acme] == [True, True, False]
    assert acme[0].address == "BOB@example.com"
    assert (acme[0].entry.tenant, acme[0].entry.reason, acme[0].entry.source) == (
        "acme", "InvalidRecipient", pb.SUPPRESSION_SOURCE_BOUNCE)
    assert acme[0].entry.address == "Bob@Example.com" and acme[0].entry.message_id == "m1"
    other = await check(stub, "other", "bob@example.com", "carol@example.com")
    assert [m.suppressed for m in other] == [True, False]
    assert other[0].entry.tenant == "" and other[0].entry.reason == "do not mail"
    assert [m.suppressed for m in await check(stub, "", "carol@example.com")] == [False]


async def test_update_keeps_created_and_expired_entries_do_not_apply(running: Running) -> None:
    stub = running.stub
    await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=[entry("a@x.test", "t")]),
                               timeout=DEADLINE)
    first = (await check(stub, "t", "a@x.test"))[0].entry
    now_ms = int(time.time() * 1000)
    assert abs(first.created_unix_ms - now_ms) < 10_000
    await asyncio.sleep(0.01)
    updated = await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=[
        entry("A@X.test", "t", "again"), entry("gone@x.test", "t", expires_unix_ms=now_ms - 1),
    ]), timeout=DEADLINE)
    assert (updated.added, updated.updated) == (1, 1)
    second = (await check(stub, "t", "a@x.test"))[0].entry
    assert second.created_unix_ms == first.created_unix_ms and second.reason == "again"
    assert not (await check(stub, "t", "gone@x.test"))[0].suppressed
    listed = await stub.ListSuppressions(pb.ListSuppressionsRequest(tenant="t"), timeout=DEADLINE)
    assert [e.address for e in listed.entries] == ["A@X.test"]
    assert running.store is not None
    assert await running.store.run(running.store.purge_expired, now_ms) == 1
    assert await running.store.run(running.store.count) == 1


async def test_list_pages_by_tenant_prefix_and_across_tenants(running: Running) -> None:
    stub = running.stub
    entries = [entry(f"user{i:02d}@example.com", "acme") for i in range(25)]
    entries += [entry("user05@example.com", "beta"), entry("user05@example.com"),
                entry("zed@example.com", "acme")]
    await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=entries), timeout=DEADLINE)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListSuppressions(pb.ListSuppressionsRequest(
            tenant="acme", address_prefix="USER", page_size=10, page_token=token),
            timeout=DEADLINE)
        seen += [e.address for e in page.entries]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"user{i:02d}@example.com" for i in range(25)] and pages == 3

    across = await stub.ListSuppressions(pb.ListSuppressionsRequest(
        all_tenants=True, address_prefix="user05@"), timeout=DEADLINE)
    assert sorted(e.tenant for e in across.entries) == ["", "acme", "beta"]
    global_only = await stub.ListSuppressions(pb.ListSuppressionsRequest(), timeout=DEADLINE)
    assert [(e.address, e.tenant) for e in global_only.entries] == [("user05@example.com", "")]


async def test_remove_reports_missing_keys(running: Running) -> None:
    stub = running.stub
    await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=[
        entry("a@x.test", "t"), entry("a@x.test")]), timeout=DEADLINE)
    removed = await stub.RemoveSuppressions(pb.RemoveSuppressionsRequest(keys=[
        pb.SuppressionKey(address="A@x.test", tenant="t"),
        pb.SuppressionKey(address="nobody@x.test", tenant="t")]), timeout=DEADLINE)
    assert removed.removed == 1
    assert [(k.address, k.tenant) for k in removed.not_found] == [("nobody@x.test", "t")]
    result = (await check(stub, "t", "a@x.test"))[0]
    assert result.suppressed and result.entry.tenant == ""  # the global entry remains
    across = await stub.ListSuppressions(pb.ListSuppressionsRequest(all_tenants=True),
                                         timeout=DEADLINE)
    assert [(e.address, e.tenant) for e in across.entries] == [("a@x.test", "")]


@pytest.mark.parametrize(("call", "request_", "field"), [
    ("AddSuppressions", pb.AddSuppressionsRequest(entries=[entry("ok@x.test"), entry("bad")]),
     "entries[1].address"),
    ("RemoveSuppressions", pb.RemoveSuppressionsRequest(keys=[pb.SuppressionKey(
        address="a@x.test", tenant="a:b")]), "keys[0].tenant"),
    ("ListSuppressions", pb.ListSuppressionsRequest(page_size=5000), "page_size"),
    ("ListSuppressions", pb.ListSuppressionsRequest(page_token="AAAA"), "page_token"),
    ("CheckSuppressed", pb.CheckSuppressedRequest(addresses=["a@x.test"] * 1001), "addresses"),
])
async def test_bad_requests_name_the_field(running: Running, call: str, request_: object,
                                           field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(running.stub, call)(request_, timeout=DEADLINE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}: ")
    assert ("petrel-field", field) in tuple(info.value.trailing_metadata() or ())
    # Nothing of a refused batch was stored.
    listed = await running.stub.ListSuppressions(pb.ListSuppressionsRequest(all_tenants=True),
                                                 timeout=DEADLINE)
    assert not listed.entries


async def test_entries_survive_a_restart_of_the_service(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "bounce": {
        "listen": f"127.0.0.1:{port}"}})

    async def run_once(action: str) -> list[pb.SuppressionMatch]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(config, stop))
        await async_wait_for(lambda: port_open(port), message="bounce listening")
        channel = create_channel(f"127.0.0.1:{port}")
        try:
            stub = Stub(channel)
            if action == "add":
                await stub.AddSuppressions(pb.AddSuppressionsRequest(entries=[
                    entry("kept@x.test", "acme", "manual")]), timeout=DEADLINE)
            return await check(stub, "acme", "kept@x.test")
        finally:
            await channel.close()
            stop.set()
            await asyncio.wait_for(task, 10)

    assert (await run_once("add"))[0].suppressed
    again = await run_once("check")
    assert again[0].suppressed and again[0].entry.reason == "manual"
    assert (tmp_path / "suppression").is_dir()
