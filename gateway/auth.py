"""REST API keys: who may call what, for which tenant, how often (ASGI middleware).

With no ``gateway.api_keys`` configured the API is open: the default listener is loopback
only. Once keys are configured:

* every path except ``OPEN_PATHS`` (health, liveness, ``/metrics``, the OpenAPI document and
  its UI) needs ``Authorization: Bearer <key>``; without one the answer is ``401`` with
  ``WWW-Authenticate: Bearer`` (``error="invalid_token"`` when the key is unknown). Unknown
  paths are refused the same way, so nothing about the API leaks to a caller without a key;
* an admin key may call everything; a tenant key only ``TENANT_PATHS`` (``403`` elsewhere),
  and the routes hold it to its tenant (``principal_of``): an injection is made for the key's
  tenant (naming another one is ``403``), a message of another tenant cannot be inspected
  (``403``), only the tenant's own suppression list can be read or changed (``403``);
* each key has a token bucket (``rate_limit`` requests per second, ``rate_burst`` at once,
  per key or from ``[gateway]``): over it, ``429`` with ``Retry-After``.

Refusals happen before the body is read. Keys are compared as their SHA-256 (the config keeps
only hashes, see ``petrel.config.hash_api_key``): a lookup's timing says nothing about the
key. Logs name a key by its ``name`` (default: the start of its hash), never by the key.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response
from gateway.limits import _drain as drain_body
from petrel.config import ApiKeyConfig, GatewayConfig, hash_api_key, split_hostport

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/api/check-liveness/v1", "/metrics", "/api-docs",
                        "/api-docs/openapi.json", "/api-docs/oauth2-redirect"})
TENANT_PATHS = frozenset({"/api/inject/v1", "/api/admin/inspect-message/v1",
                          "/api/suppression/v1"})
REALM = 'Bearer realm="petrel"'


@dataclass(frozen=True)
class Principal:
    """The caller: ``admin``, or the ``tenant`` a key is limited to."""

    name: str
    admin: bool
    tenant: str = ""


# The caller when no key is configured: the open API acts as admin.
OPEN_API = Principal("open", admin=True)


def principal_of(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else OPEN_API


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take`` returns 0 when a token was taken,
    else the seconds until one will be there. ``rate`` 0 = unlimited."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class _Key:
    principal: Principal
    bucket: TokenBucket


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, config: GatewayConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        now = clock()
        self.keys: dict[str, _Key] = {}
        for digest, rights in config.api_keys.items():
            self.keys[digest] = _Key(_principal(digest, rights), TokenBucket(
                config.rate_limit if rights.rate_limit is None else rights.rate_limit,
                config.rate_burst if rights.rate_burst is None else rights.rate_burst, now))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        client = (scope.get("client") or ("-",))[0]
        presented = _bearer(scope)
        key = self.keys.get(hash_api_key(presented)) if presented else None
        if key is None:
            log.info("401 %s from %s: %s API key", path, client,
                     "unknown" if presented else "no")
            challenge = f'{REALM}, error="invalid_token"' if presented else REALM
            await _refuse(scope, receive, send, 401,
                          "invalid API key" if presented
                          else "an API key is required: Authorization: Bearer <key>",
                          {"www-authenticate": challenge})
            return
        principal = key.principal
        if not principal.admin and path not in TENANT_PATHS:
            log.info("403 %s from %s: tenant key %s", path, client, principal.name)
            await _refuse(scope, receive, send, 403,
                          f"this key acts for tenant {principal.tenant!r} and may only use "
                          f"{', '.join(sorted(TENANT_PATHS))}")
            return
        wait = key.bucket.take(self.clock())
        if wait > 0:
            log.info("429 %s from %s: key %s over its rate limit", path, client, principal.name)
            await _refuse(scope, receive, send, 429,
                          f"rate limit of {key.bucket.rate:g} requests/s for this key exceeded",
                          {"retry-after": str(max(1, math.ceil(wait)))})
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _principal(digest: str, rights: ApiKeyConfig) -> Principal:
    name = rights.name or digest.removeprefix("sha256:")[:12]
    return Principal(name, admin=rights.admin, tenant=rights.tenant)


def _bearer(scope: Scope) -> str:
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else ""
    return ""


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, error: str,
                  headers: dict[str, str] | None = None) -> None:
    response = error_response(status, error)
    response.headers.update(headers or {})
    if _has_body(scope):
        # The body stays unread: read a bounded part so the client sees this answer rather
        # than a reset, and do not keep the connection.
        await drain_body(receive)
        response.headers["connection"] = "close"
    await response(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    """True when the client is sending a body (one waiting for ``100 Continue`` is not)."""
    headers = dict(scope.get("headers") or ())
    if b"expect" in headers:
        return False
    return (headers.get(b"content-length", b"").strip() not in (b"", b"0")
            or b"transfer-encoding" in headers)


def warn_if_exposed(config: GatewayConfig) -> None:
    """Log a warning when the REST API listens beyond loopback without API keys."""
    host, _ = split_hostport(config.http_listen)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not config.api_keys:
        log.warning("the REST API listens on %s without API keys: anyone who reaches it may "
                    "inject and inspect mail (set gateway.api_keys)", config.http_listen)
