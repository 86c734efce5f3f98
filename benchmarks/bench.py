"""End-to-end throughput: Postfix's ``smtp-source`` → Petrel ingress → egress → ``smtp-sink``.

    python benchmarks/bench.py [--scenario SIZE:SESSIONS:RCPTS:COUNT[:reuse]] [--repeat N]

Starts ``smtp-sink`` on a free loopback port, ``petrel up`` (embedded default: RocksDB spool
with fsync before every 250) relaying everything to it through ``--smarthost``, runs
``smtp-source`` and reports per scenario: accepted/s (until smtp-source handed over every
message), delivered/s (until the sink counted every message), CPU seconds of all Petrel
processes per 1,000 messages and peak RSS per service. Every run is bounded in messages and
time; only 127.0.0.1 is used. Results are printed as a Markdown table and, with ``--json``,
appended as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from petrel.ports import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@dataclass
class Scenario:
    size: int
    sessions: int
    rcpts: int
    count: int
    reuse: bool = False

    @classmethod
    def parse(cls, text: str) -> Scenario:
        parts = text.split(":")
        size = int(parts[0].lower().rstrip("k")) * (1024 if parts[0].lower().endswith("k") else 1)
        return cls(size, int(parts[1]), int(parts[2]), int(parts[3]),
                   len(parts) > 4 and parts[4] == "reuse")

    @property
    def label(self) -> str:
        return (f"{self.size // 1024}KB x {self.sessions}{'d' if self.reuse else ''} sessions"
                f" x {self.rcpts} rcpt")


@dataclass
class Result:
    scenario: str
    messages: int
    accepted_per_s: float
    delivered_per_s: float
    cpu_s_per_1k: float
    cpu_s_per_1k_by_service: dict[str, float]
    peak_rss_mb: dict[str, float]
    seconds: float


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def service_of(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    return cmd[2].decode() if len(cmd) > 2 and cmd[1] == b"-m" else "supervisor"


def cpu_by_service(pids: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in pids:
        name = service_of(pid)
        out[name] = out.get(name, 0.0) + cpu_seconds([pid])
    return out


def rss_by_service(pids: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = service_of(pid)
        match = re.search(r"VmRSS:\s+(\d+)", status)
        if match:
            out[name] = max(out.get(name, 0.0), int(match.group(1)) / 1024)
    return out


class Sink:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        cmd = [shutil.which("smtp-sink") or "/usr/sbin/smtp-sink", "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        self._fh = open(self.out, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*cmd, f"127.0.0.1:{self.port}", "4096"], stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(self.port, 10):
            raise RuntimeError("smtp-sink did not start")

    def messages(self) -> int:
        with open(self.out, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 300))
            found = re.findall(rb"mesg=(\d+)", fh.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._fh.close()


class Petrel:
    """``petrel up`` on free ports with a fresh data directory."""

    def __init__(self, workdir: Path, sink_port: int, egress: int = 1,
                 settings: dict[str, str] | None = None) -> None:
        self.smtp_port = free_port()
        ports = {name: free_port() for name in ("spool", "scheduler", "ingress", "bounce", "http")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
        env.update({
            "PETREL_DATA_DIR": str(workdir / "data"),
            "PETREL_LOG_LEVEL": "WARNING",
            "PETREL_SPOOL__LISTEN": f"127.0.0.1:{ports['spool']}",
            "PETREL_SPOOL__ADDRESS": f"127.0.0.1:{ports['spool']}",
            "PETREL_SCHEDULER__LISTEN": f"127.0.0.1:{ports['scheduler']}",
            "PETREL_SCHEDULER__ADDRESS": f"127.0.0.1:{ports['scheduler']}",
            "PETREL_INGRESS__GRPC_LISTEN": f"127.0.0.1:{ports['ingress']}",
            "PETREL_INGRESS__ADDRESS": f"127.0.0.1:{ports['ingress']}",
            "PETREL_BOUNCE__LISTEN": f"127.0.0.1:{ports['bounce']}",
            "PETREL_BOUNCE__ADDRESS": f"127.0.0.1:{ports['bounce']}",
        })
        env.update(settings or {})
        self.log = open(workdir / "petrel.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "petrel", "up", "--smtp-listen", f"127.0.0.1:{self.smtp_port}",
             "--http-listen", f"127.0.0.1:{ports['http']}", "--smarthost",
             f"127.0.0.1:{sink_port}", "--egress-replicas", str(egress)],
            env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(self.smtp_port, 60):
            raise RuntimeError(f"petrel did not start; see {workdir / 'petrel.log'}")
        time.sleep(2)  # let egress open its dispatch stream before the clock starts

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


def run_scenario(sc: Scenario, workdir: Path, egress: int, timeout: float,
                 settings: dict[str, str] | None = None) -> Result:
    sink = Sink(workdir)
    petrel = Petrel(workdir, sink.port, egress, settings)
    try:
        pids = petrel.pids()
        cpu0 = cpu_seconds(pids)
        cpu0_by = cpu_by_service(pids)
        source = [shutil.which("smtp-source") or "/usr/sbin/smtp-source", "-s", str(sc.sessions),
                  "-m", str(sc.count), "-l", str(sc.size), "-r", str(sc.rcpts),
                  "-M", "bench.example", "-f", "sender@bench.example", "-t", "rcpt@dest.example"]
        if sc.reuse:
            source.append("-d")
        source.append(f"127.0.0.1:{petrel.smtp_port}")
        started = time.monotonic()
        subprocess.run(source, timeout=timeout, check=True, stdout=subprocess.DEVNULL)
        accepted_s = time.monotonic() - started
        peak: dict[str, float] = {}
        deadline = started + timeout
        while True:
            for name, mb in rss_by_service(petrel.pids()).items():
                peak[name] = max(peak.get(name, 0.0), mb)
            if sink.messages() >= sc.count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        delivered_s = time.monotonic() - started
        delivered = sink.messages()
        cpu = cpu_seconds(petrel.pids()) - cpu0
        by_service = {name: round((value - cpu0_by.get(name, 0.0)) * 1000 / sc.count, 2)
                      for name, value in sorted(cpu_by_service(petrel.pids()).items())}
        if delivered < sc.count:
            print(f"# WARNING: only {delivered}/{sc.count} delivered within {timeout}s",
                  file=sys.stderr)
        return Result(sc.label, sc.count, round(sc.count / accepted_s, 1),
                      round(delivered / delivered_s, 1), round(cpu * 1000 / sc.count, 2),
                      by_service,
                      {k: round(v, 1) for k, v in sorted(peak.items())},
                      round(delivered_s, 2))
    finally:
        petrel.stop()
        sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append",
                        help="SIZE:SESSIONS:RCPTS:COUNT[:reuse], e.g. 2k:20:1:5000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--egress", type=int, default=1, help="egress processes")
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    parser.add_argument("--json", help="append result rows to this JSON-lines file")
    parser.add_argument("--set", action="append", default=[], metavar="PETREL_X=VALUE",
                        help="extra PETREL_* setting for every service (A/B runs)")
    args = parser.parse_args(argv)
    scenarios = [Scenario.parse(s) for s in (args.scenario or ["2k:20:1:5000"])]
    rows = []
    for sc in scenarios:
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="petrel-bench-") as tmp:
                settings = dict(item.split("=", 1) for item in args.set)
                runs.append(run_scenario(sc, Path(tmp), args.egress, args.timeout, settings))
        best = sorted(runs, key=lambda r: r.delivered_per_s)[len(runs) // 2]
        spread = (min(r.delivered_per_s for r in runs), max(r.delivered_per_s for r in runs))
        rows.append((best, spread, statistics.median(r.accepted_per_s for r in runs)))
        if args.json:
            with open(args.json, "a") as fh:
                for run in runs:
                    fh.write(json.dumps(asdict(run)) + "\n")
    print("| scenario | msgs | accepted/s | delivered/s (median, range) | cpu-s/1k "
          "| cpu-s/1k by service | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for best, spread, accepted in rows:
        rss = ", ".join(f"{k} {v}" for k, v in best.peak_rss_mb.items())
        cpu = ", ".join(f"{k} {v}" for k, v in best.cpu_s_per_1k_by_service.items())
        print(f"| {best.scenario} | {best.messages} | {accepted:.0f} | {best.delivered_per_s:.0f}"
              f" ({spread[0]:.0f}-{spread[1]:.0f}) | {best.cpu_s_per_1k} | {cpu} | {rss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
