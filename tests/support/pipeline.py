"""The whole pipeline as real processes on loopback, for end-to-end tests and benchmarks.

``Pipeline(workdir, ...)`` gives every service its own free ports, one data directory and a
``PETREL_*`` environment (the same variables docker compose sets), then starts, stops, kills
and restarts services one by one as ``python -m <service>``. A service counts as started when
it printed its ``{"ready": ...}`` line. Logs go to ``<workdir>/logs/<name>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petrel.events import read_events
from tests.support.net import free_port

SERVICES = ("spool", "bounce", "scheduler", "egress", "ingress", "gateway")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    name: str
    service: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int
    env: dict[str, str]


@dataclass
class Pipeline:
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        for key in ("spool", "scheduler", "ingress_grpc", "smtp", "bounce", "http"):
            self.ports.setdefault(key, free_port())

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def inject_address(self) -> str:
        return f"127.0.0.1:{self.ports['ingress_grpc']}"

    @property
    def spool_address(self) -> str:
        return f"127.0.0.1:{self.ports['spool']}"

    @property
    def scheduler_address(self) -> str:
        return f"127.0.0.1:{self.ports['scheduler']}"

    def env(self) -> dict[str, str]:
        p = self.ports
        env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
        env.update({
            "PETREL_DATA_DIR": str(self.data_dir),
            "PETREL_LOG_LEVEL": "INFO",
            "PETREL_SPOOL__LISTEN": f"127.0.0.1:{p['spool']}",
            "PETREL_SPOOL__ADDRESS": f"127.0.0.1:{p['spool']}",
            "PETREL_SCHEDULER__LISTEN": f"127.0.0.1:{p['scheduler']}",
            "PETREL_SCHEDULER__ADDRESS": f"127.0.0.1:{p['scheduler']}",
            "PETREL_INGRESS__GRPC_LISTEN": f"127.0.0.1:{p['ingress_grpc']}",
            "PETREL_INGRESS__ADDRESS": f"127.0.0.1:{p['ingress_grpc']}",
            "PETREL_INGRESS__SMTP_LISTEN": f"127.0.0.1:{p['smtp']}",
            "PETREL_BOUNCE__LISTEN": f"127.0.0.1:{p['bounce']}",
            "PETREL_BOUNCE__ADDRESS": f"127.0.0.1:{p['bounce']}",
            "PETREL_GATEWAY__HTTP_LISTEN": f"127.0.0.1:{p['http']}",
            "PYTHONPATH": str(REPO),
        })
        env.update(self.env_overrides)
        return env

    def start(self, service: str, name: str | None = None, timeout: float = 30.0,
              extra_env: dict[str, str] | None = None) -> Proc:
        name = name or service
        existing = self.procs.get(name)
        if existing is not None and existing.process.poll() is None:
            raise RuntimeError(f"{name} is already running")
        env = self.env()
        if extra_env:
            env.update(extra_env)
        if service == "egress":
            env.setdefault("PETREL_EGRESS__WORKER_ID", name)
        log_path = self.workdir / "logs" / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen([sys.executable, "-m", service], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        log.close()
        proc = Proc(name, service, process, log_path, offset, env)
        self.procs[name] = proc
        self._wait_ready(proc, timeout)
        return proc

    def _wait_ready(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n"
                                   + self.log_tail(proc.name))
            with open(proc.log_path, "rb") as fh:
                fh.seek(proc.log_offset)
                for line in fh:
                    if line.startswith(b'{"ready"'):
                        return
            time.sleep(0.05)
        raise TimeoutError(f"{proc.name} not ready after {timeout}s:\n" + self.log_tail(proc.name))

    def start_all(self, egress_replicas: int = 1, skip: tuple[str, ...] = ()) -> None:
        for service in SERVICES:
            if service in skip:
                continue
            if service == "egress":
                for i in range(egress_replicas):
                    self.start("egress", "egress" if egress_replicas == 1 else f"egress-{i + 1}")
            else:
                self.start(service)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.process.poll() is None:
            os.killpg(proc.process.pid, sig)
        proc.process.wait(20)

    def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.process.poll() is not None:
            return
        proc.process.send_signal(signal.SIGTERM)
        try:
            proc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)

    def restart(self, name: str, sig: int | None = None) -> Proc:
        proc = self.procs[name]
        if sig is None:
            self.stop(name)
        else:
            self.kill(name, sig)
        return self.start(proc.service, name)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.process.poll() is None

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_dir) if self.events_dir.exists() else []

    def events_of(self, record_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["type"] == record_type]

    def dump_logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{self.log_tail(name, 60)}" for name in self.procs)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def summarize(events: list[dict[str, Any]]) -> dict[str, int]:
    """Count of records per type (the shape end-to-end assertions compare)."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event["type"]] = counts.get(event["type"], 0) + 1
    return counts


def final_dispositions(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(message id, recipient) -> the final record types seen for it (more than one = dup)."""
    finals: dict[tuple[str, str], list[str]] = {}
    for event in events:
        if event["type"] in ("Delivery", "Bounce", "Expiration", "AdminBounce"):
            finals.setdefault((event["id"], event["recipient"]), []).append(event["type"])
    return finals


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
