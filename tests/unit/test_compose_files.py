"""compose/: the compose file validates with docker-compose, scales by construction, and its
parts agree with each other and with the code (config fields, CLI commands, metric names,
packages in the image)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from petrel.cli import SERVICES
from petrel.compose import ComposeService, load_compose
from petrel.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
SCALABLE = ("egress",)
METRICS_PORT = 9464


@pytest.fixture(scope="module")
def services() -> dict[str, ComposeService]:
    return load_compose(COMPOSE, {})


def _petrel(services: dict[str, ComposeService]) -> dict[str, ComposeService]:
    return {n: s for n, s in services.items() if s.command[:1] == ("petrel",)}


def test_docker_compose_validates_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (make system-deps installs it)")
    done = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


def test_every_stage_runs_with_the_petrel_up_command(services) -> None:
    petrel = _petrel(services)
    assert set(petrel) == set(SERVICES)
    for name, service in petrel.items():
        assert service.command == ("petrel", name)


def test_scalable_services_have_no_fixed_names_or_host_ports(services) -> None:
    for name in SCALABLE:
        assert not services[name].container_name
        assert not services[name].published
    assert not any(s.container_name for s in services.values())


def _listen_ports(service: ComposeService) -> set[int]:
    return {int(m.group(1)) for v in service.environment.values()
            for m in [re.fullmatch(r"0\.0\.0\.0:(\d+)", v)] if m}


def test_peers_are_addressed_by_service_name_on_ports_they_listen_on(services) -> None:
    petrel = _petrel(services)
    for service in petrel.values():
        for key, value in service.environment.items():
            match = re.fullmatch(r"([a-z-]+):(\d+)", value)
            if match and key.startswith("PETREL_"):
                peer, port = match.group(1), int(match.group(2))
                assert peer in petrel, f"{service.name} {key}={value}"
                assert port in _listen_ports(petrel[peer]), f"{service.name} {key}={value}"
    assert petrel["egress"].environment["PETREL_SCHEDULER__ADDRESS"] == "scheduler:7702"


def test_each_service_environment_is_a_valid_configuration(services) -> None:
    for service in _petrel(services).values():
        config = load_config(env=service.environment)
        assert config.data_dir == "/var/lib/petrel"


def test_health_checks_probe_the_service_itself(services) -> None:
    for name, service in _petrel(services).items():
        assert service.healthcheck is not None, name
        test = service.healthcheck.test
        assert test[:2] == ("petrel", "healthcheck"), name
        port = int(re.search(r"127\.0\.0\.1:(\d+)", test[2]).group(1))  # type: ignore[union-attr]
        assert port in _listen_ports(service), name
    assert services["egress"].environment["PETREL_EGRESS__LISTEN"] == "0.0.0.0:7705"


def test_dependencies_wait_for_health(services) -> None:
    petrel = _petrel(services)
    for service in petrel.values():
        for dependency, condition in service.depends_on.items():
            assert dependency in services
            if dependency in petrel:
                assert condition == "service_healthy", (service.name, dependency)


def test_the_image_holds_every_package(services) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    copied = {m.group(1) for m in re.finditer(r"^COPY (\w+) \1$", dockerfile, re.MULTILINE)}
    assert copied == packages
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().split()
    assert {p.removeprefix("!") for p in ignore if p.startswith("!")} == packages | {
        "pyproject.toml", "README.md"}
    assert "USER petrel" in dockerfile


def test_prometheus_scrapes_every_service_on_its_metrics_port(services) -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, service in _petrel(services).items():
        dns = jobs[name]["dns_sd_configs"][0]
        assert dns["names"] == [name] and dns["type"] == "A"
        listen = service.environment.get(f"PETREL_{name.upper()}__METRICS_LISTEN")
        if name == "gateway":
            assert service.environment["PETREL_GATEWAY__HTTP_LISTEN"] == f"0.0.0.0:{dns['port']}"
        else:
            assert listen == f"0.0.0.0:{METRICS_PORT}" and dns["port"] == METRICS_PORT


def _catalogue() -> set[str]:
    text = (REPO / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(petrel_[a-z0-9_]+)` \|", text, re.MULTILINE))


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(petrel_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if not n.endswith("_total") else n
            for n in names}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "petrel.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load((COMPOSE_DIR / "prometheus" / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_rules_use_catalogued_metric_names() -> None:
    catalogue = _catalogue()
    assert catalogue, "docs/metrics.md lists no metric"
    used = set().union(*(_metric_names(e) for e in _dashboard_exprs() + _rule_exprs()))
    assert used - catalogue == set()
    for needed in ("petrel_ingress_messages_received_total", "petrel_scheduler_queued_messages",
                   "petrel_egress_delivery_attempt_duration_seconds",
                   "petrel_scheduler_failures_total",
                   "petrel_scheduler_automation_actions_total"):
        assert needed in used


def test_dashboard_is_provisioned_from_the_mounted_directory(services) -> None:
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "petrel.yaml").read_text())
    mounts = {m.target: Path(m.source) for m in services["grafana"].mounts}
    path = provider["providers"][0]["options"]["path"]
    assert (mounts[path] / "petrel.json").is_file()
    assert mounts["/etc/grafana/provisioning"] == provisioning
    sources = yaml.safe_load((provisioning / "datasources" / "petrel.yaml").read_text())
    uids = {d["uid"]: d for d in sources["datasources"]}
    dashboard = json.loads((mounts[path] / "petrel.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            assert uids[target["datasource"]["uid"]]["type"] == "prometheus"
    exemplar_link = uids["petrel-metrics"]["jsonData"]["exemplarTraceIdDestinations"][0]
    assert exemplar_link == {"name": "trace_id", "datasourceUid": "petrel-traces"}
    assert uids["petrel-traces"]["url"] == "http://jaeger:16686"


def test_collector_forwards_traces_to_jaeger(services) -> None:
    collector = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert set(pipeline["exporters"]) <= set(collector["exporters"])
    assert set(pipeline["receivers"]) <= set(collector["receivers"])
    assert set(pipeline["processors"]) <= set(collector["processors"])
    jaeger = collector["exporters"][pipeline["exporters"][0]]["endpoint"]
    assert jaeger == "jaeger:4317" and "jaeger" in services
    grpc_in = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    for service in _petrel(services).values():
        endpoint = service.environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == f"http://otel-collector:{grpc_in.rsplit(':', 1)[1]}"
