"""Scale test: a million queued messages behind a destination that answers 4xx.

    python benchmarks/scale.py [--messages 1000000] [--size 2048] [--drain-seconds 60]
                               [--drain-messages 50000] [--json FILE] [--workdir DIR] [--keep]

Scenario (what an operator sees): every destination domain is routed to one smarthost,
and that host answers ``450 4.3.0`` to every RCPT (``smtp-sink -r rcpt``), so mail piles
up in the queue; then the destination opens again (a plain ``smtp-sink`` on the same port).

1. **Fill.** Writing a million messages through SMTP or gRPC takes longer than the rest of
   the run, so the spool is seeded directly, with the spool service stopped, by the spool's
   own code: ``RocksDbBackend.write`` of ``PutOp`` batches of 1,024 (the group-commit batch),
   synced, each record built exactly as ``SpoolServicer`` builds it from what ingress sends
   (``MessageMeta`` from ``ingress.message.prepare_message`` of a 2 KB message received over
   ESMTP, serialized deterministically, ``size`` = body length). They are fresh messages,
   never attempted (no ``schedules``), created over the last hour. The mix: three tenants
   (acme 50 %, globex 30 %, initech 20 %) with two or three campaigns each, six destination
   domains (35/25/15/10/8/7 %); one recipient per message, one message in ten has a second
   recipient at another domain (two jobs). No Reception events are written (the scheduler
   does not read them).
2. **Refusing.** ``smtp-sink -r rcpt`` on the smarthost port, then the pipeline starts
   (spool, bounce, scheduler, egress, ingress as processes): reported are the time until the
   spool is ready (it counts its records), until the scheduler has rebuilt its queues (its
   ``petrel_scheduler_rebuild_duration_seconds`` gauge, and wall time from the scheduler's
   process start), its RSS then and its peak (VmHWM), and the spool on disk. Dispatching
   starts with the first messages the rebuild reads and every attempt is deferred (450,
   retry in 20 minutes), as in production; the deferrals of ``--refuse-seconds`` are
   counted. Then the scheduler alone is restarted (SIGTERM, start) and its rebuild measured
   again.
3. **Destination opens.** The refusing sink is replaced by an accepting one on the same
   port. Reported: seconds until the first delivery, and the drain rate (messages the sink
   received per second) over a bounded window (``--drain-seconds`` or ``--drain-messages``,
   whichever ends first; the queue is not drained to the end).
4. **Restart to first delivery.** The scheduler alone, then the whole pipeline, is stopped
   and started with the destination open: seconds from the start of the new process(es) to
   the first delivery (target: <= 60 s with a million queued), and the rebuild time.

Targets (issue #5): scheduler RSS <= 1 GiB with 1M queued, restart to first delivery <=
60 s. Heavy: run it through ``flock /tmp/petrel-bench.lock``. Results are printed as a
Markdown table and, with ``--json``, appended as one JSON line. ``--workdir DIR`` keeps the
data in DIR and reuses a spool already seeded there (handy when profiling the rebuild).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from benchmarks.bench import Sink, wait_port  # noqa: E402
from ingress.message import Stamp, prepare_message  # noqa: E402
from petrel.ids import new_message_id  # noqa: E402
from petrel.ports import free_port  # noqa: E402
from petrel.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc  # noqa: E402
from spool.backend import PutOp  # noqa: E402
from spool.rocksdb_backend import RocksDbBackend  # noqa: E402
from tests.support.pipeline import Pipeline  # noqa: E402

# (tenant, share, campaigns); "" = transactional mail without a campaign.
TENANTS = (("acme", 0.5, ("spring-sale", "newsletter", "")),
           ("globex", 0.3, ("digest", "")),
           ("initech", 0.2, ("receipts", "onboarding")))
DOMAINS = (("gmail.example", 0.35), ("outlook.example", 0.25), ("yahoo.example", 0.15),
           ("gmx.example", 0.10), ("orange.example", 0.08), ("corp.example", 0.07))
SECOND_RECIPIENT = 0.1
SEED_BATCH = 1024  # spool.group_commit_max_batch
FILL_SPAN_MS = 3600_000
TEXT_POOL = 4096
SERVICES = ("spool", "bounce", "scheduler", "egress", "ingress")
REBUILD_GAUGE = "petrel_scheduler_rebuild_duration_seconds"
REBUILT = 'petrel_scheduler_enqueued_messages_total{source="rebuild"}'
DEFERRED = 'petrel_scheduler_dispositions_total{outcome="transient_failure"}'


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    point, total = rng.random(), 0.0
    for name, share in weighted:
        total += share
        if point < total:
            return name
    return weighted[-1][0]


def messages(count: int, size: int, seed: int = 5) -> Iterator[tuple[common_pb2.MessageMeta,
                                                                      bytes]]:
    """``count`` (meta, body) pairs as the spool stores what ingress received over ESMTP."""
    rng = random.Random(seed)
    tenants = tuple((name, share) for name, share, _ in TENANTS)
    campaigns = {name: c for name, _, c in TENANTS}
    end_ms = int(time.time() * 1000)
    # Text that compresses about as well as real mail does (RocksDB compresses its blocks);
    # a pool of texts, since making one per message would take most of the seeding time.
    words = ["".join(rng.choices("etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(2, 10)))
             for _ in range(2000)]
    texts = [" ".join(rng.choices(words, k=size // 4)) for _ in range(TEXT_POOL)]
    for n in range(count):
        created_ms = end_ms - FILL_SPAN_MS + n * FILL_SPAN_MS // max(count, 1)
        message_id = new_message_id(created_ms)
        tenant = _pick(rng, tenants)
        campaign = rng.choice(campaigns[tenant])
        domain = _pick(rng, DOMAINS)
        recipients = [f"user{rng.randrange(10**7)}@{domain}"]
        if rng.random() < SECOND_RECIPIENT:
            other = _pick(rng, tuple(d for d in DOMAINS if d[0] != domain))
            recipients.append(f"user{rng.randrange(10**7)}@{other}")
        sender = f"news@{tenant}.example"
        headers = [f"From: <{sender}>", f"To: {', '.join(f'<{r}>' for r in recipients)}",
                   f"Subject: message {n}", "Date: Thu, 26 Nov 2026 07:00:00 +0000",
                   f"Message-ID: <{message_id}@{tenant}.example>", f"X-Tenant: {tenant}",
                   "MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"]
        if campaign:
            headers.append(f"X-Campaign: {campaign}")
        head = ("\r\n".join(headers) + "\r\n\r\n").encode()
        # Received: (about 120 octets) is added by prepare_message.
        body_size = max(size - len(head) - 120, 0)
        text = texts[n % TEXT_POOL]
        lines = "\r\n".join(text[i:i + 76] for i in range(0, body_size, 78))
        raw = head + lines[:body_size].encode()
        stamp = Stamp(message_id, "petrel.localhost", "ESMTP", "127.0.0.1", "client.test",
                      datetime.fromtimestamp(created_ms / 1000, UTC))
        prepared = prepare_message(raw, stamp)
        meta = common_pb2.MessageMeta(
            id=message_id, sender=sender,
            recipients=[common_pb2.Recipient(address=r, state=common_pb2.RECIPIENT_STATE_PENDING)
                        for r in recipients],
            tenant=prepared.tenant, campaign=prepared.campaign, created_unix_ms=created_ms,
            size=len(prepared.content), trace_context=prepared.trace_context,
            reception_protocol="ESMTP", peer_address="127.0.0.1")
        yield meta, prepared.content


def seed_spool(path: Path, count: int, size: int, progress: Callable[[int], None]) -> None:
    """Write ``count`` messages into the RocksDB spool at ``path`` (the spool service must be
    stopped), in synced batches as the spool service writes them."""
    backend = RocksDbBackend(path)
    try:
        batch: list[PutOp] = []
        for n, (meta, body) in enumerate(messages(count, size), start=1):
            # What SpoolServicer._put stores.
            meta.size = len(body)
            batch.append(PutOp(meta.id, meta.SerializeToString(deterministic=True), body,
                               meta.idempotency_key))
            if len(batch) == SEED_BATCH or n == count:
                backend.write(batch)
                batch = []
                if n % (SEED_BATCH * 100) < SEED_BATCH or n == count:
                    progress(n)
    finally:
        backend.close()


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (``du``)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in MB."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


class PortSink(Sink):
    """``smtp-sink`` on a given port; ``refuse``: every RCPT gets ``450 4.3.0``."""

    def __init__(self, workdir: Path, port: int, refuse: bool) -> None:
        self.port = port
        self.out = workdir / f"sink-{'refusing' if refuse else 'accepting'}-{time.time():.0f}.out"
        cmd = [shutil.which("smtp-sink") or "/usr/sbin/smtp-sink", "-c"]
        if refuse:
            cmd += ["-r", "rcpt"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        self._fh = open(self.out, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*cmd, f"127.0.0.1:{port}", "4096"], stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(port, 10):
            raise RuntimeError("smtp-sink did not start")


class Scale:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = workdir
        self.sink_port = free_port()
        self.metrics_port = free_port()
        self.pipeline = Pipeline(workdir, {
            "PETREL_ROUTING__SMARTHOST": f"127.0.0.1:{self.sink_port}",
            "PETREL_SCHEDULER__METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "PETREL_LOG_LEVEL": "WARNING",
        })
        self.sink: PortSink | None = None
        self.figures: dict[str, object] = {"messages": args.messages, "size": args.size}
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=sys.stderr, flush=True)

    @property
    def spool_path(self) -> Path:
        return self.pipeline.data_dir / "spool"

    # -- pieces -------------------------------------------------------------------------------

    def open_sink(self, refuse: bool) -> None:
        if self.sink is not None:
            self.sink.stop()
        self.sink = PortSink(self.workdir, self.sink_port, refuse)

    def delivered(self) -> int:
        return self.sink.messages() if self.sink is not None else 0

    def scheduler_pid(self) -> int:
        return self.pipeline.procs["scheduler"].process.pid

    def scheduler_metrics(self) -> dict[str, float]:
        """The scheduler's /metrics samples, ``{'name{labels}': value}`` ({} while it is down)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    samples[key] = float(value)
        return samples

    def wait_rebuilt(self, since: float) -> dict[str, float]:
        """Wait until the scheduler started at ``since`` has rebuilt its queues."""
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            samples = self.scheduler_metrics()
            gauge = samples.get(REBUILD_GAUGE, 0.0)
            if gauge > 0:
                wall = time.monotonic() - since
                status = proc_status(self.scheduler_pid())
                return {"rebuild_s": round(gauge, 1), "start_to_rebuilt_s": round(wall, 1),
                        "rebuilt_messages": int(samples.get(REBUILT, 0)),
                        "rss_mb": status.get("VmRSS", 0.0),
                        "peak_rss_mb": status.get("VmHWM", 0.0)}
            time.sleep(0.5)
        raise TimeoutError(f"scheduler not rebuilt after {self.args.timeout}s")

    def queued(self) -> int:
        with grpc.insecure_channel(self.pipeline.scheduler_address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            return int(stub.GetQueueSummary(scheduler_pb2.GetQueueSummaryRequest(),
                                            timeout=120).messages)

    def wait_first_delivery(self, since: float, baseline: int) -> float:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            if self.delivered() > baseline:
                return round(time.monotonic() - since, 1)
            time.sleep(0.05)
        raise TimeoutError(f"no delivery within {self.args.timeout}s")

    def start_scheduler(self) -> float:
        started = time.monotonic()
        self.pipeline.start("scheduler", timeout=self.args.timeout)
        return started

    def stop_scheduler(self) -> float:
        started = time.monotonic()
        self.pipeline.stop("scheduler", timeout=60)
        return round(time.monotonic() - started, 1)

    def start_pipeline(self) -> dict[str, float]:
        started = time.monotonic()
        marks: dict[str, float] = {}
        for service in SERVICES:
            self.pipeline.start(service, timeout=self.args.timeout)
            marks[f"{service}_ready_s"] = round(time.monotonic() - started, 1)
        marks["t0"] = started
        return marks

    # -- phases -------------------------------------------------------------------------------

    def fill(self) -> None:
        if (self.spool_path / "CURRENT").exists():
            self.say(f"reusing the spool in {self.spool_path}")
            self.figures["seeded"] = "reused"
            return
        self.say(f"seeding {self.args.messages} messages of {self.args.size} bytes")
        started = time.monotonic()
        seed_spool(self.spool_path, self.args.messages, self.args.size,
                   lambda n: self.say(f"  {n} written"))
        seconds = time.monotonic() - started
        self.figures["seed_s"] = round(seconds, 1)
        self.figures["seed_per_s"] = round(self.args.messages / seconds)
        self.figures["spool_disk_mb_seeded"] = round(disk_usage(self.spool_path) / 2**20)

    def refusing(self) -> None:
        self.open_sink(refuse=True)
        marks = self.start_pipeline()
        first = self.wait_rebuilt(marks["t0"] + 0.0)
        self.figures["cold_start"] = {k: v for k, v in marks.items() if k != "t0"} | first
        self.figures["queued"] = self.queued()
        self.say(f"pipeline up, queues rebuilt: {self.figures['cold_start']}; "
                 f"{self.figures['queued']} messages queued")
        end = time.monotonic() + self.args.refuse_seconds
        while time.monotonic() < end:
            time.sleep(1)
        status = proc_status(self.scheduler_pid())
        self.figures["refusing"] = {"rss_mb": status.get("VmRSS"),
                                    "peak_rss_mb": status.get("VmHWM"),
                                    "seconds": self.args.refuse_seconds,
                                    "deferred": int(self.scheduler_metrics().get(DEFERRED, 0))}
        self.figures["spool_disk_mb"] = round(disk_usage(self.spool_path) / 2**20)
        self.say(f"after {self.args.refuse_seconds}s refusing: {self.figures['refusing']}, "
                 f"spool {self.figures['spool_disk_mb']} MB on disk")
        stop_s = self.stop_scheduler()
        started = self.start_scheduler()
        self.figures["scheduler_restart_refusing"] = {"stop_s": stop_s} | self.wait_rebuilt(started)
        self.say(f"scheduler restarted: {self.figures['scheduler_restart_refusing']}")

    def opens(self) -> None:
        opened = time.monotonic()
        self.open_sink(refuse=False)
        first = self.wait_first_delivery(opened, 0)
        window_start = time.monotonic()
        base = self.delivered()
        end = window_start + self.args.drain_seconds
        while time.monotonic() < end and self.delivered() - base < self.args.drain_messages:
            time.sleep(0.2)
        seconds = time.monotonic() - window_start
        drained = self.delivered() - base
        self.figures["open"] = {"first_delivery_s": first, "drained": drained,
                                "window_s": round(seconds, 1),
                                "drain_per_s": round(drained / seconds, 1)}
        self.say(f"destination open: {self.figures['open']}")

    def restarts(self) -> None:
        stop_s = self.stop_scheduler()
        base = self.delivered()
        started = self.start_scheduler()
        first = self.wait_first_delivery(started, base)
        rebuilt = self.wait_rebuilt(started)
        self.figures["scheduler_restart"] = {"stop_s": stop_s, "first_delivery_s": first} | rebuilt
        self.say(f"scheduler restart: {self.figures['scheduler_restart']}")

        stopped = time.monotonic()
        self.pipeline.stop_all()
        stop_s = round(time.monotonic() - stopped, 1)
        base = self.delivered()
        marks = self.start_pipeline()
        first = self.wait_first_delivery(marks["t0"], base)
        rebuilt = self.wait_rebuilt(marks["t0"])
        self.figures["pipeline_restart"] = (
            {"stop_s": stop_s, "first_delivery_s": first}
            | {k: v for k, v in marks.items() if k != "t0"} | rebuilt)
        self.say(f"pipeline restart: {self.figures['pipeline_restart']}")

    def run(self) -> dict[str, object]:
        try:
            self.fill()
            self.refusing()
            self.opens()
            self.restarts()
        finally:
            stopping = time.monotonic()
            self.pipeline.stop_all()
            self.say(f"pipeline stopped in {time.monotonic() - stopping:.1f}s")
            if self.sink is not None:
                self.sink.stop()
        self.figures["total_s"] = round(time.monotonic() - self.started)
        return self.figures


def render(f: dict) -> str:
    cold, again = f["cold_start"], f["scheduler_restart_refusing"]
    sched, pipe, drain = f["scheduler_restart"], f["pipeline_restart"], f["open"]
    refusing = f["refusing"]
    rss = max(cold["rss_mb"], again["rss_mb"], refusing["rss_mb"] or 0)
    peak = max(cold["peak_rss_mb"], again["peak_rss_mb"], refusing["peak_rss_mb"] or 0,
               sched["peak_rss_mb"], pipe["peak_rss_mb"])
    first = max(sched["first_delivery_s"], pipe["first_delivery_s"])
    seeded = (f"{f['seed_s']} s ({f['seed_per_s']:,}/s)" if "seed_s" in f
              else "reused an earlier seed")
    rows = [
        ("messages queued after the cold start", f"{f['queued']:,}",
         f"{cold['rebuilt_messages']:,} read by the rebuild"),
        ("fill: spool seeded (spool stopped)", seeded, "RocksDbBackend.write, 1,024 per batch"),
        ("spool on disk (du)", f"{f['spool_disk_mb']:,} MB",
         f"right after seeding: {f.get('spool_disk_mb_seeded', '-')} MB"),
        ("scheduler RSS with the queue rebuilt", f"{rss:,.0f} MB",
         f"peak (VmHWM) {peak:,.0f} MB; target <= 1024 MB: "
         + ("met" if peak <= 1024 else "NOT met")),
        ("cold start: pipeline start to queues rebuilt", f"{cold['start_to_rebuilt_s']} s",
         f"rebuild {cold['rebuild_s']} s, spool ready after {cold['spool_ready_s']} s"),
        ("deferred while refusing (450 4.3.0)", f"{refusing['deferred']:,}",
         f"from the scheduler's start to {refusing['seconds']:g} s after its rebuild"),
        ("scheduler restart (refusing): start to rebuilt", f"{again['start_to_rebuilt_s']} s",
         f"rebuild {again['rebuild_s']} s, stop took {again['stop_s']} s"),
        ("destination opens: first delivery", f"{drain['first_delivery_s']} s", ""),
        ("drain rate", f"{drain['drain_per_s']:,} msg/s",
         f"{drain['drained']:,} delivered in {drain['window_s']} s"),
        ("scheduler restart: start to first delivery", f"{sched['first_delivery_s']} s",
         f"rebuilt after {sched['start_to_rebuilt_s']} s ({sched['rebuilt_messages']:,})"),
        ("pipeline restart: start to first delivery", f"{pipe['first_delivery_s']} s",
         f"rebuilt after {pipe['start_to_rebuilt_s']} s ({pipe['rebuilt_messages']:,}), "
         f"spool ready after {pipe['spool_ready_s']} s"),
        ("restart to first delivery <= 60 s", "met" if first <= 60 else "NOT met", ""),
    ]
    lines = ["| figure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=2048, help="stored message size, bytes")
    parser.add_argument("--refuse-seconds", type=float, default=30.0,
                        help="how long the pipeline runs against the refusing destination")
    parser.add_argument("--drain-seconds", type=float, default=60.0)
    parser.add_argument("--drain-messages", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of every wait, s")
    parser.add_argument("--workdir", help="keep data here (a spool seeded there is reused)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    parser.add_argument("--json", help="append the figures to this JSON-lines file")
    args = parser.parse_args(argv)
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="petrel-scale-"))
    try:
        figures = Scale(workdir, args).run()
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(figures))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
