"""How errors leave the API: every one in OpenAI's envelope `{"error": {message, type, param,
code}}`, from one handler per kind (`install`).

    ServiceError (store.errors)      its own status, type, code and param
    the database unavailable         503, retryable
    RequestValidationError           400 `invalid_request`, `param` the field's path
    Starlette's HTTPException        its status (404 unknown route, 405, 413; 400 for a body
                                     that cannot be parsed or a refused form field)

A request that fails its typed model (api/schemas) names the field the way the service's own
errors do (`param_of`): the path into the body joined by dots (`method.reinforcement.grader`,
`metadata.k`, `datasets.1`), a query, path or header parameter by its name (`limit`,
`Idempotency-Key`), the object for a bad key of it (`metadata`), and a form field written in
brackets as the path it stands for (`expires_after[seconds]` -> `expires_after.seconds`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from api import logs
from api.middleware import RETRY_AFTER_S, UNAVAILABLE_MESSAGE, FormRefusal
from store.db import UNAVAILABLE
from store.errors import ServiceError

log = logging.getLogger("paec.api")

SOURCES = ("body", "query", "path", "header", "cookie", "form")
"""The first element of a validation error's `loc`: where the value came from."""
MESSAGES_SHOWN = 5
"""Validation errors listed in one message (the first one names `param`)."""
_BRACKETS = re.compile(r"\[([^\]]+)\]")


def error_response(status: int, message: str, *, type_: str, code: str | None,
                   param: str | None = None, retryable: bool | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A response in the OpenAI error envelope."""
    out = dict(headers or {})
    if retryable is not None:
        out["x-should-retry"] = "true" if retryable else "false"
    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}, status_code=status, headers=out)


def param_of(loc: Sequence[int | str]) -> str:
    """The `param` of a validation error at `loc` (module docstring):

        ("body", "method", "type")              -> "method.type"
        ("body", "metadata", "k" * 65, "[key]") -> "metadata"
        ("query", "limit")                      -> "limit"
        ("body", "expires_after[seconds]")      -> "expires_after.seconds"
        ("body",)                               -> "body"
    """
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] in SOURCES:
        parts = parts[1:]
    if "[key]" in parts:  # a key of an object is bad: the object is the field at fault
        parts = parts[:max(0, parts.index("[key]") - 1)] or parts[:1]
    return ".".join(_BRACKETS.sub(r".\1", part) for part in parts)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """(message, param) of a failed request: each error as `param: what`, the first one's
    param; a body that is no JSON at all names none."""
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid"}
    if first.get("type") == "json_invalid":
        ctx: Mapping[str, Any] = first.get("ctx") or {}
        return f"malformed JSON body: {ctx.get('error', 'invalid JSON')}", None
    message = "; ".join(f"{param_of(error.get('loc', ()))}: {error.get('msg')}"
                        for error in errors[:MESSAGES_SHOWN])
    return message, param_of(first.get("loc", ())) or None


def _allowed_methods(request: Request) -> list[str]:
    """Every method that some route of the app serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and \
                route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return error_response(exc.status_code, exc.message, type_=exc.error_type, code=exc.code,
                          param=exc.param, retryable=exc.retryable, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A dead server or connection, a full pool: retryable, as /ready reports it, instead of
    # a 500.
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc, extra={
        "request_id": request.state.request_id, "method": request.method,
        "path": logs.escape_path(request.url.path)})
    return error_response(503, UNAVAILABLE_MESSAGE, type_="server_error", code="unavailable",
                          retryable=True, headers={"retry-after": str(RETRY_AFTER_S)})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(list(exc.errors()))
    return error_response(400, message, type_="invalid_request_error", code="invalid_request",
                          param=param, retryable=False)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, FormRefusal):
        return error_response(400, exc.problem.message, type_="invalid_request_error",
                              code=exc.problem.code, param=exc.problem.param, retryable=False)
    code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large"}.get(exc.status_code, "http_error")
    message = str(exc.detail) if exc.status_code != 404 else (
        f"no route {request.method} {request.url.path}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: `Allow` lists every method of the resource. Starlette's router sets it
        # from the first route whose path matched, which misses the methods of the path's
        # other routes (GET and DELETE of /v1/files/{id} are two routes).
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, message, type_="invalid_request_error", code=code,
                          retryable=False, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers (module docstring) on `app`."""
    app.add_exception_handler(ServiceError, _service_error)
    for error_class in UNAVAILABLE:
        app.add_exception_handler(error_class, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
