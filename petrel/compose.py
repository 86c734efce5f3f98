"""Read a docker compose file into the facts ``petrel topology`` needs, without Docker.

``load_compose(path, environ)`` parses the YAML (anchors and ``<<`` merges included), applies
compose's variable interpolation (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?message}``, ``${VAR?message}``, ``$$``) from ``environ`` and returns one
``ComposeService`` per service: command, environment, volumes, ports, ``depends_on`` and the
health check, each normalised from compose's short and long syntaxes. Only what the topology
runner uses is read; ``docker-compose config`` remains the validator of the file itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from petrel.durations import parse_duration


class ComposeError(ValueError):
    """The compose file cannot be read or uses something the topology runner cannot mirror."""


@dataclass(frozen=True)
class Mount:
    """``source`` is a named volume (``named``) or a host path resolved against the compose
    file's directory; ``target`` is the absolute path inside the container."""

    source: str
    target: str
    named: bool
    read_only: bool = False


@dataclass(frozen=True)
class HealthCheck:
    """``test`` is an argv (``CMD``) or ``["sh", "-c", ...]`` (``CMD-SHELL``)."""

    test: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class ComposeService:
    name: str
    command: tuple[str, ...]
    environment: dict[str, str]
    mounts: tuple[Mount, ...] = ()
    # Container ports the service exposes or publishes; published ones map to host ports.
    container_ports: tuple[int, ...] = ()
    published: dict[int, int] = field(default_factory=dict)
    depends_on: dict[str, str] = field(default_factory=dict)
    healthcheck: HealthCheck | None = None
    container_name: str = ""


_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?",
                     re.DOTALL)


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's variable substitution for one string."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        if match.group("named"):
            return environ.get(match.group("named"), "")
        braced = _BRACED.fullmatch(match.group("braced"))
        if braced is None:
            raise ComposeError(f"invalid interpolation {match.group(0)!r}")
        name, op, arg = braced.group("name", "op", "arg")
        current = environ.get(name)
        unset_or_empty = not current
        if op == ":-":
            return arg if unset_or_empty else str(current)
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (unset_or_empty if op == ":?" else current is None):
            raise ComposeError(f"required variable {name} is missing: {arg}")
        return current or ""

    return _VAR.sub(substitute, value)


def _interpolate_tree(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [_interpolate_tree(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, environ) for key, value in node.items()}
    return node


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _environment(raw: Any, name: str, environ: Mapping[str, str]) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        # A key without a value takes the caller's value, as compose does.
        return {str(k): (environ.get(str(k), "") if v is None else _scalar(v))
                for k, v in raw.items()}
    if isinstance(raw, list):
        env: dict[str, str] = {}
        for item in raw:
            key, sep, value = str(item).partition("=")
            env[key] = value if sep else environ.get(key, "")
        return env
    raise ComposeError(f"services.{name}.environment: expected a mapping or a list")


def _command(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return tuple(shlex.split(raw))
    return tuple(_scalar(part) for part in raw)


def _mounts(raw: Any, name: str, base: Path) -> tuple[Mount, ...]:
    mounts = []
    for item in raw or ():
        if isinstance(item, dict):
            kind = item.get("type", "volume")
            source, target = str(item.get("source", "")), str(item.get("target", ""))
            read_only = bool(item.get("read_only", False))
            named = kind == "volume"
            if kind not in ("volume", "bind"):
                continue
        else:
            parts = str(item).split(":")
            if len(parts) == 1:
                continue  # anonymous volume: nothing to share or keep
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            named = not source.startswith((".", "/", "~"))
        if not target.startswith("/"):
            raise ComposeError(f"services.{name}.volumes: target {target!r} is not absolute")
        if not named:
            source = str((base / Path(source).expanduser()).resolve())
        mounts.append(Mount(source, target, named, read_only))
    return tuple(mounts)


def _container_port(spec: str) -> int:
    return int(spec.split("/")[0].split("-")[0])


def _ports(raw_ports: Any, raw_expose: Any, name: str) -> tuple[tuple[int, ...], dict[int, int]]:
    container: list[int] = []
    published: dict[int, int] = {}
    for item in raw_expose or ():
        container.append(_container_port(str(item)))
    for item in raw_ports or ():
        if isinstance(item, dict):
            target = int(item["target"])
            if item.get("published"):
                published[target] = int(str(item["published"]).split("-")[0])
        else:
            parts = str(item).rsplit(":", 2)
            target = _container_port(parts[-1])
            if len(parts) > 1 and parts[-2] and "-" not in parts[-2]:
                published[target] = int(parts[-2])
        container.append(target)
    return tuple(dict.fromkeys(container)), published


def _depends_on(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {str(name): "service_started" for name in raw}
    return {str(name): str((spec or {}).get("condition", "service_started"))
            for name, spec in raw.items()}


def _healthcheck(raw: Any, name: str) -> HealthCheck | None:
    if not raw or raw.get("disable"):
        return None
    test = raw.get("test")
    if isinstance(test, str):
        argv: tuple[str, ...] = ("sh", "-c", test)
    elif not test or test[0] == "NONE":
        return None
    elif test[0] == "CMD":
        argv = tuple(_scalar(part) for part in test[1:])
    elif test[0] == "CMD-SHELL":
        argv = ("sh", "-c", " ".join(_scalar(part) for part in test[1:]))
    else:
        raise ComposeError(f"services.{name}.healthcheck.test: unknown form {test[0]!r}")

    def seconds(key: str, default: float) -> float:
        return parse_duration(str(raw[key])) if key in raw else default

    return HealthCheck(argv, seconds("interval", 30.0), seconds("timeout", 30.0),
                       int(raw.get("retries", 3)), seconds("start_period", 0.0))


def load_compose(path: str | Path, environ: Mapping[str, str]) -> dict[str, ComposeService]:
    """The services of the compose file at ``path``, in file order."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ComposeError(f"{path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeError(f"{path}: no services")
    document = _interpolate_tree(document, environ)
    base = path.resolve().parent
    services: dict[str, ComposeService] = {}
    for name, spec in document["services"].items():
        spec = spec or {}
        container_ports, published = _ports(spec.get("ports"), spec.get("expose"), name)
        services[name] = ComposeService(
            name=name,
            command=_command(spec.get("command")),
            environment=_environment(spec.get("environment"), name, environ),
            mounts=_mounts(spec.get("volumes"), name, base),
            container_ports=container_ports,
            published=published,
            depends_on=_depends_on(spec.get("depends_on")),
            healthcheck=_healthcheck(spec.get("healthcheck"), name),
            container_name=str(spec.get("container_name", "")),
        )
    return services
