"""What one SMTP session costs the ingress process, layer by layer.

    python benchmarks/smtp_session.py [--messages 6000] [--sessions 20] [--size 2048]
                                      [--servers protocol,streams,aiosmtpd,petrel] [--repeat 3]

Each server runs alone in a child process on a loopback port; ``smtp-source`` (Postfix) sends
``--messages`` messages over ``--sessions`` parallel connections, one message per connection,
and the child's CPU time (user + system, ``time.process_time``) over the load is divided by
the message count. Servers:

- ``protocol``: a bare ``asyncio.Protocol`` answering every line (no parsing; the floor);
- ``streams``: the same with ``asyncio`` streams;
- ``aiosmtpd``: aiosmtpd's ``SMTP`` with a handler that answers DATA with 250;
- ``petrel``: ingress's own ``PetrelSMTP`` and ``SmtpHandler`` (every reception rule), with an
  acceptor that keeps nothing: the SMTP layer without spool, events and enqueue.

Runs are interleaved (server order alternates between repetitions) and the medians printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVERS = ("protocol", "streams", "aiosmtpd", "petrel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LineProtocol(asyncio.Protocol):
    """Answers the greeting, every command line and the end of DATA; no parsing."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 5:]
                self.in_data = False
                self.transport.write(b"250 2.0.0 ok\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                return
            self.buffer = rest
            verb = line[:4].upper()
            if verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 ok\r\n")


async def streams_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 bench ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"DATA":
            writer.write(b"354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(b"250 2.0.0 ok\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 ok\r\n")
    writer.close()


class NullAcceptor:
    """Accepts every submission at once and keeps nothing."""

    suppression = None

    def __init__(self) -> None:
        self.count = 0

    async def accept(self, submission: Any) -> Any:
        from ingress.acceptor import Accepted
        self.count += 1
        return Accepted(f"{self.count:032x}")


async def serve(kind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server: Any = None
    if kind == "protocol":
        server = await loop.create_server(LineProtocol, "127.0.0.1", port)
    elif kind == "streams":
        server = await asyncio.start_server(streams_session, "127.0.0.1", port)
    elif kind == "aiosmtpd":
        from aiosmtpd.smtp import SMTP

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 2.0.0 ok"

        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench", loop=loop), "127.0.0.1", port)
    else:
        from ingress.smtp import SmtpListener
        from petrel.config import IngressConfig
        config = IngressConfig(hostname="bench", greeting_pause=0.0,
                               relay_networks=("127.0.0.0/8",))
        server = SmtpListener(config, NullAcceptor())  # type: ignore[arg-type]
        await server.start("127.0.0.1", port)
    print("ready", flush=True)
    # The parent asks for the CPU figure with one line on stdin and then closes it.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(time.process_time(), flush=True)


def child_main(kind: str, port: int) -> None:
    asyncio.run(serve(kind, port))


def measure(kind: str, messages: int, sessions: int, size: int) -> float:
    """CPU µs per message of server ``kind`` under one ``smtp-source`` run."""
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--child", kind, "--port", str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} server did not start")
        source = ["smtp-source", "-s", str(sessions), "-l", str(size), "-M", "bench.example",
                  "-f", "sender@bench.example", "-t", "rcpt@dest.example",
                  f"127.0.0.1:{port}"]
        subprocess.run([*source[:1], "-m", "200", *source[1:]], check=True, timeout=120)
        child.stdin.write("cpu\n")
        child.stdin.flush()
        before = float(child.stdout.readline())
        subprocess.run([*source[:1], "-m", str(messages), *source[1:]], check=True,
                       timeout=600)
        child.stdin.write("cpu\n")
        child.stdin.flush()
        after = float(child.stdout.readline())
        return (after - before) * 1e6 / messages
    finally:
        child.kill()
        child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.port)
        return 0
    kinds = [k for k in args.servers.split(",") if k]
    figures: dict[str, list[float]] = {k: [] for k in kinds}
    for round_ in range(args.repeat):
        for kind in (kinds if round_ % 2 == 0 else list(reversed(kinds))):
            figures[kind].append(measure(kind, args.messages, args.sessions, args.size))
    print("| server | CPU µs per session (median) | runs |")
    print("|---|---|---|")
    for kind in kinds:
        runs = ", ".join(f"{v:.0f}" for v in figures[kind])
        print(f"| {kind} | {statistics.median(figures[kind]):.0f} | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
