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
