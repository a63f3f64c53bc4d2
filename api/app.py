"""The FastAPI application: `uvicorn api.app:app`, or `create_app()` in tests."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from store.errors import ServiceError

VERSION = "0.1.0"


def create_app() -> FastAPI:
    """The application with its routes and its one error handler."""
    app = FastAPI(title="paec", version=VERSION,
                  description="PAEC RLVR fine-tuning as a service")

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": VERSION}

    return app


app = create_app()
