"""petrel.compose and petrel.topology: reading compose files and planning local replicas."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from petrel.cli import cli
from petrel.compose import ComposeError, HealthCheck, interpolate, load_compose
from petrel.topology import (
    local_prometheus_config,
    plan_topology,
    prepare_directories,
    run_healthcheck,
    start_order,
)
from tests.support.net import free_port

COMPOSE = """
x-env: &env
  STORE: store:7000
  TRACES: http://collector:4317
services:
  store:
    command: ["petrel", "spool"]
    environment:
      <<: *env
      LISTEN: 0.0.0.0:7000
      METRICS: 0.0.0.0:9464
      DATA: /var/lib/app
      NAME: ${NAME:-fallback}
    volumes:
      - data:/var/lib/app/db
      - ./conf.toml:/etc/app/conf.toml:ro
    healthcheck:
      test: ["CMD", "petrel", "healthcheck", "127.0.0.1:7000"]
      interval: 5s
      retries: 2
      start_period: 1m30s
  worker:
    command: petrel egress --verbose
    environment:
      - STORE=store:7000
      - HEALTH=0.0.0.0:7005
      - METRICS=0.0.0.0:9464
    depends_on:
      store: {condition: service_healthy}
  front:
    command: ["petrel", "gateway"]
    environment: {HTTP: "0.0.0.0:8025", PLAIN: "store", LIST: "a:1,store:7000"}
    ports: ["127.0.0.1:18025:8025"]
    depends_on: [worker]
  collector:
    image: otel/opentelemetry-collector-contrib
    expose: ["4317"]
  prometheus:
    image: prom/prometheus
    command: ["--config.file=/etc/prometheus/prometheus.yml"]
    volumes: ["./prom:/etc/prometheus:ro"]
volumes:
  data:
"""

PROMETHEUS = """
global: {scrape_interval: 15s}
rule_files: [rules/*.yml]
scrape_configs:
  - job_name: store
    static_configs: [{targets: ["store:9464"]}]
  - job_name: worker
    metrics_path: /metrics
    dns_sd_configs: [{names: [worker], type: A, port: 9464}]
  - job_name: collector
    static_configs: [{targets: ["collector:8888"]}]
"""


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "compose" / "compose.yaml"
    path.parent.mkdir()
    path.write_text(COMPOSE)
    (path.parent / "conf.toml").write_text("")
    (path.parent / "prom").mkdir()
    (path.parent / "prom" / "prometheus.yml").write_text(PROMETHEUS)
    return path


def _ports() -> itertools.count[int]:
    return itertools.count(41000)


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$SET ${SET} $$SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == \
        "x x $SET d d "
    assert interpolate("${UNSET-d}${UNSET}", env) == "d"
    with pytest.raises(ComposeError, match="UNSET"):
        interpolate("${UNSET:?needed}", env)
    with pytest.raises(ComposeError, match="EMPTY"):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""


def test_compose_syntaxes_are_normalised(compose_file: Path) -> None:
    services = load_compose(compose_file, {"NAME": "given"})
    store, worker, front = services["store"], services["worker"], services["front"]
    assert store.environment["NAME"] == "given"
    assert store.environment["STORE"] == "store:7000"
    assert worker.command == ("petrel", "egress", "--verbose")
    assert worker.environment["HEALTH"] == "0.0.0.0:7005"
    assert worker.depends_on == {"store": "service_healthy"}
    assert front.depends_on == {"worker": "service_started"}
    assert front.published == {8025: 18025}
    assert store.healthcheck == HealthCheck(("petrel", "healthcheck", "127.0.0.1:7000"),
                                            interval=5.0, timeout=30.0, retries=2,
                                            start_period=90.0)
    data, conf = store.mounts
    assert (data.source, data.target, data.named) == ("data", "/var/lib/app/db", True)
    assert conf.source == str(compose_file.parent / "conf.toml") and conf.read_only


def test_start_order_puts_dependencies_first(compose_file: Path) -> None:
    services = load_compose(compose_file, {})
    local = {n: services[n] for n in ("front", "worker", "store")}
    assert start_order(local) == ["store", "worker", "front"]
    cyclic = dict(local)
    cyclic["store"] = dataclasses.replace(services["store"], depends_on={"front": "x"})
    with pytest.raises(ComposeError, match="cycle"):
        start_order(cyclic)


def test_plan_maps_hosts_ports_and_paths(compose_file: Path, tmp_path: Path) -> None:
    ports = _ports()
    plan = plan_topology(compose_file, tmp_path / "data", scale={"worker": 2},
                         overrides={"EXTRA": "1"}, environ={"PETREL_X": "leak", "HOME": "/h"},
                         allocate=lambda: next(ports))
    assert plan.order == ["store", "worker", "front"]
    assert plan.skipped == ["collector", "prometheus"]
    store = plan.replicas["store"][0]
    workers = plan.replicas["worker"]
    assert [w.name for w in workers] == ["worker-1", "worker-2"]
    assert set(store.ports) == {7000, 9464}
    assert store.env["LISTEN"] == store.env["STORE"] == f"127.0.0.1:{store.ports[7000]}"
    assert store.env["DATA"] == f"{tmp_path / 'data'}/containers/store/var/lib/app"
    assert store.env["HOME"] == "/h" and "PETREL_X" not in store.env
    assert store.env["EXTRA"] == "1"
    assert "TRACES" not in store.env and store.dropped == ["TRACES"]
    assert store.argv == [sys.executable, "-m", "petrel", "spool"]
    assert workers[0].argv[-2:] == ["egress", "--verbose"]
    assert workers[0].ports[7005] != workers[1].ports[7005]
    assert workers[1].env["HEALTH"] == f"127.0.0.1:{workers[1].ports[7005]}"
    assert workers[1].env["STORE"] == store.env["STORE"]
    front = plan.replicas["front"][0]
    assert front.env["PLAIN"] == "store"
    assert front.env["LIST"] == f"a:1,127.0.0.1:{store.ports[7000]}"
    assert front.ports[8025] != 18025
    assert store.healthcheck is not None
    assert store.healthcheck.test[2] == f"127.0.0.1:{store.ports[7000]}"

    published = plan_topology(compose_file, tmp_path / "data", publish=True,
                              allocate=lambda: next(ports))
    assert published.replicas["front"][0].ports[8025] == 18025


def test_scaling_is_refused_where_docker_refuses(compose_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="fixed host ports"):
        plan_topology(compose_file, tmp_path, scale={"front": 2})
    with pytest.raises(ComposeError, match="not a Petrel service"):
        plan_topology(compose_file, tmp_path, scale={"collector": 2})
    with pytest.raises(ComposeError, match="no such service"):
        plan_topology(compose_file, tmp_path, scale={"nothing": 2})


def test_mounts_become_links_in_each_replica_root(compose_file: Path, tmp_path: Path) -> None:
    plan = plan_topology(compose_file, tmp_path / "data", scale={"worker": 2})
    prepare_directories(plan)
    prepare_directories(plan)  # again, as after a restart
    root = plan.replicas["store"][0].root
    db = root / "var/lib/app/db"
    assert db.is_symlink() and db.resolve() == (tmp_path / "data/volumes/data").resolve()
    assert (root / "etc/app/conf.toml").resolve() == compose_file.parent / "conf.toml"
    assert (tmp_path / "data/containers/worker-2").is_dir()


def test_prometheus_targets_become_local_replicas(compose_file: Path, tmp_path: Path) -> None:
    ports = _ports()
    plan = plan_topology(compose_file, tmp_path, scale={"worker": 3},
                         allocate=lambda: next(ports))
    config = local_prometheus_config(
        {"global": {"scrape_interval": "15s"},
         "scrape_configs": [
             {"job_name": "store", "static_configs": [{"targets": ["store:9464"]}]},
             {"job_name": "worker", "metrics_path": "/metrics",
              "dns_sd_configs": [{"names": ["worker"], "type": "A", "port": 9464}]},
             {"job_name": "collector", "static_configs": [{"targets": ["collector:8888"]}]}]},
        plan, ["/rules/a.yml"])
    store = plan.replicas["store"][0]
    assert config["global"] == {"scrape_interval": "15s"}
    assert config["rule_files"] == ["/rules/a.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"store", "worker"}
    assert jobs["store"]["static_configs"] == [{"targets": [store.address(9464)]}]
    assert jobs["worker"]["metrics_path"] == "/metrics"
    assert jobs["worker"]["static_configs"][0]["targets"] == [
        w.address(9464) for w in plan.replicas["worker"]]


def test_cli_writes_the_local_prometheus_config(compose_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "local.yml"
    result = CliRunner().invoke(cli, [
        "topology", "--compose", str(compose_file), "--data-dir", str(tmp_path / "d"),
        "--scale", "worker=2", "--prometheus-config", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"worker-2"' in result.output
    text = out.read_text()
    assert f"{compose_file.parent}/prom/rules/*.yml" in text
    assert "collector" not in text
    bad = CliRunner().invoke(cli, ["topology", "--compose", str(compose_file),
                                   "--scale", "worker=two", "--dry-run"])
    assert bad.exit_code != 0 and "--scale" in bad.output


def test_health_check_of_a_closed_port_fails_fast() -> None:
    healthy, detail = run_healthcheck(HealthCheck(
        ("petrel", "healthcheck", f"127.0.0.1:{free_port()}"), timeout=2.0))
    assert not healthy and "UNAVAILABLE" in detail
    healthy, _ = run_healthcheck(HealthCheck(("sh", "-c", "exit 3"), timeout=2.0))
    assert not healthy
    healthy, _ = run_healthcheck(HealthCheck(("sh", "-c", "true"), timeout=2.0))
    assert healthy


def test_healthcheck_command_exit_status() -> None:
    result = CliRunner().invoke(cli, ["healthcheck", f"127.0.0.1:{free_port()}",
                                      "--timeout", "2"])
    assert result.exit_code == 1 and "UNAVAILABLE" in result.output
    result = CliRunner().invoke(cli, ["healthcheck", f"http://127.0.0.1:{free_port()}/healthz"])
    assert result.exit_code == 1

