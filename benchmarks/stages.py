"""Stage scaling: delivered rate with 1, 2 and 4 egress processes when egress is the bottleneck.

    python benchmarks/stages.py [--egress 1,2,4] [--messages 1500] [--delay-ms 100]
                                [--max-inflight 8] [--connection-limit 4096] [--repeat 3]

One run (per egress count, per repeat; counts interleaved so drift hits them alike):

1. ``benchmarks/slow_sink.py`` listens *gated* (connections get no banner yet) and answers
   every message ``--delay-ms`` after its end of DATA, like a slow remote MX.
2. ``petrel up --egress-replicas N`` (``bench.Petrel``) relays everything to it, with
   ``egress.max_inflight = --max-inflight`` per egress process.
3. Fill: ``smtp-source -s 20 -m MESSAGES -l 2048`` into ingress, then wait until the scheduler
   holds all of them. Nothing is delivered meanwhile (egress's first sessions wait for the
   banner), so *fill accept/s* is the rate ingress + spool + scheduler sustain on their own.
4. Drain: open the gate; *delivered/s* = messages / (sink's last 250 - gate opening), both on
   the sink's clock. CPU per 1,000 messages per service (``sink`` is the slow sink), *Petrel
   cores* (CPU of all Petrel processes / drain time) and *host cores busy* (the whole
   machine, from ``/proc/stat``: the sink and anything else running included) cover the
   drain only. Host cores near the CPU count mean the machine, not egress, set the rate.

Why egress is the bottleneck here. An egress process runs at most ``max_inflight``
deliveries at once (the credit it grants the scheduler) and each holds one SMTP session
until the sink's delayed 250, so one process delivers at most
``max_inflight / (delay + egress's own time per message)`` messages/s: 8 / 100 ms = 80/s with
the defaults, well below the fill accept rate (ingress, spool and scheduler have headroom)
and, with 1 or 2 processes, well below what the two cores can do (CPU in use during the
drain is reported). The scheduler's ``connection_limit`` (deliveries in flight per
destination site) is set above ``N x max_inflight`` so it does not cap the total instead:
it is counted by the scheduler across *all* egress processes, so with the defaults
(``max_inflight`` 256, ``connection_limit`` 32) a latency-bound site gets 32 sessions however
many egress processes run, and adding processes changes nothing (try
``--max-inflight 256 --connection-limit 32``). The table shows that egress is saturated:
*sink busy* is the mean number of transactions open at the sink (MAIL to final 250) over the
drain divided by ``N x max_inflight``, i.e. the share of egress's delivery slots spent
waiting on the remote; the rest is egress's own work per message (body read, SMTP client,
result) plus the scheduler's round trip before a slot gets its next task.

The other way to make egress the bottleneck, CPU (``--delay-ms 0 --max-inflight 256``), does
not isolate egress on a 2-core machine: one egress process then delivers well above the
fill accept rate and a second one mostly competes with the scheduler, the spool and the
sink for the same two cores (*host cores busy* near 2).

Bounded: ``--messages`` per run, ``--timeout`` per phase; only 127.0.0.1. Prints a Markdown
table; ``--json FILE`` appends one JSON line per run. Heavy: run it through
``flock /tmp/petrel-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from benchmarks.bench import Petrel, cpu_by_service, cpu_seconds  # noqa: E402
from petrel.ports import free_port  # noqa: E402
from petrel.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SOURCE_SESSIONS = 20
MESSAGE_SIZE = 2048
# bench.service_of names ``petrel up`` itself by its module.
SERVICE_LABELS = {"petrel": "supervisor"}


@dataclass
class Run:
    egress: int
    messages: int
    delivered: int
    fill_accept_per_s: float
    delivered_per_s: float
    drain_seconds: float
    sink_busy: float
    max_open_transactions: int
    cores_used: float
    host_cores_busy: float
    cpu_s_per_1k_by_service: dict[str, float]


@dataclass
class Row:
    egress: int
    runs: int
    delivered_per_s: float
    low: float
    high: float
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    fill_accept_per_s: float
    sink_busy: float
    cores_used: float
    host_cores_busy: float
    cpu_s_per_1k_by_service: dict[str, float]


def host_cpu_seconds() -> float:
    """CPU seconds every process on the machine used so far (``/proc/stat``, all CPUs)."""
    with open("/proc/stat") as fh:
        values = [int(x) for x in fh.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = values
    return (user + nice + system + irq + softirq) / CLK_TCK


def git_version() -> str:
    found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


class SlowSinkProcess:
    """``slow_sink.py`` as a child process, driven over its stdin/stdout."""

    def __init__(self, delay_ms: float, gated: bool = True) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "slow_sink.py"), "--port", str(self.port),
             "--delay-ms", str(delay_ms), *(["--gated"] if gated else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        ready = self._answer()
        if ready.get("ready") != "slow_sink":
            raise RuntimeError(f"slow_sink did not start: {ready}")

    def _answer(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("slow_sink exited")
        data: dict[str, float] = json.loads(line)
        return data

    def command(self, name: str) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{name}\n".encode())
        self.proc.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def queued_messages(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        reply = stub.GetQueueSummary(scheduler_pb2.GetQueueSummaryRequest(), timeout=5)
        return int(reply.messages)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_once(egress: int, messages: int, delay_ms: float, max_inflight: int,
             connection_limit: int, timeout: float, workdir: Path,
             settings: dict[str, str] | None = None) -> Run:
    scheduler = f"127.0.0.1:{free_port()}"
    env = {
        "PETREL_SCHEDULER__LISTEN": scheduler,
        "PETREL_SCHEDULER__ADDRESS": scheduler,
        "PETREL_SCHEDULER__CONNECTION_LIMIT": str(connection_limit),
        "PETREL_EGRESS__MAX_INFLIGHT": str(max_inflight),
        # Egress's first sessions wait for the banner for the whole fill.
        "PETREL_EGRESS__CONNECT_TIMEOUT": f"{3 * timeout:.0f}s",
        **(settings or {}),
    }
    sink = SlowSinkProcess(delay_ms, gated=True)
    petrel = Petrel(workdir, sink.port, egress, env)
    try:
        source = [shutil.which("smtp-source") or "/usr/sbin/smtp-source",
                  "-s", str(SOURCE_SESSIONS), "-m", str(messages), "-l", str(MESSAGE_SIZE),
                  "-M", "bench.example", "-f", "sender@bench.example", "-t",
                  "rcpt@dest.example", f"127.0.0.1:{petrel.smtp_port}"]
        started = time.monotonic()
        subprocess.run(source, timeout=timeout, check=True, stdout=subprocess.DEVNULL)
        fill_seconds = time.monotonic() - started
        wait_until(lambda: queued_messages(scheduler) >= messages, timeout,
                   f"the scheduler to hold {messages} messages")
        if sink.command("stats")["messages"]:
            raise RuntimeError("messages reached the sink before its gate opened")
        pids = petrel.pids()
        sink_pids = [sink.proc.pid]
        cpu0 = cpu_by_service(pids)
        sink_cpu0 = cpu_seconds(sink_pids)
        host0 = host_cpu_seconds()
        opened = sink.command("open")["opened"]
        deadline = opened + timeout
        while (stats := sink.command("stats"))["messages"] < messages:
            if time.monotonic() > deadline:
                print(f"# WARNING: {stats['messages']}/{messages} delivered within "
                      f"{timeout:.0f}s", file=sys.stderr)
                break
            time.sleep(0.05)
        wall = max(time.monotonic() - opened, 1e-6)
        host = host_cpu_seconds() - host0
        cpu1 = cpu_by_service(petrel.pids())
        by_service = {SERVICE_LABELS.get(name, name): cpu1[name] - cpu0.get(name, 0.0)
                      for name in sorted(cpu1)}
        by_service["sink"] = cpu_seconds(sink_pids) - sink_cpu0
        delivered = int(stats["messages"])
        drain = max(stats["last"] - opened, 1e-6)
        return Run(
            egress=egress, messages=messages, delivered=delivered,
            fill_accept_per_s=round(messages / fill_seconds, 1),
            delivered_per_s=round(delivered / drain, 1),
            drain_seconds=round(drain, 2),
            sink_busy=round(stats["busy_seconds"] / (drain * egress * max_inflight), 3),
            max_open_transactions=int(stats["max_open_transactions"]),
            cores_used=round(sum(v for k, v in by_service.items() if k != "sink") / wall, 2),
            host_cores_busy=round(host / wall, 2),
            cpu_s_per_1k_by_service={k: round(v * 1000 / max(delivered, 1), 2)
                                     for k, v in by_service.items()})
    finally:
        petrel.stop()
        sink.stop()


def summarise(runs: Sequence[Run]) -> list[Row]:
    """One row per egress count: median delivered/s and its range, the ratio of medians to
    the 1-egress median with the range of per-repeat ratios (repeat *i* of N egress against
    repeat *i* of 1 egress, which ran next to it), and medians of the other figures."""
    by_egress: dict[int, list[Run]] = {}
    for run in runs:
        by_egress.setdefault(run.egress, []).append(run)
    base = by_egress.get(1)
    base_median = statistics.median(r.delivered_per_s for r in base) if base else None
    rows = []
    for egress in sorted(by_egress):
        group = by_egress[egress]
        rates = [r.delivered_per_s for r in group]
        median = statistics.median(rates)
        ratio = ratio_low = ratio_high = None
        if base and base_median:
            ratio = median / base_median
            paired = [r.delivered_per_s / b.delivered_per_s
                      for r, b in zip(group, base, strict=False) if b.delivered_per_s]
            if paired:
                ratio_low, ratio_high = min(paired), max(paired)
        services = sorted({name for r in group for name in r.cpu_s_per_1k_by_service})
        cpu = {name: statistics.median(r.cpu_s_per_1k_by_service.get(name, 0.0) for r in group)
               for name in services}
        rows.append(Row(
            egress=egress, runs=len(group), delivered_per_s=median, low=min(rates),
            high=max(rates), ratio=ratio, ratio_low=ratio_low, ratio_high=ratio_high,
            fill_accept_per_s=statistics.median(r.fill_accept_per_s for r in group),
            sink_busy=statistics.median(r.sink_busy for r in group),
            cores_used=statistics.median(r.cores_used for r in group),
            host_cores_busy=statistics.median(r.host_cores_busy for r in group),
            cpu_s_per_1k_by_service=cpu))
    return rows


def render(rows: Sequence[Row]) -> str:
    lines = ["| egress processes | delivered/s median (range) | ratio to 1 egress (paired range) "
             "| fill accept/s | sink busy | Petrel cores | host cores busy "
             "| CPU-s/1k by service |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        if row.ratio_low is not None and row.ratio_high is not None and row.runs > 1:
            ratio += f" ({row.ratio_low:.2f}-{row.ratio_high:.2f})"
        cpu = ", ".join(f"{name} {value:.2f}"
                        for name, value in row.cpu_s_per_1k_by_service.items() if value >= 0.005)
        lines.append(
            f"| {row.egress} | {row.delivered_per_s:.0f} ({row.low:.0f}-{row.high:.0f}) "
            f"| {ratio} | {row.fill_accept_per_s:.0f} | {row.sink_busy:.0%} "
            f"| {row.cores_used:.2f} | {row.host_cores_busy:.2f} | {cpu} |")
    return "\n".join(lines)


def parse_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"expected egress counts like 1,2,4, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--egress", type=parse_counts, default=[1, 2, 4],
                        help="egress process counts, comma-separated (default 1,2,4)")
    parser.add_argument("--messages", type=int, default=1500, help="messages per run")
    parser.add_argument("--delay-ms", type=float, default=100.0,
                        help="the sink's delay before each 250 after DATA")
    parser.add_argument("--max-inflight", type=int, default=8,
                        help="egress.max_inflight: deliveries at once per egress process")
    parser.add_argument("--connection-limit", type=int, default=4096,
                        help="scheduler.connection_limit: deliveries in flight per site, "
                             "across all egress processes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--set", action="append", default=[], metavar="PETREL_X=VALUE",
                        help="extra PETREL_* setting for every service")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    runs: list[Run] = []
    for _ in range(args.repeat):
        for egress in args.egress:
            with tempfile.TemporaryDirectory(prefix="petrel-stages-") as tmp:
                run = run_once(egress, args.messages, args.delay_ms, args.max_inflight,
                               args.connection_limit, args.timeout, Path(tmp), settings)
            runs.append(run)
            print(f"# egress={egress}: {run.delivered_per_s:.0f} delivered/s "
                  f"(fill {run.fill_accept_per_s:.0f}/s, sink busy {run.sink_busy:.0%}, "
                  f"Petrel {run.cores_used:.2f} cores, host {run.host_cores_busy:.2f} busy)",
                  file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(asdict(run)) + "\n")
    print(f"messages {args.messages} x 2 KB per run, sink delay {args.delay_ms:g} ms, "
          f"egress.max_inflight {args.max_inflight}, scheduler.connection_limit "
          f"{args.connection_limit}, {args.repeat} repeat(s), {os.cpu_count()} CPUs, "
          f"git {git_version()}\n")
    print(render(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
