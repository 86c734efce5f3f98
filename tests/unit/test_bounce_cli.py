"""petrel bounce CLI: the offline commands print one JSON object and need no service."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from petrel.cli import cli


def _run(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["bounce", *args], env=env or {"PETREL_CONFIG": ""})
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_classify_reply() -> None:
    assert _run("classify-reply", "550 5.1.1 No such user") == {
        "category": "InvalidRecipient", "status": "5.1.1", "code": 550}
    assert _run("classify-reply", "452 4.2.2 Mailbox full")["category"] == "QuotaIssues"
    unknown = _run("classify-reply", "hello there")
    assert unknown == {"category": "Uncategorized", "status": None, "code": None}


def test_classify_reply_uses_configured_rules(tmp_path: Path) -> None:
    rules = tmp_path / "mine.toml"
    rules.write_text('[rules]\nOurOwn = ["hello"]\n')
    config = tmp_path / "petrel.toml"
    config.write_text(f'[bounce]\nrules_files = ["{rules}"]\n')
    assert _run("--config", str(config), "classify-reply", "550 hello")["category"] == "OurOwn"


KUMOMTA = Path(__file__).parents[1] / "data" / "bounces" / "kumomta"


def test_classify_message_file() -> None:
    out = _run("classify", str(KUMOMTA / "dsn_obsolete_arrival_date.eml"))
    assert out == {
        "category": "InvalidRecipient", "kind": "dsn",
        "recipients": [{"address": "user@example.com", "status": "5.1.1",
                        "category": "InvalidRecipient",
                        "diagnostic": "550 5.1.1 Mailbox does not exist"}],
        "recipient": "user@example.com", "status": "5.1.1"}


def test_classify_message_from_stdin() -> None:
    raw = (KUMOMTA / "arf_3.eml").read_bytes()
    result = CliRunner().invoke(cli, ["bounce", "classify", "-"], input=raw,
                                env={"PETREL_CONFIG": ""})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["kind"], out["category"], out["recipient"], out["status"]) == (
        "arf", "FeedbackReport", "user@example.com", None)


def test_accuracy_command_prints_the_figures() -> None:
    result = CliRunner().invoke(cli, ["bounce", "accuracy", "--json"],
                                env={"PETREL_CONFIG": ""})
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["category_accuracy"] >= 0.9
    assert figures["recipient_accuracy"] >= 0.97
