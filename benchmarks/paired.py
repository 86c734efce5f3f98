"""Paired A/B of two Petrel variants: both pipelines run at the same time, side by side.

    python benchmarks/paired.py A B [--rounds 6] [--messages 3000] [--sessions 10] [--size 2048]

``A`` and ``B`` are Petrel source trees (e.g. ``git worktree add /tmp/base <rev>``), each
optionally followed by ``|PETREL_X=value,...`` settings (``".|PETREL_EVENT_LOOP=asyncio"``);
the setting ``PYTHON=/path/to/python`` runs that variant's services on another interpreter
(a virtualenv with Petrel's dependencies), to compare interpreters with the same code.
Every round starts a fresh pipeline of each (``petrel up`` from that tree, its own
``smtp-sink``), warms both up, then drives both at once with ``smtp-source`` (``--sessions``
connections each, one message per connection) and measures each pipeline's CPU seconds per
1,000 messages (all its processes) and its delivered rate.

Why at the same time: this VM's speed drifts by ±30 % within minutes, so two variants measured
one after the other differ by more than most changes do. Run together they share whatever
state the machine is in; the per-round ratio B/A of CPU per message is stable to a few percent
(an A/A run gave 0.98-1.04), where sequential runs of the same commit spread by 1.5 x. The
absolute figures are higher than in ``bench.py`` (two pipelines share two cores) and are not
comparable with it; the ratios are the result. Heavy: run it through
``flock /tmp/petrel-bench.lock``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

WARMUP = 300


@dataclass
class Variant:
    label: str
    tree: Path
    settings: dict[str, str]
    python: str
    rounds: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Variant:
        path, _, sets = text.partition("|")
        settings = dict(item.split("=", 1) for item in sets.split(",") if item)
        python = settings.pop("PYTHON", sys.executable)
        return cls(text, Path(path).resolve(), settings, python)


def source(port: int, count: int, sessions: int, size: int) -> None:
    subprocess.run([shutil.which("smtp-source") or "/usr/sbin/smtp-source", "-s", str(sessions),
                    "-m", str(count), "-l", str(size), "-M", "bench.example",
                    "-f", "sender@bench.example", "-t", "rcpt@dest.example",
                    f"127.0.0.1:{port}"], check=True, timeout=900,
                   stdout=subprocess.DEVNULL)


def one_round(variants: list[Variant], messages: int, sessions: int, deadline: float,
              size: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="petrel-paired-"))
    running: list[tuple[bench.Sink, bench.Petrel]] = []
    try:
        for index, variant in enumerate(variants):
            bench.REPO = variant.tree  # petrel up runs from this tree
            workdir = work / str(index)
            workdir.mkdir()
            sink = bench.Sink(workdir)
            running.append((sink, bench.Petrel(workdir, sink.port, settings=variant.settings,
                                                         python=variant.python)))
        for sink, petrel in running:
            source(petrel.smtp_port, WARMUP, sessions, size)
            bench.wait_sink(sink, WARMUP, 60)
        before = [bench.cpu_by_service(petrel.pids()) for _, petrel in running]
        counted = [sink.messages() for sink, _ in running]
        started = time.monotonic()
        took: dict[int, float] = {}

        def drive(index: int) -> None:
            sink, petrel = running[index]
            source(petrel.smtp_port, messages, sessions, size)
            while sink.messages() < counted[index] + messages:
                if time.monotonic() - started > deadline:
                    return
                time.sleep(0.05)
            took[index] = time.monotonic() - started

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(running))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index, (variant, (_, petrel)) in enumerate(zip(variants, running, strict=True)):
            if index not in took:
                raise RuntimeError(f"{variant.label}: not every message delivered in time")
            after = bench.cpu_by_service(petrel.pids())
            per = {name: (after.get(name, 0.0) - before[index].get(name, 0.0)) * 1000 / messages
                   for name in after}
            variant.rounds.append((sum(per.values()), messages / took[index], per))
            services = " ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()) if v >= 0.01)
            print(f"round {len(variant.rounds)} {variant.label}: "
                  f"{sum(per.values()):.2f} cpu-s/1k, {messages / took[index]:.0f} delivered/s "
                  f"({services})", flush=True)
    finally:
        for sink, petrel in running:
            petrel.stop()
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    parser.add_argument("--deadline", type=float, default=300.0,
                        help="seconds a round may take before it fails")
    args = parser.parse_args()
    variants = [Variant.parse(args.a), Variant.parse(args.b)]
    for _ in range(args.rounds):
        one_round(variants, args.messages, args.sessions, args.deadline, args.size)
    a, b = variants
    cpu = [rb[0] / ra[0] for ra, rb in zip(a.rounds, b.rounds, strict=True)]
    rate = [rb[1] / ra[1] for ra, rb in zip(a.rounds, b.rounds, strict=True)]
    print(f"B = {b.label}\nA = {a.label}")
    print(f"B/A CPU per message: median {statistics.median(cpu):.3f} "
          f"(rounds {', '.join(f'{x:.3f}' for x in cpu)})")
    print(f"B/A delivered/s:     median {statistics.median(rate):.3f} "
          f"(rounds {', '.join(f'{x:.3f}' for x in rate)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
