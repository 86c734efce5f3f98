"""The compose topology as local processes (``petrel topology``): the services of
compose/compose.yaml with their compose commands and environment, egress scaled to 3 replicas,
each found through the compose health checks; 1,000 messages reach a real SMTP sink and every
replica delivers a share of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from petrel.events import read_events
from petrel.v1 import ingress_pb2
from tests.support.messages import grpc_inject_stream, make_message
from tests.support.net import wait_for
from tests.support.pipeline import REPO
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

COMPOSE = REPO / "compose" / "compose.yaml"
SENDER = "sender@petrel.test"
# Retries fast enough for a test (the compose file keeps the production defaults).
FAST_RETRY = {
    "PETREL_SCHEDULER__RETRY_INTERVAL": "0.5s",
    "PETREL_SCHEDULER__MAX_RETRY_INTERVAL": "2s",
    "PETREL_SCHEDULER__RETRY_JITTER": "0",
}


class RunningTopology:
    """``python -m petrel topology`` as a child process, its output in ``<workdir>/topology.log``.

    ``start`` returns once the runner announced the plan and every replica passed its compose
    health check; ``plan`` is the announcement (replicas, their local ports, directories)."""

    def __init__(self, workdir: Path, scale: dict[str, int], env: dict[str, str],
                 prometheus_config: Path | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "topology.log"
        args = [sys.executable, "-m", "petrel", "topology", "--compose", str(COMPOSE),
                "--data-dir", str(self.data_dir), "--no-publish"]
        for name, count in scale.items():
            args += ["--scale", f"{name}={count}"]
        for key, value in {**FAST_RETRY, **env}.items():
            args += ["--env", f"{key}={value}"]
        if prometheus_config is not None:
            args += ["--prometheus-config", str(prometheus_config)]
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.plan: dict[str, Any] = {}

    def start(self, timeout: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PETREL_", "OTEL_"))}
        env["PYTHONPATH"] = str(REPO)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=REPO, env=env, start_new_session=True)
        wait_for(self._announcement, timeout=timeout, interval=0.1,
                 message="the topology announcement")
        self.plan = json.loads((self.data_dir / "topology.json").read_text())
        wait_for(lambda: self.healthy() == set(self.plan["replicas"]), timeout=timeout,
                 interval=0.1, message="every replica healthy")

    def _lines(self) -> list[dict[str, Any]]:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"petrel topology exited with {self.process.returncode}:\n"
                               + self.tail())
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def _announcement(self) -> dict[str, Any] | None:
        return next((d for d in self._lines() if d.get("petrel") == "topology"), None)

    def healthy(self) -> set[str]:
        status: dict[str, str] = {}
        for line in self._lines():
            if "health" in line and "status" in line:
                status[line["health"]] = line["status"]
        return {name for name, value in status.items() if value == "healthy"}

    def replicas(self, service: str) -> list[str]:
        return sorted(n for n, r in self.plan["replicas"].items() if r["service"] == service)

    def address(self, replica: str, container_port: int) -> str:
        return f"127.0.0.1:{self.plan['replicas'][replica]['ports'][str(container_port)]}"

    def metrics(self, replica: str, container_port: int = 9464) -> dict[tuple[str, tuple], float]:
        """``(sample name, sorted labels) -> value`` scraped from a replica's /metrics."""
        url = f"http://{self.address(replica, container_port)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def events(self) -> list[dict[str, Any]]:
        directory = self.data_dir / "volumes" / "events"
        return read_events(directory) if directory.exists() else []

    def pids(self) -> list[int]:
        run = self.data_dir / "run"
        return [int(p.read_text()) for p in run.glob("*.pid")] if run.exists() else []

    def stop(self, timeout: float = 40.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> RunningTopology:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self.process is None:
            return
        if exc_type is not None:
            print(self.tail(200))
        self.stop()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _delivered(samples: dict[tuple[str, tuple], float]) -> float:
    return samples.get(("petrel_egress_recipients_total", (("outcome", "delivered"),)), 0.0)


def test_three_egress_replicas_share_a_thousand_messages(tmp_path: Path, sink: SmtpSink) -> None:
    with RunningTopology(tmp_path, {"egress": 3},
                         {"PETREL_ROUTING__SMARTHOST": sink.address}) as topology:
        topology.start()
        _deliver_a_thousand(topology, sink)


def _deliver_a_thousand(topology: RunningTopology, sink: SmtpSink) -> None:
    plan = topology.plan
    assert set(plan["replicas"]) == {"spool", "bounce", "scheduler", "egress-1", "egress-2",
                                     "egress-3", "ingress", "gateway"}
    assert set(plan["skipped"]) == {"otel-collector", "jaeger", "prometheus", "grafana"}
    # The collector does not run here, so its endpoint is dropped: no exporter.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in plan["replicas"]["spool"]["dropped_env"]
    egress = topology.replicas("egress")
    assert len({plan["replicas"][r]["ports"]["9464"] for r in egress}) == 3
    scheduler_port = plan["replicas"]["scheduler"]["ports"]["7702"]
    assert all(plan["replicas"][r]["env"]["PETREL_SCHEDULER__ADDRESS"]
               == f"127.0.0.1:{scheduler_port}" for r in egress)
    wait_for(lambda: topology.metrics("scheduler").get(
        ("petrel_scheduler_egress_workers", ())) == 3, timeout=30,
        message="three egress workers connected to the scheduler")

    recipients = [f"r{i}@dest{i % 7}.test" for i in range(1000)]
    inject = topology.address("ingress", 7703)
    for start in range(0, len(recipients), 250):
        batch = recipients[start:start + 250]
        replies = grpc_inject_stream(inject, [
            ingress_pb2.InjectMessageRequest(sender=SENDER, recipients=[rcpt],
                                             content=make_message(SENDER, [rcpt]))
            for rcpt in batch])
        assert [r.status.code for r in replies] == [0] * len(batch)

    wait_for(lambda: sink.count() >= len(recipients), timeout=180, interval=0.2,
             message="1,000 messages at the sink")
    received = sorted(r for m in sink.messages for r in m.recipients)
    assert received == sorted(recipients)

    def per_replica() -> dict[str, float] | None:
        counts = {name: _delivered(topology.metrics(name)) for name in egress}
        return counts if sum(counts.values()) == len(recipients) else None

    shares = wait_for(per_replica, timeout=20, message="every delivery counted by a replica")
    assert all(count > 0 for count in shares.values()), shares
    wait_for(lambda: len([e for e in topology.events() if e["type"] == "Delivery"])
             == len(recipients), timeout=20, message="a Delivery event per recipient")

    pids = topology.pids()
    assert len(pids) == 8
    started = time.monotonic()
    assert topology.stop() == 0, topology.tail()
    assert time.monotonic() - started < 30
    assert not [pid for pid in pids if _alive(pid)]


def test_an_unhealthy_dependency_stops_the_topology(tmp_path: Path) -> None:
    """Like ``docker compose up``: a dependency that never turns healthy fails the start, and
    what depends on it is never started."""
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  bounce:\n"
        "    command: [petrel, bounce]\n"
        "    environment: {PETREL_BOUNCE__LISTEN: '0.0.0.0:7704'}\n"
        "    healthcheck: {test: [CMD-SHELL, 'exit 1'], interval: 1s, retries: 2}\n"
        "  gateway:\n"
        "    command: [petrel, gateway]\n"
        "    environment: {PETREL_GATEWAY__HTTP_LISTEN: '0.0.0.0:8025'}\n"
        "    depends_on: {bounce: {condition: service_healthy}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PETREL_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-m", "petrel", "topology", "--compose", str(compose),
         "--data-dir", str(tmp_path / "data"), "--no-publish"],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {"health": "bounce", "status": "unhealthy", "detail": ""} in lines
    assert any(line.get("error", "").startswith("bounce did not become healthy")
               for line in lines)
    assert not any(line.get("petrel") == "topology" for line in lines)
    assert not (tmp_path / "data" / "run" / "gateway.pid").exists()
