"""The scheduler's Suppressor against a real SuppressionService (RocksDB in tmp_path):
hard bounces land on the list, also when the list comes up only after the bounce."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from bounce.suppression_server import SERVICE_NAME, SuppressionServicer
from bounce.suppression_store import SuppressionStore
from petrel.config import BounceConfig
from petrel.events import make_record
from petrel.rpc import create_channel, create_server
from petrel.v1 import suppression_pb2, suppression_pb2_grpc
from scheduler import metrics
from scheduler.suppressor import Suppressor
from tests.support.net import async_wait_for, free_port


async def start_list(path: Path, port: int) -> tuple[grpc.aio.Server, SuppressionStore]:
    store = SuppressionStore(path)
    server, _, _ = create_server(f"127.0.0.1:{port}", [
        (suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
         SuppressionServicer(store), SERVICE_NAME)])
    await server.start()
    return server, store


def bounce(recipient: str, tenant: str = "acme") -> dict[str, object]:
    return make_record("Bounce", message_id="f" * 32, sender="s@petrel.test",
                       recipient=recipient, code=550, enhanced_code="5.1.1",
                       content="No such user", bounce_classification="InvalidRecipient",
                       tenant=tenant)


async def test_bounces_reach_the_list_after_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    channel = create_channel(f"127.0.0.1:{port}")
    suppressor = Suppressor(channel, BounceConfig(), deadline=1.0)
    runner = asyncio.create_task(suppressor.run())
    added = metrics.SUPPRESSIONS.labels("added")._value.get()
    server = store = None
    try:
        suppressor.observe([bounce("dead@x.test"), bounce("gone@x.test", tenant="")], 0)
        await asyncio.sleep(0.3)  # the first attempt fails: nothing listens yet
        server, store = await start_list(tmp_path / "suppression", port)
        stub = suppression_pb2_grpc.SuppressionServiceStub(channel)

        async def listed() -> list[tuple[str, str]]:
            response = await stub.ListSuppressions(
                suppression_pb2.ListSuppressionsRequest(all_tenants=True), timeout=2)
            return [(e.address, e.tenant) for e in response.entries]

        await async_wait_for(lambda: suppressor.backlog == 0, timeout=10)
        await async_wait_for(lambda: metrics.SUPPRESSIONS.labels("added")._value.get()
                             == added + 2, timeout=10, message="added after a retry")
        assert await listed() == [("dead@x.test", "acme"), ("gone@x.test", "")]
    finally:
        runner.cancel()
        await channel.close()
        if server is not None:
            await server.stop(None)
        if store is not None:
            store.close()
