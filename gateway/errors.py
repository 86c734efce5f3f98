"""Every error the gateway returns is JSON ``{"error": "...", "field": ...}``.

* request validation (FastAPI's 422 by default) becomes ``400`` naming the first bad field as a
  path into the body (``recipients[0].email``), with all of them under ``errors``;
* ``ApiError`` carries a status chosen by a handler;
* HTTP errors raised by the framework (404, 405) keep their status with a JSON body;
* anything unexpected is ``500`` and logged: the service stays up.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway.models import CONTENT_TAGS

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None,
                 **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.extra = extra


def error_response(status: int, error: str, field: str | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "field": field, **extra}, status_code=status)


def field_path(loc: Sequence[int | str]) -> str | None:
    """``("body", "recipients", 0, "email")`` -> ``"recipients[0].email"``; None for the body
    as a whole. Union tags and pydantic's ``[key]`` markers are not part of the path."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    out = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]" or (part in CONTENT_TAGS and i > 0 and parts[i - 1] == "content"):
            continue
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or None


def _describe(error: dict[str, Any]) -> tuple[str, str | None]:
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        position = error["loc"][-1] if error.get("loc") else None
        at = f" at character {position}" if isinstance(position, int) else ""
        return f"invalid JSON: {detail}{at}", None
    field = field_path(error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    return (f"{field}: {message}" if field else f"request body: {message}"), field


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if (request.method in ("POST", "PUT", "PATCH") and not _is_json(request)
            and any(tuple(e.get("loc", ())) == ("body",) for e in errors)):
        return error_response(400, "the request body must be JSON "
                              "(Content-Type: application/json)")
    described = [_describe(e) for e in errors]
    message, field = described[0] if described else ("invalid request", None)
    return error_response(400, message, field,
                          errors=[{"error": m, "field": f} for m, f in described])


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.field, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
