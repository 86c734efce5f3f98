"""Offline bounce tools, registered by ``petrel.cli`` under ``petrel bounce``.

``petrel bounce classify-reply TEXT`` prints ``{"category", "status", "code"}`` and
``petrel bounce classify PATH`` (``-`` for stdin) prints ``{"category", "kind", "recipients",
"recipient", "status"}``, each as one JSON object; ``petrel bounce accuracy [DIR]`` reports
accuracy on a labelled corpus. The rules are the built-in layers plus
``bounce.rules_files`` from the configuration when one is given (``--config`` /
``PETREL_CONFIG``); no service needs to run.
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


@click.command("classify", short_help="Classify one message (DSN, ARF, auto-reply...).")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.pass_context
def classify(ctx: click.Context, path: str) -> None:
    """Classify the message in PATH ("-" for stdin): kind, category and per-recipient
    address, status, category and diagnostic, as one JSON object."""
    from bounce.message import MessageAnalyser

    with click.open_file(path, "rb") as stream:
        raw = stream.read()
    _print(MessageAnalyser(_classifier(ctx)).analyse(raw).as_dict())


@click.command("accuracy", short_help="Accuracy on a labelled bounce corpus.")
@click.argument("directory", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--mistakes", is_flag=True, help="List every misclassified item.")
@click.pass_context
def accuracy(ctx: click.Context, directory: str | None, as_json: bool, mistakes: bool) -> None:
    """Per-category precision and recall, category, kind, recipient and status accuracy on
    DIRECTORY (default: the corpus in tests/data/bounces)."""
    from pathlib import Path

    from bounce.accuracy import DEFAULT_CORPUS, evaluate, format_report

    report = evaluate(Path(directory) if directory else DEFAULT_CORPUS, _classifier(ctx))
    if as_json:
        _print(report.figures())
    else:
        click.echo(format_report(report, mistakes))


COMMANDS: list[click.Command] = [classify_reply, classify, accuracy]
