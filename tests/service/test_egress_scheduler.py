"""egress against the real scheduler and spool (in-process): dispositions become events, a
transient failure is retried and delivered, a 550 bounces with its category, and several
workers share one scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from egress.main import serve
from petrel.config import Config, load_config
from petrel.rpc import create_server
from petrel.v1 import bounce_pb2_grpc
from tests.service.test_egress_harness import CountingBounce, RecordingSink, make_body
from tests.service.test_scheduler_harness import Harness, harness, make_meta, wait_events
from tests.support.net import async_wait_for


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


@contextlib.asynccontextmanager
async def egress_workers(h: Harness, count: int = 1, **egress: Any
                         ) -> AsyncIterator[list[Config]]:
    """``count`` egress workers (``egress.main.serve``) and a bounce service for them."""
    assert h.app is not None
    server, _, bounce_port = create_server("127.0.0.1:0", [
        (bounce_pb2_grpc.add_BounceServiceServicer_to_server, CountingBounce(),
         "petrel.v1.BounceService")])
    await server.start()
    base = h.config.model_dump()
    stop = asyncio.Event()
    configs = [load_config(env={}, overrides={
        **base, "scheduler": {**base["scheduler"], "address": h.app.address},
        "bounce": {**base["bounce"], "address": f"127.0.0.1:{bounce_port}", "ref_header": ""},
        "egress": {**base["egress"], "worker_id": f"egress-{i}", "connect_timeout": 3,
                   **egress}}) for i in range(count)]
    tasks = [asyncio.create_task(serve(stop, config)) for config in configs]
    try:
        yield configs
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await server.stop(0)


async def test_retry_then_delivery_and_classified_bounce(tmp_path: Path,
                                                         sink: RecordingSink) -> None:
    async with harness(tmp_path, routes={"dest.test": sink.address}) as h:
        meta = make_meta(["ok@dest.test", "flaky@dest.test", "nouser@dest.test"])
        body = make_body("scheduled")
        await h.spool.put(meta, body)
        async with egress_workers(h):
            assert h.client is not None
            await h.client.enqueue(meta)
            deliveries = await wait_events(h.config, "Delivery", 2)
            [bounce] = await wait_events(h.config, "Bounce", 1)
            await async_wait_for(h.spool.gone(meta.id), message="message removed")
    by_rcpt = {e["recipient"]: e for e in deliveries}
    assert set(by_rcpt) == {"ok@dest.test", "flaky@dest.test"}
    assert by_rcpt["ok@dest.test"]["num_attempts"] == 1
    assert by_rcpt["flaky@dest.test"]["num_attempts"] == 2
    assert by_rcpt["ok@dest.test"]["site"] == f"route:127.0.0.1:{sink.port}"
    assert bounce["recipient"] == "nouser@dest.test"
    assert bounce["response"]["code"] == 550
    assert bounce["bounce_classification"] == "InvalidRecipient"
    assert [m.recipients for m in sink.messages] == [["ok@dest.test"], ["flaky@dest.test"]]
    assert all(m.data == body for m in sink.messages)


async def test_several_workers_share_one_scheduler(tmp_path: Path, sink: RecordingSink) -> None:
    async with harness(tmp_path, routes={"dest.test": sink.address}) as h:
        metas = [make_meta([f"r{i}@dest.test"]) for i in range(30)]
        async with egress_workers(h, count=3, max_inflight=4):
            for meta in metas:
                await h.store_and_enqueue(meta)
            await wait_events(h.config, "Delivery", 30, timeout=20)
    received = sorted(r for m in sink.messages for r in m.recipients)
    assert received == sorted(f"r{i}@dest.test" for i in range(30))
