"""The webhook shipper against a real HTTP receiver, reading real event logs: outages, retries,
restarts from the cursor, batching latency, where a new webhook starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from petrel.config import WebhookConfig
from petrel.event_segments import Position, cursor_path, load_cursor
from petrel.events import EventLog, make_record
from petrel.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookShipper, verify_signature
from tests.support.net import async_wait_for
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "test-secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def hook(receiver: WebhookReceiver, **fields: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({
        "name": "hook", "url": receiver.url("/events"), "secret": SECRET, "batch_size": 10,
        "max_batch_latency": 0.05, "retry_initial": 0.05, "retry_max": 0.2, "timeout": 2,
        **fields})


@contextlib.asynccontextmanager
async def shipping(webhook: WebhookConfig, directory: Path) -> AsyncIterator[WebhookShipper]:
    shipper = WebhookShipper(webhook, directory, poll_interval=0.02)
    task = asyncio.create_task(shipper.run())
    try:
        yield shipper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def records(first: int, count: int, record_type: str = "Delivery",
            tenant: str = "") -> list[dict[str, Any]]:
    return [make_record(record_type, message_id=f"{i:032x}", sender="s@x", recipient="r@y",
                        tenant=tenant) for i in range(first, first + count)]


def cursor_at_end(log: EventLog) -> bool:
    """The webhook's cursor is saved at the end of ``log`` (all of it acknowledged)."""
    cursor = load_cursor(cursor_path(log.directory, "hook"))
    return cursor is not None and cursor.get(log.stream) == Position(
        log.path.name, log.path.stat().st_size)


def ids(received: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"], 16) for r in received]


async def test_outage_then_everything_arrives_signed_in_order(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    log = EventLog(tmp_path, "scheduler", max_file_bytes=2000)
    async with shipping(hook(receiver), tmp_path) as shipper:
        await log.write(records(0, 25))
        await async_wait_for(lambda: shipper.failures >= 2, timeout=5)  # refused
        receiver.status = 503
        receiver.start()
        await async_wait_for(lambda: receiver.posted(), timeout=5)
        await log.write(records(25, 25))
        receiver.status = 200
        await async_wait_for(lambda: len(receiver.accepted()) >= 50, timeout=10)
    await log.close()
    assert ids(receiver.accepted()) == list(range(50))
    for posted in receiver.posted():
        assert posted.headers["Content-Type"] == "application/json"
        assert verify_signature(SECRET, posted.body, posted.headers[TIMESTAMP_HEADER],
                                posted.headers[SIGNATURE_HEADER])
        assert len(posted.records) <= 10
    assert len({r["event_id"] for r in receiver.accepted()}) == 50


async def test_restart_resumes_from_the_cursor(tmp_path: Path,
                                               receiver: WebhookReceiver) -> None:
    receiver.start()
    log = EventLog(tmp_path, "scheduler")
    webhook = hook(receiver)
    async with shipping(webhook, tmp_path):
        await log.write(records(0, 30))
        await async_wait_for(lambda: cursor_at_end(log), timeout=10)  # acknowledged, saved
    assert ids(receiver.accepted()) == list(range(30))
    await log.write(records(30, 15))  # while no shipper runs
    async with shipping(webhook, tmp_path):
        await async_wait_for(lambda: len(receiver.accepted()) >= 45, timeout=5)
        await log.write(records(45, 5))
        await async_wait_for(lambda: len(receiver.accepted()) >= 50, timeout=5)
    await log.close()
    assert ids(receiver.accepted()) == list(range(50))


async def test_filters_and_partial_batch_latency(tmp_path: Path,
                                                 receiver: WebhookReceiver) -> None:
    receiver.start()
    log = EventLog(tmp_path, "scheduler")
    webhook = hook(receiver, record_types=["Bounce"], tenants=["acme"], batch_size=100,
                   max_batch_latency=0.3)
    async with shipping(webhook, tmp_path):
        await log.write(records(0, 5, "Delivery", "acme") + records(5, 1, "Bounce", "acme")
                        + records(6, 3, "Bounce", "globex"))
        await async_wait_for(lambda: receiver.accepted(), timeout=5)
        await log.write(records(9, 1, "Bounce", "acme"))
        await async_wait_for(lambda: cursor_at_end(log), timeout=10)
    await log.close()
    assert ids(receiver.accepted()) == [5, 9]


async def test_new_webhook_starting_at_newest_skips_history(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.start()
    log = EventLog(tmp_path, "ingress")
    await log.write(records(0, 10, "Reception"))
    async with shipping(hook(receiver, start_at="newest"), tmp_path):
        await async_wait_for(lambda: cursor_path(tmp_path, "hook").exists(), timeout=5)
        await log.write(records(10, 2, "Reception"))
        await async_wait_for(lambda: len(receiver.accepted()) >= 2, timeout=5)
    await log.close()
    assert ids(receiver.accepted()) == [10, 11]
