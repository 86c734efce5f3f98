"""Delivery across a network with latency: command pipelining on and off.

    python benchmarks/rtt.py [--rtt-ms 40] [--messages 300] [--connections 4] [--repeat 2]

On loopback a round trip costs microseconds, so what pipelining (RFC 2920) saves against a
remote MX does not show in ``bench.py``. Here egress reaches a real ``smtp-sink`` through
``DelayProxy``, a TCP relay on loopback that passes every chunk of bytes on half of
``--rtt-ms`` after it arrived, in both directions and in order (and connects upstream half
a round trip late), like an MX host on another continent. (This VM's kernel has no
``netem`` queueing discipline, which would otherwise do this to a veth pair.)

One run (per setting, per repeat, the two settings interleaved):

1. ``smtp-sink`` on loopback (``bench.Sink``) behind a fresh ``DelayProxy``.
2. ``petrel up`` (``bench.Petrel``) relays everything to the proxy, with
   ``PETREL_EGRESS__PIPELINING`` on or off and the destination's ``connection_limit`` set to
   ``--connections``, so the rate is bound by round trips per message, not by CPU.
3. ``smtp-source -s 20 -m MESSAGES -l 2048`` into ingress; *delivered/s* = messages / (time
   from the first injection until the sink counted them all).

Per message on a reused connection: one by one, MAIL, RCPT, DATA and the content are four
round trips; pipelined, MAIL+RCPT+DATA share one, then the content: two. Connection set-up
(TCP, banner, EHLO) is shared by up to ``egress.max_deliveries_per_connection`` messages.

Only 127.0.0.1; bounded by ``--messages`` per run and ``--timeout`` per run. Heavy: run it
through ``flock /tmp/petrel-bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import Petrel, Scenario, Sink, load_command

SETTINGS = {"on": "true", "off": "false"}


class DelayProxy:
    """A TCP relay on 127.0.0.1 to ``target`` that delays every chunk by ``delay`` seconds in
    each direction, in its own thread and event loop (``port`` once started)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.delay)  # the SYN's way to the remote host
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` after it arrived; a constant
        delay keeps the chunks in order."""
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                loop.call_later(self.delay, self._write, writer, chunk)
        finally:
            loop.call_later(self.delay, writer.close)

    @staticmethod
    def _write(writer: asyncio.StreamWriter, chunk: bytes) -> None:
        if not writer.is_closing():
            writer.write(chunk)


def connect_rtt(port: int) -> float:
    """The round trip through the proxy on ``port`` as a client sees it before the banner:
    connect, then the first byte, in ms (median of 5)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.recv(1)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def once(rtt_ms: float, setting: str, messages: int, connections: int,
         timeout: float) -> tuple[float, float]:
    """Delivered messages per second of one run with pipelining ``setting``, and the round
    trip to the sink in ms."""
    with tempfile.TemporaryDirectory(prefix="petrel-rtt-") as tmp:
        workdir = Path(tmp)
        sink = Sink(workdir)
        try:
            with DelayProxy(sink.port, rtt_ms / 2000) as proxy:
                rtt = connect_rtt(proxy.port)
                petrel = Petrel(workdir, proxy.port, settings={
                    "PETREL_EGRESS__PIPELINING": SETTINGS[setting],
                    "PETREL_SCHEDULER__CONNECTION_LIMIT": str(connections)})
                try:
                    return delivered_rate(petrel, sink, messages, timeout), rtt
                finally:
                    petrel.stop()
        finally:
            sink.stop()


def delivered_rate(petrel: Petrel, sink: Sink, messages: int, timeout: float) -> float:
    """``messages`` of 2 KB from ``smtp-source`` (20 sessions) into ``petrel``; messages per
    second from the first injection until ``sink`` counted them all."""
    source = load_command(Scenario(2048, 20, 1, messages), petrel.smtp_port, messages, timeout)
    start = time.monotonic()
    subprocess.run(source, check=True, capture_output=True, timeout=timeout)
    deadline = start + timeout
    while sink.messages() < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sink.messages()} of {messages} delivered in "
                               f"{timeout:.0f} s; see {petrel.log_path}")
        time.sleep(0.05)
    return messages / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4,
                        help="the destination's connection_limit (sessions at once)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per run")
    args = parser.parse_args(argv)
    if not shutil.which("smtp-sink"):
        print("needs smtp-sink and smtp-source (postfix)", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    rtts: list[float] = []
    for repeat in range(args.repeat):
        order = list(SETTINGS) if repeat % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            rate, rtt = once(args.rtt_ms, setting, args.messages, args.connections,
                             args.timeout)
            rates[setting].append(rate)
            rtts.append(rtt)
            print(f"# pipelining {setting:3} run {repeat + 1}: {rate:.1f} delivered/s",
                  flush=True)
    print(f"\nRTT to the sink {statistics.median(rtts):.1f} ms (connect to banner, median); "
          f"{args.messages} messages of 2 KB per run; connection_limit {args.connections}\n")
    print("| pipelining | delivered/s (median, runs) | per connection |")
    print("|---|---|---|")
    for setting, values in rates.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {setting} | {median:.1f} ({runs}) | {median / args.connections:.1f} |")
    ratio = statistics.median(rates["on"]) / statistics.median(rates["off"])
    print(f"\npipelining on / off: {ratio:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
