"""After the durable write ingress hands the metadata to a real scheduler process; while the
scheduler is away the messages wait in the retry backlog and reach it once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import grpc
import pytest

from ingress.main import Ingress
from petrel.rpc import create_channel
from petrel.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.service.test_ingress_harness import (
    ServiceProcess,
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
)
from tests.support.net import async_wait_for


def scheduler_process(data_dir: Path, spool: SpoolProcess) -> ServiceProcess:
    # No egress runs: messages stay queued. Reconciliation with the spool is pushed far out
    # so only ingress's Enqueue can make the scheduler learn about a new message.
    return ServiceProcess("scheduler", data_dir, env={
        "PETREL_SPOOL__ADDRESS": spool.address,
        "PETREL_SCHEDULER__RECONCILE_INTERVAL": "3600"})


@pytest.fixture
async def scheduler(tmp_path: Path, spool: SpoolProcess) -> AsyncIterator[ServiceProcess]:
    process = scheduler_process(tmp_path / "scheduler", spool)
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess,
                  scheduler: ServiceProcess) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, scheduler_address=scheduler.address)
    async with running_ingress(config) as running:
        yield running


async def send(ingress: Ingress, tenant: str) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(ingress), start_tls=False,
                               timeout=10) as client:
        _, message = await client.sendmail(
            "a@example.com", ["b@example.net"],
            f"X-Tenant: {tenant}\r\nSubject: q\r\n\r\nhi\r\n".encode())
    return message.split()[1]


async def queued(scheduler: ServiceProcess, message_id: str
                 ) -> scheduler_pb2.InspectMessageResponse | None:
    async with create_channel(scheduler.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        try:
            return await stub.InspectMessage(
                scheduler_pb2.InspectMessageRequest(id=message_id), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


async def test_accepted_message_is_enqueued(ingress: Ingress,
                                            scheduler: ServiceProcess) -> None:
    await asyncio.to_thread(scheduler.start)
    message_id = await send(ingress, "acme")
    found = await async_wait_for(lambda: queued(scheduler, message_id), timeout=10,
                                 message="scheduler to know the message")
    assert found.meta.tenant == "acme"
    assert [r.address for r in found.meta.recipients] == ["b@example.net"]
    assert ingress.enqueuer.backlog == 0


async def test_backlog_reaches_the_scheduler_when_it_returns(
        ingress: Ingress, scheduler: ServiceProcess) -> None:
    ids = [await send(ingress, "late") for _ in range(3)]
    # The enqueue follows the 250; with the scheduler away each one lands in the backlog.
    await async_wait_for(lambda: ingress.enqueuer.backlog == 3, timeout=10,
                         message="three messages backlogged")
    await asyncio.to_thread(scheduler.start)
    await async_wait_for(lambda: ingress.enqueuer.backlog == 0, timeout=20,
                         message="backlog drained")
    for message_id in ids:
        assert await queued(scheduler, message_id) is not None
