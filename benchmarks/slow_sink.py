"""An SMTP sink that answers every message after a fixed delay, behind a gate.

    python benchmarks/slow_sink.py --port PORT [--delay-ms 50] [--gated]

Stands in for a slow remote MX in ``benchmarks/stages.py``: every end of DATA is answered
``250`` only after ``--delay-ms`` (the remote's per-message latency), so a client's delivered
rate is bounded by how many transactions it keeps open at once. Postfix's ``smtp-sink`` cannot
play this part: its ``-w``/``-W`` delays are whole seconds. With ``--gated`` a connection gets
no banner until the gate opens, so a benchmark can fill a queue while deliveries wait, then
time the drain alone.

Control (one command per line on stdin; answers are one JSON line on stdout):

* at start: ``{"ready": "slow_sink", "port": PORT}``
* ``open``: opens the gate; answers ``{"opened": T}``
* ``stats``: ``{"messages": n, "opened": T, "first": T, "last": T, "busy_seconds": s,
  "max_open_transactions": k, "connections": c}`` where ``T`` are ``time.monotonic()``
  values (one clock for every process on Linux), ``busy_seconds`` sums the time from MAIL to
  the final 250 of every message (divided by a time window it is the mean number of
  transactions the sink had open) and ``max_open_transactions`` is the most open at once.
* ``reset``: forgets the counters (not the gate).
* end of stdin: exits.

Protocol: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; everything else gets 502. No
STARTTLS, no PIPELINING (the client under test sends one command at a time). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass

MAX_LINE = 4096
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class Stats:
    messages: int = 0
    opened: float = 0.0
    first: float = 0.0
    last: float = 0.0
    busy_seconds: float = 0.0
    max_open_transactions: int = 0
    connections: int = 0


class SlowSink:
    def __init__(self, delay: float, gated: bool) -> None:
        self.delay = delay
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.stats = Stats()
        self.open_transactions = 0

    def open_gate(self) -> float:
        if not self.gate.is_set():
            self.stats.opened = time.monotonic()
            self.gate.set()
        return self.stats.opened

    def reset(self) -> None:
        opened = self.stats.opened
        self.stats = Stats(opened=opened)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            await self.gate.wait()
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow-sink ESMTP\r\n")
        started: float | None = None
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-slow-sink\r\n250-8BITMIME\r\n250 SIZE 67108864\r\n")
            elif verb == b"HELO":
                writer.write(b"250 slow-sink\r\n")
            elif verb == b"MAIL":
                started = time.monotonic()
                self._opened_transaction()
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                await asyncio.sleep(self.delay)
                writer.write(b"250 2.0.0 Ok: queued\r\n")
                self._closed_transaction(started, delivered=True)
                started = None
            elif verb == b"RSET":
                self._closed_transaction(started, delivered=False)
                started = None
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self._closed_transaction(started, delivered=False)
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 Command not recognized\r\n")
            await writer.drain()

    def _opened_transaction(self) -> None:
        self.open_transactions += 1
        self.stats.max_open_transactions = max(self.stats.max_open_transactions,
                                               self.open_transactions)

    def _closed_transaction(self, started: float | None, delivered: bool) -> None:
        if started is None:
            return
        self.open_transactions -= 1
        now = time.monotonic()
        self.stats.busy_seconds += now - started
        if delivered:
            stats = self.stats
            stats.messages += 1
            stats.first = stats.first or now
            stats.last = now


def _say(data: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def serve(port: int, delay: float, gated: bool) -> None:
    sink = SlowSink(delay, gated)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", port, limit=MAX_MESSAGE,
                                        backlog=1024)
    _say({"ready": "slow_sink", "port": port})
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with server:
        while line := await stdin.readline():
            command = line.strip().decode()
            if command == "open":
                _say({"opened": sink.open_gate()})
            elif command == "stats":
                _say(asdict(sink.stats))
            elif command == "reset":
                sink.reset()
                _say({"reset": True})
            elif command:
                _say({"error": f"unknown command {command!r}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--gated", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay_ms / 1000, args.gated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
