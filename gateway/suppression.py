"""``/api/suppression/v1``: the suppression list over REST (``SuppressionService`` behind it).

* ``GET ?tenant=&all_tenants=&prefix=&limit=&page_token=`` lists entries in address order,
  a page at a time (``next_page_token`` until the last page);
* ``POST {"suppressions": [{"address", "tenant", "reason", "expires"}]}`` adds or replaces
  entries (source ``manual``), answering how many were new and how many replaced;
* ``DELETE ?address=&tenant=`` removes one entry: ``404`` when there is none.

Tenant ``""`` is the global list. A tenant API key (docs/security.md) is held to its own
tenant: a request naming another tenant, the global list or ``all_tenants`` is ``403``, and
an omitted tenant means the key's. Errors are JSON ``{"error", "field"}``; a field the list
service refused is named as in the request (``suppressions[1].address``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import principal_of
from gateway.errors import ApiError
from gateway.models import ErrorResponse
from petrel.suppression import entry_dict
from petrel.v1 import suppression_pb2, suppression_pb2_grpc

PATH = "/api/suppression/v1"
MAX_ENTRIES = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuppressionIn(_Model):
    address: Annotated[str, Field(min_length=3, max_length=320, examples=["bob@example.com"])]
    tenant: Annotated[str | None, Field(
        default=None, max_length=128,
        description='"" = every tenant (global); omitted = the API key\'s tenant, else "".')]
    reason: Annotated[str, Field(default="", max_length=200)]
    expires: datetime | None = Field(
        default=None, description="RFC 3339; the entry stops applying then (null = never).")


class AddSuppressionsBody(_Model):
    suppressions: Annotated[list[SuppressionIn], Field(min_length=1, max_length=MAX_ENTRIES)]


class SuppressionOut(_Model):
    address: str
    tenant: str
    reason: str
    source: str = Field(description="bounce, complaint or manual.")
    created: str = Field(description="RFC 3339 UTC.")
    expires: str | None = Field(description="RFC 3339 UTC; null = never.")
    message_id: str | None = Field(description="The message whose bounce or complaint "
                                   "caused the entry.")
    detail: str | None


class ListSuppressionsResponse(_Model):
    suppressions: list[SuppressionOut]
    next_page_token: str | None = Field(description="Pass as page_token for the next page; "
                                        "null on the last one.")


class AddSuppressionsResponse(_Model):
    added: int
    updated: int


class RemoveSuppressionResponse(_Model):
    removed: int


def entry_view(entry: suppression_pb2.Suppression) -> SuppressionOut:
    return SuppressionOut.model_validate(entry_dict(entry))


def _field(exc: grpc.aio.AioRpcError) -> str | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "petrel-field":
            return str(value).replace("entries[", "suppressions[").replace("keys[0].", "")
    return None


def _failed(exc: grpc.aio.AioRpcError) -> ApiError:
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field = _field(exc)
        message = exc.details() or "invalid request"
        if field and ":" in message:
            message = f"{field}:{message.split(':', 1)[1]}"
        return ApiError(400, message, field)
    status = {grpc.StatusCode.UNAVAILABLE: 503,
              grpc.StatusCode.DEADLINE_EXCEEDED: 504}.get(code, 502)
    return ApiError(status, f"suppression list: {code.name}: {exc.details() or ''}".rstrip(": "))


def _tenant(request: Request, tenant: str | None, field: str = "tenant") -> str:
    """The tenant a request acts on, held to the key's tenant."""
    caller = principal_of(request)
    if caller.admin:
        return tenant or ""
    if tenant is not None and tenant != caller.tenant:
        raise ApiError(403, f"{field}: this key may only manage tenant {caller.tenant!r}",
                       field)
    return caller.tenant


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A bad field (named in `field`)."},
    401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
    403: {"model": ErrorResponse, "description": "The key's tenant may not do this."},
    503: {"model": ErrorResponse, "description": "The suppression list is unavailable."},
}


def suppression_routes(stub: suppression_pb2_grpc.SuppressionServiceStub,
                       deadline: float) -> APIRouter:
    router = APIRouter(tags=["suppression"])

    @router.get(PATH, response_model=ListSuppressionsResponse, responses=_RESPONSES,
                summary="List or search the suppression list (paged)")
    async def list_suppressions(
        request: Request,
        tenant: Annotated[str | None, Query(
            max_length=128, description='"" = the global list; omitted = the API key\'s '
            "tenant, else the global list.")] = None,
        all_tenants: Annotated[bool, Query(description="Every tenant (admin keys).")] = False,
        prefix: Annotated[str, Query(max_length=320,
                                     description="Addresses starting with this.")] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        page_token: Annotated[str, Query(max_length=1000)] = "",
    ) -> Any:
        if all_tenants and not principal_of(request).admin:
            raise ApiError(403, "all_tenants: this key may only list its own tenant",
                           "all_tenants")
        scoped = _tenant(request, tenant)
        try:
            response = await stub.ListSuppressions(suppression_pb2.ListSuppressionsRequest(
                tenant=scoped, all_tenants=all_tenants, address_prefix=prefix,
                page_size=limit, page_token=page_token), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc) from exc
        return ListSuppressionsResponse(
            suppressions=[entry_view(e) for e in response.entries],
            next_page_token=response.next_page_token or None)

    @router.post(PATH, response_model=AddSuppressionsResponse, responses=_RESPONSES,
                 summary="Add or replace suppression list entries")
    async def add_suppressions(request: Request, body: AddSuppressionsBody) -> Any:
        entries = []
        for i, item in enumerate(body.suppressions):
            expires = 0
            if item.expires is not None:
                when = item.expires if item.expires.tzinfo else item.expires.replace(tzinfo=UTC)
                expires = max(int(when.timestamp() * 1000), 1)
            entries.append(suppression_pb2.Suppression(
                address=item.address, tenant=_tenant(request, item.tenant,
                                                     f"suppressions[{i}].tenant"),
                reason=item.reason, source=suppression_pb2.SUPPRESSION_SOURCE_MANUAL,
                expires_unix_ms=expires))
        try:
            response = await stub.AddSuppressions(
                suppression_pb2.AddSuppressionsRequest(entries=entries), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc) from exc
        return AddSuppressionsResponse(added=response.added, updated=response.updated)

    @router.delete(PATH, response_model=RemoveSuppressionResponse,
                   responses={**_RESPONSES, 404: {"model": ErrorResponse,
                                                  "description": "No such entry."}},
                   summary="Remove one address from a tenant's (or the global) list")
    async def remove_suppression(
        request: Request,
        address: Annotated[str, Query(min_length=1, max_length=320)],
        tenant: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Any:
        scoped = _tenant(request, tenant)
        try:
            response = await stub.RemoveSuppressions(suppression_pb2.RemoveSuppressionsRequest(
                keys=[suppression_pb2.SuppressionKey(address=address, tenant=scoped)]),
                timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc) from exc
        if not response.removed:
            where = f"tenant {scoped!r}" if scoped else "the global list"
            raise ApiError(404, f"{address} is not on the suppression list of {where}",
                           "address")
        return RemoveSuppressionResponse(removed=response.removed)

    return router
