"""Typed, frozen configuration for every service, from one TOML file plus the environment.

Sources, later ones winning:

1. defaults that work on one machine (everything on loopback, data under ``./petrel-data``);
2. the TOML file named by ``--config`` or ``PETREL_CONFIG``;
3. environment variables ``PETREL_<SECTION>__<FIELD>`` (``PETREL_SPOOL__BACKEND=memory``) and
   ``PETREL_<FIELD>`` for top-level fields (``PETREL_DATA_DIR``). List values are JSON
   (``["127.0.0.0/8"]``) or comma-separated; tables are JSON.

Validation happens once, at start; an error names the bad field (``spool.backend: ...``).
Only ``load_config`` reads the environment; everything below ``main()`` receives a ``Config``.
Durations accept seconds or strings like ``"20m"`` (see ``petrel.durations``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from petrel.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
ENV_PREFIX = "PETREL_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


HostPort = Annotated[str, BeforeValidator(lambda v: _check_hostport(str(v)))]
OptionalHostPort = Annotated[str, BeforeValidator(lambda v: _check_hostport(str(v)) if v else "")]


class SpoolConfig(_Section):
    listen: HostPort = "127.0.0.1:7701"
    address: HostPort = "127.0.0.1:7701"
    backend: Literal["rocksdb", "memory"] = "rocksdb"
    # Directory of the RocksDB database; "" = <data_dir>/spool.
    path: str = ""
    # Group commit: writes arriving within this window share one synced write batch.
    group_commit_max_batch: int = Field(default=1024, ge=1)
    group_commit_max_delay: Duration = 0.0
    # New messages are refused (RESOURCE_EXHAUSTED, SMTP 452 4.3.1) while the spool's
    # filesystem has less free space than this; updates and removals still go through, so
    # deliveries keep freeing space.
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    metrics_listen: str = ""


class SchedulerConfig(_Section):
    listen: HostPort = "127.0.0.1:7702"
    address: HostPort = "127.0.0.1:7702"
    retry_interval: Duration = 1200.0
    max_retry_interval: Duration = 4 * 3600.0
    # Fraction of the backoff added or removed at random so retries do not stampede.
    retry_jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    max_age: Duration = 7 * 86400.0
    # Concurrent deliveries in flight per destination site (KumoMTA's connection_limit),
    # counted across all egress processes: replicas share it, so raise it to let more egress
    # processes serve one hot site.
    connection_limit: int = Field(default=32, ge=1)
    # Safety net: how often the spool is re-read for messages the scheduler does not know.
    reconcile_interval: Duration = 300.0
    # How long a dispatched task may stay unanswered before it is put back (worker lost).
    task_timeout: Duration = 600.0
    metrics_listen: str = ""


class IngressConfig(_Section):
    smtp_listen: HostPort = "127.0.0.1:2525"
    grpc_listen: HostPort = "127.0.0.1:7703"
    address: HostPort = "127.0.0.1:7703"
    # Bind the SMTP and inject listeners with SO_REUSEPORT, so several ingress processes on
    # one host share the ports and the kernel spreads connections over them (``petrel up
    # --ingress-replicas``). Connection limits then apply per process.
    reuse_port: bool = False
    hostname: str = "petrel.localhost"
    relay_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # SASL users allowed to relay from anywhere: {"name": "password"}.
    auth_users: dict[str, str] = Field(default_factory=dict)
    auth_require_tls: bool = True
    tls_certificate: str = ""
    tls_private_key: str = ""
    max_message_size: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=1000, ge=1)
    # Deadline for the spool's durable acknowledgement before answering 451 4.3.0.
    spool_deadline: Duration = 10.0
    enqueue_deadline: Duration = 5.0
    metrics_listen: str = ""
    # SMTP hardening (docs/hardening.md). Sessions at once, in total and from one address
    # (peers in relay_networks count towards the total only); over either: 421 4.7.0.
    max_connections: int = Field(default=500, ge=1)
    max_connections_per_ip: int = Field(default=50, ge=1)
    # Replies >= 400 and junk commands (NOOP, RSET, VRFY, EXPN, HELP) a session may collect
    # before it is closed with 421 4.7.0; both counts restart after an accepted message.
    max_errors: int = Field(default=10, ge=1)
    max_junk_commands: int = Field(default=20, ge=1)
    # A command line must arrive whole within command_timeout; during DATA each octet adds
    # 1/min_data_rate seconds (bytes per second) of credit, capped at command_timeout.
    command_timeout: Duration = 60.0
    min_data_rate: int = Field(default=500, ge=1)
    # Pause before the greeting for peers outside relay_networks; a client that talks
    # before the greeting gets 554 5.5.0 and is disconnected.
    greeting_pause: Duration = 0.5
    # Octets, CRLF included: command lines (RFC 5321: 512; MAIL gets +50 for parameters)
    # and text lines of DATA (RFC 5321: 1000).
    max_command_line: int = Field(default=512, ge=64)
    max_line_length: int = Field(default=1000, ge=78)
    # Suppression list checks at reception (docs/bounces.md): answers are cached this long
    # (at most suppression_cache_size of them); a check that gets no answer within
    # suppression_deadline lets the recipient through (fail open).
    suppression_check: bool = True
    suppression_cache_ttl: Duration = 5.0
    suppression_cache_size: int = Field(default=100_000, ge=0)
    suppression_deadline: Duration = 1.0

    @field_validator("relay_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


class RoutingConfig(_Section):
    """How a recipient domain becomes a destination site and a list of hosts (shared by the
    scheduler, which shapes per site, and egress, which connects)."""

    # Route all mail to HOST:PORT (Postfix's relayhost); "" = use MX records.
    smarthost: str = ""
    # Per-domain routes {"example.com": "HOST:PORT"}, checked before the smarthost.
    routes: dict[str, str] = Field(default_factory=dict)
    # Port used for hosts found through MX/A/AAAA records.
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # Resolver overrides; empty = /etc/resolv.conf.
    dns_nameservers: tuple[str, ...] = ()
    dns_port: int = Field(default=53, ge=1, le=65535)
    dns_timeout: Duration = 5.0
    # Upper bound on how long a DNS answer is cached, whatever its TTL.
    dns_max_cache_ttl: Duration = 300.0


class EgressConfig(_Section):
    worker_id: str = ""
    # HOST:PORT of a gRPC server carrying only the health service, for container probes;
    # "" = none (egress serves no RPCs).
    listen: OptionalHostPort = ""
    # Tasks held at once by this worker (the credit it grants the scheduler).
    max_inflight: int = Field(default=256, ge=1)
    ehlo_name: str = "petrel.localhost"
    tls: Literal["opportunistic", "required", "disabled"] = "opportunistic"
    tls_verify: bool = False
    connect_timeout: Duration = 30.0
    command_timeout: Duration = 60.0
    data_timeout: Duration = 120.0
    idle_timeout: Duration = 30.0
    max_deliveries_per_connection: int = Field(default=100, ge=1)
    # Send MAIL, every RCPT and DATA in one write to servers that offer PIPELINING (RFC 2920):
    # one round trip before the content instead of two plus one per recipient. Off sends
    # each command after the previous reply, for a destination that mishandles pipelining.
    pipelining: bool = True
    metrics_listen: str = ""


class BounceConfig(_Section):
    listen: HostPort = "127.0.0.1:7704"
    address: HostPort = "127.0.0.1:7704"
    # Extra KumoMTA-format rule files, consulted before the built-in rules.
    rules_files: tuple[str, ...] = ()
    metrics_listen: str = ""
    # Correlation (docs/bounces.md). Mail to any address at `domain`, or to one of
    # `feedback_addresses`, is an inbound report: ingress accepts it from anyone, classifies it
    # and logs OOB / Feedback events instead of queueing it. With `domain` set and `verp` on,
    # egress sends MAIL FROM:<sender-local+ID=sender-domain@domain>.
    domain: str = ""
    feedback_addresses: tuple[str, ...] = ()
    verp: bool = True
    # Header egress adds to every message (our id, tenant and campaign); "" = none.
    ref_header: str = Field(default="X-Petrel-Ref", pattern=r"^([A-Za-z0-9-]{1,64})?$")
    # Key that signs the header (HMAC-SHA256); a report whose header is unsigned or signed
    # with another key is not tied to a message. "" = unsigned.
    ref_secret: SecretStr = SecretStr("")
    # Suppression list: this instance keeps it (RocksDB under suppression_path, default
    # <data_dir>/suppression) and serves SuppressionService; clients call
    # suppression_address ("" = address).
    suppression: bool = True
    suppression_path: str = ""
    suppression_address: OptionalHostPort = ""
    # What adds entries by itself: permanent failures (synchronous or OOB) of these
    # categories, and complaints; automatic entries expire after suppression_expiry (0 = never).
    suppress_bounces: bool = True
    suppress_categories: tuple[str, ...] = ("InvalidRecipient", "InactiveMailbox", "BadDomain")
    suppress_complaints: bool = True
    suppression_expiry: Duration = 0.0

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if value and ("@" in value or not all(value.split("."))):
            raise ValueError(f"expected a domain name, got {value!r}")
        return value

    @property
    def suppression_target(self) -> str:
        return self.suppression_address or self.address


API_KEY_HASH_PREFIX = "sha256:"
MIN_API_KEY_LENGTH = 16


def hash_api_key(key: str) -> str:
    """The form an API key is kept in: ``sha256:<64 hex digits>``."""
    return API_KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _is_key_hash(key: str) -> bool:
    digest = key.removeprefix(API_KEY_HASH_PREFIX)
    return (key.startswith(API_KEY_HASH_PREFIX) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest))


class ApiKeyConfig(_Section):
    """The rights of one REST API key (docs/security.md): one tenant's, or admin."""

    tenant: str = Field(default="", max_length=200)
    admin: bool = False
    # Shown in logs instead of the key; "" = the first 12 hex digits of its hash.
    name: str = Field(default="", max_length=64)
    # Overrides of gateway.rate_limit / rate_burst for this key.
    rate_limit: float | None = Field(default=None, ge=0)
    rate_burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_scope(self) -> ApiKeyConfig:
        if bool(self.tenant) == self.admin:
            raise ValueError("a key has either tenant = \"NAME\" or admin = true")
        return self


class GatewayConfig(_Section):
    http_listen: HostPort = "127.0.0.1:8025"
    request_body_limit: int = Field(default=20 * 1024 * 1024, ge=1024)
    request_deadline: Duration = 15.0
    # {"<key>" or "sha256:<hex of the key's SHA-256>": {tenant = "acme"} or {admin = true}}.
    # Plain keys are hashed when the configuration loads: only hashes are kept. Empty = the
    # REST API needs no key (the loopback default); otherwise every /api/ route does.
    api_keys: dict[str, ApiKeyConfig] = Field(default_factory=dict)
    # Requests per second per key (token bucket; 0 = unlimited) and the burst allowed.
    rate_limit: float = Field(default=50.0, ge=0)
    rate_burst: int = Field(default=100, ge=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_keys(cls, value: Any) -> Any:
        # Before anything else so that no error message (they name dict keys) shows a key.
        if not isinstance(value, Mapping):
            return value
        hashed: dict[str, Any] = {}
        for key, rights in value.items():
            key = str(key)
            if not _is_key_hash(key):
                if len(key) < MIN_API_KEY_LENGTH:
                    raise ValueError(f"every key needs at least {MIN_API_KEY_LENGTH} "
                                     "characters (or give its sha256: hash)")
                key = hash_api_key(key)
            if key in hashed:
                raise ValueError("a key is listed twice")
            hashed[key] = rights
        return hashed


class WebhookConfig(_Section):
    """One ``[[events.webhooks]]`` entry: where and which records to POST (docs/events.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    # HMAC-SHA256 key for the X-Petrel-Signature header; "" = unsigned.
    secret: str = ""
    # Record types to send (empty = all) and tenants to send ("" = records without a tenant).
    record_types: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # A partial batch is sent once its oldest record has waited this long.
    max_batch_latency: Duration = 1.0
    timeout: Duration = 10.0
    retry_initial: Duration = 1.0
    retry_max: Duration = 60.0
    # Where a webhook without a cursor starts: the oldest retained record or the log's end.
    start_at: Literal["oldest", "newest"] = "oldest"

    @field_validator("record_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from petrel.events import RECORD_TYPES

        unknown = sorted(set(value) - set(RECORD_TYPES))
        if unknown:
            raise ValueError(f"unknown record types {unknown}; known: {list(RECORD_TYPES)}")
        return value


class EventsConfig(_Section):
    # Directory of the event log segments; "" = <data_dir>/events.
    dir: str = ""
    # Names this process's log files <service>.<instance_id>.<start_ms>.jsonl so replicas
    # sharing the directory never share a file; "" = the host name.
    instance_id: str = ""
    # A log starts a new segment before a write would pass this size or once its segment is
    # this old (0 = never). Records are never split across segments.
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    max_file_age: Duration = 3600.0
    # Closed segments older than this are deleted once every webhook has shipped them
    # (0 = keep forever).
    retention: Duration = 0.0
    webhooks: tuple[WebhookConfig, ...] = ()
    # The process that ships webhooks: the scheduler (default), or none (files only).
    webhook_host: Literal["scheduler", "none"] = "scheduler"
    # How often the shipper looks for new records.
    webhook_poll_interval: Duration = 0.25

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: tuple[WebhookConfig, ...]) -> tuple[WebhookConfig, ...]:
        names = [w.name for w in value]
        if len(names) != len(set(names)):
            raise ValueError(f"webhook names must be unique: {names}")
        return value


class SecurityConfig(_Section):
    """How services authenticate each other on gRPC (petrel.grpc_auth, docs/security.md)."""

    grpc_auth: Literal["none", "token", "mtls"] = "none"
    # token mode: the shared secret (at least 16 characters), inline or as the first line of
    # token_file (which wins).
    token: SecretStr = SecretStr("")
    token_file: str = ""
    # mtls mode: the directory `petrel certs` wrote (ca.crt, <service>.crt, <service>.key);
    # ca_file, cert_file and key_file win over it.
    certs_dir: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # token mode: the gRPC health service answers without the token (orchestrator probes).
    open_health: bool = True

    @model_validator(mode="after")
    def _complete(self) -> SecurityConfig:
        if (self.grpc_auth == "token" and not self.token_file
                and len(self.token.get_secret_value()) < 16):
            raise ValueError("token mode needs token (16 characters or more) or token_file")
        if self.grpc_auth == "mtls" and not self.certs_dir and not (
                self.ca_file and self.cert_file and self.key_file):
            raise ValueError("mtls mode needs certs_dir, or ca_file, cert_file and key_file")
        return self


class Config(_Section):
    data_dir: str = "./petrel-data"
    log_level: str = "INFO"
    # "uvloop" (libuv: 8 % less CPU per message than the standard library's loop, measured
    # side by side in BENCHMARKS.md) or "asyncio".
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Crash points armed for fault-injection tests (see petrel.faults); empty in production.
    fault_points: tuple[str, ...] = ()
    spool: SpoolConfig = SpoolConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    ingress: IngressConfig = IngressConfig()
    egress: EgressConfig = EgressConfig()
    routing: RoutingConfig = RoutingConfig()
    bounce: BounceConfig = BounceConfig()
    gateway: GatewayConfig = GatewayConfig()
    events: EventsConfig = EventsConfig()
    security: SecurityConfig = SecurityConfig()

    @property
    def spool_path(self) -> Path:
        return Path(self.spool.path or Path(self.data_dir) / "spool")

    @property
    def events_dir(self) -> Path:
        return Path(self.events.dir or Path(self.data_dir) / "events")

    @property
    def suppression_path(self) -> Path:
        return Path(self.bounce.suppression_path or Path(self.data_dir) / "suppression")


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in ("[", "{"):
        return json.loads(text)
    return raw


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    sections = {name for name, field in Config.model_fields.items()
                if isinstance(field.default, BaseModel)}
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == "PETREL_CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        section, sep, field = name.partition("__")
        value = _env_value(raw)
        if sep and section in sections:
            if isinstance(value, str) and field in _list_fields(section):
                value = [v.strip() for v in value.split(",") if v.strip()]
            out.setdefault(section, {})[field] = value
        elif not sep and name in Config.model_fields and name not in sections:
            if isinstance(value, str) and "tuple" in str(Config.model_fields[name].annotation):
                value = [v.strip() for v in value.split(",") if v.strip()]
            out[name] = value
    return out


def _list_fields(section: str) -> set[str]:
    model = Config.model_fields[section].annotation
    assert isinstance(model, type)
    return {n for n, f in model.model_fields.items() if "tuple" in str(f.annotation)}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the validated configuration. ``overrides`` (nested dict) win over everything."""
    env = os.environ if env is None else env
    path = path or env.get("PETREL_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, dict(overrides))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def split_hostport(value: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` → ``(host, port)``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
