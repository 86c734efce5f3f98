"""Where the CPU goes: py-spy on every Petrel service during one ``smtp-source`` run.

    python benchmarks/profile.py [--scenario 2k:20:1:6000] [--seconds 10] [--out DIR]

Starts the same pipeline as ``bench.py`` (smtp-sink, ``petrel up`` with a smarthost), starts
``py-spy record`` (raw, folded stacks) on the ingress, spool, scheduler and egress processes a
few seconds into the load, and prints per service the functions with the most samples, both
self time and inclusive. The folded files stay in ``--out`` for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench import Petrel, Scenario, Sink, service_of  # noqa: E402

SERVICES = ("ingress", "spool", "scheduler", "egress")


def summarize(path: Path, top: int) -> str:
    """The ``top`` frames by self samples and by inclusive samples of one folded file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"===== {path.stem}: {total} samples", "-- self"]
    lines += [f"{n * 100 / total:5.1f}% {f[:140]}" for f, n in own.most_common(top)]
    lines.append("-- inclusive")
    lines += [f"{n * 100 / total:5.1f}% {f[:140]}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="2k:20:1:6000")
    parser.add_argument("--seconds", type=int, default=10, help="sampling window")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds of load before sampling")
    parser.add_argument("--out", type=Path, default=Path("/tmp/petrel-profile"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--set", action="append", default=[], metavar="PETREL_X=VALUE")
    args = parser.parse_args()
    sc = Scenario.parse(args.scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = dict(item.split("=", 1) for item in args.set)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="petrel-profile-") as tmp:
        workdir = Path(tmp)
        sink = Sink(workdir)
        petrel = Petrel(workdir, sink.port, 1, settings)
        try:
            pids = {service_of(pid): pid for pid in petrel.pids()}
            source = [shutil.which("smtp-source") or "/usr/sbin/smtp-source",
                      "-s", str(sc.sessions), "-m", str(sc.count), "-l", str(sc.size),
                      "-r", str(sc.rcpts), "-M", "bench.example", "-f", "sender@bench.example",
                      "-t", "rcpt@dest.example", f"127.0.0.1:{petrel.smtp_port}"]
            load = subprocess.Popen(source, stdout=subprocess.DEVNULL)
            time.sleep(args.delay)
            spies = [subprocess.Popen([py_spy, "record", "--pid", str(pids[name]), "--duration",
                                       str(args.seconds), "--rate", "200", "--format", "raw",
                                       "--nonblocking", "-o", str(args.out / f"{name}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name in SERVICES if name in pids]
            for spy in spies:
                spy.wait(args.seconds + 30)
            load.wait(600)
        finally:
            petrel.stop()
            sink.stop()
    for name in SERVICES:
        path = args.out / f"{name}.txt"
        if path.exists():
            print(summarize(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
