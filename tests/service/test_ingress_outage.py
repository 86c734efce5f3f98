"""Durable before 250: a spool that is down or too slow gets 451 4.3.0 / UNAVAILABLE, a late
write is withdrawn, and traffic flows again once the spool is back, without restarting
ingress. Also: the scheduler being away does not change the answer."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import grpc
import pytest

from ingress.main import Ingress
from petrel import smtp_replies
from petrel.rpc import create_channel
from petrel.v1 import ingress_pb2, ingress_pb2_grpc
from tests.service.test_ingress_harness import (
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_count,
    spool_message,
)
from tests.support.net import async_wait_for

MESSAGE = b"Subject: outage\r\n\r\nbody\r\n"


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SpoolProcess]:
    process = await asyncio.to_thread(SpoolProcess(tmp_path / "spool").start)
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, spool_deadline=1.0)
    async with running_ingress(config) as running:
        yield running


async def smtp_send(ingress: Ingress) -> str:
    """One transaction; the final reply as one line."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(ingress), start_tls=False,
                               timeout=10) as client:
        try:
            _, message = await client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
        except aiosmtplib.SMTPDataError as exc:
            return f"{exc.code} {exc.message}"
    return f"250 {message}"


async def inject(ingress: Ingress) -> ingress_pb2.InjectMessageResponse:
    # A plain channel: petrel's own channels retry UNAVAILABLE, which would only slow this.
    async with grpc.aio.insecure_channel(ingress.grpc_address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        return await stub.InjectMessage(ingress_pb2.InjectMessageRequest(
            sender="a@example.com", recipients=["b@example.net"], content=MESSAGE), timeout=10)


async def test_spool_down_then_back(ingress: Ingress, spool: SpoolProcess) -> None:
    assert (await smtp_send(ingress)).startswith("250 2.0.0 ")
    await asyncio.to_thread(spool.stop, True)

    assert await smtp_send(ingress) == smtp_replies.SPOOL_UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inject(ingress)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    async with create_channel(ingress.grpc_address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        answers = [r async for r in stub.InjectMessages(iter([ingress_pb2.InjectMessageRequest(
            seq=5, sender="a@example.com", recipients=["b@example.net"], content=MESSAGE)]),
            timeout=10)]
    assert [(a.seq, a.status.code) for a in answers] == [
        (5, grpc.StatusCode.UNAVAILABLE.value[0])]

    await asyncio.to_thread(spool.start)
    reply = await async_wait_for(lambda: _accepted(ingress), timeout=10,
                                 message="SMTP accepted again")
    stored = await spool_message(spool.address, reply.split()[2])
    assert stored is not None and stored.body.endswith(MESSAGE)
    assert (await inject(ingress)).id
    # Only what was answered 250 / OK is in the spool.
    assert await spool_count(spool.address) == 3


async def _accepted(ingress: Ingress) -> str | None:
    reply = await smtp_send(ingress)
    if reply.startswith("250 "):
        return reply
    assert reply == smtp_replies.SPOOL_UNAVAILABLE
    return None


async def test_slow_spool_gets_451_and_the_late_write_is_withdrawn(
        ingress: Ingress, spool: SpoolProcess) -> None:
    assert (await smtp_send(ingress)).startswith("250 2.0.0 ")
    pid = spool.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await smtp_send(ingress) == smtp_replies.SPOOL_UNAVAILABLE
    finally:
        os.kill(pid, signal.SIGCONT)
    await async_wait_for(lambda: ingress.spool.withdrawals_pending == 0, timeout=30,
                         message="late write withdrawn")
    assert await spool_count(spool.address) == 1
    assert (await smtp_send(ingress)).startswith("250 2.0.0 ")


async def test_scheduler_away_still_250_and_backlogged(ingress: Ingress) -> None:
    replies = [await smtp_send(ingress) for _ in range(3)]
    assert all(r.startswith("250 2.0.0 ") for r in replies)
    # The enqueue follows the 250; with the scheduler away each one lands in the backlog.
    await async_wait_for(lambda: ingress.enqueuer.backlog == 3, timeout=10,
                         message="three messages backlogged")
