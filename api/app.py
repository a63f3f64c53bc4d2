"""The FastAPI application: `uvicorn api.app:app` (settings from the environment), or
`create_app(settings, queue=...)` in tests.

Routes live in `api/routes/`; each parses, authorises, calls one service function in `store/`
and returns. Every error leaves through one of the handlers below, in the OpenAI envelope
`{"error": {message, type, param, code}}`, and every response carries `x-request-id`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from api import logs, openapi, telemetry
from api.deps import Services
from api.middleware import RETRY_AFTER_S, UNAVAILABLE_MESSAGE, RequestContext
from api.routes import ROUTERS
from store.db import UNAVAILABLE, make_engine, make_sessionmaker
from store.errors import ServiceError
from store.queue import CeleryQueue, TaskQueue
from store.settings import Settings
from store.storage import LocalStorage

VERSION = "0.1.0"
log = logging.getLogger("paec.api")


def error_response(status: int, message: str, *, type_: str, code: str | None,
                   param: str | None = None, retryable: bool | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A response in the OpenAI error envelope."""
    out = dict(headers or {})
    if retryable is not None:
        out["x-should-retry"] = "true" if retryable else "false"
    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}, status_code=status, headers=out)


def _location(loc: tuple[int | str, ...]) -> str:
    # ("body", "method", "type") -> "method.type"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path",
                                                               "header", "form") else list(
        map(str, loc))
    return ".".join(parts) or str(loc[0] if loc else "")


def _allowed_methods(request: Request) -> list[str]:
    """Every method that some route of the app serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and \
                route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def create_app(settings: Settings | None = None, *, queue: TaskQueue | None = None) -> FastAPI:
    """The application with its routes, services and error handlers."""
    settings = settings or Settings()
    logs.configure(settings.log_format)
    engine = make_engine(settings.resolved_database_url)
    services = Services(
        settings=settings, engine=engine, sessions=make_sessionmaker(engine),
        storage=LocalStorage(settings.resolved_artifacts_dir),
        queue=queue if queue is not None else CeleryQueue(settings.resolved_broker_url),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="paec", version=VERSION, lifespan=lifespan,
                  description="PAEC RLVR fine-tuning as a service: an OpenAI-compatible "
                              "fine-tuning API under /v1 and native routes for metrics, "
                              "event streams, checkpoint downloads and evaluations.")
    app.state.services = services

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {}
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        return error_response(exc.status_code, exc.message, type_=exc.error_type, code=exc.code,
                              param=exc.param, retryable=exc.retryable, headers=headers)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A dead server or connection, a full pool: retryable, as /ready reports it (issue
        # 15 item 15), instead of a 500.
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc, extra={
            "request_id": request.state.request_id, "method": request.method,
            "path": logs.escape_path(request.url.path)})
        return error_response(503, UNAVAILABLE_MESSAGE, type_="server_error",
                              code="unavailable", retryable=True,
                              headers={"retry-after": str(RETRY_AFTER_S)})

    for error_class in UNAVAILABLE:
        app.add_exception_handler(error_class, _database_unavailable)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid"}
        param: str | None = _location(tuple(first.get("loc", ())))
        message = "; ".join(f"{_location(tuple(e.get('loc', ())))}: {e.get('msg')}"
                            for e in errors[:5])
        if first.get("type") == "json_invalid":
            ctx: dict[str, Any] = first.get("ctx") or {}
            message = f"malformed JSON body: {ctx.get('error', 'invalid JSON')}"
            param = None
        return error_response(400, message, type_="invalid_request_error",
                              code="invalid_request", param=param, retryable=False)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.status_code != 404 else (
            f"no route {request.method} {request.url.path}")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: `Allow` lists every method of the resource. Starlette's router sets it
            # from the first route whose path matched, which misses the methods of the
            # path's other routes (GET and DELETE of /v1/files/{id} are two routes).
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, message, type_="invalid_request_error",
                              code=code, retryable=False, headers=headers)

    for router in ROUTERS:
        app.include_router(router)
    telemetry.install(app)
    openapi.install(app)
    # Outermost: every response, errors included, carries the request id.
    app.add_middleware(RequestContext, settings=settings, services=services)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.app:app` builds the app on first access, from the environment's settings,
    # so importing this module (tests, tools) connects to nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
