"""Durability of a real ``python -m spool`` process on RocksDB: every acknowledged write
survives ``kill -9``; SIGTERM stops it cleanly with the store closed."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from petrel.rpc import StreamBroken, StreamCaller, create_channel
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.server import SERVICE_NAME
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


class SpoolProcess:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, object] = {}

    def start(self) -> SpoolProcess:
        env = {**os.environ, "PETREL_SPOOL__LISTEN": self.address,
               "PETREL_SPOOL__BACKEND": "rocksdb", "PETREL_SPOOL__PATH": str(self.data / "spool"),
               "PETREL_DATA_DIR": str(self.data)}
        env.pop("PETREL_CONFIG", None)
        with (self.data / "spool.log").open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "spool"], cwd=REPO, env=env,
                                         stdout=subprocess.PIPE, stderr=log)
        self.ready = self._ready_line()
        return self

    def _ready_line(self) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if readable:
                line = self.proc.stdout.readline()
                if line.startswith(b'{"ready"'):
                    return dict(json.loads(line))
            if self.proc.poll() is not None:
                break
        raise RuntimeError("spool not ready:\n" + (self.data / "spool.log").read_text()[-2000:])

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(20)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def spool_process(data: Path) -> Iterator[SpoolProcess]:
    process = SpoolProcess(data)
    try:
        yield process.start()
    finally:
        process.stop()


def request(n: int) -> spool_pb2.PutMessageRequest:
    meta = common_pb2.MessageMeta(sender=f"s{n}@example.com", tenant="t",
                                  idempotency_key=f"key-{n}")
    meta.recipients.add(address=f"r{n}@example.net")
    return spool_pb2.PutMessageRequest(meta=meta, body=os.urandom(64 + n % 4096))


async def put_until_killed(process: SpoolProcess, kill_after: int,
                           ) -> dict[str, spool_pb2.PutMessageRequest]:
    """Keep 20 callers putting; SIGKILL the spool once ``kill_after`` puts were acked.
    Returns every acked message by id (expected meta: the request's plus id and size)."""
    channel = create_channel(process.address)
    stub = spool_pb2_grpc.SpoolServiceStub(channel)
    callers = [StreamCaller(stub.PutMessages, name="put") for _ in range(4)]
    acked: dict[str, spool_pb2.PutMessageRequest] = {}
    numbers = iter(range(1_000_000))
    killed = asyncio.Event()

    async def worker(index: int) -> None:
        while not killed.is_set():
            req = request(next(numbers))
            try:
                response = await callers[index % 4].call(req, TIMEOUT)
            except (StreamBroken, TimeoutError):
                return
            assert response.status.code == 0, response.status
            req.meta.id = response.id
            req.meta.size = len(req.body)
            acked[response.id] = req
            if len(acked) >= kill_after and not killed.is_set():
                killed.set()
                os.kill(process.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]

    try:
        await asyncio.gather(*(worker(i) for i in range(20)))
    finally:
        for caller in callers:
            await caller.close()
        await channel.close()
    return acked


async def test_every_acked_put_survives_kill_9(tmp_path: Path) -> None:
    with spool_process(tmp_path) as process:
        acked = await put_until_killed(process, kill_after=400)
        assert process.proc is not None and process.proc.wait(10) == -signal.SIGKILL
        process.proc = None
        assert len(acked) >= 400

        process.start()
        assert process.ready["backend"] == "rocksdb"
        assert int(process.ready["messages"]) >= len(acked)  # type: ignore[call-overload]
        async with create_channel(process.address) as channel:
            stub = spool_pb2_grpc.SpoolServiceStub(channel)
            scanned = {m.id: m async for batch in stub.ScanMessages(
                spool_pb2.ScanMessagesRequest(), timeout=TIMEOUT) for m in batch.messages}
            for message_id, sent in acked.items():
                assert scanned[message_id] == sent.meta
                stored = await stub.GetMessage(
                    spool_pb2.GetMessageRequest(id=message_id, want_body=True), timeout=TIMEOUT)
                assert stored.meta == sent.meta
                assert stored.body == sent.body


async def test_sigterm_stops_cleanly_and_store_reopens(tmp_path: Path) -> None:
    with spool_process(tmp_path) as process:
        async with create_channel(process.address) as channel:
            stub = spool_pb2_grpc.SpoolServiceStub(channel)
            caller = StreamCaller(stub.PutMessages, name="put")
            try:
                acks = await asyncio.gather(*(caller.call(request(n), TIMEOUT) for n in range(20)))
            finally:
                await caller.close()
        assert process.signal(signal.SIGTERM) == 0
        log = (tmp_path / "spool.log").read_text()
        assert "spool closed (" in log

        process.start()
        async with create_channel(process.address) as channel:
            stub = spool_pb2_grpc.SpoolServiceStub(channel)
            stats = await stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)
            assert stats.messages == 20
            for ack in acks:
                await stub.GetMessage(spool_pb2.GetMessageRequest(id=ack.id), timeout=TIMEOUT)
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
            assert health.status == health_pb2.HealthCheckResponse.SERVING


