"""The FastAPI application: routes, error handling, body limits and metrics.

``create_app(config, backends)`` builds an app bound to gRPC stubs created in the running loop;
``app.state.draining = True`` makes the health endpoints answer 503 while the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import grpc
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

import petrel
from gateway import views
from gateway.auth import ApiKeyMiddleware, principal_of, warn_if_exposed
from gateway.clients import Backends
from gateway.compose import Composer, RequestProblem
from gateway.errors import ApiError, install_error_handlers
from gateway.inject import all_retryable, inject_all
from gateway.limits import BodyLimitMiddleware
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.models import (
    ErrorResponse,
    HealthResponse,
    InjectUnavailableResponse,
    InjectV1Request,
    InjectV1Response,
    InspectMessageResponse,
    QueueSummaryResponse,
)
from gateway.suppression import suppression_routes
from gateway.templating import TemplateSyntaxProblem
from gateway.tracecontext import valid_traceparent, valid_tracestate
from gateway.tracing import TELEMETRY
from petrel import telemetry
from petrel.config import Config
from petrel.ids import is_message_id
from petrel.v1 import scheduler_pb2, spool_pb2

log = logging.getLogger(__name__)

# Health and scheduler-state probes answer quickly or not at all: they must not hang a caller
# (an orchestrator's probe, an operator) for the full request deadline.
PROBE_DEADLINE = 2.0

# With API keys configured (docs/security.md).
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
    403: {"model": ErrorResponse, "description": "The key's tenant may not do this."},
    429: {"model": ErrorResponse, "description": "The key's rate limit; see Retry-After."},
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad JSON or a bad field (named in `field`)."},
    **_AUTH_ERRORS,
}

_DESCRIPTION = """\
REST front door of Petrel. `POST /api/inject/v1` is compatible with KumoMTA's HTTP injection
API. Every error is JSON `{"error": "...", "field": "..."}`.
"""


def grpc_error(service: str, exc: grpc.aio.AioRpcError) -> ApiError:
    """A failed backend call as an HTTP error."""
    code = exc.code()
    detail = f"{service}: {code.name}: {exc.details() or ''}".rstrip(": ")
    status = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
              grpc.StatusCode.UNAVAILABLE: 503,
              grpc.StatusCode.DEADLINE_EXCEEDED: 504}.get(code, 502)
    return ApiError(status, detail)


def create_app(config: Config, backends: Backends) -> FastAPI:
    deadline = config.gateway.request_deadline
    metrics = GatewayMetrics()
    app = FastAPI(title="Petrel gateway", version=petrel.__version__, description=_DESCRIPTION,
                  openapi_url="/api-docs/openapi.json", docs_url="/api-docs", redoc_url=None,
                  telemetry=TELEMETRY)
    app.state.draining = False
    app.state.metrics = metrics
    install_error_handlers(app)
    warn_if_exposed(config.gateway)

    @app.post(
        "/api/inject/v1", response_model=InjectV1Response, tags=["inject"],
        summary="Inject a message for one or more recipients (KumoMTA-compatible)",
        responses={**_ERRORS,
                   413: {"model": ErrorResponse, "description": "Body over the limit."},
                   422: {"model": ErrorResponse,
                         "description": "Template syntax error or rendering budget exceeded."},
                   503: {"model": InjectUnavailableResponse,
                         "description": "Ingress unavailable: no recipient was accepted."}})
    async def inject_v1(request: Request, body: InjectV1Request) -> Any:
        caller = principal_of(request)
        tenant = body.tenant
        if not caller.admin:
            if tenant and tenant != caller.tenant:
                raise ApiError(403, f"tenant: this key may only inject for tenant "
                               f"{caller.tenant!r}", "tenant")
            tenant = caller.tenant
        try:
            composer = await asyncio.to_thread(Composer, body, config.ingress.max_message_size)
        except TemplateSyntaxProblem as exc:
            raise ApiError(422, str(exc), exc.field, line=exc.line) from exc
        except RequestProblem as exc:
            raise ApiError(400, str(exc), exc.field) from exc
        # The request span (see gateway.tracing) continues the caller's trace; so will ingress.
        carrier = telemetry.inject_carrier() or {
            "traceparent": valid_traceparent(request.headers.get("traceparent")),
            "tracestate": valid_tracestate(request.headers.get("tracestate"))}
        traceparent = carrier.get("traceparent", "")
        tracestate = carrier.get("tracestate", "") if traceparent else ""
        results = await inject_all(
            backends.inject, composer, sender=body.envelope_sender, tenant=tenant,
            campaign=body.campaign, deadline=deadline, traceparent=traceparent,
            tracestate=tracestate, client_address=request.client.host if request.client else "")
        accepted = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        metrics.recipients.labels("accepted").inc(len(accepted))
        metrics.recipients.labels("failed").inc(len(failed))
        payload = InjectV1Response(
            success_count=len(accepted), fail_count=len(failed),
            failed_recipients=[r.email for r in failed],
            errors=[f"{r.email}: {r.code.name}: {r.error}" for r in failed],
            ids={r.email: r.id for r in accepted if r.id is not None},
        ).model_dump()
        if all_retryable(results):
            first = failed[0]
            return JSONResponse(
                {"error": f"ingress unavailable: {first.code.name}: {first.error}", **payload},
                status_code=503, headers={"retry-after": "1"})
        if failed:
            log.info("inject: %d accepted, %d failed (first: %s)", len(accepted), len(failed),
                     payload["errors"][0])
        return payload

    @app.get("/api/queue-summary/v1", response_model=QueueSummaryResponse, tags=["queues"],
             summary="Counts and oldest age of every scheduled and ready queue",
             responses={**_AUTH_ERRORS,
                        503: {"model": ErrorResponse, "description": "Scheduler unavailable."}})
    async def queue_summary() -> Any:
        try:
            response = await backends.scheduler.GetQueueSummary(
                scheduler_pb2.GetQueueSummaryRequest(), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise grpc_error("scheduler", exc) from exc
        return views.queue_summary(response)

    @app.get("/api/admin/inspect-message/v1", response_model=InspectMessageResponse,
             tags=["admin"], summary="A stored message's metadata, queue state and body",
             responses={**_ERRORS,
                        404: {"model": ErrorResponse, "description": "No such message."},
                        503: {"model": ErrorResponse, "description": "Spool unavailable."}})
    async def inspect_message(
        request: Request,
        id: Annotated[str, Query(description="Message id (32 lower-case hex digits).")],
        want_body: Annotated[bool, Query(description="Include the message itself.")] = False,
    ) -> Any:
        if not is_message_id(id):
            raise ApiError(400, "id: not a message id (32 lower-case hex digits)", "id")
        try:
            stored = await backends.spool.GetMessage(
                spool_pb2.GetMessageRequest(id=id, want_body=want_body), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ApiError(404, f"message {id} not found", "id") from exc
            raise grpc_error("spool", exc) from exc
        if not stored.meta.id:
            raise ApiError(404, f"message {id} not found", "id")
        caller = principal_of(request)
        if not caller.admin and stored.meta.tenant != caller.tenant:
            raise ApiError(403, f"message {id} belongs to another tenant", "id")
        state: dict[str, str] | None = None
        try:
            queued = await backends.scheduler.InspectMessage(
                scheduler_pb2.InspectMessageRequest(id=id), timeout=PROBE_DEADLINE)
            state = dict(queued.domain_states)
        except grpc.aio.AioRpcError as exc:
            # The spool's answer stands alone: the scheduler may not hold the message (yet).
            log.debug("scheduler has no state for %s: %s", id, exc.code().name)
        return InspectMessageResponse(
            id=id, message=views.message_view(stored.meta, stored.body if want_body else None),
            state=state)

    @app.get("/metrics", tags=["observability"], summary="Prometheus metrics of the gateway",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}, OPENMETRICS: {}}}})
    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    @app.get("/healthz", response_model=HealthResponse, tags=["observability"],
             summary="200 when ingress is SERVING",
             responses={503: {"model": HealthResponse, "description": "Not ready."}})
    @app.get("/api/check-liveness/v1", response_model=HealthResponse, tags=["observability"],
             summary="200 when able to accept mail (KumoMTA's liveness check)",
             responses={503: {"model": HealthResponse, "description": "Not ready."}})
    async def health() -> Any:
        if app.state.draining:
            return JSONResponse({"status": "unavailable", "ingress": "UNKNOWN",
                                 "error": "gateway is stopping"}, status_code=503)
        try:
            checked = await backends.ingress_health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=PROBE_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            return JSONResponse({"status": "unavailable", "ingress": "UNREACHABLE",
                                 "error": f"{exc.code().name}: {exc.details() or ''}"},
                                status_code=503)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(checked.status)
        if checked.status != health_pb2.HealthCheckResponse.SERVING:
            return JSONResponse({"status": "unavailable", "ingress": status,
                                 "error": f"ingress is {status}"}, status_code=503)
        return {"status": "ok", "ingress": status}

    if backends.suppression is not None:
        app.include_router(suppression_routes(backends.suppression, deadline))

    routes = frozenset(str(getattr(route, "path", "")) for route in app.routes)
    app.add_middleware(BodyLimitMiddleware, limit=config.gateway.request_body_limit,
                       read_timeout=deadline)
    # Outside the body limit: a caller without a valid key never gets its body read.
    app.add_middleware(ApiKeyMiddleware, config=config.gateway)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app
