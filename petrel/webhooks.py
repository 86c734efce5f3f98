"""Webhooks: event records POSTed in signed batches, at least once, in order per message.

The event log files are the durable outbox. For each configured webhook a shipper task reads
the records appended since its cursor (``petrel.event_segments.read_round``), keeps those its
filters accept, POSTs them as a JSON array, and after a 2xx answer saves the cursor (fsynced).
A failed POST is retried with exponential backoff until it succeeds; a restart resumes from the
saved cursor, so a batch may arrive twice but no record is skipped. Every shipped record
carries ``event_id`` (its place in the log) for de-duplication.

Signature: ``X-Petrel-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``
with the Unix time in ``X-Petrel-Timestamp`` (``verify_signature`` checks both).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from petrel.config import Config, WebhookConfig
from petrel.event_segments import (
    DEFAULT_ROUND_BYTES,
    Entry,
    Positions,
    cursor_path,
    end_positions,
    load_cursor,
    read_round,
    save_cursor,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Petrel-Signature"
TIMESTAMP_HEADER = "X-Petrel-Timestamp"
WEBHOOK_HEADER = "X-Petrel-Webhook"
USER_AGENT = "petrel-webhooks/1"
STOP_GRACE = 5.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Petrel-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(secret: str, body: bytes, timestamp: str, signature: str, *,
                     tolerance: float = 300.0, now: float | None = None) -> bool:
    """True when ``signature`` signs ``body`` with ``secret`` and ``timestamp`` is within
    ``tolerance`` seconds of ``now`` (replay protection; 0 disables the time check)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if tolerance and abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def accepts(webhook: WebhookConfig, record: Mapping[str, Any]) -> bool:
    """The webhook's filters: record types (empty = all) and tenants (empty = all; ``""``
    stands for records without a tenant)."""
    if webhook.record_types and record.get("type") not in webhook.record_types:
        return False
    return not webhook.tenants or (record.get("tenant") or "") in webhook.tenants


def encode_batch(entries: Sequence[Entry]) -> bytes:
    return json.dumps([{**e.record, "event_id": e.event_id} for e in entries],
                      separators=(",", ":")).encode()


class WebhookShipper:
    """Ships one webhook's records from ``directory`` until cancelled (``run``)."""

    def __init__(self, webhook: WebhookConfig, directory: str | Path, *,
                 poll_interval: float = 0.25, max_round_bytes: int = DEFAULT_ROUND_BYTES,
                 client: httpx.AsyncClient | None = None) -> None:
        self.webhook = webhook
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self.max_round_bytes = max_round_bytes
        self.cursor_file = cursor_path(self.directory, webhook.name)
        self._client = client
        self._own_client = client is None
        self.batches = 0
        self.records = 0
        self.failures = 0

    async def run(self) -> None:
        client = self._client or httpx.AsyncClient(timeout=self.webhook.timeout)
        try:
            await self._ship(client)
        finally:
            if self._own_client:
                await client.aclose()

    async def _ship(self, client: httpx.AsyncClient) -> None:
        cursor = await self._initial_cursor()
        pending_since: float | None = None
        while True:
            found = await asyncio.to_thread(read_round, self.directory, cursor,
                                            max_bytes=self.max_round_bytes)
            positions = dict(cursor)
            batch: list[Entry] = []
            before_batch = positions
            for entry in found.entries:
                if accepts(self.webhook, entry.record):
                    if not batch:
                        before_batch = dict(positions)
                    batch.append(entry)
                positions[entry.stream] = entry.position
                if len(batch) >= self.webhook.batch_size:
                    await self._post(client, batch)
                    cursor = await self._save(cursor, positions)
                    batch, pending_since = [], None
            wait = self.poll_interval
            if batch:
                now = time.monotonic()
                pending_since = pending_since or now
                due = pending_since + self.webhook.max_batch_latency
                if now >= due or found.more:
                    await self._post(client, batch)
                    cursor = await self._save(cursor, found.end)
                    pending_since = None
                else:
                    # keep the partial batch on disk, not in memory: re-read it next round
                    cursor = await self._save(cursor, before_batch)
                    wait = min(wait, due - now)
            else:
                cursor = await self._save(cursor, found.end)
                pending_since = None
            if not found.more:
                await asyncio.sleep(wait)

    async def _initial_cursor(self) -> Positions:
        cursor = await asyncio.to_thread(load_cursor, self.cursor_file)
        if cursor is not None:
            return cursor
        if self.webhook.start_at == "newest":
            return await self._save({}, await asyncio.to_thread(end_positions, self.directory))
        return {}

    async def _save(self, old: Positions, new: Mapping[str, Any]) -> Positions:
        new = dict(new)
        if new != old:
            await asyncio.to_thread(save_cursor, self.cursor_file, self.webhook.name, new)
        return new

    async def _post(self, client: httpx.AsyncClient, batch: Sequence[Entry]) -> None:
        """POST until a 2xx answer, backing off from ``retry_initial`` to ``retry_max``."""
        body = encode_batch(batch)
        delay = self.webhook.retry_initial
        while True:
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       WEBHOOK_HEADER: self.webhook.name, TIMESTAMP_HEADER: str(timestamp),
                       **self.webhook.headers}
            if self.webhook.secret:
                headers[SIGNATURE_HEADER] = sign(self.webhook.secret, timestamp, body)
            try:
                response = await client.post(self.webhook.url, content=body, headers=headers,
                                             timeout=self.webhook.timeout)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    self.batches += 1
                    self.records += len(batch)
                    return
                problem = f"HTTP {response.status_code}"
            self.failures += 1
            log.warning("webhook %s: batch of %d records not accepted (%s); retry in %.1fs",
                        self.webhook.name, len(batch), problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.webhook.retry_max)


class Shipper:
    """Every configured webhook's ``WebhookShipper``, as background tasks of the hosting
    process (``events.webhook_host``): ``start()``, later ``stop()``."""

    def __init__(self, webhooks: Sequence[WebhookConfig], directory: str | Path, *,
                 poll_interval: float = 0.25) -> None:
        self.shippers = [WebhookShipper(w, directory, poll_interval=poll_interval)
                         for w in webhooks]
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(cls, config: Config, host: str) -> Shipper | None:
        """The shipper ``host`` should run, or None when another process (or none) ships."""
        events = config.events
        if not events.webhooks or events.webhook_host != host:
            return None
        return cls(events.webhooks, config.events_dir,
                   poll_interval=events.webhook_poll_interval)

    def start(self) -> None:
        for shipper in self.shippers:
            self._tasks.append(asyncio.create_task(
                self._supervise(shipper), name=f"webhook {shipper.webhook.name}"))

    async def _supervise(self, shipper: WebhookShipper) -> None:
        """Keep a shipper running: an unexpected error (disk, a bad cursor file) is logged
        and the shipper restarts from its saved cursor."""
        delay = shipper.webhook.retry_initial
        while True:
            try:
                await shipper.run()
            except Exception:
                log.exception("webhook %s: shipper failed; restarting in %.1fs",
                              shipper.webhook.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, shipper.webhook.retry_max)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Cancel the shippers: an unacknowledged batch is sent again after the restart."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, grace)
        self._tasks.clear()
