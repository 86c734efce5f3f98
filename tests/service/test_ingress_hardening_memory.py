"""Bounded memory per session: 100 MB of DATA sent to an ingress process whose size limit is
1 MB is read, dropped and refused with 552 (or 500 for one endless line) without the
process's peak RSS growing by anything like the stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petrel import smtp_replies
from tests.service.test_ingress_hardening_harness import IngressProcess, assert_greets
from tests.service.test_ingress_harness import RawSmtp, SpoolProcess, spool_count

STREAM = 100 * 1024 * 1024
CHUNK = 1024 * 1024
# Peak RSS may grow by the 1 MB limit, the reader's buffers and allocator slack; not by the
# stream.
MAX_GROWTH_KB = 24 * 1024


@pytest.fixture
def ingress(tmp_path: Path, spool: SpoolProcess) -> Iterator[IngressProcess]:
    process = IngressProcess(tmp_path, spool.address, max_message_size=str(1024 * 1024),
                             command_timeout="30").start()
    yield process
    process.stop()


async def stream_data(port: int, chunk: bytes) -> str:
    client = await RawSmtp.connect(port)
    try:
        assert (await client.reply()).startswith("220 ")
        assert (await client.command("EHLO client.test")).startswith("250")
        assert await client.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await client.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await client.command("DATA")).startswith("354")
        for _ in range(STREAM // len(chunk)):
            await client.send(chunk)
        await client.send(b"\r\n.\r\n")
        reply = await client.reply(timeout=60)
        assert await client.command("NOOP") == "250 2.0.0 OK"
        return reply
    finally:
        await client.close()


@pytest.mark.parametrize(("chunk", "reply"), [
    ((b"m" * 1022 + b"\r\n")[:998] + b"\r\n", smtp_replies.TOO_BIG),  # ordinary lines
    (b"n" * CHUNK, smtp_replies.LINE_TOO_LONG),  # one line of 100 MB, never a CRLF
], ids=["lines", "endless-line"])
async def test_100_mb_of_data_does_not_become_100_mb_of_memory(
        ingress: IngressProcess, spool: SpoolProcess, chunk: bytes, reply: str) -> None:
    if len(chunk) < CHUNK:
        chunk *= CHUNK // len(chunk)
    before = await spool_count(spool.address)
    await assert_greets(ingress.smtp_port)
    peak_before = ingress.status_kb("VmHWM")
    assert await stream_data(ingress.smtp_port, chunk) == reply
    growth = ingress.status_kb("VmHWM") - peak_before
    assert growth < MAX_GROWTH_KB, f"peak RSS grew by {growth} kB"
    assert ingress.alive
    assert await spool_count(spool.address) == before
    await assert_greets(ingress.smtp_port)
