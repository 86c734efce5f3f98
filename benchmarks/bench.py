"""Petrel beside Postfix in one run: ``smtp-source`` → MTA → ``smtp-sink`` on loopback.

    make bench                                     # = python benchmarks/bench.py
    python benchmarks/bench.py --quick             # fewer messages, for development
    python benchmarks/bench.py --repeat 3 --json results.jsonl
    python benchmarks/bench.py --only petrel --scenario 2k:20:1:5000 --set PETREL_EVENT_LOOP=uvloop
    python benchmarks/bench.py --report results.jsonl   # table from saved rows, no run

Heavy: on a shared machine run it through ``flock /tmp/petrel-bench.lock``.

**What one run does.** For every scenario, and within it for every repetition, each system
gets a fresh instance (systems interleaved, their order alternating between repetitions):

- *petrel*: ``petrel up`` (embedded default: RocksDB spool, fsync before every 250) with a
  fresh data directory and ``--smarthost`` pointing at the sink;
- *postfix*: a private Postfix relay instance (``benchmarks/postfix_relay.py``: own config
  and queue directory under the run's work directory, Postfix's fsync'ed durable queue)
  relaying everything to the sink.

Each instance runs in its own cgroup (v2 ``cpu.stat`` or v1 ``cpuacct``; process-tree
fallback) so every process it forks is CPU-accounted, including Postfix's short-lived
``smtpd``. A run is: start sink and system, warm up (a few hundred messages, not reported),
wait (bounded) for the machine to be quiet, then the measured load, then the latency probe.

- **accepted/s**: messages / time until the load generator had every message accepted
  (``smtp-source`` exited after the last 250 and QUIT; the injectors' last response);
- **delivered/s**: messages / time until ``smtp-sink`` had counted every delivery;
- **cpu-s/1k**: CPU seconds of the whole system under test (all Petrel processes, or the
  Postfix process group) per 1,000 messages, over the measured load until the last delivery;
- **accept p50/p99 ms**: ``benchmarks/loadgen.py probe`` after the load has drained, at a
  fixed open-loop rate (default: half the sustained rate just measured, the lower of accepted/s
  and delivered/s: gRPC inject accepts faster than it delivers, and a rate above delivered/s
  only fills the queue; ``--latency-rate``), at
  most ``--latency-seconds`` and ``--latency-max`` messages: SMTP from the end of DATA (the
  ``.``) to the 250, gRPC from the request to its response, REST from the POST to the answer;
- **peak RSS MB**: highest total RSS seen, then the peak per service (Petrel) or per program
  summed over its processes (Postfix: all ``smtpd`` together, ...), sampled every 0.25 s;
- **other cpu-s/1k**: machine CPU (root cgroup) minus system, load generator, sink and this
  harness: kernel threads and *foreign load*. Above ~0.5 the row was disturbed.

Scenarios (``--scenario``, repeatable, replaces the default set):
``SIZE:SESSIONS:RCPTS:COUNT[:reuse]`` drives ``smtp-source -l SIZE -s SESSIONS -r RCPTS
-m COUNT [-d]`` (``reuse`` = many messages per connection, otherwise one per connection);
``grpc:SIZE:STREAMS:RCPTS:COUNT`` and ``rest:SIZE:CLIENTS:RCPTS:COUNT`` use loadgen's
injectors (Petrel only). All recipients of a message share one domain, so each MTA makes one
delivery per message (the sink's count is checked against that); REST injects one message per
recipient. ``--repeat N`` prints every cell as median (min-max) of N runs; ``--json FILE``
appends one JSON line per run.

Everything is bounded: message counts, ``--timeout`` per run, ``--budget`` for the whole
command (runs that no longer fit are skipped and listed). Only 127.0.0.1 is used. Must run as
root on Debian 12 with the ``postfix`` package (``make system-deps``) for the Postfix rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.postfix_relay import Knobs, PostfixRelay  # noqa: E402
from petrel.ports import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN = REPO / "benchmarks" / "loadgen.py"
SYSTEMS = ("petrel", "postfix")
KINDS = ("smtp", "grpc", "rest")


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- processes


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
    """``python -m NAME`` → NAME (``petrel`` for ``petrel up`` itself), else the program's
    name (``/proc/PID/comm``: ``smtpd``, ``cleanup``, ...)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if len(cmd) > 2 and cmd[1] == b"-m":
        return cmd[2].decode()
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "supervisor"
    except OSError:
        return "gone"


def service_label(name: str) -> str:
    """Table name of a service: ``petrel up``'s own process is the supervisor."""
    return "supervisor" if name == "petrel" else name


def cpu_by_service(pids: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in pids:
        name = service_of(pid)
        out[name] = out.get(name, 0.0) + cpu_seconds([pid])
    return out


def _rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else None


def rss_by_service(pids: list[int]) -> dict[str, float]:
    """Largest RSS (MB) of one process per service."""
    out: dict[str, float] = {}
    for pid in pids:
        mb = _rss_mb(pid)
        if mb is not None:
            name = service_of(pid)
            out[name] = max(out.get(name, 0.0), mb)
    return out


def rss_sum_by_service(pids: list[int]) -> dict[str, float]:
    """RSS (MB) of all processes of a service together (20 ``smtpd`` count 20 times)."""
    out: dict[str, float] = {}
    for pid in pids:
        mb = _rss_mb(pid)
        if mb is not None:
            name = service_label(service_of(pid))
            out[name] = out.get(name, 0.0) + mb
    return out


def host_cpu_seconds() -> float:
    """CPU seconds of every task on the machine: the root cgroup where readable (the same
    clock as the per-run cgroups), else /proc/stat."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/fs/cgroup/cpuacct/cpuacct.usage").read_text()) / 1e9
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/sys/fs/cgroup/cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
    with open("/proc/stat") as fh:
        values = [int(x) for x in fh.readline().split()[1:]]
    return (values[0] + values[1] + values[2] + values[5] + values[6]) / CLK_TCK


def busy_cores(interval: float = 0.5) -> float:
    before = host_cpu_seconds()
    time.sleep(interval)
    return (host_cpu_seconds() - before) / interval


def wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (bounded) until fewer than ``threshold`` cores are busy; the last sample."""
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_cores(1.0)
    return busy


class CpuGroup:
    """CPU time of a group of processes.

    A cgroup (v2 ``cpu.stat``, else v1 ``cpuacct``) when one can be created: every process
    started through ``wrap`` and all its descendants are counted, also those that already
    exited (Postfix's ``smtpd``, ``cleanup``). Otherwise the live process tree of the
    wrapped command (``cutime`` covers children its root reaped)."""

    def __init__(self, label: str) -> None:
        self.path: Path | None = None
        self.kind = "tree"
        self.root: int | None = None
        name = f"petrel_bench_{re.sub(r'[^A-Za-z0-9_]', '_', label)}_{os.getpid()}_{id(self)}"
        for base, kind in ((Path("/sys/fs/cgroup"), "cgroup2"),
                           (Path("/sys/fs/cgroup/cpuacct"), "cgroup1")):
            marker = "cgroup.controllers" if kind == "cgroup2" else "cpuacct.usage"
            if (base / marker).exists():
                with contextlib.suppress(OSError):
                    (base / name).mkdir()
                    self.path, self.kind = base / name, kind
                    break

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run so that it joins the group before it execs (no preexec_fn, which is
        unsafe with threads)."""
        if self.path is None:
            return list(argv)
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                str(self.path / "cgroup.procs"), *argv]

    def adopt(self, pid: int) -> None:
        self.root = pid

    def seconds(self) -> float:
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                if self.kind == "cgroup1":
                    return int((self.path / "cpuacct.usage").read_text()) / 1e9
                for line in (self.path / "cpu.stat").read_text().splitlines():
                    key, value = line.split()
                    if key == "usage_usec":
                        return int(value) / 1e6
        return cpu_seconds(self.pids())

    def pids(self) -> list[int]:
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        return process_tree(self.root) if self.root else []

    def close(self, wait: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone (bounded wait)."""
        if self.path is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    print(f"# WARNING: {self.path} still has processes {self.pids()}",
                          file=sys.stderr)
                    return
                time.sleep(0.1)


class PeakRss:
    """Samples RSS of ``pids()`` every ``interval`` seconds in a thread; peaks in MB."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.25) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self.by_service: dict[str, float] = {}
        self.total = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            sample = rss_sum_by_service(self._pids())
            for name, mb in sample.items():
                self.by_service[name] = max(self.by_service.get(name, 0.0), mb)
            self.total = max(self.total, sum(sample.values()))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- systems


class Sink:
    """``smtp-sink`` on a free loopback port, counting messages (``-c``)."""

    cpu_group: CpuGroup | None = None

    def __init__(self, workdir: Path, cpu_group: CpuGroup | None = None) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        self.cpu_group = cpu_group
        cmd = [shutil.which("smtp-sink") or "/usr/sbin/smtp-sink", "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += [f"127.0.0.1:{self.port}", "4096"]
        self._fh = open(self.out, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cpu_group.wrap(cmd) if cpu_group else cmd,
                                     stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if cpu_group:
            cpu_group.adopt(self.proc.pid)
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
        if self.cpu_group:
            self.cpu_group.close()


class Petrel:
    """``petrel up`` on free ports with a fresh data directory; ready once every service
    announced itself (the constructor waits, bounded by ``ready_timeout``)."""

    def __init__(self, workdir: Path, sink_port: int, egress: int = 1,
                 settings: dict[str, str] | None = None, *, cpu_group: CpuGroup | None = None,
                 metrics_port: int = 0, ready_timeout: float = 90.0, ingress: int = 1,
                 python: str = sys.executable) -> None:
        self.smtp_port = free_port()
        ports = {name: free_port() for name in ("spool", "scheduler", "ingress", "bounce", "http")}
        self.grpc_port, self.http_port = ports["ingress"], ports["http"]
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
        self.log_path = workdir / "petrel.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        # --metrics-port 0: no fixed /metrics ports that a parallel run could hold
        # (the services still record their metrics).
        cmd = [python, "-m", "petrel", "up", "--smtp-listen", f"127.0.0.1:{self.smtp_port}",
               "--http-listen", f"127.0.0.1:{ports['http']}", "--smarthost",
               f"127.0.0.1:{sink_port}", "--egress-replicas", str(egress),
               "--ingress-replicas", str(ingress),
               "--metrics-port", str(metrics_port)]
        self.proc = subprocess.Popen(cpu_group.wrap(cmd) if cpu_group else cmd, env=env, cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if cpu_group:
            cpu_group.adopt(self.proc.pid)
        expected = 4 + egress + ingress  # spool, bounce, scheduler, gateway + the replicas
        deadline = time.monotonic() + ready_timeout
        while self.ready_services() < expected or not wait_port(self.smtp_port, 0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"petrel did not start; see {self.log_path}")
            time.sleep(0.1)
        time.sleep(0.5)  # egress opens its dispatch stream right after announcing itself

    def ready_services(self) -> int:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return len(set(re.findall(r'^\[([\w-]+)\] \{"ready"', text, re.M)))

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    size: int
    sessions: int
    rcpts: int
    count: int
    reuse: bool = False
    kind: str = "smtp"

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``[KIND:]SIZE:SESSIONS:RCPTS:COUNT[:reuse]`` (KIND smtp, grpc or rest; SIZE in
        bytes or with a k suffix = KiB). For grpc/rest RCPTS may be left out (1)."""
        parts = [p.strip() for p in text.strip().lower().split(":")]
        kind = parts.pop(0) if parts and parts[0] in KINDS else "smtp"
        reuse = False
        if parts and parts[-1] in ("reuse", "d"):
            if kind != "smtp":
                raise ValueError(f"{text!r}: reuse applies to smtp scenarios only")
            reuse = True
            parts.pop()
        if kind != "smtp" and len(parts) == 3:
            parts.insert(2, "1")
        if len(parts) != 4:
            raise ValueError(f"bad scenario {text!r}: expected [KIND:]SIZE:SESSIONS:RCPTS:COUNT"
                             "[:reuse]")
        try:
            size_text = parts[0]
            size = (int(float(size_text[:-1]) * 1024) if size_text.endswith("k")
                    else int(size_text))
            sessions, rcpts, count = (int(p) for p in parts[1:])
        except ValueError:
            raise ValueError(f"bad number in scenario {text!r}") from None
        if size < 0 or min(sessions, rcpts, count) < 1:
            raise ValueError(f"scenario {text!r}: sessions, recipients and count must be >= 1")
        return cls(size, sessions, rcpts, count, reuse, kind)

    @property
    def spec(self) -> str:
        """The canonical text form (``parse(spec)`` gives the same scenario)."""
        size = f"{self.size // 1024}k" if self.size % 1024 == 0 and self.size else str(self.size)
        head = "" if self.kind == "smtp" else f"{self.kind}:"
        return f"{head}{size}:{self.sessions}:{self.rcpts}:{self.count}" + (
            ":reuse" if self.reuse else "")

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KB" if self.size >= 1024 else f"{self.size} B"
        rcpt = f" x {self.rcpts} rcpt" if self.rcpts > 1 else ""
        if self.kind == "grpc":
            return f"gRPC inject {size} x {self.sessions} streams{rcpt}"
        if self.kind == "rest":
            return f"REST inject {size} x {self.sessions} clients{rcpt}"
        sessions = f"{self.sessions} session{'s' if self.sessions > 1 else ''}"
        return f"{size} x {sessions}{rcpt}" + (" reuse (-d)" if self.reuse else "")

    def scaled(self, divisor: int) -> Scenario:
        return Scenario(self.size, self.sessions, self.rcpts, max(1, self.count // divisor),
                        self.reuse, self.kind)

    def systems(self) -> tuple[str, ...]:
        """Systems this scenario applies to (the injectors are Petrel's own APIs)."""
        return SYSTEMS if self.kind == "smtp" else ("petrel",)

    def deliveries(self, messages: int) -> int:
        """Sink transactions expected for ``messages``: one per message (its recipients
        share a domain), except REST, which makes a message per recipient."""
        return messages * (self.rcpts if self.kind == "rest" else 1)


DEFAULT_SCENARIOS = ("2k:20:1:10000", "2k:1:1:2000", "20k:20:1:10000", "100k:20:1:4000",
                     "2k:20:5:5000", "2k:20:1:10000:reuse", "grpc:2k:4:1:10000",
                     "rest:2k:20:1:5000")
QUICK_DIVISOR = 5


@dataclass
class RunOptions:
    """How ``run_scenario`` measures beyond the load itself (defaults: the bare load, as
    before these options existed; ``main`` turns warm-up and the latency probe on)."""
    warmup: int = 0
    quiet_wait: float = 0.0
    quiet_threshold: float = 0.3
    latency: bool = False
    latency_rate: float | None = None
    latency_fraction: float = 0.5
    latency_seconds: float = 10.0
    latency_max: int = 2000
    latency_concurrency: int = 32
    grpc_window: int = 32
    postfix: Knobs = field(default_factory=Knobs)


@dataclass
class Result:
    scenario: str
    messages: int
    accepted_per_s: float | None
    delivered_per_s: float | None
    cpu_s_per_1k: float | None
    cpu_s_per_1k_by_service: dict[str, float]
    peak_rss_mb: dict[str, float]
    seconds: float
    system: str = "petrel"
    spec: str = ""
    kind: str = "smtp"
    delivered: int = 0
    status: str = "ok"
    note: str = ""
    peak_rss_total_mb: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_rate: float | None = None
    latency_ok: int = 0
    latency_errors: int = 0
    host_cpu_s_per_1k: float | None = None
    other_cpu_s_per_1k: float | None = None
    gen_cpu_s_per_1k: float | None = None
    sink_cpu_s_per_1k: float | None = None
    bg_busy_cores: float | None = None
    cpu_method: str = ""
    sink_total: int = 0
    sink_expected: int = 0
    load_cmd: str = ""
    repeat: int = 0
    at: str = ""
    commit: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def load_command(sc: Scenario, port: int, count: int, timeout: float,
                 grpc_window: int = 32) -> list[str]:
    """The load generator for ``count`` messages of ``sc`` against ``port``."""
    if sc.kind == "smtp":
        cmd = [shutil.which("smtp-source") or "/usr/sbin/smtp-source", "-s", str(sc.sessions),
               "-m", str(count), "-l", str(sc.size), "-r", str(sc.rcpts),
               "-M", "bench.example", "-f", "sender@bench.example", "-t", "rcpt@dest.example"]
        if sc.reuse:
            cmd.append("-d")
        return [*cmd, f"127.0.0.1:{port}"]
    return [sys.executable, str(LOADGEN), "load", "--kind", sc.kind,
            "--target", f"127.0.0.1:{port}", "--count", str(count), "--clients",
            str(sc.sessions), "--size", str(sc.size), "--rcpts", str(sc.rcpts),
            "--window", str(grpc_window), "--timeout", f"{max(1.0, timeout):.0f}"]


@dataclass
class Drive:
    """One load generator run: times relative to when it started sending."""
    started: float
    accepted_s: float | None = None
    delivered_s: float | None = None
    got: int = 0
    status: str = "ok"
    note: str = ""
    outcome: dict[str, Any] = field(default_factory=dict)
    gen_cpu: float = 0.0


def drive(cmd: list[str], sink: Sink, expect: int, deadline: float, workdir: Path,
          on_start: Callable[[], None] | None = None) -> Drive:
    """Run one load generator until every message was delivered to the sink (or
    ``deadline``). A loadgen command's clock starts at its ``{"event": "start"}`` line."""
    group = CpuGroup("gen")
    base = sink.messages()
    err_path = workdir / "loadgen.err"
    is_loadgen = str(LOADGEN) in cmd
    if on_start and not is_loadgen:
        on_start()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(group.wrap(cmd), stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
    group.adopt(proc.pid)
    assert proc.stdout is not None
    started = time.monotonic()
    gen_base = 0.0
    if is_loadgen:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - started))
        first = proc.stdout.readline() if ready else b""
        started = time.monotonic()
        if b'"start"' not in first:
            _stop_group(proc)
            group.close()
            return Drive(started, status="loadgen did not start",
                         note=err_path.read_text(errors="replace")[-300:])
        gen_base = group.seconds()  # interpreter start-up and imports are not load
        if on_start:
            on_start()
    run = Drive(started)
    while True:
        now = time.monotonic()
        if run.accepted_s is None and proc.poll() is not None:
            run.accepted_s = now - started
        run.got = sink.messages() - base
        if run.delivered_s is None and run.got >= expect:
            run.delivered_s = now - started
        if (run.accepted_s is not None and run.delivered_s is not None) or now > deadline:
            break
        if run.accepted_s is not None and proc.returncode and now > started + run.accepted_s + 10:
            break  # the generator failed: 10 s for what was accepted to arrive, then stop
        time.sleep(0.02)
    run.gen_cpu = group.seconds() - gen_base
    if proc.poll() is None:
        _stop_group(proc)
        run.status = "TIMEOUT(load)"
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.stdout.close()
    group.close()
    stderr = err_path.read_text(errors="replace").strip()
    if proc.returncode and run.status == "ok":
        run.status = f"load rc={proc.returncode}"
    if stderr:
        run.note = stderr.splitlines()[-1][:200]
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict) and "mode" in data:
                run.outcome = data
    if run.outcome:
        if run.outcome.get("errors"):
            run.status = (f"load errors {run.outcome['errors']}/{run.outcome['requested']}"
                          if run.status == "ok" else run.status)
            run.note = str(run.outcome.get("last_error", ""))[:200]
        if run.outcome.get("seconds"):
            run.accepted_s = float(run.outcome["seconds"])
    if run.delivered_s is None and run.status == "ok":
        run.status = f"TIMEOUT(sink {run.got}/{expect})"
    return run


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a load generator we started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def probe_command(sc: Scenario, port: int, rate: float, opts: RunOptions,
                  timeout: float) -> list[str]:
    cmd = [sys.executable, str(LOADGEN), "probe", "--kind", sc.kind,
           "--target", f"127.0.0.1:{port}", "--rate", f"{rate:.2f}",
           "--seconds", str(opts.latency_seconds), "--max-count", str(opts.latency_max),
           "--concurrency", str(opts.latency_concurrency), "--size", str(sc.size),
           "--rcpts", str(sc.rcpts), "--timeout", f"{max(1.0, timeout):.0f}",
           "--drain", f"{min(15.0, max(1.0, timeout - opts.latency_seconds)):.0f}"]
    return [*cmd, "--reuse"] if sc.reuse else cmd


def run_probe(cmd: list[str], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=max(1.0, timeout),
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"error": "probe timed out"}
    for line in reversed(done.stdout.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    return {"error": (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]}


def wait_sink(sink: Sink, expect: int, timeout: float) -> int:
    """Wait (bounded) until the sink counted ``expect`` messages; then a short settle to
    catch extra deliveries. Returns the count."""
    deadline = time.monotonic() + timeout
    while sink.messages() < expect and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    return sink.messages()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def run_scenario(sc: Scenario, workdir: Path, egress: int = 1, timeout: float = 300.0,
                 settings: dict[str, str] | None = None, *, system: str = "petrel",
                 options: RunOptions | None = None, ingress: int = 1) -> Result:
    """One fresh instance of ``system`` (``petrel`` or ``postfix``), one run of ``sc``."""
    opts = options or RunOptions()
    if system not in sc.systems():
        raise ValueError(f"{sc.spec} does not apply to {system}")
    deadline = time.monotonic() + timeout
    sink_group = CpuGroup("sink")
    sink = Sink(workdir, cpu_group=sink_group)
    group = CpuGroup(system)
    petrel: Petrel | None = None
    relay: PostfixRelay | None = None
    result = Result(sc.label, sc.count, None, None, None, {}, {}, 0.0, system=system,
                    spec=sc.spec, kind=sc.kind, cpu_method=group.kind, settings=settings or {},
                    at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        if system == "petrel":
            petrel = Petrel(workdir, sink.port, egress, settings, cpu_group=group,
                            ingress=ingress)
            port = {"smtp": petrel.smtp_port, "grpc": petrel.grpc_port,
                    "rest": petrel.http_port}[sc.kind]
        else:
            relay = PostfixRelay(workdir / "postfix", free_port(), sink.port, opts.postfix)
            relay.setup()
            relay.start(wrap=group.wrap)
            assert relay.proc is not None
            group.adopt(relay.proc.pid)
            if not wait_port(relay.ingress_port, 30):
                raise RuntimeError(f"postfix did not start; see {relay.directory / 'log'}")
            port = relay.ingress_port
        sent = 0
        if opts.warmup:  # not reported: worker processes, connections, first-use paths
            warm = Scenario(sc.size, min(10, sc.sessions), 1, min(opts.warmup, sc.count),
                            sc.reuse, sc.kind)
            cmd = load_command(warm, port, warm.count, 60, opts.grpc_window)
            drive(cmd, sink, warm.deliveries(warm.count), min(deadline, time.monotonic() + 60),
                  workdir)
            sent += warm.deliveries(warm.count)
            if relay is not None:
                relay.wait_empty(10)
        result.bg_busy_cores = round(wait_quiet(opts.quiet_wait, opts.quiet_threshold), 2)
        cmd = load_command(sc, port, sc.count, deadline - time.monotonic(), opts.grpc_window)
        result.load_cmd = " ".join(shlex.quote(c) for c in cmd)
        expect = sc.deliveries(sc.count)
        marks: dict[str, Any] = {}

        def mark() -> None:
            marks.update(cpu=group.seconds(), sink=sink_group.seconds(),
                         host=host_cpu_seconds(), self=_self_cpu(),
                         by_service=cpu_by_service(petrel.pids()) if petrel else {})

        with PeakRss(group.pids) as rss:
            run = drive(cmd, sink, expect, deadline, workdir, on_start=mark)
            if marks:
                cpu = group.seconds() - marks["cpu"]
                sink_cpu = sink_group.seconds() - marks["sink"]
                host = host_cpu_seconds() - marks["host"]
                own = _self_cpu() - marks["self"]
                per_k = 1000.0 / sc.count
                result.cpu_s_per_1k = round(cpu * per_k, 3)
                result.sink_cpu_s_per_1k = round(sink_cpu * per_k, 3)
                result.gen_cpu_s_per_1k = round(run.gen_cpu * per_k, 3)
                result.host_cpu_s_per_1k = round(host * per_k, 3)
                result.other_cpu_s_per_1k = round(
                    (host - cpu - sink_cpu - run.gen_cpu - own) * per_k, 3)
                if petrel is not None:
                    after = cpu_by_service(petrel.pids())
                    result.cpu_s_per_1k_by_service = {
                        service_label(name): round((value - marks["by_service"].get(name, 0.0))
                                                   * per_k, 3)
                        for name, value in sorted(after.items())}
            result.status, result.note = run.status, run.note
            result.delivered = run.got
            if run.accepted_s:
                result.accepted_per_s = round(sc.count / run.accepted_s, 1)
            if run.delivered_s:
                result.delivered_per_s = round(sc.count / run.delivered_s, 1)
                result.seconds = round(run.delivered_s, 2)
            sent += expect
            if opts.latency and result.accepted_per_s and time.monotonic() < deadline - 5:
                rate = opts.latency_rate or max(1.0, sustained_rate(result) * opts.latency_fraction)
                left = deadline - time.monotonic()
                outcome = run_probe(probe_command(sc, port, rate, opts, left - 2), left)
                result.latency_rate = round(rate, 1)
                result.latency_p50_ms = outcome.get("p50_ms")
                result.latency_p99_ms = outcome.get("p99_ms")
                result.latency_max_ms = outcome.get("max_ms")
                result.latency_ok = int(outcome.get("ok", 0))
                result.latency_errors = int(outcome.get("errors", 0))
                sent += sc.deliveries(result.latency_ok)
                if outcome.get("error") or result.latency_errors:
                    result.note = (result.note + " probe: " + str(
                        outcome.get("error") or outcome.get("last_error")))[:300].strip()
            result.sink_expected = sent
            result.sink_total = wait_sink(sink, sent,
                                          min(30.0, max(1.0, deadline - time.monotonic())))
        result.peak_rss_mb = {k: round(v, 1) for k, v in
                              sorted(rss.by_service.items(), key=lambda kv: -kv[1])}
        result.peak_rss_total_mb = round(rss.total, 1)
        if result.sink_total != result.sink_expected:
            result.note = (result.note + f" sink counted {result.sink_total}, expected "
                           f"{result.sink_expected}").strip()
        if relay is not None and (left_in_queue := relay.queue_length()):
            result.note = (result.note + f" {left_in_queue} left in Postfix's queue").strip()
        if result.delivered < expect:
            print(f"# WARNING: {system} {sc.spec}: only {result.delivered}/{expect} delivered",
                  file=sys.stderr)
        return result
    finally:
        if petrel is not None:
            petrel.stop()
        if relay is not None:
            relay.stop()
        group.close()
        sink.stop()


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Cell:
    """Median and spread of one figure over repeated runs (runs without it are left out)."""
    median: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0


def summarize(values: Iterable[float | None]) -> Cell:
    present = [float(v) for v in values if v is not None]
    if not present:
        return Cell(None)
    return Cell(statistics.median(present), min(present), max(present), len(present))


def fmt_number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fmt_cell(cell: Cell, digits: int = 0) -> str:
    """``median`` alone, or ``median (low-high)`` when repeated runs differ."""
    text = fmt_number(cell.median, digits)
    if cell.n > 1 and cell.low is not None and cell.high is not None:
        low, high = fmt_number(cell.low, digits), fmt_number(cell.high, digits)
        if low != high:
            text += f" ({low}-{high})"
    return text


def ratio(a: Cell, b: Cell) -> float | None:
    if a.median is None or not b.median:
        return None
    return a.median / b.median


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"**{value:.2f}x**"


def fmt_rss(run: Result, top: int = 6) -> str:
    if not run.peak_rss_mb:
        return "-"
    items = sorted(run.peak_rss_mb.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} {mb:.0f}" for name, mb in items[:top])
    rest = sum(mb for _, mb in items[top:])
    if rest:
        shown += f", others {rest:.0f}"
    total = run.peak_rss_total_mb
    return (f"{total:.0f}: " if total is not None else "") + shown


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median delivered rate (its RSS and notes represent the cell)."""
    ordered = sorted(runs, key=lambda r: r.delivered_per_s or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def grouped(results: Sequence[Result]) -> list[tuple[str, str, dict[str, list[Result]]]]:
    """(spec, label, {system: runs}) in first-seen order of scenarios and systems."""
    out: dict[str, tuple[str, dict[str, list[Result]]]] = {}
    for r in results:
        spec = r.spec or r.scenario
        _label, by_system = out.setdefault(spec, (r.scenario, {}))
        by_system.setdefault(r.system, []).append(r)
    return [(spec, label, by_system) for spec, (label, by_system) in out.items()]


TABLE_HEAD = ("scenario", "system", "msgs", "accepted/s", "delivered/s", "cpu-s/1k",
              "accept p50 ms", "accept p99 ms", "probe rate/s", "peak RSS MB", "other cpu-s/1k")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_table(results: Sequence[Result]) -> str:
    """The Markdown table: one row per scenario and system, then Petrel/Postfix ratios."""
    lines = [_row(TABLE_HEAD), "|" + "---|" * len(TABLE_HEAD)]
    for _spec, label, by_system in grouped(results):
        first = True
        cells: dict[str, dict[str, Cell]] = {}
        for system, runs in by_system.items():
            c = {name: summarize(getattr(r, name) for r in runs)
                 for name in ("accepted_per_s", "delivered_per_s", "cpu_s_per_1k",
                              "latency_p50_ms", "latency_p99_ms", "latency_rate",
                              "other_cpu_s_per_1k")}
            cells[system] = c
            bad = [r for r in runs if r.status != "ok"]
            status = f" ({len(bad)}/{len(runs)} failed: {bad[0].status})" if bad else ""
            lines.append(_row((
                label if first else "", system + status, str(runs[0].messages),
                fmt_cell(c["accepted_per_s"]), fmt_cell(c["delivered_per_s"]),
                fmt_cell(c["cpu_s_per_1k"], 2), fmt_cell(c["latency_p50_ms"], 1),
                fmt_cell(c["latency_p99_ms"], 1), fmt_number(c["latency_rate"].median, 0),
                fmt_rss(median_run(runs)), fmt_cell(c["other_cpu_s_per_1k"], 2))))
            first = False
        if "petrel" in cells and "postfix" in cells:
            p, q = cells["petrel"], cells["postfix"]
            lines.append(_row((
                "", "petrel/postfix", "",
                fmt_ratio(ratio(p["accepted_per_s"], q["accepted_per_s"])),
                fmt_ratio(ratio(p["delivered_per_s"], q["delivered_per_s"])),
                fmt_ratio(ratio(p["cpu_s_per_1k"], q["cpu_s_per_1k"])), "", "", "", "", "")))
    return "\n".join(lines)


def format_service_cpu(results: Sequence[Result]) -> str:
    """Petrel's CPU seconds per 1,000 messages by service (medians), one row per scenario."""
    rows = []
    services: list[str] = []
    for _spec, label, by_system in grouped(results):
        runs = by_system.get("petrel")
        if not runs:
            continue
        names = sorted({n for r in runs for n in r.cpu_s_per_1k_by_service})
        services += [n for n in names if n not in services]
        rows.append((label, {n: summarize(r.cpu_s_per_1k_by_service.get(n) for r in runs)
                             for n in names}))
    if not rows:
        return ""
    order = [s for s in ("ingress", "spool", "scheduler", "egress", "bounce", "gateway",
                         "supervisor") if s in services] + sorted(
        s for s in services if s not in ("ingress", "spool", "scheduler", "egress", "bounce",
                                         "gateway", "supervisor"))
    lines = [_row(("scenario", *order)), "|" + "---|" * (len(order) + 1)]
    for label, by_name in rows:
        lines.append(_row((label, *(fmt_number(by_name[n].median, 2) if n in by_name else "-"
                                    for n in order))))
    return "\n".join(lines)


def format_targets(results: Sequence[Result]) -> list[str]:
    """The performance issue's targets, judged on the 2 KB x 20 sessions rows and the probe."""
    out = []
    for spec, _label, by_system in grouped(results):
        if spec.split(":")[:3] != ["2k", "20", "1"] or spec.endswith("reuse"):
            continue
        if "petrel" in by_system and "postfix" in by_system:
            p = summarize(r.delivered_per_s for r in by_system["petrel"])
            q = summarize(r.delivered_per_s for r in by_system["postfix"])
            pc = summarize(r.cpu_s_per_1k for r in by_system["petrel"])
            qc = summarize(r.cpu_s_per_1k for r in by_system["postfix"])
            delivered = ratio(p, q)
            if delivered is not None:
                verdict = ("met, goal too" if delivered >= 1.5 else
                           "met (goal 1.5x not yet)" if delivered >= 1.0 else "NOT met")
                out.append(f"- 2 KB x 20 delivered/s Petrel/Postfix = {delivered:.2f} "
                           f"(must >= 1.0, goal >= 1.5): {verdict}")
            if pc.median is not None and qc.median is not None:
                out.append(f"- CPU-s per 1,000 messages: Petrel {pc.median:.2f} vs Postfix "
                           f"{qc.median:.2f} (target <= Postfix's): "
                           f"{'met' if pc.median <= qc.median else 'NOT met'}")
        break
    worst = []
    for _spec, label, by_system in grouped(results):
        runs = by_system.get("petrel", [])
        p99 = summarize(r.latency_p99_ms for r in runs).median
        if p99 is None:
            continue
        worst.append((p99, label))
        if p99 > 50.0:
            rate = summarize(r.latency_rate for r in runs).median or 0.0
            out.append(f"- accept p99 {p99:.1f} ms > 50 ms: Petrel, {label}, at {rate:.0f}/s")
    if worst and max(worst)[0] <= 50.0:
        out.append(f"- accept p99 <= 50 ms at half the maximum rate: met in every Petrel row "
                   f"(worst {max(worst)[0]:.1f} ms, {max(worst)[1]})")
    return out


def sustained_rate(result: Result) -> float:
    """The rate a system keeps up with: accepted/s, unless it delivered slower (a burst
    that filled the queue faster than the queue drains is not a rate it can hold)."""
    accepted = result.accepted_per_s or 0.0
    return min(accepted, result.delivered_per_s or accepted)


def format_report(results: Sequence[Result]) -> str:
    parts = [format_table(results), "",
             "Cells of repeated runs: median (min-max). petrel/postfix: ratio of the medians "
             "(delivered/s above 1 = Petrel faster; cpu-s/1k below 1 = Petrel cheaper). "
             "RSS sums count pages shared between processes once per process."]
    cpu = format_service_cpu(results)
    if cpu:
        parts += ["", "Petrel CPU-s per 1,000 messages by service (median):", "", cpu]
    targets = format_targets(results)
    if targets:
        parts += ["", "Targets (performance issue):", *targets]
    notes = [f"- {r.system} {r.spec} run {r.repeat}: {r.status}; {r.note}".rstrip("; ")
             for r in results if r.note or r.status != "ok"]
    if notes:
        parts += ["", "Notes:", *notes]
    return "\n".join(parts)


def load_results(paths: Iterable[str]) -> list[Result]:
    """Results from JSON lines written by ``--json`` (unknown keys are ignored)."""
    names = {f.name for f in fields(Result)}
    out = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                data = json.loads(line)
                out.append(Result(**{k: v for k, v in data.items() if k in names}))
    return out


# --------------------------------------------------------------------------- main


def plan_runs(scenarios: Sequence[Scenario], systems: Sequence[str],
              repeat: int) -> list[tuple[Scenario, str, int]]:
    """(scenario, system, repetition) in run order: per scenario, systems interleaved, their
    order alternating between repetitions so neither always runs first."""
    plan = []
    for sc in scenarios:
        wanted = [s for s in sc.systems() if s in systems]
        for rep in range(repeat):
            order = wanted if rep % 2 == 0 else list(reversed(wanted))
            plan += [(sc, system, rep + 1) for system in order]
    return plan


def environment(args: argparse.Namespace) -> list[str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True).stdout.strip() if shutil.which("postconf") else "n/a"
    tmp = tempfile.gettempdir()
    fs = subprocess.run(["df", "--output=fstype,source", tmp], capture_output=True,
                        text=True).stdout.split()[-2:]
    return [
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  commit {git_commit()}  "
        f"{os.cpu_count()} cores ({cpu})  load average {os.getloadavg()[0]:.2f}",
        f"# postfix {postfix}  python {sys.version.split()[0]}  egress {args.egress}  "
        f"ingress {args.ingress}  "
        f"settings {' '.join(args.set) or '-'}  repeat {args.repeat}"
        f"{'  quick' if args.quick else ''}",
        f"# work dirs in {tmp} ({' on '.join(fs)}): create+write 2 KB+fsync+close "
        f"{fsync_probe(tmp)}",
    ]


def fsync_probe(directory: str, count: int = 200, size: int = 2048) -> str:
    """Latency of create + write + fsync + close of ``size`` bytes in ``directory``: what a
    durable queue pays per message on this disk."""
    data = os.urandom(size)
    latencies = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for i in range(count):
            started = time.perf_counter()
            fd = os.open(os.path.join(tmp, str(i)), os.O_CREAT | os.O_WRONLY, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            latencies.append((time.perf_counter() - started) * 1000.0)
    latencies.sort()
    return (f"p50 {latencies[len(latencies) // 2]:.2f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms")


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("PETREL_"):
            raise ValueError(f"--set {item!r}: expected PETREL_X=VALUE")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append",
                        help="[KIND:]SIZE:SESSIONS:RCPTS:COUNT[:reuse] (repeatable); default: "
                        + " ".join(DEFAULT_SCENARIOS))
    parser.add_argument("--quick", action="store_true",
                        help=f"default scenarios with 1/{QUICK_DIVISOR} of the messages, "
                        "shorter warm-up and probe")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario and system")
    parser.add_argument("--only", choices=SYSTEMS, help="measure one system only")
    parser.add_argument("--egress", type=int, default=1, help="Petrel egress processes")
    parser.add_argument("--ingress", type=int, default=1,
                        help="Petrel ingress processes (sharing the ports)")
    parser.add_argument("--set", action="append", default=[], metavar="PETREL_X=VALUE",
                        help="extra PETREL_* setting for every Petrel service (A/B runs)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    parser.add_argument("--budget", type=float, help="whole command, seconds "
                        "(default 3000, --quick 900)")
    parser.add_argument("--warmup", type=int, help="warm-up messages per run (default 300, "
                        "--quick 100; 0 = none)")
    parser.add_argument("--latency-rate", type=float,
                        help="probe rate in messages/s (default: half the sustained rate "
                        "measured, the lower of accepted/s and delivered/s)")
    parser.add_argument("--latency-seconds", type=float,
                        help="probe duration (default 10, --quick 3)")
    parser.add_argument("--latency-max", type=int, help="probe messages at most "
                        "(default 2000, --quick 500)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency probe")
    parser.add_argument("--grpc-window", type=int, default=32,
                        help="messages in flight per gRPC inject stream")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="before each measured load wait up to this long for < 0.3 busy "
                        "cores (default 10, --quick 3)")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--report", nargs="+", metavar="JSONL",
                        help="print the table from saved runs and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(format_report(load_results(args.report)))
        return 0
    try:
        settings = parse_settings(args.set)
        specs = args.scenario or DEFAULT_SCENARIOS
        scenarios = [Scenario.parse(s) for s in specs]
    except ValueError as exc:
        parser.error(str(exc))
    if args.quick and not args.scenario:
        scenarios = [sc.scaled(QUICK_DIVISOR) for sc in scenarios]
    quick = args.quick
    opts = RunOptions(
        warmup=args.warmup if args.warmup is not None else (100 if quick else 300),
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (3.0 if quick else 10.0),
        latency=not args.no_latency, latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds or (3.0 if quick else 10.0),
        latency_max=args.latency_max or (500 if quick else 2000), grpc_window=args.grpc_window)
    systems = [args.only] if args.only else list(SYSTEMS)
    missing = [tool for tool in ("smtp-source", "smtp-sink") if not shutil.which(tool)]
    if missing:
        parser.error(f"{', '.join(missing)} not found: apt-get install postfix (make system-deps)")
    if "postfix" in systems and (os.geteuid() != 0 or not shutil.which("postfix")):
        print("# postfix rows skipped: they need root and the postfix package", file=sys.stderr)
        systems.remove("postfix")
    budget_end = time.monotonic() + (args.budget or (900.0 if quick else 3000.0))
    head = environment(args)
    print("\n".join(head), flush=True)
    results: list[Result] = []
    skipped = []
    commit = git_commit()
    for sc, system, rep in plan_runs(scenarios, systems, args.repeat):
        left = budget_end - time.monotonic()
        if left < 30:
            skipped.append(f"{system} {sc.spec} run {rep}")
            continue
        with tempfile.TemporaryDirectory(prefix=f"petrel-bench-{system}-") as tmp:
            workdir = Path(tmp)
            workdir.chmod(0o755)
            try:
                result = run_scenario(sc, workdir, args.egress, min(args.timeout, left),
                                      settings, system=system, options=opts,
                                      ingress=args.ingress)
            except Exception as exc:  # one failed run is reported, the others still run
                result = Result(sc.label, sc.count, None, None, None, {}, {}, 0.0,
                                system=system, spec=sc.spec, kind=sc.kind,
                                status=f"ERROR {type(exc).__name__}", note=str(exc)[:300])
        result.repeat, result.commit = rep, commit
        results.append(result)
        print(f"# {system:7} {sc.spec:22} run {rep}: accepted/s "
              f"{fmt_number(result.accepted_per_s, 0)}, delivered/s "
              f"{fmt_number(result.delivered_per_s, 0)}, cpu-s/1k "
              f"{fmt_number(result.cpu_s_per_1k, 2)}, p50/p99 ms "
              f"{fmt_number(result.latency_p50_ms, 1)}/{fmt_number(result.latency_p99_ms, 1)}"
              f" @ {fmt_number(result.latency_rate, 0)}/s, {result.status}"
              f"{'; ' + result.note if result.note else ''}", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(asdict(result)) + "\n")
    print()
    print(format_report(results))
    if skipped:
        print(f"\nSkipped (budget): {', '.join(skipped)}")
    return 0 if results and all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
