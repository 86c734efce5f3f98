"""Configuration: defaults, TOML, environment overrides and errors that name the field."""

from pathlib import Path

import pytest

from petrel.config import ConfigError, load_config
from petrel.durations import parse_duration


def test_defaults_work_on_one_machine() -> None:
    config = load_config(env={})
    assert config.spool.backend == "rocksdb"
    assert config.ingress.smtp_listen.startswith("127.0.0.1:")
    assert config.spool_path == Path("./petrel-data") / "spool"
    assert config.routing.smtp_port == 25


def test_toml_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "petrel.toml"
    path.write_text('data_dir = "/srv/petrel"\n[scheduler]\nretry_interval = "10m"\n'
                    '[routing]\nroutes = { "a.test" = "127.0.0.1:2526" }\n')
    config = load_config(path, env={"PETREL_SCHEDULER__MAX_AGE": "2d",
                                    "PETREL_INGRESS__RELAY_NETWORKS": "10.0.0.0/8, 127.0.0.1/32"})
    assert config.data_dir == "/srv/petrel"
    assert config.scheduler.retry_interval == 600
    assert config.scheduler.max_age == 2 * 86400
    assert config.routing.routes == {"a.test": "127.0.0.1:2526"}
    assert config.ingress.relay_networks == ("10.0.0.0/8", "127.0.0.1/32")
    assert load_config(path, env={}, overrides={"data_dir": "x"}).data_dir == "x"


@pytest.mark.parametrize(("env", "field"), [
    ({"PETREL_SPOOL__BACKEND": "floppy"}, "spool.backend"),
    ({"PETREL_SCHEDULER__RETRY_INTERVAL": "soon"}, "scheduler.retry_interval"),
    ({"PETREL_INGRESS__SMTP_LISTEN": "nowhere"}, "ingress.smtp_listen"),
    ({"PETREL_INGRESS__RELAY_NETWORKS": "not-a-net"}, "ingress.relay_networks"),
])
def test_errors_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(env=env)


def test_unknown_field_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[spool]\nbakend = 'memory'\n")
    with pytest.raises(ConfigError, match=r"spool\.bakend"):
        load_config(path, env={})


@pytest.mark.parametrize(("text", "seconds"), [
    ("20m", 1200), ("1h30m", 5400), ("7d", 604800), ("90", 90), (2.5, 2.5),
    ("5 minutes", 300), ("250ms", 0.25), ("1 hour", 3600),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-1", "1h-3m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
