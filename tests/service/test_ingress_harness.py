"""Real peers for the ingress service tests (no tests here): a spool process, an ingress
running in-process on the test's loop, spool lookups, and the bounce service's suppression
list (and classifier) in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bounce.classifier import ReplyClassifier
from bounce.server import SERVICE_NAME as BOUNCE_SERVICE
from bounce.server import BounceServicer
from bounce.suppression_server import SERVICE_NAME as SUPPRESSION_SERVICE
from bounce.suppression_server import SuppressionServicer
from bounce.suppression_store import SuppressionStore
from ingress.main import Ingress
from petrel.config import Config, load_config
from petrel.rpc import create_channel, create_server
from petrel.v1 import (
    bounce_pb2_grpc,
    spool_pb2,
    spool_pb2_grpc,
    suppression_pb2,
    suppression_pb2_grpc,
)
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 5.0


class ServiceProcess:
    """``python -m <service>`` on a fixed loopback port (``PETREL_<SERVICE>__LISTEN``), so it
    can be stopped and started again at the same address. ``start``/``stop`` block: call them
    through ``asyncio.to_thread`` from a running loop."""

    def __init__(self, service: str, data_dir: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.service = service
        self.data_dir = data_dir
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = env or {}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        env = {**os.environ, "PETREL_DATA_DIR": str(self.data_dir),
               f"PETREL_{self.service.upper()}__LISTEN": self.address,
               "PETREL_LOG_LEVEL": "WARNING", **self.env}
        env.pop("PETREL_CONFIG", None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        errors = self.data_dir / f"{self.service}.stderr"
        with open(errors, "ab") as err:
            self._process = subprocess.Popen([sys.executable, "-m", self.service], cwd=REPO,
                                             env=env, stdout=subprocess.PIPE, stderr=err)
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], 0.2)
            if not ready:
                continue
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"{self.service} exited: {errors.read_text()[-2000:]}")
            with contextlib.suppress(ValueError):
                if json.loads(line).get("ready") == self.service:
                    return self
        self.stop(kill=True)
        raise TimeoutError(f"{self.service} did not get ready")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self, kill: bool = False) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            if kill:
                self._process.kill()
            else:
                self._process.terminate()
        self._process.wait(15)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None


class SpoolProcess(ServiceProcess):
    """The spool on RocksDB under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__("spool", data_dir, port, {"PETREL_SPOOL__BACKEND": "rocksdb"})

    def start(self, timeout: float = 20.0) -> SpoolProcess:
        super().start(timeout)
        return self


def ingress_config(tmp_path: Path, spool_address: str, **ingress: Any) -> Config:
    """Configuration for an in-process ingress on free ports; the scheduler address points
    at a closed port unless given."""
    scheduler = ingress.pop("scheduler_address", f"127.0.0.1:{free_port()}")
    settings: dict[str, Any] = {
        "smtp_listen": "127.0.0.1:0", "grpc_listen": "127.0.0.1:0",
        "hostname": "ingress.petrel.test", "spool_deadline": 3.0, "enqueue_deadline": 1.0,
        **ingress,
    }
    return load_config(env={}, overrides={
        "data_dir": str(tmp_path), "spool": {"address": spool_address},
        "scheduler": {"address": scheduler}, "ingress": settings,
    })


@contextlib.asynccontextmanager
async def running_ingress(config: Config) -> AsyncIterator[Ingress]:
    ingress = Ingress(config)
    await ingress.start()
    try:
        yield ingress
    finally:
        await ingress.stop()


def smtp_port(ingress: Ingress) -> int:
    return int(ingress.smtp_address.rpartition(":")[2])


async def spool_message(address: str, message_id: str) -> spool_pb2.GetMessageResponse | None:
    """The stored message (meta and body), or ``None`` when the spool does not have it."""
    async with create_channel(address) as channel:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        try:
            return await stub.GetMessage(
                spool_pb2.GetMessageRequest(id=message_id, want_body=True), timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


async def spool_count(address: str) -> int:
    async with create_channel(address) as channel:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        stats = await stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=5)
        return int(stats.messages)


class SuppressionPeer:
    """The bounce service's SuppressionService over RocksDB under ``path``, in-process, with
    a client for the test; with a ``classifier`` it serves the BounceService too."""

    def __init__(self, path: Path, classifier: ReplyClassifier | None = None) -> None:
        self.store = SuppressionStore(path)
        self.classifier = classifier
        self.address = ""
        self.stub: suppression_pb2_grpc.SuppressionServiceStub
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> SuppressionPeer:
        services: list[tuple[Any, Any, str]] = [
            (suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
             SuppressionServicer(self.store), SUPPRESSION_SERVICE)]
        if self.classifier is not None:
            services.insert(0, (bounce_pb2_grpc.add_BounceServiceServicer_to_server,
                                BounceServicer(self.classifier), BOUNCE_SERVICE))
        self._server, _, port = create_server("127.0.0.1:0", services)
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        self._channel = create_channel(self.address)
        self.stub = suppression_pb2_grpc.SuppressionServiceStub(self._channel)
        return self

    async def add(self, address: str, tenant: str = "", reason: str = "InvalidRecipient",
                  source: int = suppression_pb2.SUPPRESSION_SOURCE_BOUNCE) -> None:
        await self.stub.AddSuppressions(suppression_pb2.AddSuppressionsRequest(entries=[
            suppression_pb2.Suppression(address=address, tenant=tenant, reason=reason,
                                        source=source)]),  # type: ignore[arg-type]
            timeout=DEADLINE)

    async def remove(self, address: str, tenant: str = "") -> None:
        await self.stub.RemoveSuppressions(suppression_pb2.RemoveSuppressionsRequest(
            keys=[suppression_pb2.SuppressionKey(address=address, tenant=tenant)]),
            timeout=DEADLINE)

    async def entries(self) -> list[tuple[str, str, str, str]]:
        listed = await self.stub.ListSuppressions(
            suppression_pb2.ListSuppressionsRequest(all_tenants=True), timeout=DEADLINE)
        return [(e.address, e.tenant, e.reason, suppression_pb2.SuppressionSource.Name(
            e.source)) for e in listed.entries]

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._server is not None:
            await self._server.stop(None)
        self.store.close()


class RawSmtp:
    """A byte-level SMTP client for what polite clients never send (bare LF, pipelined
    garbage). ``reply()`` returns one complete (possibly multi-line) reply, last line text."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> RawSmtp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self, timeout: float = 5.0) -> str:
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError(f"connection closed after {lines!r}")
                lines.append(line.decode().rstrip("\r\n"))
                if len(line) < 4 or line[3:4] != b"-":
                    return lines[-1] if len(lines) == 1 else "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
