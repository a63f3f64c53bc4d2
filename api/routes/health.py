"""Liveness, readiness, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from api import telemetry
from api.deps import ServicesDep
from api.schemas.health import Health, Ready
from store.errors import UnavailableError

router = APIRouter(tags=["health"])

VERSION = "0.1.0"


@router.get("/health", response_model=Health)
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": VERSION}


@router.get("/ready", response_model=Ready)
def ready(services: ServicesDep) -> dict[str, str]:
    """Readiness: the database answers (503 in the error envelope otherwise)."""
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise UnavailableError(f"database unavailable: {type(exc).__name__}: {exc}") from exc
    return {"status": "ready"}


class PrometheusText(Response):
    """Prometheus' text exposition format."""

    media_type = "text/plain"


@router.get("/metrics", response_class=PrometheusText)
def prometheus_metrics(request: Request) -> PrometheusText:
    """Prometheus' text format (see api/telemetry.py). Unauthenticated, as /health and
    /ready are: operators scrape it, and it holds counts, never a tenant's data or ids.
    Expose it only where the operators' network reaches (or filter it at the proxy)."""
    body, content_type = telemetry.render(request.app)
    return PrometheusText(body, media_type=content_type)
