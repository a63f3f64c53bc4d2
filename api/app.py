"""The FastAPI application: `uvicorn api.app:app` (settings from the environment), or
`create_app(settings, queue=...)` in tests.

Routes live in `api/routes/`, their bodies in `api/schemas/`; each route parses a typed
request, authorises, calls one service function in `store/` and returns a typed response.
Every error leaves through the handlers of api/errors.py, in the OpenAI envelope
`{"error": {message, type, param, code}}`, and every response carries `x-request-id`
(api/middleware.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api import dashboard, errors, logs, openapi, reference, telemetry
from api.deps import Services
from api.middleware import RequestContext
from api.routes import ROUTERS
from store.db import make_engine, make_sessionmaker
from store.queue import CeleryQueue, TaskQueue
from store.settings import Settings
from store.storage import LocalStorage

VERSION = "0.1.0"
DESCRIPTION = ("PAEC RLVR fine-tuning as a service: an OpenAI-compatible fine-tuning API "
               "under /v1 and native routes under /api for metrics, event streams, "
               "checkpoint downloads and evaluations. Every error is OpenAI's envelope "
               "`{\"error\": {message, type, param, code}}`, `param` naming the field.")


def build_services(settings: Settings, queue: TaskQueue | None = None) -> Services:
    """The resources every route may use: the database, artifact storage and the queue."""
    engine = make_engine(settings.resolved_database_url)
    return Services(settings=settings, engine=engine, sessions=make_sessionmaker(engine),
                    storage=LocalStorage(settings.resolved_artifacts_dir),
                    queue=queue if queue is not None else CeleryQueue(
                        settings.resolved_broker_url))


def _lifespan(engine: Engine) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    return lifespan


def create_app(settings: Settings | None = None, *, queue: TaskQueue | None = None) -> FastAPI:
    """The application with its routes, services, error handlers and middleware."""
    settings = settings or Settings()
    logs.configure(settings.log_format)
    services = build_services(settings, queue)
    # docs_url/redoc_url None: FastAPI's pages load from a CDN; api/reference.py serves
    # the same pages with their assets from a package.
    app = FastAPI(title="paec", version=VERSION, description=DESCRIPTION,
                  lifespan=_lifespan(services.engine), docs_url=None, redoc_url=None)
    app.state.services = services
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    telemetry.install(app)
    openapi.install(app)
    reference.install(app)
    dashboard.install(app)
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
