"""Where the CPU goes: py-spy on every Petrel service during one ``smtp-source`` run.

    python benchmarks/profile.py [--scenario 2k:20:1:6000] [--seconds 10] [--out DIR]

Starts the same pipeline as ``bench.py`` (smtp-sink, ``petrel up`` with a smarthost), starts
``py-spy record`` (raw, folded stacks) on the ingress, spool, scheduler and egress processes a
few seconds into the load, and prints per service the functions with the most samples, both
self time and inclusive. The folded files stay in ``--out`` for flame graphs.

    python benchmarks/profile.py --cprofile [--scenario 2k:20:1:4000]

instead runs every service under cProfile (``PETREL_PROFILE_DIR``, see ``petrel.runtime``)
for the whole load and prints per service the Python function calls per message and the
functions with the most own time per message. cProfile's timer is the wall clock and its
overhead is per call, so read the figures as relative (several times the real CPU); the call
counts are exact and do not depend on how noisy the machine is.
"""

from __future__ import annotations

import argparse
import collections
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def cprofile_run(sc: Scenario, out: Path, top: int, settings: dict[str, str]) -> int:
    """Every service under cProfile for one ``smtp-source`` load of ``sc``; per service, calls
    and own time per message."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.prof"):
        stale.unlink()
    with tempfile.TemporaryDirectory(prefix="petrel-cprofile-") as tmp:
        workdir = Path(tmp)
        sink = Sink(workdir)
        petrel = Petrel(workdir, sink.port, 1, {**settings, "PETREL_PROFILE_DIR": str(out)})
        try:
            subprocess.run(smtp_source(sc, petrel.smtp_port), stdout=subprocess.DEVNULL,
                           timeout=1800, check=True)
            time.sleep(3)  # deliveries finish
        finally:
            petrel.stop()  # the services write their profiles as they stop
            sink.stop()
    for name in SERVICES:
        for path in sorted(out.glob(f"{name}-*.prof")):
            stats = pstats.Stats(str(path))
            table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
            calls = sum(row[1] for row in table.values())
            print(f"===== {name}: {calls / sc.count:,.0f} Python calls per message")
            rows = sorted(table.items(), key=lambda item: -item[1][2])[:top]
            for (filename, line, function), (_, ncalls, own, cumulative, _) in rows:
                where = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "",
                               filename).removeprefix(f"{REPO}/")
                print(f"{own * 1e6 / sc.count:8.1f} µs own {cumulative * 1e6 / sc.count:9.1f} µs "
                      f"cum {ncalls / sc.count:6.2f}/msg  {where}:{line} {function}")
    return 0


def smtp_source(sc: Scenario, port: int) -> list[str]:
    return [shutil.which("smtp-source") or "/usr/sbin/smtp-source",
            "-s", str(sc.sessions), "-m", str(sc.count), "-l", str(sc.size),
            "-r", str(sc.rcpts), "-M", "bench.example", "-f", "sender@bench.example",
            "-t", "rcpt@dest.example", f"127.0.0.1:{port}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="2k:20:1:6000")
    parser.add_argument("--seconds", type=int, default=10, help="sampling window")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds of load before sampling")
    parser.add_argument("--out", type=Path, default=Path("/tmp/petrel-profile"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--set", action="append", default=[], metavar="PETREL_X=VALUE")
    parser.add_argument("--cprofile", action="store_true",
                        help="deterministic profile of the whole load instead of py-spy")
    args = parser.parse_args()
    if args.cprofile:
        return cprofile_run(Scenario.parse(args.scenario), args.out, args.top,
                            dict(item.split("=", 1) for item in args.set))
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
            load = subprocess.Popen(smtp_source(sc, petrel.smtp_port), stdout=subprocess.DEVNULL)
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
