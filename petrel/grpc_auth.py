"""How Petrel services authenticate each other on gRPC: ``none``, a shared ``token`` or ``mtls``.

``GrpcSecurity`` is the resolved setting of one process (secrets and certificates read from
their files once, at start). ``petrel.rpc.create_server`` and ``create_channel`` apply it to
every server and channel, so no service has code of its own for it:

* ``none``: plaintext, no authentication (the loopback default).
* ``token``: every client sends ``authorization: Bearer <token>`` metadata on every call
  (client interceptors); servers compare it in constant time and answer ``UNAUTHENTICATED``
  otherwise. The standard health service stays open (``open_health``) so orchestrators can
  probe without the secret; reflection and every Petrel RPC need the token. The token crosses
  the network in clear: use it on a trusted network, or use ``mtls``.
* ``mtls``: TLS both ways. Servers present their certificate and accept only clients whose
  certificate is signed by the Petrel CA; clients verify the server's certificate against the
  same CA (the address's host must be one of its names). Everything on the port, health
  included, needs a certificate. Any certificate of the CA is accepted: the CA is the trust
  boundary (``petrel certs`` makes one per deployment).

``configure(security)`` sets the process-wide setting (``petrel.cli`` calls it with the
service's name as the certificate identity before the service starts); ``current()`` reads it.
Secrets never appear in ``repr`` or in log lines.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

from petrel.config import ConfigError, SecurityConfig

log = logging.getLogger(__name__)

AUTH_METADATA = "authorization"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Certificate identity of command-line tools (healthcheck, operators' clients).
TOOL_IDENTITY = "client"

Mode = Literal["none", "token", "mtls"]


@dataclass(frozen=True)
class GrpcSecurity:
    mode: Mode = "none"
    token: bytes = field(default=b"", repr=False)
    ca: bytes = field(default=b"", repr=False)
    cert: bytes = field(default=b"", repr=False)
    key: bytes = field(default=b"", repr=False)
    open_health: bool = True

    @classmethod
    def from_config(cls, config: SecurityConfig, identity: str = TOOL_IDENTITY) -> GrpcSecurity:
        """Read the files ``config`` names; ``identity`` picks ``<certs_dir>/<identity>.crt``
        and ``.key`` unless ``cert_file``/``key_file`` are set. Raises ``ConfigError``."""
        if config.grpc_auth == "token":
            token = config.token.get_secret_value()
            if config.token_file:
                lines = _read(config.token_file, "security.token_file").decode().splitlines()
                token = lines[0].strip() if lines else ""
            if len(token) < 16:
                raise ConfigError("security: the token must have at least 16 characters")
            return cls("token", token=token.encode(), open_health=config.open_health)
        if config.grpc_auth == "mtls":
            certs = Path(config.certs_dir) if config.certs_dir else None

            def pick(explicit: str, name: str, option: str) -> bytes:
                if explicit:
                    return _read(explicit, f"security.{option}")
                if certs is None:
                    raise ConfigError(f"security.{option}: required in mtls mode "
                                      "(or set security.certs_dir)")
                return _read(str(certs / name), "security.certs_dir")

            return cls("mtls", ca=pick(config.ca_file, "ca.crt", "ca_file"),
                       cert=pick(config.cert_file, f"{identity}.crt", "cert_file"),
                       key=pick(config.key_file, f"{identity}.key", "key_file"),
                       open_health=False)
        return cls()

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.mode != "mtls":
            return None
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.mode != "mtls":
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if self.mode != "token":
            return []
        return [TokenCheck(self.token, open_health=self.open_health)]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        if self.mode != "token":
            return []
        return bearer_interceptors(self.token)

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for a call made without ``create_channel`` (a synchronous probe)."""
        if self.mode != "token":
            return ()
        return ((AUTH_METADATA, f"Bearer {self.token.decode()}"),)


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from exc


_current = GrpcSecurity()


def configure(security: GrpcSecurity) -> None:
    """Set the security every later ``create_server``/``create_channel`` of this process uses."""
    global _current
    _current = security
    log.debug("gRPC security: %s", security.mode)


def current() -> GrpcSecurity:
    return _current


class TokenCheck(grpc.aio.ServerInterceptor):
    """Server side of ``token`` mode: calls without the right bearer token are refused with
    ``UNAUTHENTICATED`` before their request is even decoded."""

    def __init__(self, token: bytes, open_health: bool = True) -> None:
        self._expected = b"Bearer " + token
        self._open_health = open_health

    def authorized(self, metadata: Any) -> bool:
        presented = b""
        for key, value in metadata or ():
            if key == AUTH_METADATA:
                presented = value.encode() if isinstance(value, str) else bytes(value)
                break
        return hmac.compare_digest(presented, self._expected)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if ((self._open_health and method.startswith(HEALTH_PREFIX))
                or self.authorized(handler_call_details.invocation_metadata)):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return None if handler is None else _refusing(handler, method)


def _refusing(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        log.warning("refused %s from %s: missing or wrong token", method, context.peer())
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token")

    # No request deserializer: a refused request stays bytes and is never decoded.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _with_token(details: grpc.aio.ClientCallDetails, value: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    metadata[AUTH_METADATA] = value
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class _BearerUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, value: str) -> None:
        self.value = value

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self.value), request)


class _BearerUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, value: str) -> None:
        self.value = value

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                                     request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self.value), request)


class _BearerStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, value: str) -> None:
        self.value = value

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self.value),
                                  request_iterator)


class _BearerStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, value: str) -> None:
        self.value = value

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self.value),
                                  request_iterator)


def bearer_interceptors(token: bytes) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors adding ``authorization: Bearer <token>`` to every kind of call
    (grpc.aio files an interceptor under one kind only, hence four)."""
    value = f"Bearer {token.decode()}"
    return [_BearerUnaryUnary(value), _BearerUnaryStream(value), _BearerStreamUnary(value),
            _BearerStreamStream(value)]
