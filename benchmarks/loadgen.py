"""Load generators and the accept-latency probe of ``benchmarks/bench.py`` (asyncio).

    python benchmarks/loadgen.py load  --kind grpc --target 127.0.0.1:PORT --count N --clients S
    python benchmarks/loadgen.py load  --kind rest --target 127.0.0.1:PORT --count N --clients C
    python benchmarks/loadgen.py probe --kind smtp|grpc|rest --target 127.0.0.1:PORT --rate R

``load`` injects ``--count`` messages as fast as the server takes them:

- ``grpc``: ``--clients`` ``InjectService.InjectMessages`` streams on one channel, each with
  ``--window`` messages in flight (responses are matched by ``seq``); a message counts once its
  response came back without an item status (= durable in Petrel's spool).
- ``rest``: ``--clients`` keep-alive HTTP/1.1 connections to the gateway, each posting one
  ``POST /api/inject/v1`` (one recipient, raw ``Static`` content) at a time; a message counts
  on a 200 with ``success_count`` 1. The HTTP client is a minimal one of our own, so the load
  generator costs little CPU on the machine it shares with the server.

``probe`` measures accept latency at a fixed, open-loop rate (``--rate`` messages per second,
for at most ``--seconds`` and ``--max-count`` messages, at most ``--concurrency`` in flight):

- ``smtp``: time from the end of DATA (the ``.`` line written to the socket) to the 250 reply;
  a new connection per message, or a pool of reused connections with ``--reuse``.
- ``grpc``: time from writing a request on an ``InjectMessages`` stream to its response.
- ``rest``: time from writing the POST to the end of its response.

Both print one JSON object on stdout when done (``load`` first prints ``{"event": "start"}``
once connected, so the caller starts its clock when sending starts). Everything is bounded by
``--timeout``; only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SENDER = "sender@bench.example"
RECIPIENT_DOMAIN = "dest.example"
LINE = b"x" * 76 + b"\r\n"


def make_message(size: int, rcpts: Sequence[str], sender: str = SENDER) -> bytes:
    """An RFC 5322 message with CRLF line endings and ``size`` bytes of body (like
    smtp-source's ``-l``: the headers come on top). No line starts with a dot."""
    head = (f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in rcpts)}\r\n"
            "Subject: petrel benchmark\r\nDate: Thu, 26 Nov 2026 07:00:00 +0000\r\n\r\n").encode()
    full, rest = divmod(max(size, 0), len(LINE))
    body = LINE * full + (b"x" * max(0, rest - 2) + b"\r\n" if rest else b"")
    return head + body


def recipients(count: int) -> list[str]:
    """``count`` recipients in one domain (the MTA makes one delivery per message)."""
    return [f"rcpt{i}@{RECIPIENT_DOMAIN}" if i else f"rcpt@{RECIPIENT_DOMAIN}"
            for i in range(count)]


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    host = host or "127.0.0.1"
    if not (host.startswith("127.") or host in ("localhost", "::1", "[::1]")):
        raise SystemExit(f"refusing non-loopback target {target}")
    return host, int(port)


@dataclass
class Outcome:
    """What a ``load`` or ``probe`` run did; latencies in milliseconds."""
    kind: str
    mode: str
    requested: int
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    per_s: float = 0.0
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    late_max_ms: float | None = None
    timed_out: bool = False
    last_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)

    def finish(self, seconds: float, latencies: list[float]) -> Outcome:
        self.seconds = round(seconds, 4)
        self.per_s = round(self.ok / seconds, 1) if seconds > 0 else 0.0
        ms = [x * 1000.0 for x in latencies]
        for name, pct in (("p50_ms", 50.0), ("p99_ms", 99.0), ("max_ms", 100.0)):
            value = percentile(ms, pct)
            setattr(self, name, None if value is None else round(value, 3))
        return self


# --------------------------------------------------------------------------- SMTP


class SmtpError(Exception):
    pass


class SmtpConnection:
    """A minimal SMTP client: no pipelining, no TLS, just enough to time DATA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, helo: str = "probe.bench.example") -> SmtpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        # drain() then returns only once everything written left for the kernel, so the
        # clock starts when the final "." is really on its way.
        writer.transport.set_write_buffer_limits(0)
        conn = cls(reader, writer)
        await conn.expect(220)
        await conn.command(f"EHLO {helo}", 250)
        return conn

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise SmtpError("connection closed")
            lines.append(line.decode(errors="replace").rstrip())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines[-1]

    async def expect(self, code: int) -> None:
        got, text = await self.reply()
        if got != code:
            raise SmtpError(text)

    async def command(self, line: str, code: int) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        await self.expect(code)

    async def send(self, sender: str, rcpts: Sequence[str], data: bytes) -> float:
        """One transaction; returns seconds from the end-of-data line to the 250."""
        await self.command(f"MAIL FROM:<{sender}>", 250)
        for rcpt in rcpts:
            await self.command(f"RCPT TO:<{rcpt}>", 250)
        await self.command("DATA", 354)
        self.writer.write(data)
        await self.writer.drain()
        self.writer.write(b".\r\n")
        started = time.perf_counter()
        await self.writer.drain()
        code, text = await self.reply()
        elapsed = time.perf_counter() - started
        if code != 250:
            raise SmtpError(text)
        return elapsed

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# --------------------------------------------------------------------------- HTTP


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client for JSON POSTs (Content-Length or chunked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reused = self.writer is not None and not self.writer.is_closing()
        try:
            return await self._exchange(path, body)
        except ConnectionError:
            if not reused:
                raise
            # The server closed the connection while it sat idle (uvicorn's keep-alive
            # timeout), before this request; like any keep-alive client, send it once more on
            # a new connection. The latency includes the retry.
            await self.close()
            return await self._exchange(path, body)

    async def _exchange(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("connection closed by server")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while (size := int((await self.reader.readline()).split(b";")[0], 16)) > 0:
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readline()
            payload = b"".join(p[:-2] for p in parts)
        else:
            payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


def rest_body(size: int) -> bytes:
    """One inject request: one recipient, a raw message, no templating."""
    rcpt = recipients(1)
    return json.dumps({"envelope_sender": SENDER, "recipients": [{"email": rcpt[0]}],
                       "content": make_message(size, rcpt).decode(),
                       "template_dialect": "Static"}).encode()


async def rest_inject(conn: HttpConnection, body: bytes) -> None:
    status, payload = await conn.post("/api/inject/v1", body)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
    if json.loads(payload).get("success_count") != 1:
        raise RuntimeError(f"not accepted: {payload[:200]!r}")


# --------------------------------------------------------------------------- gRPC


class InjectStream:
    """One ``InjectMessages`` stream; ``inject`` may be awaited concurrently."""

    def __init__(self, channel: object, timeout: float) -> None:
        from petrel.v1 import ingress_pb2, ingress_pb2_grpc

        self.request = ingress_pb2.InjectMessageRequest
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        self.call = stub.InjectMessages(timeout=timeout)
        self.pending: dict[int, asyncio.Future[object]] = {}
        self.seq = 0
        self.lock = asyncio.Lock()
        self.reader = asyncio.create_task(self._read())

    async def inject(self, sender: str, rcpts: Sequence[str], content: bytes) -> None:
        self.seq += 1
        seq = self.seq
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.pending[seq] = future
        async with self.lock:  # one write at a time on a stream
            await self.call.write(self.request(seq=seq, sender=sender, recipients=rcpts,
                                               content=content))
        response: Any = await future
        if response.HasField("status") and response.status.code != 0:
            raise RuntimeError(f"item status {response.status.code}: {response.status.message}")

    async def _read(self) -> None:
        import grpc

        try:
            while (response := await self.call.read()) is not grpc.aio.EOF:
                future = self.pending.pop(response.seq, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except Exception as exc:  # the stream failed: every waiting item fails with it
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(RuntimeError(f"stream failed: {exc}"))
            self.pending.clear()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, 10)
        self.call.cancel()


# --------------------------------------------------------------------------- load


async def run_workers(workers: int, count: int, one: Callable[[], Awaitable[None]],
                      outcome: Outcome, timeout: float) -> None:
    """``workers`` loops sharing ``count`` calls of ``one``; stops at ``timeout``."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await one()
                outcome.ok += 1
            except Exception as exc:  # counted and reported, the load goes on
                outcome.errors += 1
                outcome.last_error = str(exc)[:300]

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, workers))]
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        outcome.timed_out = True
        await asyncio.gather(*pending, return_exceptions=True)


def announce_start() -> None:
    print(json.dumps({"event": "start"}), flush=True)


async def load(args: argparse.Namespace) -> Outcome:
    host, port = split_target(args.target)
    outcome = Outcome(args.kind, "load", args.count)
    rcpts = recipients(args.rcpts)
    deadline = time.monotonic() + args.timeout
    if args.kind == "grpc":
        import grpc

        content = make_message(args.size, rcpts)
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            streams = [InjectStream(channel, args.timeout) for _ in range(max(1, args.clients))]
            turn = 0

            async def one() -> None:
                nonlocal turn
                turn += 1
                await streams[turn % len(streams)].inject(SENDER, rcpts, content)

            announce_start()
            started = time.perf_counter()
            await run_workers(len(streams) * args.window, args.count, one, outcome,
                              deadline - time.monotonic())
            elapsed = time.perf_counter() - started
            await asyncio.gather(*(s.close() for s in streams))
        return outcome.finish(elapsed, [])
    if args.kind == "rest":
        body = rest_body(args.size)
        conns = [HttpConnection(host, port) for _ in range(max(1, args.clients))]
        idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for conn in conns:
            idle.put_nowait(conn)

        async def post() -> None:
            conn = await idle.get()
            try:
                await rest_inject(conn, body)
            finally:
                idle.put_nowait(conn)

        announce_start()
        started = time.perf_counter()
        await run_workers(len(conns), args.count, post, outcome, deadline - time.monotonic())
        elapsed = time.perf_counter() - started
        for conn in conns:
            await conn.close()
        return outcome.finish(elapsed, [])
    raise SystemExit(f"load: unknown kind {args.kind}")


# --------------------------------------------------------------------------- probe


async def paced(rate: float, count: int, concurrency: int, one: Callable[[], Awaitable[float]],
                outcome: Outcome, timeout: float) -> list[float]:
    """Start ``one`` ``count`` times at ``rate`` per second (open loop: a slow answer does not
    delay the next start, except when ``concurrency`` calls are already in flight, which
    ``outcome.late_max_ms`` then shows). Returns the latencies ``one`` measured."""
    latencies: list[float] = []
    slots = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + timeout
    late = 0.0
    tasks = set()

    async def run() -> None:
        try:
            latencies.append(await one())
            outcome.ok += 1
        except Exception as exc:  # counted and reported
            outcome.errors += 1
            outcome.last_error = str(exc)[:300]
        finally:
            slots.release()

    for i in range(count):
        due = start + i / rate
        if due > end:
            outcome.timed_out = True
            break
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        await slots.acquire()
        late = max(late, loop.time() - due)
        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=max(0.1, end - loop.time()))
        for task in pending:
            task.cancel()
        if pending:
            outcome.timed_out = True
            await asyncio.gather(*pending, return_exceptions=True)
    outcome.late_max_ms = round(late * 1000.0, 3)
    return latencies


async def probe(args: argparse.Namespace) -> Outcome:
    host, port = split_target(args.target)
    count = max(1, min(args.max_count, int(args.rate * args.seconds)))
    outcome = Outcome(args.kind, "probe", count, rate=args.rate)
    rcpts = recipients(args.rcpts)
    content = make_message(args.size, rcpts)
    timeout = count / args.rate + args.drain
    cleanup: list[Callable[[], Awaitable[None]]] = []
    one: Callable[[], Awaitable[float]]
    if args.kind == "smtp":
        pool: list[SmtpConnection] = []

        async def smtp_one() -> float:
            conn = pool.pop() if args.reuse and pool else await SmtpConnection.open(host, port)
            try:
                latency = await conn.send(SENDER, rcpts, content)
            except Exception:
                await conn.close()
                raise
            if args.reuse:
                pool.append(conn)
            else:
                await conn.close()
            return latency

        async def close_pool() -> None:
            await asyncio.gather(*(c.close() for c in pool))

        one, cleanup = smtp_one, [close_pool]
    elif args.kind == "grpc":
        import grpc

        channel = grpc.aio.insecure_channel(f"{host}:{port}")
        await asyncio.wait_for(channel.channel_ready(), 10)
        stream = InjectStream(channel, timeout + 10)

        async def grpc_one() -> float:
            started = time.perf_counter()
            await stream.inject(SENDER, rcpts, content)
            return time.perf_counter() - started

        async def close_channel() -> None:
            await stream.close()
            await channel.close()

        one, cleanup = grpc_one, [close_channel]
    elif args.kind == "rest":
        body = rest_body(args.size)
        idle: list[HttpConnection] = []

        async def rest_one() -> float:
            conn = idle.pop() if idle else HttpConnection(host, port)
            started = time.perf_counter()
            try:
                await rest_inject(conn, body)
            except Exception:
                await conn.close()
                raise
            elapsed = time.perf_counter() - started
            idle.append(conn)
            return elapsed

        async def close_idle() -> None:
            for conn in idle:
                await conn.close()

        one, cleanup = rest_one, [close_idle]
    else:
        raise SystemExit(f"probe: unknown kind {args.kind}")
    started = time.perf_counter()
    latencies = await paced(args.rate, count, args.concurrency, one, outcome, timeout)
    elapsed = time.perf_counter() - started
    for step in cleanup:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(step(), 10)
    outcome.finish(elapsed, latencies)
    if args.keep_latencies:
        outcome.latencies_ms = [round(x * 1000.0, 3) for x in latencies]
    return outcome


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("load", "probe"))
    parser.add_argument("--kind", choices=("smtp", "grpc", "rest"), required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT (loopback only)")
    parser.add_argument("--size", type=int, default=2048, help="body bytes per message")
    parser.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    parser.add_argument("--timeout", type=float, default=120.0, help="overall limit, seconds")
    load_args = parser.add_argument_group("load")
    load_args.add_argument("--count", type=int, default=1000)
    load_args.add_argument("--clients", type=int, default=4,
                           help="gRPC streams or HTTP connections")
    load_args.add_argument("--window", type=int, default=32,
                           help="messages in flight per gRPC stream")
    probe_args = parser.add_argument_group("probe")
    probe_args.add_argument("--rate", type=float, default=100.0, help="messages per second")
    probe_args.add_argument("--seconds", type=float, default=10.0)
    probe_args.add_argument("--max-count", type=int, default=2000)
    probe_args.add_argument("--concurrency", type=int, default=32,
                            help="most messages in flight (Petrel's per-IP limit is 50)")
    probe_args.add_argument("--reuse", action="store_true", help="smtp: reuse connections")
    probe_args.add_argument("--drain", type=float, default=15.0,
                            help="seconds to wait for answers after the last start")
    probe_args.add_argument("--keep-latencies", action="store_true",
                            help="include every latency in the output")
    args = parser.parse_args(argv)
    if args.mode == "load" and args.kind == "smtp":
        parser.error("SMTP load comes from smtp-source; loadgen only probes SMTP")
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    args = parse_args(argv)
    run: Callable[[Coroutine[Any, Any, Outcome]], Outcome] = asyncio.run
    with contextlib.suppress(ImportError):  # plain asyncio works too, at a higher client CPU
        import uvloop

        run = uvloop.run
    outcome = run(load(args) if args.mode == "load" else probe(args))
    print(json.dumps(asdict(outcome)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
