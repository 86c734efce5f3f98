"""The gateway's request spans come from FastAPI's native OpenTelemetry support.

FastAPI (0.165+) traces every request once a tracer provider is installed (``petrel.runtime``
does that): a SERVER span named ``<METHOD> <route>`` that continues the caller's
``traceparent``, with child spans for dependencies, the endpoint and serialization. The span
is the active context while the route runs, so the injection it makes carries it on to
ingress. ``TELEMETRY`` is the gateway's setting for it: probes and ``/metrics`` are not traced.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/api/check-liveness/v1"})


def untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path", "") in UNTRACED_PATHS


TELEMETRY: TelemetryConfig = {"exclude": untraced}
