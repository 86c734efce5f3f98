"""Offline bounce tools, registered by ``petrel.cli`` under ``petrel bounce``.

``petrel bounce classify-reply TEXT`` prints ``{"category", "status", "code"}`` as one JSON
object. The rules are the built-in layers plus ``bounce.rules_files`` from the configuration
when one is given (``--config`` / ``PETREL_CONFIG``); no service needs to run.
"""

from __future__ import annotations

import json

import click

from bounce.classifier import ReplyClassifier
from bounce.rules import RulesError


def _classifier(ctx: click.Context) -> ReplyClassifier:
    from petrel.config import ConfigError, load_config

    config_path = None
    parent = ctx.parent
    if parent is not None:
        config_path = parent.params.get("config_path")
    try:
        config = load_config(config_path)
        return ReplyClassifier.from_files(config.bounce.rules_files)
    except (ConfigError, RulesError) as exc:
        raise click.ClickException(str(exc)) from exc


def _print(obj: object) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


@click.command("classify-reply", short_help="Classify one SMTP reply.")
@click.argument("text")
@click.pass_context
def classify_reply(ctx: click.Context, text: str) -> None:
    """Classify one SMTP reply, e.g. "550 5.1.1 No such user"."""
    _print(_classifier(ctx).classify_text(text).as_dict())


COMMANDS: list[click.Command] = [classify_reply]
