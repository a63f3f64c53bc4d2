"""Liveness, readiness, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import ServicesDep
from store.errors import UnavailableError

router = APIRouter(tags=["health"])

VERSION = "0.1.0"


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": VERSION}


@router.get("/ready")
def ready(services: ServicesDep) -> dict[str, str]:
    """Readiness: the database answers (503 in the error envelope otherwise)."""
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise UnavailableError(f"database unavailable: {type(exc).__name__}: {exc}") from exc
    return {"status": "ready"}
