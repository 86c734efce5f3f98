"""The ``petrel`` command: ``petrel up`` starts the whole pipeline, ``petrel <service>`` one
service. Options that change configuration are passed on as ``PETREL_*`` environment variables,
the same way docker compose configures the services.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from petrel.config import ConfigError, load_config

SERVICES = ("spool", "bounce", "scheduler", "ingress", "egress", "gateway")


def _run_service(name: str, config_path: str | None) -> None:
    try:
        config = load_config(config_path)
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
@click.option("--egress-replicas", type=int, default=1, show_default=True)
def up(config_path: str | None, data_dir: str | None, smtp_listen: str | None,
       http_listen: str | None, smarthost: str | None, egress_replicas: int) -> None:
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
    sys.exit(Supervisor(config, env, egress_replicas=egress_replicas).run())


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


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="petrel")
