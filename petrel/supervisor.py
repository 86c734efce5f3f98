"""``petrel up``: every service as a child process, restarted when it dies, stopped together.

Children are ``python -m <service>`` with the supervisor's environment (which carries the
configuration as ``PETREL_*`` variables). Start order follows the dependencies (spool first,
gateway last); stop order is the reverse, so producers stop before the stores they write to.
A child that exits unexpectedly is restarted with a growing delay (0.5 s doubling to 10 s,
reset after it stayed up for 30 s).

Metrics: given ``metrics_port`` (``petrel up`` passes 9101), each service whose
``metrics_listen`` is not configured serves ``/metrics`` on 127.0.0.1 at that port plus its
offset in ``METRICS_OFFSETS`` (egress replica *n* at offset 3 + *n*; ingress replicas after
the first follow the last egress one); the gateway serves ``/metrics`` on its HTTP port.

Replicas: ``egress_replicas`` egress workers (each its own ``worker_id``) and
``ingress_replicas`` ingress processes, which then share the SMTP and inject ports
(``ingress.reuse_port``): one process's event loop is a single core, several spread the
sessions over every core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from petrel.config import Config

START_ORDER = ("spool", "bounce", "scheduler", "egress", "ingress", "gateway")
METRICS_OFFSETS = {"spool": 0, "bounce": 1, "scheduler": 2, "ingress": 3, "egress": 4}
STOP_GRACE = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_delay: float = 0.5
    restarts: int = 0
    ready: dict[str, object] = field(default_factory=dict)


class Supervisor:
    """Runs ``children`` (default: every service of ``petrel up``) until SIGTERM/SIGINT.

    Hooks for other layouts (``petrel topology``): pass ``children``, override ``_after_start``
    (called once per child during the initial start, in order) and ``announcement``.
    """

    def __init__(self, config: Config, env: dict[str, str], egress_replicas: int = 1,
                 children: list[Child] | None = None, metrics_port: int = 0,
                 ingress_replicas: int = 1) -> None:
        self.config = config
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        if children is not None:
            self.children = children
            return
        self.children = []
        counts = {"egress": egress_replicas, "ingress": ingress_replicas}
        for name in START_ORDER:
            replicas = counts.get(name, 1)
            for index in range(replicas):
                child_env = dict(env)
                label = name if replicas == 1 else f"{name}-{index + 1}"
                if name == "egress":
                    child_env.setdefault("PETREL_EGRESS__WORKER_ID", label)
                if name == "ingress" and replicas > 1:
                    child_env["PETREL_INGRESS__REUSE_PORT"] = "true"
                variable = f"PETREL_{name.upper()}__METRICS_LISTEN"
                if (metrics_port and name in METRICS_OFFSETS
                        and not getattr(config, name).metrics_listen):
                    offset = METRICS_OFFSETS[name] + index
                    if name == "ingress" and index:
                        offset = METRICS_OFFSETS["egress"] + egress_replicas + index - 1
                    child_env[variable] = f"127.0.0.1:{metrics_port + offset}"
                self.children.append(Child(label, [sys.executable, "-m", name], child_env))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        run_dir = Path(self.config.data_dir) / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            if self._stopping.is_set():
                break
            self._start(child)
            self._after_start(child)
        if not self._stopping.is_set():
            self._announce()
        while not self._stopping.wait(0.2):
            for child in self.children:
                self._check(child)
        self._stop_all()
        return 0

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.argv, env=child.env, stdout=subprocess.PIPE,
                                         start_new_session=True)
        child.started_at = time.monotonic()
        pid_file = Path(self.config.data_dir) / "run" / f"{child.name}.pid"
        pid_file.write_text(f"{child.process.pid}\n")
        threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict) and "ready" in data:
                child.ready = data
            with self._lock:
                print(f"[{child.name}] {line}", flush=True)

    def _check(self, child: Child) -> None:
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            if time.monotonic() - child.started_at > 30:
                child.restart_delay = 0.5
            return
        if self._stopping.wait(child.restart_delay):
            return
        print(f"# {child.name} exited with {code}; restarting", file=sys.stderr, flush=True)
        child.restart_delay = min(child.restart_delay * 2, 10.0)
        child.restarts += 1
        self._start(child)

    def _after_start(self, child: Child) -> None:
        """Called after ``child`` was first started, before the next one starts."""

    def stop(self) -> None:
        """Ask ``run`` to stop every child and return (thread-safe)."""
        self._stopping.set()

    def _announce(self) -> None:
        print(json.dumps(self.announcement()), flush=True)

    def announcement(self) -> dict[str, object]:
        """The JSON object printed once every child was started."""
        c = self.config
        return {
            "petrel": "up",
            "smtp": c.ingress.smtp_listen,
            "http": c.gateway.http_listen,
            "grpc_inject": c.ingress.address,
            "spool": c.spool.address,
            "scheduler": c.scheduler.address,
            "bounce": c.bounce.address,
            "data_dir": str(Path(c.data_dir).resolve()),
            "metrics": {child.name: child.env[variable] for child in self.children
                        if (variable := f"PETREL_{child.argv[-1].upper()}__METRICS_LISTEN")
                        in child.env},
        }

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
