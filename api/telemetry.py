"""(Being written: issue 4, Prometheus metrics.)"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add request metrics to `app` (being written)."""
