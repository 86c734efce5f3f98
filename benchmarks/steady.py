"""Steady run: a fixed, sustainable SMTP load for many minutes, with every service's memory
sampled, to show that RSS does not grow.

    python benchmarks/steady.py [--minutes 10] [--rate 150] [--sessions 8] [--size 2048]
                                [--warmup 1] [--json FILE]

``smtp-sink`` on a free loopback port, ``petrel up`` (every service, RocksDB spool with fsync
before every 250) relaying to it through ``--smarthost``, and a paced SMTP client: message
*k* is due at *k* / ``--rate`` seconds, sent by one of ``--sessions`` threads over a
connection that is reused for 100 messages (then QUIT and reconnect, as a submitting
application would). Messages are 2 KB, from three tenants (``X-Tenant``/``X-Campaign``
headers) to six destination domains, one recipient each.

Every ``--interval`` seconds (2; a sample every 10 s could miss the top of the spool's
saw-tooth, which rises 0.4 MB/s, by 4 MB) the RSS of every service (the largest process of
each) is sampled, with the messages accepted and delivered so far. At the end the load stops,
the queue drains (bounded) and a table is printed per service: RSS at the end of the warm-up
(``--warmup`` minutes, default 1), at the end, the maximum, the slope in MB/min of a
least-squares line through the samples after the warm-up, and the peak RSS of the first and
of the second half of the time after the warm-up.

"No memory growth" passes when, for every service, the peak of the second half exceeds the
peak of the first half by at most max(5 MB, 5 %). A leak raises the second half's peak by
its rate times the half's length (4.5 minutes in a 10-minute run: 1.1 MB/min shows); what
rises to a bound and stays there (the scheduler's memory of the last 65,536 finished ids:
about 10 MB, full after 7.3 minutes at 150 msg/s, plus one step when its dict first
compacts, 2.4 minutes later) or cycles (the spool's RocksDB memtable fills up to 64 MB, is
flushed and starts again: a saw-tooth of about 3 minutes) does not, while "end minus
start" would call either growth. The load must be sustainable or growth only
measures the queue: the run reports the backlog (accepted minus delivered) at the end of
the load and warns when it exceeds 2 seconds of load.
Heavy: run it through ``flock /tmp/petrel-bench.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import smtplib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench import Petrel, Sink, rss_by_service  # noqa: E402

TENANTS = (("acme", "spring-sale"), ("acme", "newsletter"), ("globex", "digest"),
           ("globex", ""), ("initech", "receipts"))
DOMAINS = ("gmail.example", "outlook.example", "yahoo.example", "gmx.example",
           "orange.example", "corp.example")
PER_CONNECTION = 100
POOL = 512
GROWTH_MB = 5.0
GROWTH_SHARE = 0.05
PROGRESS_EVERY = 30.0


def message_pool(size: int, count: int = POOL, seed: int = 7) -> list[tuple[str, str, bytes]]:
    """(sender, recipient, content) of ``count`` distinct ``size``-byte messages."""
    rng = random.Random(seed)
    pool = []
    for n in range(count):
        tenant, campaign = rng.choice(TENANTS)
        sender = f"news@{tenant}.example"
        rcpt = f"user{rng.randrange(10**7)}@{rng.choice(DOMAINS)}"
        headers = [f"From: <{sender}>", f"To: <{rcpt}>", f"Subject: steady {n}",
                   "Date: Thu, 26 Nov 2026 07:00:00 +0000",
                   f"Message-ID: <steady-{n}-{rng.randrange(10**9)}@{tenant}.example>",
                   f"X-Tenant: {tenant}", "MIME-Version: 1.0",
                   "Content-Type: text/plain; charset=us-ascii"]
        if campaign:
            headers.append(f"X-Campaign: {campaign}")
        head = "\r\n".join(headers) + "\r\n\r\n"
        words = " ".join(f"w{rng.randrange(5000)}" for _ in range(size // 5))
        body_size = max(size - len(head), 0)
        body = "\r\n".join(words[i:i + 76] for i in range(0, body_size, 78))[:body_size]
        pool.append((sender, rcpt, (head + body + "\r\n").encode()))
    return pool


@dataclass
class Load:
    """Paced SMTP submissions: message k is due ``k / rate`` s after ``start()``."""

    port: int
    rate: float
    sessions: int
    pool: list[tuple[str, str, bytes]]
    accepted: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._next = itertools.count()
        for n in range(self.sessions):
            thread = threading.Thread(target=self._run, name=f"smtp-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        client: smtplib.SMTP | None = None
        sent = 0
        while not self._stop.is_set():
            with self._lock:
                k = next(self._next)
            if self._stop.wait(max(0.0, self._t0 + k / self.rate - time.monotonic())):
                break
            sender, rcpt, data = self.pool[k % len(self.pool)]
            started = time.monotonic()
            try:
                if client is None or sent >= PER_CONNECTION:
                    if client is not None:
                        client.quit()
                    client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                    client.ehlo("steady.test")
                    sent = 0
                client.sendmail(sender, [rcpt], data)
                sent += 1
                with self._lock:
                    self.accepted += 1
                    self.latencies.append(time.monotonic() - started)
            except (smtplib.SMTPException, OSError):
                with self._lock:
                    self.failed += 1
                client = None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (y per x) of ``points``; 0 with fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def analyse(samples: list[dict], warmup_s: float) -> dict[str, dict[str, float]]:
    """Per service: RSS at the end of the warm-up and at the end, max, slope (MB/min) after
    the warm-up, the peaks of both halves after the warm-up and whether the second grew."""
    services = sorted({name for s in samples for name in s["rss_mb"]})
    middle = (warmup_s + samples[-1]["t"]) / 2
    out = {}
    for name in services:
        series = [(s["t"], s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        after = [(t, mb) for t, mb in series if t >= warmup_s] or series
        first = max((mb for t, mb in after if t < middle), default=after[0][1])
        second = max((mb for t, mb in after if t >= middle), default=after[-1][1])
        limit = max(GROWTH_MB, GROWTH_SHARE * first)
        out[name] = {"rss_warmup_mb": after[0][1], "rss_end_mb": series[-1][1],
                     "rss_max_mb": max(mb for _, mb in series),
                     "slope_mb_per_min": round(slope([(t / 60, mb) for t, mb in after]), 2),
                     "peak_first_half_mb": first, "peak_second_half_mb": second,
                     "growth_mb": round(second - first, 1), "limit_mb": round(limit, 1),
                     "grew": second - first > limit}
    return out


def run(args: argparse.Namespace) -> dict:
    pool = message_pool(args.size)
    with tempfile.TemporaryDirectory(prefix="petrel-steady-") as tmp:
        workdir = Path(tmp)
        sink = Sink(workdir)
        petrel = Petrel(workdir, sink.port)
        load = Load(petrel.smtp_port, args.rate, args.sessions, pool)
        samples: list[dict] = []
        try:
            load.start()
            started = time.monotonic()
            end = started + args.minutes * 60
            next_sample = next_print = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append({"t": round(now - started, 1),
                                    "rss_mb": rss_by_service(petrel.pids()),
                                    "accepted": load.accepted, "delivered": sink.messages(),
                                    "failed": load.failed})
                    last = samples[-1]
                    next_sample += args.interval
                    if now >= next_print:
                        next_print += PROGRESS_EVERY
                        print(f"[{last['t']:6.0f}s] accepted {last['accepted']} delivered "
                              f"{last['delivered']} failed {last['failed']} rss " + " ".join(
                                  f"{k} {v:.0f}" for k, v in sorted(last["rss_mb"].items())),
                              file=sys.stderr, flush=True)
                if now >= end:
                    break
                time.sleep(min(0.5, max(0.0, min(end, next_sample) - now)))
            load.stop()
            backlog = load.accepted - sink.messages()
            drain_deadline = time.monotonic() + args.drain_timeout
            while sink.messages() < load.accepted and time.monotonic() < drain_deadline:
                time.sleep(0.2)
            delivered = sink.messages()
        finally:
            load.stop()
            petrel.stop()
            sink.stop()
    seconds = samples[-1]["t"] if samples else 0.0
    return {
        "minutes": args.minutes, "rate": args.rate, "sessions": args.sessions,
        "size": args.size, "accepted": load.accepted, "failed": load.failed,
        "delivered": delivered, "achieved_rate": round(load.accepted / max(seconds, 1), 1),
        "backlog_at_end": backlog,
        "accept_p50_ms": round(percentile(load.latencies, 0.5) * 1000, 1),
        "accept_p99_ms": round(percentile(load.latencies, 0.99) * 1000, 1),
        "warmup_s": args.warmup * 60, "services": analyse(samples, args.warmup * 60),
        "samples": samples,
    }


def render(r: dict) -> str:
    lines = [f"Steady run: {r['minutes']:g} min at {r['rate']:g} msg/s over SMTP "
             f"({r['sessions']} sessions, {r['size']} B): {r['accepted']:,} accepted "
             f"({r['achieved_rate']}/s), {r['failed']} failed, {r['delivered']:,} delivered; "
             f"backlog at the end of the load {r['backlog_at_end']}; accept latency "
             f"p50 {r['accept_p50_ms']} ms, p99 {r['accept_p99_ms']} ms", "",
             f"| service | RSS at {r['warmup_s'] / 60:g} min | RSS at end | max "
             "| slope after warm-up | peak 1st half | peak 2nd half | 2nd - 1st (limit) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in r["services"].items():
        label = "supervisor" if name == "petrel" else name
        lines.append(f"| {label} | {s['rss_warmup_mb']:.1f} MB | {s['rss_end_mb']:.1f} MB | "
                     f"{s['rss_max_mb']:.1f} MB | {s['slope_mb_per_min']:+.2f} MB/min | "
                     f"{s['peak_first_half_mb']:.1f} MB | {s['peak_second_half_mb']:.1f} MB | "
                     f"{s['growth_mb']:+.1f} MB ({s['limit_mb']:.0f}) |")
    grew = [("supervisor" if n == "petrel" else n) for n, s in r["services"].items()
            if s["grew"]]
    verdict = "PASS" if not grew else "FAIL: " + ", ".join(grew)
    lines += ["", "No memory growth (for every service, the peak RSS of the second half after "
              f"the warm-up within max(5 MB, 5 %) of the first half's): **{verdict}**"]
    if r["achieved_rate"] < 0.95 * r["rate"]:
        lines.append(f"WARNING: the SMTP client reached {r['achieved_rate']}/s of the "
                     f"{r['rate']:g}/s asked (accept latency x sessions bounds it).")
    if r["backlog_at_end"] > 2 * r["rate"]:
        lines.append(f"WARNING: a backlog of {r['backlog_at_end']} messages built up; the rate "
                     "was not sustainable, so RSS also measures the queue.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=150.0, help="messages per second")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent SMTP sessions")
    parser.add_argument("--size", type=int, default=2048, help="message size, bytes")
    parser.add_argument("--warmup", type=float, default=1.0, help="minutes")
    parser.add_argument("--interval", type=float, default=2.0, help="RSS sampling, seconds")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--json", help="append the result (with every sample) to this file")
    args = parser.parse_args(argv)
    result = run(args)
    print(render(result))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 1 if any(s["grew"] for s in result["services"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
