"""Real peers for the egress service tests (no tests here).

* ``DispatchDriver``: a real gRPC ``SchedulerService.Dispatch`` server that hands out the tasks
  a test gives it, never more than the worker's granted credit, and records hellos, credit
  grants and results. Tasks outstanding on a stream that breaks go back to the queue, as the
  scheduler does.
* ``RecordingSink``: the shared ``SmtpSink`` (scripted replies by local part) that also
  records, per accepted message, the client's connection (to count sessions) and whether it
  arrived over TLS; optional STARTTLS and a delay before answering DATA.
* ``BannerServer``: a TCP server that answers every connection with a fixed banner and hangs up.
* ``EgressHarness``: the in-process spool (memory backend), the driver, optionally the bounce
  service (its real servicer and rules), and ``egress.main.serve`` itself on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiosmtpd.smtp import SMTP, Envelope, Session

from bounce.classifier import ReplyClassifier
from bounce.server import BounceServicer
from egress.main import serve
from petrel.config import Config, load_config
from petrel.ids import new_message_id
from petrel.rpc import create_server
from petrel.v1 import (
    bounce_pb2,
    bounce_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    spool_pb2_grpc,
)
from spool.backend import PutOp, open_backend
from spool.server import SERVICE_NAME as SPOOL_SERVICE
from spool.server import SpoolServicer
from spool.store import Spool
from tests.support.net import async_wait_for, free_port
from tests.support.sink import Received, SinkHandler, SmtpSink

SENDER = "sender@petrel.test"


def make_body(token: str = "", size: int = 300) -> bytes:
    head = (f"From: <{SENDER}>\r\nTo: <rcpt@dest.test>\r\nSubject: egress {token}\r\n"
            f"Message-ID: <{token or 'x'}@petrel.test>\r\n\r\n").encode()
    line = b".leading dot and some text " + b"x" * 40 + b"\r\n"
    return head + line * max(1, size // len(line))


# --- Dispatch driver --------------------------------------------------------------------------

class DispatchDriver(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self) -> None:
        self.pending: list[scheduler_pb2.DeliveryTask] = []
        self.results: dict[str, scheduler_pb2.DeliveryResult] = {}
        self.result_order: list[str] = []
        self.hellos: list[str] = []
        self.credits: list[int] = []
        self.streams = 0
        self.open_streams = 0
        self.max_outstanding = 0
        self._wakers: set[asyncio.Event] = set()
        self._break = False
        self._ids = itertools.count(1)

    def add(self, domain: str, recipients: list[str], message_id: str,
            sender: str = SENDER, **fields: Any) -> scheduler_pb2.DeliveryTask:
        task = scheduler_pb2.DeliveryTask(
            task_id=f"t{next(self._ids)}", message_id=message_id, sender=sender,
            recipients=recipients, domain=domain, queue=domain, attempt=1, **fields)
        self.pending.append(task)
        self._wake()
        return task

    def break_streams(self) -> None:
        self._break = True
        self._wake()

    def _wake(self) -> None:
        for event in self._wakers:
            event.set()

    async def wait_results(self, tasks: list[scheduler_pb2.DeliveryTask], timeout: float = 15.0
                           ) -> list[scheduler_pb2.DeliveryResult]:
        await async_wait_for(lambda: all(t.task_id in self.results for t in tasks),
                             timeout=timeout, message=f"results of {len(tasks)} tasks")
        return [self.results[t.task_id] for t in tasks]

    async def Dispatch(self, request_iterator: AsyncIterator[scheduler_pb2.DispatchRequest],
                       context: grpc.aio.ServicerContext) -> None:
        self.streams += 1
        self.open_streams += 1
        self._break = False
        wake = asyncio.Event()
        self._wakers.add(wake)
        state = {"credit": 0}
        outstanding: dict[str, scheduler_pb2.DeliveryTask] = {}

        async def read() -> None:
            async for request in request_iterator:
                kind = request.WhichOneof("kind")
                if kind == "hello":
                    self.hellos.append(request.hello.worker_id)
                elif kind == "credit":
                    self.credits.append(request.credit)
                    state["credit"] += request.credit
                elif kind == "result":
                    record(request.result)
                elif kind == "report":
                    for result in request.report.results:
                        record(result)
                    if request.report.credit:
                        self.credits.append(request.report.credit)
                        state["credit"] += request.report.credit
                wake.set()

        def record(result: scheduler_pb2.DeliveryResult) -> None:
            outstanding.pop(result.task_id, None)
            self.results[result.task_id] = result
            self.result_order.append(result.task_id)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: wake.set())
        try:
            while not reader.done():
                if self._break:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "driver broke the stream")
                if state["credit"] > 0 and self.pending:
                    task = self.pending.pop(0)
                    state["credit"] -= 1
                    outstanding[task.task_id] = task
                    self.max_outstanding = max(self.max_outstanding, len(outstanding))
                    await context.write(scheduler_pb2.DispatchResponse(task=task))
                    continue
                wake.clear()
                await wake.wait()
        finally:
            self.open_streams -= 1
            self._wakers.discard(wake)
            self.pending[:0] = list(outstanding.values())
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


# --- bounce -----------------------------------------------------------------------------------

class CountingBounce(BounceServicer):
    """The bounce service's own servicer and built-in rules, counting ClassifyReplies calls."""

    def __init__(self) -> None:
        super().__init__(ReplyClassifier.from_files(()))
        self.calls = 0

    async def ClassifyReplies(self, request: bounce_pb2.ClassifyRepliesRequest,
                              context: grpc.aio.ServicerContext
                              ) -> bounce_pb2.ClassifyRepliesResponse:
        self.calls += 1
        return await super().ClassifyReplies(request, context)


# --- SMTP peers -------------------------------------------------------------------------------

@dataclass
class Delivered:
    message: Received
    client_port: int
    tls: bool


@dataclass
class _RecordingHandler(SinkHandler):
    sink: RecordingSink

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.sink._lock:
            self.sink.quits += 1
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data_delay:
            await asyncio.sleep(self.sink.data_delay)
        if self.sink.data_reply:
            return self.sink.data_reply
        message = Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                           envelope.original_content or b"", str(session.peer[0]))
        self.sink.record(message)
        with self.sink._lock:
            self.sink.deliveries.append(Delivered(message, int(session.peer[1]),
                                                  session.ssl is not None))
        return "250 2.0.0 OK queued"


@dataclass
class RecordingSink(SmtpSink):
    data_delay: float = 0.0
    deliveries: list[Delivered] = field(default_factory=list)
    quits: int = 0

    def handler(self) -> object:
        return _RecordingHandler(self)

    def connections(self) -> int:
        """Distinct client connections that delivered at least one message."""
        with self._lock:
            return len({d.client_port for d in self.deliveries})


class BannerServer:
    """Answers every connection with ``banner`` and closes it (a refusing MX)."""

    def __init__(self, host: str, port: int, banner: str) -> None:
        self.host, self.port, self.banner = host, port, banner
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> BannerServer:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.write(f"{self.banner}\r\n".encode())
            with contextlib.suppress(OSError):
                await writer.drain()
                await asyncio.wait_for(reader.read(1024), 2)
            writer.close()

        self._server = await asyncio.start_server(greet, self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


Script = str | None | list[str | None]


class ScriptedSmtp:
    """A minimal SMTP server whose replies are scripted per command verb (``"BANNER"``,
    ``"EHLO"``, ``"HELO"``, ``"MAIL"``, ``"RCPT"``, ``"DATA"`` for the 354, ``"DOT"`` for the
    reply after the message, ``"RSET"``, ``"QUIT"``). A reply of ``None`` means never answer
    (to exercise timeouts); ``"CLOSE"`` hangs up instead of answering; a list scripts the
    verb's successive replies (the last one repeats). With ``pipelining`` EHLO advertises
    PIPELINING; commands are answered in order either way. ``messages`` holds each message's
    data up to and including the line with the lone dot."""

    DEFAULTS: dict[str, Script] = {
        "BANNER": "220 scripted.test ESMTP", "EHLO": "250 scripted.test",
        "HELO": "250 scripted.test", "MAIL": "250 2.1.0 OK", "RCPT": "250 2.1.5 OK",
        "DATA": "354 go ahead", "DOT": "250 2.0.0 queued", "RSET": "250 2.0.0 OK",
        "QUIT": "221 2.0.0 bye", "NOOP": "250 2.0.0 OK"}
    PIPELINING_EHLO = "250-scripted.test\r\n250 PIPELINING"

    def __init__(self, host: str, port: int, *, pipelining: bool = False,
                 **replies: Script) -> None:
        self.host, self.port = host, port
        ehlo = {"EHLO": self.PIPELINING_EHLO} if pipelining else {}
        scripts = {**self.DEFAULTS, **ehlo, **replies}
        # Lists are consumed: each server gets its own copies.
        self.replies: dict[str, Script] = {
            verb: list(script) if isinstance(script, list) else script
            for verb, script in scripts.items()}
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ScriptedSmtp:
        self._server = await asyncio.start_server(self._session, self.host, self.port)
        return self

    def _next_reply(self, verb: str) -> str | None:
        script = self.replies.get(verb, "500 5.5.1 unknown command")
        if isinstance(script, list):
            return script.pop(0) if len(script) > 1 else script[0]
        return script

    async def _answer(self, writer: asyncio.StreamWriter, verb: str) -> str | None:
        """The reply sent for ``verb``, or ``None`` when the script says not to answer."""
        reply = self._next_reply(verb)
        if reply is None:
            return None
        if reply == "CLOSE":
            writer.close()
            return None
        writer.write(f"{reply}\r\n".encode())
        await writer.drain()
        return reply

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ) -> None:
        self._writers.add(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if await self._answer(writer, "BANNER") is None:
                await reader.read()
                return
            while line := await reader.readline():
                verb = self._record(line)
                if verb == "DATA":
                    reply = await self._answer(writer, "DATA")
                    if reply is None:
                        await self._listen(reader)
                        return
                    if not reply.startswith("354"):
                        continue
                    self.messages.append(await read_message(reader))
                    verb = "DOT"
                if await self._answer(writer, verb) is None:
                    await self._listen(reader)
                    return
                if verb == "QUIT":
                    break
        writer.close()

    def _record(self, line: bytes) -> str:
        verb = line.decode(errors="replace").split(" ", 1)[0].strip().upper()
        self.commands.append(verb)
        return verb

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        """Silent from now on: record what the client still sends until it hangs up."""
        while line := await reader.readline():
            self._record(line)

    async def stop(self) -> None:
        """Stop listening and hang up on every client (no session outlives the server)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.close()


async def read_message(reader: asyncio.StreamReader) -> bytes:
    """Message data after a 354, up to and including the line with the lone dot."""
    lines = []
    while True:
        line = await reader.readuntil(b"\r\n")
        lines.append(line)
        if line == b".\r\n":
            return b"".join(lines)


_cert_lock = threading.Lock()


def self_signed_cert(directory: Path, name: str = "mx.test") -> tuple[Path, Path]:
    """A throwaway certificate and key made with the ``openssl`` CLI (EC P-256, one day)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    with _cert_lock:
        if not cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                 "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out",
                 str(cert)], check=True, capture_output=True)
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


# --- the harness ------------------------------------------------------------------------------

class EgressHarness:
    """Spool + dispatch driver (+ bounce) servers in-process, and egress's ``serve``."""

    def __init__(self, tmp_path: Path, *, routing: dict[str, Any] | None = None,
                 egress: dict[str, Any] | None = None, bounce: bool = True,
                 body_deadline: float = 15.0, drain_timeout: float = 8.0,
                 bounce_config: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.routing = routing or {}
        self.egress = egress or {}
        # No ref header unless asked for, so tests can compare what the sink got with the body
        # (the stamps have their own tests: test_egress_stamp.py).
        self.bounce_config = {"ref_header": "", **(bounce_config or {})}
        self.with_bounce = bounce
        self.body_deadline = body_deadline
        self.drain_timeout = drain_timeout
        self.spool_port = 0
        self._spool_server: grpc.aio.Server | None = None
        self.driver = DispatchDriver()
        self.bounce = CountingBounce() if bounce else None
        self.spool: Spool | None = None
        self.stop = asyncio.Event()
        self._servers: list[grpc.aio.Server] = []
        self._serve_task: asyncio.Task[None] | None = None
        self.config: Config | None = None

    async def __aenter__(self) -> EgressHarness:
        spool_config = load_config(env={}, overrides={"spool": {"backend": "memory"}})
        self.spool = Spool(open_backend(spool_config))
        await self.start_spool()
        driver_port = await self._serve(
            scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server, self.driver,
            "petrel.v1.SchedulerService")
        bounce_port = free_port()
        if self.bounce is not None:
            bounce_port = await self._serve(bounce_pb2_grpc.add_BounceServiceServicer_to_server,
                                            self.bounce, "petrel.v1.BounceService")
        egress = {"worker_id": "egress-test", "connect_timeout": 3, "command_timeout": 5,
                  "data_timeout": 5, "idle_timeout": 5, **self.egress}
        self.config = load_config(env={}, overrides={
            "data_dir": str(self.tmp_path),
            "spool": {"address": f"127.0.0.1:{self.spool_port}"},
            "scheduler": {"address": f"127.0.0.1:{driver_port}"},
            "bounce": {"address": f"127.0.0.1:{bounce_port}", **self.bounce_config},
            "routing": self.routing, "egress": egress})
        self._serve_task = asyncio.create_task(
            serve(self.stop, self.config, body_deadline=self.body_deadline,
                  drain_timeout=self.drain_timeout))
        await async_wait_for(lambda: self.driver.credits, timeout=10,
                             message="egress to connect and grant credit")
        return self

    async def _serve(self, register: Any, servicer: Any, name: str, port: int = 0) -> int:
        server, _, bound = create_server(f"127.0.0.1:{port}", [(register, servicer, name)])
        await server.start()
        self._servers.append(server)
        return bound

    async def start_spool(self) -> None:
        """Serve the (in-memory) spool, at the same port when it ran before."""
        assert self.spool is not None
        self.spool_port = await self._serve(spool_pb2_grpc.add_SpoolServiceServicer_to_server,
                                            SpoolServicer(self.spool), SPOOL_SERVICE,
                                            self.spool_port)
        self._spool_server = self._servers[-1]

    async def stop_spool(self) -> None:
        """Stop serving the spool (its contents stay for ``start_spool``)."""
        assert self._spool_server is not None
        await self._spool_server.stop(0)
        self._servers.remove(self._spool_server)
        self._spool_server = None

    async def put(self, body: bytes, recipients: list[str], sender: str = SENDER) -> str:
        assert self.spool is not None
        message_id = new_message_id()
        meta = common_pb2.MessageMeta(
            id=message_id, sender=sender, size=len(body),
            recipients=[common_pb2.Recipient(address=r, state=common_pb2.RECIPIENT_STATE_PENDING)
                        for r in recipients])
        await self.spool.write(PutOp(message_id, meta.SerializeToString(), body))
        return message_id

    async def submit(self, domain: str, recipients: list[str], body: bytes | None = None,
                     sender: str = SENDER) -> scheduler_pb2.DeliveryTask:
        """Store a message and hand the driver a task for it."""
        message_id = await self.put(body or make_body(), recipients, sender)
        return self.driver.add(domain, recipients, message_id, sender)

    async def deliver(self, domain: str, recipients: list[str], body: bytes | None = None,
                      timeout: float = 15.0) -> scheduler_pb2.DeliveryResult:
        task = await self.submit(domain, recipients, body)
        [result] = await self.driver.wait_results([task], timeout)
        return result

    async def stop_egress(self, timeout: float = 20.0) -> None:
        self.stop.set()
        if self._serve_task is not None:
            await asyncio.wait_for(self._serve_task, timeout)

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self._serve_task is not None:
            try:
                await asyncio.wait_for(self._serve_task, 20)
            finally:
                for server in self._servers:
                    await server.stop(0)
                if self.spool is not None:
                    await self.spool.close()


def outcomes(result: scheduler_pb2.DeliveryResult) -> dict[str, tuple[str, int, str]]:
    """recipient → (outcome name, reply code, enhanced code)."""
    names = scheduler_pb2.DeliveryOutcome.Name
    return {r.recipient: (names(r.outcome).removeprefix("DELIVERY_OUTCOME_"), r.reply.code,
                          r.reply.enhanced_code) for r in result.recipients}
