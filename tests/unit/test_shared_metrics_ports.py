"""`petrel up` gives every service a /metrics port unless one is configured."""

from __future__ import annotations

from petrel.config import load_config
from petrel.supervisor import Supervisor


def _listen(supervisor: Supervisor) -> dict[str, str | None]:
    return {child.name: child.env.get(f"PETREL_{child.argv[-1].upper()}__METRICS_LISTEN")
            for child in supervisor.children}


def test_each_service_and_egress_replica_gets_its_own_port() -> None:
    config = load_config(env={})
    supervisor = Supervisor(config, {}, egress_replicas=2, metrics_port=9101)
    assert _listen(supervisor) == {
        "spool": "127.0.0.1:9101", "bounce": "127.0.0.1:9102", "scheduler": "127.0.0.1:9103",
        "egress-1": "127.0.0.1:9105", "egress-2": "127.0.0.1:9106",
        "ingress": "127.0.0.1:9104", "gateway": None}
    assert supervisor.announcement()["metrics"] == {
        name: value for name, value in _listen(supervisor).items() if value}


def test_configured_addresses_win_and_zero_turns_ports_off() -> None:
    env = {"PETREL_SPOOL__METRICS_LISTEN": "0.0.0.0:9464"}
    supervisor = Supervisor(load_config(env=env), env, metrics_port=9101)
    assert _listen(supervisor)["spool"] == "0.0.0.0:9464"
    assert _listen(supervisor)["bounce"] == "127.0.0.1:9102"
    assert not any(_listen(Supervisor(load_config(env={}), {}, metrics_port=0)).values())


def test_ingress_replicas_share_the_ports_and_get_metrics_ports_after_egress() -> None:
    config = load_config(env={})
    supervisor = Supervisor(config, {}, egress_replicas=2, ingress_replicas=2, metrics_port=9101)
    assert _listen(supervisor) == {
        "spool": "127.0.0.1:9101", "bounce": "127.0.0.1:9102", "scheduler": "127.0.0.1:9103",
        "egress-1": "127.0.0.1:9105", "egress-2": "127.0.0.1:9106",
        "ingress-1": "127.0.0.1:9104", "ingress-2": "127.0.0.1:9107", "gateway": None}
    shared = {c.name: c.env.get("PETREL_INGRESS__REUSE_PORT") for c in supervisor.children}
    assert shared["ingress-1"] == shared["ingress-2"] == "true"
    assert shared["spool"] is None
    single = Supervisor(config, {}, metrics_port=9101)
    assert all("PETREL_INGRESS__REUSE_PORT" not in c.env for c in single.children)
