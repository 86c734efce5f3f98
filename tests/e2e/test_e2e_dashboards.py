"""Every expression of the provisioned Grafana dashboard and of the Prometheus rules, evaluated
by a real Prometheus (Debian's ``prometheus``) that scrapes a live pipeline.

The pipeline is the compose topology run as local processes (``petrel topology``, egress
scaled to 2); ``--prometheus-config`` turns the shipped compose/prometheus/prometheus.yml into
the same jobs over the local replicas (DNS discovery becomes one target per replica) with the
shipped rule file. Traffic covers deliveries over SMTP and gRPC, a deferral, a bounce and a
refused recipient; then each query must return at least one finite sample.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import smtplib
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from petrel.v1 import ingress_pb2
from tests.e2e.test_e2e_topology import REPO, RunningTopology
from tests.support.messages import grpc_inject_stream, make_message, smtp_send
from tests.support.net import free_port, wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

DASHBOARD = REPO / "compose" / "grafana" / "dashboards" / "petrel.json"
RULES = REPO / "compose" / "prometheus" / "alerts.yml"
SENDER = "sender@petrel.test"
JOBS = {"spool", "scheduler", "ingress", "egress", "bounce", "gateway"}
# Grafana's interval variables, as Grafana would fill them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(?=-?[0-9.])")


def dashboard_expressions() -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` for every query of every panel (rows included)."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", ()):
                out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def with_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def as_bool(expr: str) -> str:
    """An alert's condition with every threshold comparison as ``bool``: the same signals,
    0/1 for every series instead of only the series that breach the threshold."""
    converted = _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", expr)
    assert converted != expr, f"no threshold comparison in {expr!r}"
    return converted


class Prometheus:
    def __init__(self, binary: str, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--enable-feature=exemplar-storage"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, interval=0.1, message="prometheus ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("prometheus exited:\n" + self.log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _traffic(topology: RunningTopology) -> int:
    """Deliveries over SMTP and gRPC, a deferral, a bounce, a recipient deferred for good,
    a refused recipient; returns how many recipients end delivered."""
    smtp_port = int(topology.address("ingress", 2525).rsplit(":", 1)[1])
    delivered = [f"smtp{i}@dest.test" for i in range(5)] + ["flaky@dest.test"]
    for rcpt in delivered:
        assert smtp_send(smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))[0] == 250
    # One bounce, and one recipient that is deferred again and again (it stays queued).
    for rcpt in ("permfail@dest.test", "tempfail@dest.test"):
        assert smtp_send(smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))[0] == 250
    grpc_rcpts = [f"grpc{i}@other.test" for i in range(10)]
    replies = grpc_inject_stream(topology.address("ingress", 7703), [
        ingress_pb2.InjectMessageRequest(sender=SENDER, recipients=[r],
                                         content=make_message(SENDER, [r])) for r in grpc_rcpts])
    assert [r.status.code for r in replies] == [0] * len(grpc_rcpts)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        code, _ = client.rcpt("not an address")
        assert 500 <= code < 600
    return len(delivered) + len(grpc_rcpts)


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (make system-deps installs it)")
    return binary


def test_dashboard_and_rule_expressions_return_data(tmp_path: Path, sink: SmtpSink,
                                                    prometheus_binary: str) -> None:
    local_config = tmp_path / "prometheus.yml"
    with RunningTopology(tmp_path, {"egress": 2}, {"PETREL_ROUTING__SMARTHOST": sink.address},
                         prometheus_config=local_config) as topology:
        topology.start()
        config = yaml.safe_load(local_config.read_text())
        assert {job["job_name"] for job in config["scrape_configs"]} == JOBS
        egress_job = next(j for j in config["scrape_configs"] if j["job_name"] == "egress")
        assert len(egress_job["static_configs"][0]["targets"]) == 2
        assert config["rule_files"] == [str(RULES)]
        # Scrape and evaluate every second so a short test sees several samples.
        config["global"].update(scrape_interval="1s", scrape_timeout="1s",
                                evaluation_interval="1s")
        local_config.write_text(yaml.safe_dump(config))

        prometheus = Prometheus(prometheus_binary, local_config, tmp_path)
        try:
            wait_for(lambda: prometheus.value(f"count(up{{job=~\"{'|'.join(JOBS)}\"}} == 1)")
                     == 7, timeout=30, interval=0.25, message="all 7 targets scraped and up")
            expected = _traffic(topology)
            wait_for(lambda: sink.count() == expected, timeout=60, message="deliveries")
            dispositions = "sum(petrel_scheduler_dispositions_total{outcome=%r})"
            wait_for(lambda: prometheus.value(dispositions % "delivered") == expected
                     and prometheus.value(dispositions % "bounced") == 1
                     and prometheus.value(dispositions % "transient_failure") >= 1,
                     timeout=30, interval=0.25, message="the traffic scraped")
            wait_for(lambda: prometheus.query("petrel:bounce_ratio:rate15m"), timeout=15,
                     interval=0.25, message="recording rules evaluated")

            queries = [(f"dashboard {label}", with_grafana_variables(expr))
                       for label, expr in dashboard_expressions()]
            for rule in rules():
                if "record" in rule:
                    queries += [(f"rule {rule['record']}", rule["expr"]),
                                (f"recorded series {rule['record']}", rule["record"])]
                else:
                    queries.append((f"alert {rule['alert']}", as_bool(rule["expr"])))
            # A counter series born with the traffic needs a second scrape before rate() has
            # two samples: poll each query briefly rather than guess a delay.
            failures = []
            for label, expr in queries:
                try:
                    wait_for(lambda e=expr: _finite(prometheus.query(e)), timeout=10,
                             interval=0.25, message=label)
                except TimeoutError:
                    failures.append(f"{label}: {expr} -> {prometheus.query(expr)}")
            assert not failures, "\n".join(failures)

            groups = prometheus.api("rules")["groups"]
            evaluated = {r["name"]: r for g in groups for r in g["rules"]}
            assert set(evaluated) == {r.get("record") or r["alert"] for r in rules()}
            assert all(r["health"] == "ok" for r in evaluated.values()), evaluated

            bounced = prometheus.query(
                'sum by (category) (petrel_scheduler_failures_total{outcome="bounced"})')
            assert [s["metric"]["category"] for s in bounced] == ["InvalidRecipient"]
            exemplars = prometheus.api(
                "query_exemplars",
                query="petrel_egress_delivery_attempt_duration_seconds_bucket",
                start=str(0), end="9999999999")
            trace_ids = {e["labels"].get("trace_id") for series in exemplars
                         for e in series["exemplars"]}
            assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t or "") for t in trace_ids)
        finally:
            prometheus.stop()
