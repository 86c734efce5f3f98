"""``petrel topology``: the compose topology as local processes, for machines without Docker.

``plan_topology`` turns the compose file into replicas to run here:

* the services whose ``command`` is ``petrel ...`` run, with the same command (through this
  interpreter: ``python -m petrel ...``); the other services (collector, Jaeger, Prometheus,
  Grafana) are images of other projects and are left out;
* ``--scale SERVICE=N`` runs N replicas, like ``docker compose up --scale``; a service with a
  ``container_name`` or a fixed published port cannot be scaled (docker refuses too);
* environment: this process's variables without ``PETREL_*``/``OTEL_*`` (a container does not
  inherit them), then the service's compose ``environment``, rewritten: ``<service>:<port>``
  of a local service becomes ``127.0.0.1:<local port>`` (replica 1 when scaled), a wildcard or
  loopback ``<host>:<port>`` becomes the replica's own local port, an absolute path becomes a
  path under the replica's root directory. Variables that name a service not run here are
  dropped (``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at the collector: no exporter), then the
  caller's ``overrides`` are applied as given;
* every container port (listen addresses in the environment, ``expose``, ``ports``, health
  check arguments, references from other services) gets a local port per replica: a free one,
  or the published host port with ``publish=True``;
* files: each replica has a root ``<data_dir>/containers/<replica>``; each mount is a symlink
  at its target inside that root, to ``<data_dir>/volumes/<name>`` for a named volume (shared
  by the replicas that mount it) or to the host path for a bind mount.

``TopologySupervisor`` runs the replicas with ``petrel.supervisor.Supervisor`` (restart on
exit, stop in reverse order). A service others depend on with ``condition: service_healthy``
must pass its compose health check before the next service starts; when it turns unhealthy
(``retries`` failures after ``start_period``), exits or takes too long, everything stops and
the command exits 1, as ``docker compose up`` fails. Health checks keep running afterwards and
each change is printed as ``{"health": replica, "status": ...}``.

``local_prometheus_config`` rewrites the shipped Prometheus config to scrape the replicas.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from petrel.compose import ComposeError, ComposeService, HealthCheck, load_compose
from petrel.config import Config
from petrel.healthcheck import probe
from petrel.ports import free_port
from petrel.supervisor import Child, Supervisor

WILDCARD_HOSTS = frozenset({"0.0.0.0", "127.0.0.1", "localhost", "[::]", "::", "[::1]"})
LOCAL_HOST = "127.0.0.1"
# Bounds on waiting for a dependency to become healthy, whatever the compose timings say.
MIN_HEALTHY_WAIT = 30.0
MAX_HEALTHY_WAIT = 120.0
# Health checks run this often until the first success (compose waits a whole interval).
STARTING_PROBE_INTERVAL = 0.5

_ADDRESS = re.compile(r"(?<![\w.\-\[])(?P<host>[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]*\]):(?P<port>\d+)"
                      r"(?!\d)")


@dataclass
class Replica:
    service: str
    name: str
    argv: list[str]
    env: dict[str, str]
    root: Path
    # container port -> local port
    ports: dict[int, int]
    healthcheck: HealthCheck | None
    # The compose environment as rewritten for here, plus the caller's overrides.
    compose_env: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def address(self, container_port: int) -> str:
        return f"{LOCAL_HOST}:{self.ports[container_port]}"


@dataclass
class Topology:
    compose_file: Path
    data_dir: Path
    services: dict[str, ComposeService]
    # Local services in start order, and their replicas.
    order: list[str]
    replicas: dict[str, list[Replica]]
    skipped: list[str]

    def all_replicas(self) -> list[Replica]:
        return [r for name in self.order for r in self.replicas[name]]

    def replica(self, name: str) -> Replica:
        return next(r for r in self.all_replicas() if r.name == name)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: what runs, on which local ports, what was left out."""
        return {
            "compose": str(self.compose_file),
            "data_dir": str(self.data_dir),
            "replicas": {r.name: {"service": r.service, "ports": {str(c): p for c, p in
                                                                  sorted(r.ports.items())},
                                  "root": str(r.root), "env": r.compose_env,
                                  "dropped_env": r.dropped}
                         for r in self.all_replicas()},
            "skipped": self.skipped,
        }


def is_petrel_service(service: ComposeService) -> bool:
    return bool(service.command) and service.command[0] == "petrel"


def start_order(services: Mapping[str, ComposeService]) -> list[str]:
    """Dependencies first; otherwise file order. Raises on a dependency cycle."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ComposeError(f"depends_on cycle through {name}")
        visiting.add(name)
        for dependency in services[name].depends_on:
            if dependency in services:
                visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def _addresses(value: str) -> list[tuple[str, int]]:
    return [(m.group("host"), int(m.group("port"))) for m in _ADDRESS.finditer(value)]


def _container_ports(service: ComposeService, all_services: Mapping[str, ComposeService],
                     extra_references: list[str]) -> list[int]:
    ports: list[int] = list(service.container_ports)
    own_values = list(service.environment.values())
    if service.healthcheck:
        own_values += list(service.healthcheck.test)
    for value in own_values:
        ports += [port for host, port in _addresses(value) if host in WILDCARD_HOSTS]
    others = [v for s in all_services.values() for v in s.environment.values()]
    for value in others + extra_references:
        ports += [port for host, port in _addresses(value) if host == service.name]
    return list(dict.fromkeys(ports))


def plan_topology(compose_file: str | Path, data_dir: str | Path, *,
                  scale: Mapping[str, int] | None = None,
                  overrides: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None,
                  publish: bool = False,
                  prometheus_service: str = "prometheus",
                  allocate: Callable[[], int] = lambda: free_port(LOCAL_HOST)) -> Topology:
    """Work out every replica's command, environment, ports and directories (nothing starts).

    The targets scraped by ``prometheus_service`` (when the compose file has it) count as
    references: each scraped port gets a local port.
    """
    environ = dict(os.environ if environ is None else environ)
    compose_file = Path(compose_file).resolve()
    data_dir = Path(data_dir).resolve()
    services = load_compose(compose_file, environ)
    scale = dict(scale or {})
    for name in scale:
        if name not in services:
            raise ComposeError(f"--scale {name}: no such service")
    local = {n: s for n, s in services.items() if is_petrel_service(s)}
    skipped = [n for n in services if n not in local]
    for name, count in scale.items():
        if count < 0:
            raise ComposeError(f"--scale {name}={count}: must not be negative")
        if name not in local:
            raise ComposeError(f"--scale {name}: not a Petrel service, not run locally")
        if count > 1 and local[name].container_name:
            raise ComposeError(f"{name} has container_name {local[name].container_name!r}: "
                               "it cannot be scaled")
        if count > 1 and local[name].published:
            raise ComposeError(f"{name} publishes fixed host ports: it cannot be scaled")
    order = start_order(local)
    references: list[str] = []
    if prometheus_service in services:
        references = prometheus_references(read_prometheus_config(services[prometheus_service]))
    base_env = {k: v for k, v in environ.items() if not k.startswith(("PETREL_", "OTEL_"))}
    used: set[int] = set()

    def take(preferred: int | None) -> int:
        port = preferred if preferred else allocate()
        while port in used:
            port = allocate()
        used.add(port)
        return port

    replicas: dict[str, list[Replica]] = {}
    for name in order:
        service = local[name]
        count = scale.get(name, 1)
        ports = _container_ports(service, local, references)
        replicas[name] = []
        for index in range(count):
            label = name if count == 1 else f"{name}-{index + 1}"
            local_ports = {p: take(service.published.get(p) if publish else None) for p in ports}
            replicas[name].append(Replica(
                service=name, name=label,
                argv=[sys.executable, "-m", "petrel", *service.command[1:]],
                env={}, root=data_dir / "containers" / label, ports=local_ports,
                healthcheck=service.healthcheck))
    topology = Topology(compose_file, data_dir, services, order, replicas, skipped)
    for replica in topology.all_replicas():
        env, dropped = _rewrite_env(local[replica.service].environment, replica, topology)
        replica.compose_env = {**env, **dict(overrides or {})}
        replica.env = {**base_env, **replica.compose_env}
        replica.dropped = dropped
        if replica.healthcheck:
            test = tuple(_rewrite_value(arg, replica, topology) or arg
                         for arg in replica.healthcheck.test)
            replica.healthcheck = HealthCheck(test, replica.healthcheck.interval,
                                              replica.healthcheck.timeout,
                                              replica.healthcheck.retries,
                                              replica.healthcheck.start_period)
    return topology


def _rewrite_value(value: str, replica: Replica, topology: Topology) -> str | None:
    """``value`` for this replica on this machine, or ``None`` when it names a service that
    does not run here."""
    if value.startswith("/"):
        return str(replica.root) + value
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        host, port = match.group("host"), int(match.group("port"))
        if host in WILDCARD_HOSTS:
            target = replica
        elif host in topology.replicas:
            target = topology.replicas[host][0]
        else:
            if host in topology.services:
                missing = True
            return match.group(0)
        return target.address(port)

    rewritten = _ADDRESS.sub(substitute, value)
    return None if missing else rewritten


def _rewrite_env(env: Mapping[str, str], replica: Replica, topology: Topology
                 ) -> tuple[dict[str, str], list[str]]:
    out: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in env.items():
        rewritten = _rewrite_value(value, replica, topology)
        if rewritten is None:
            dropped.append(key)
        else:
            out[key] = rewritten
    return out, dropped


def prepare_directories(topology: Topology) -> None:
    """Create every replica's root and the symlinks standing in for its mounts."""
    for replica in topology.all_replicas():
        replica.root.mkdir(parents=True, exist_ok=True)
        for mount in topology.services[replica.service].mounts:
            source = (topology.data_dir / "volumes" / mount.source) if mount.named \
                else Path(mount.source)
            if mount.named:
                source.mkdir(parents=True, exist_ok=True)
            link = replica.root / mount.target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            elif link.exists():
                raise ComposeError(f"{link} exists and is not a mount link")
            link.symlink_to(source)


def volume_dir(topology: Topology, name: str) -> Path:
    """Where the named volume ``name`` lives on this machine."""
    return topology.data_dir / "volumes" / name


# --- Prometheus -------------------------------------------------------------------------


def _host_path(service: ComposeService, container_path: str) -> Path:
    """The host file behind ``container_path`` in ``service`` (through a bind mount)."""
    for mount in sorted(service.mounts, key=lambda m: len(m.target), reverse=True):
        if container_path == mount.target or container_path.startswith(mount.target + "/"):
            if mount.named:
                break
            return Path(mount.source + container_path[len(mount.target):])
    raise ComposeError(f"{service.name}: {container_path} is not bind-mounted from the host")


def _prometheus_config_target(service: ComposeService) -> str:
    for arg in service.command:
        if arg.startswith("--config.file="):
            return arg.split("=", 1)[1]
    return "/etc/prometheus/prometheus.yml"


def read_prometheus_config(service: ComposeService) -> dict[str, Any]:
    """The Prometheus config file the compose service ``service`` mounts."""
    path = _host_path(service, _prometheus_config_target(service))
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ComposeError(f"{path}: {exc}") from exc
    return config if isinstance(config, dict) else {}


def prometheus_rule_files(service: ComposeService, config: Mapping[str, Any]) -> list[str]:
    """The host paths (or globs) of the rule files ``config`` names inside the container."""
    config_dir = posixpath.dirname(_prometheus_config_target(service))
    return [str(_host_path(service, posixpath.join(config_dir, str(pattern))))
            for pattern in config.get("rule_files") or ()]


def write_prometheus_config(topology: Topology, path: str | Path,
                            service: str = "prometheus") -> dict[str, Any]:
    """Write (and return) the config of ``service`` rewritten by ``local_prometheus_config``."""
    if service not in topology.services:
        raise ComposeError(f"no {service} service in {topology.compose_file}")
    spec = topology.services[service]
    config = read_prometheus_config(spec)
    local = local_prometheus_config(config, topology, prometheus_rule_files(spec, config))
    Path(path).write_text(yaml.safe_dump(local, sort_keys=False))
    return local


def prometheus_references(config: Mapping[str, Any]) -> list[str]:
    """Every ``host:port`` a Prometheus config scrapes (static targets and DNS names)."""
    refs: list[str] = []
    for job in config.get("scrape_configs") or ():
        for static in job.get("static_configs") or ():
            refs += [str(t) for t in static.get("targets") or ()]
        for dns in job.get("dns_sd_configs") or ():
            refs += [f"{n}:{dns.get('port', 0)}" for n in dns.get("names") or ()]
    return refs


def local_prometheus_config(config: Mapping[str, Any], topology: Topology,
                            rule_files: list[str] | None = None) -> dict[str, Any]:
    """The Prometheus ``config`` with every target a local replica (one per replica for DNS
    service discovery, as Docker's DNS answers one address per replica) and with targets of
    services that do not run here left out. Jobs left without targets are dropped."""
    out = {k: v for k, v in config.items() if k not in ("scrape_configs", "rule_files")}
    if rule_files is not None:
        out["rule_files"] = rule_files
    jobs = []
    for job in config.get("scrape_configs") or ():
        targets: list[str] = []
        for static in job.get("static_configs") or ():
            for target in static.get("targets") or ():
                host, _, port = str(target).rpartition(":")
                targets += _local_targets(host, int(port), topology)
        for dns in job.get("dns_sd_configs") or ():
            if dns.get("type", "SRV") not in ("A", "AAAA"):
                raise ComposeError(f"job {job.get('job_name')}: only A/AAAA DNS discovery")
            for name in dns.get("names") or ():
                targets += _local_targets(str(name), int(dns["port"]), topology)
        if not targets:
            continue
        local_job = {k: v for k, v in job.items()
                     if k not in ("static_configs", "dns_sd_configs")}
        local_job["static_configs"] = [{"targets": targets}]
        jobs.append(local_job)
    out["scrape_configs"] = jobs
    return out


def _local_targets(host: str, port: int, topology: Topology) -> list[str]:
    return [r.address(port) for r in topology.replicas.get(host, ()) if port in r.ports]


# --- Running ----------------------------------------------------------------------------


def run_healthcheck(check: HealthCheck) -> tuple[bool, str]:
    """Run a compose health check here. ``petrel healthcheck TARGET`` is probed in-process
    (the same function the command calls); anything else runs as a command."""
    argv = list(check.test)
    if argv[:2] == ["petrel", "healthcheck"] and len(argv) == 3:
        return probe(argv[2], timeout=check.timeout)
    if argv and argv[0] == "petrel":
        argv = [sys.executable, "-m", "petrel", *argv[1:]]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=check.timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    return done.returncode == 0, output[-200:]


class TopologySupervisor(Supervisor):
    """``Supervisor`` over the replicas of a ``Topology``, gated and watched by health checks."""

    def __init__(self, topology: Topology) -> None:
        children = [Child(r.name, r.argv, r.env) for r in topology.all_replicas()]
        super().__init__(Config(data_dir=str(topology.data_dir)), {}, children=children)
        self.topology = topology
        self.failed = False
        self.health: dict[str, str] = {}
        self._print_lock = threading.Lock()
        needed = {dep for s in topology.services.values()
                  for dep, condition in s.depends_on.items() if condition == "service_healthy"}
        self._gated = {name for name in topology.order if name in needed}

    def run(self) -> int:
        prepare_directories(self.topology)
        (self.topology.data_dir / "topology.json").write_text(
            json.dumps(self.topology.describe(), indent=2))
        code = super().run()
        return 1 if self.failed else code

    def _after_start(self, child: Child) -> None:
        replica = self.topology.replica(child.name)
        check = replica.healthcheck
        if check is None:
            return
        threading.Thread(target=self._watch, args=(replica, check), daemon=True,
                         name=f"health-{replica.name}").start()
        if replica.service not in self._gated:
            return
        budget = check.start_period + check.interval * check.retries
        deadline = time.monotonic() + min(max(budget, MIN_HEALTHY_WAIT), MAX_HEALTHY_WAIT)
        while not self._stopping.is_set():
            status = self.health.get(replica.name)
            if status == "healthy":
                return
            exited = child.process is not None and child.process.poll() is not None
            if status == "unhealthy" or exited or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not self._stopping.is_set():
            self._say({"error": f"{replica.name} did not become healthy; stopping",
                       "health": replica.name})
            self.failed = True
            self.stop()

    def announcement(self) -> dict[str, object]:
        """Replicas and their local ports (the details are in ``<data_dir>/topology.json``)."""
        described = self.topology.describe()
        return {"petrel": "topology", "data_dir": described["data_dir"],
                "replicas": {name: {"service": r["service"], "ports": r["ports"]}
                             for name, r in described["replicas"].items()},
                "skipped": described["skipped"]}

    def _watch(self, replica: Replica, check: HealthCheck) -> None:
        failures = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            healthy, detail = run_healthcheck(check)
            previous = self.health.get(replica.name, "starting")
            if healthy:
                failures, status = 0, "healthy"
            else:
                in_grace = time.monotonic() - started < check.start_period
                failures = failures if in_grace else failures + 1
                status = "unhealthy" if failures >= check.retries else previous
            if status != previous:
                self.health[replica.name] = status
                self._say({"health": replica.name, "status": status, "detail": detail})
            self._stopping.wait(STARTING_PROBE_INTERVAL if status == "starting"
                                else check.interval)

    def _say(self, data: dict[str, object]) -> None:
        with self._print_lock:
            print(json.dumps(data), flush=True)
