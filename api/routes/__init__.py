"""The API's routers, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    checkpoints,
    evaluations,
    files,
    graders,
    health,
    jobs,
    metrics,
    permissions,
    stream,
    traces,
)

ROUTERS: list[APIRouter] = [
    health.router,
    files.router,
    jobs.router,
    checkpoints.router,
    permissions.router,
    graders.router,
    metrics.router,
    traces.router,
    stream.router,
    evaluations.router,
]
