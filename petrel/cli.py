"""The ``petrel`` command: ``petrel up`` starts the whole pipeline, ``petrel <service>`` one
service. Options that change configuration are passed on as ``PETREL_*`` environment variables,
the same way docker compose configures the services.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from petrel import faults, grpc_auth, runtime
from petrel.config import ConfigError, hash_api_key, load_config

SERVICES = ("spool", "bounce", "scheduler", "ingress", "egress", "gateway")


def _run_service(name: str, config_path: str | None) -> None:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    faults.arm(config.fault_points)
    runtime.use_event_loop(config.event_loop)
    try:
        grpc_auth.configure(grpc_auth.GrpcSecurity.from_config(config.security, identity=name))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    module = importlib.import_module(f"{name}.main")
    module.main(config)


@click.group()
@click.version_option(package_name="petrel")
def cli() -> None:
    """Petrel: a high-volume outbound MTA as a pipeline of gRPC services."""


_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                              envvar="PETREL_CONFIG", help="TOML configuration file.")


@cli.command()
@_config_option
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory (spool, events).")
@click.option("--smtp-listen", help="SMTP listener HOST:PORT.")
@click.option("--http-listen", help="REST gateway HOST:PORT.")
@click.option("--smarthost", help="Relay all outbound mail to HOST:PORT.")
@click.option("--egress-replicas", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--ingress-replicas", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Ingress processes sharing the SMTP and inject ports (SO_REUSEPORT).")
@click.option("--metrics-port", type=click.IntRange(0, 65000), default=9101, show_default=True,
              help="First port of the services' /metrics endpoints (0: none).")
@click.option("--secure", is_flag=True,
              help="gRPC mutual TLS between the services, with certificates created once "
                   "under DATA_DIR/certs.")
def up(config_path: str | None, data_dir: str | None, smtp_listen: str | None,
       http_listen: str | None, smarthost: str | None, egress_replicas: int,
       ingress_replicas: int, metrics_port: int, secure: bool) -> None:
    """Start every service as a local process; Ctrl-C stops them all."""
    from petrel.supervisor import Supervisor

    env = dict(os.environ)
    for key, value in {"PETREL_DATA_DIR": data_dir, "PETREL_INGRESS__SMTP_LISTEN": smtp_listen,
                       "PETREL_GATEWAY__HTTP_LISTEN": http_listen,
                       "PETREL_ROUTING__SMARTHOST": smarthost}.items():
        if value:
            env[key] = value
    if config_path:
        env["PETREL_CONFIG"] = str(Path(config_path).resolve())
    try:
        config = load_config(env=env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    if secure:
        from petrel.certs import ensure_certs

        certs_dir = Path(config.data_dir).resolve() / "certs"
        ensure_certs(certs_dir)
        env["PETREL_SECURITY__GRPC_AUTH"] = "mtls"
        env["PETREL_SECURITY__CERTS_DIR"] = str(certs_dir)
        config = load_config(env=env)
    sys.exit(Supervisor(config, env, egress_replicas=egress_replicas,
                        ingress_replicas=ingress_replicas, metrics_port=metrics_port).run())


@cli.command()
@click.argument("target")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@click.option("--service", default="", help="gRPC health service name (default: the server).")
def healthcheck(target: str, timeout: float, service: str) -> None:
    """Exit 0 when TARGET is healthy: HOST:PORT asks the gRPC health service, an http:// URL
    expects a 2xx answer. For container health checks. gRPC probes use the [security] of the
    configuration (PETREL_CONFIG, PETREL_SECURITY__*), with the ``client`` certificate."""
    from petrel.healthcheck import probe

    try:
        security = grpc_auth.GrpcSecurity.from_config(load_config().security)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    healthy, detail = probe(target, timeout=timeout, service=service, security=security)
    click.echo(f"{target}: {detail}")
    sys.exit(0 if healthy else 1)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for ca.crt/ca.key and <name>.crt/<name>.key.")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="Extra DNS name or IP address in every certificate (repeatable).")
@click.option("--days", type=int, default=825, show_default=True,
              help="Validity of the service certificates.")
def certs(out_dir: str, hosts: tuple[str, ...], days: int) -> None:
    """Create a private CA and a certificate for every service (and `client` for tools), for
    gRPC mutual TLS ([security] grpc_auth = "mtls", certs_dir = OUT). Existing files are
    kept."""
    from petrel.certs import ensure_certs

    written = ensure_certs(out_dir, hosts=hosts, days=days)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"{out_dir}: every certificate already exists")


@cli.command("api-key")
@click.option("--tenant", default="", help="The tenant the key may act for.")
@click.option("--admin", is_flag=True, help="A key that may do everything.")
def api_key(tenant: str, admin: bool) -> None:
    """Create a random REST API key; prints the key (give it to the client) and the
    [gateway.api_keys] line that stores only its hash."""
    import secrets

    if bool(tenant) == admin:
        raise click.UsageError("give exactly one of --tenant NAME or --admin")
    key = "pk_" + secrets.token_urlsafe(32)
    rights = "{ admin = true }" if admin else "{ tenant = " + json.dumps(tenant) + " }"
    click.echo(f"key: {key}")
    click.echo(f'config: "{hash_api_key(key)}" = {rights}')


def _key_values(values: Sequence[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        pairs[key] = rest
    return pairs


@cli.command()
@click.option("--compose", "compose_file", type=click.Path(exists=True, dir_okay=False),
              default="compose/compose.yaml", show_default=True)
@click.option("--scale", multiple=True, metavar="SERVICE=N", help="Replicas of a service.")
@click.option("--data-dir", type=click.Path(file_okay=False), default="petrel-data/topology",
              show_default=True, help="Volumes and per-replica directories.")
@click.option("--env", "env_values", multiple=True, metavar="KEY=VALUE",
              help="Set a variable in every service, after the compose environment.")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Listen on the compose file's published host ports (else free ports).")
@click.option("--prometheus-config", type=click.Path(dir_okay=False),
              help="Write a Prometheus config that scrapes the local replicas.")
@click.option("--dry-run", is_flag=True, help="Print the plan as JSON and exit.")
def topology(compose_file: str, scale: tuple[str, ...], data_dir: str,
             env_values: tuple[str, ...], publish: bool, prometheus_config: str | None,
             dry_run: bool) -> None:
    """Run the compose file's Petrel services as local processes (no Docker needed)."""
    from petrel.compose import ComposeError
    from petrel.topology import TopologySupervisor, plan_topology, write_prometheus_config

    try:
        replicas = {k: int(v) for k, v in _key_values(scale, "--scale").items()}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from exc
    try:
        plan = plan_topology(compose_file, data_dir, scale=replicas,
                             overrides=_key_values(env_values, "--env"), publish=publish)
        if prometheus_config:
            write_prometheus_config(plan, prometheus_config)
    except ComposeError as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo(json.dumps(plan.describe(), indent=2))
        return
    sys.exit(TopologySupervisor(plan).run())


for _name in SERVICES:
    if _name == "bounce":
        continue

    def _make(name: str) -> click.Command:
        @click.command(name=name, help=f"Run the {name} service.")
        @_config_option
        def command(config_path: str | None) -> None:
            _run_service(name, config_path)
        return command

    cli.add_command(_make(_name))


@cli.group(invoke_without_command=True)
@_config_option
@click.pass_context
def bounce(ctx: click.Context, config_path: str | None) -> None:
    """Run the bounce service, or classify bounces offline (see subcommands)."""
    if ctx.invoked_subcommand is None:
        _run_service("bounce", config_path)


def _register_bounce_tools() -> None:
    try:
        tools = importlib.import_module("bounce.cli")
    except ImportError:
        return
    for command in getattr(tools, "COMMANDS", ()):
        bounce.add_command(command)


_register_bounce_tools()


def _register_suppression_tools() -> None:
    from petrel.suppression_cli import suppression

    cli.add_command(suppression)


_register_suppression_tools()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="petrel")
