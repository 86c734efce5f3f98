"""Start and stop: ``python -m ingress`` announces its addresses and stops cleanly on
SIGTERM; a stopping ingress finishes the transaction in flight before closing sessions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ingress.main import Ingress
from petrel import smtp_replies
from petrel.smtp_replies import parse_reply
from tests.service.test_ingress_harness import (
    REPO,
    RawSmtp,
    SpoolProcess,
    ingress_config,
    smtp_port,
    spool_message,
)
from tests.support.net import free_port, port_open, wait_for


def test_process_announces_serves_and_stops_on_sigterm(tmp_path: Path,
                                                       spool: SpoolProcess) -> None:
    smtp, grpc_port = free_port(), free_port()
    env = {**os.environ, "PETREL_DATA_DIR": str(tmp_path), "PETREL_LOG_LEVEL": "WARNING",
           "PETREL_SPOOL__ADDRESS": spool.address,
           "PETREL_SCHEDULER__ADDRESS": f"127.0.0.1:{free_port()}",
           "PETREL_INGRESS__SMTP_LISTEN": f"127.0.0.1:{smtp}",
           "PETREL_INGRESS__GRPC_LISTEN": f"127.0.0.1:{grpc_port}"}
    env.pop("PETREL_CONFIG", None)
    process = subprocess.Popen([sys.executable, "-m", "ingress"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready == {"ready": "ingress", "smtp": f"127.0.0.1:{smtp}",
                         "grpc": f"127.0.0.1:{grpc_port}"}
        with grpc.insecure_channel(ready["grpc"]) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="petrel.v1.InjectService"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = asyncio.run(_send(smtp))
        assert reply.startswith("250 2.0.0 ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert not port_open(smtp)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read().decode() if process.stderr else ""
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert "Traceback" not in stderr


async def _send(port: int) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               timeout=10) as client:
        _, message = await client.sendmail("a@example.com", ["b@example.net"],
                                           b"Subject: up\r\n\r\nhi\r\n")
    return f"250 {message}"


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess) -> AsyncIterator[Ingress]:
    running = Ingress(ingress_config(tmp_path, spool.address, spool_deadline=5.0))
    await running.start()
    yield running


async def test_stop_finishes_the_transaction_in_flight(ingress: Ingress,
                                                       spool: SpoolProcess) -> None:
    port = smtp_port(ingress)
    assert (await _send(port)).startswith("250 2.0.0 ")  # the spool connection is up
    busy, idle = await RawSmtp.connect(port), await RawSmtp.connect(port)
    try:
        for client in (busy, idle):
            assert (await client.reply()).startswith("220 ")
            assert (await client.command("EHLO c.test")).startswith("250")
        assert await busy.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await busy.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await busy.command("DATA")).startswith("354")
        os.kill(spool.pid, signal.SIGSTOP)  # hold the durable write so DATA stays in flight
        try:
            await busy.send(b"Subject: in flight\r\n\r\nhi\r\n.\r\n")
            await asyncio.to_thread(wait_for, lambda: ingress.acceptor.in_flight, 5)
            stopping = asyncio.create_task(ingress.stop())
            await asyncio.to_thread(wait_for, lambda: not port_open(port), 5)
            assert await idle.reply() == smtp_replies.SHUTTING_DOWN
        finally:
            os.kill(spool.pid, signal.SIGCONT)
        reply = parse_reply(await busy.reply())
        assert reply.code == 250
        assert await busy.reply() == smtp_replies.SHUTTING_DOWN
        await asyncio.wait_for(stopping, 15)
        assert await spool_message(spool.address, reply.text.split()[0]) is not None
    finally:
        await busy.close()
        await idle.close()
