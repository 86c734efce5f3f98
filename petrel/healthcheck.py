"""One health probe, for container health checks and the topology runner.

``probe(target)`` asks ``HOST:PORT`` for the standard gRPC health status (``grpc.health.v1``,
service ``""`` = the whole server) or, for an ``http://`` URL, expects a 2xx answer (the
gateway's ``/healthz``). It returns ``(healthy, detail)`` and never raises for an unhealthy or
unreachable target, so ``petrel healthcheck`` can map it to the exit status docker expects
(0 healthy, 1 unhealthy).
"""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petrel import grpc_auth


def probe(target: str, timeout: float = 3.0, service: str = "",
          security: grpc_auth.GrpcSecurity | None = None) -> tuple[bool, str]:
    """``security`` (default: the process's ``grpc_auth.current()``) secures a gRPC probe."""
    if target.startswith(("http://", "https://")):
        return _probe_http(target, timeout)
    return _probe_grpc(target, timeout, service, security or grpc_auth.current())


def _probe_grpc(address: str, timeout: float, service: str,
                security: grpc_auth.GrpcSecurity) -> tuple[bool, str]:
    credentials = security.channel_credentials()
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                               metadata=security.call_metadata())
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _probe_http(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 200 <= reply.status < 300, f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))
