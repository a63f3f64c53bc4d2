"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from api.schemas.common import Wire


class Health(Wire):
    """The process answers."""

    status: Literal["ok"]
    version: str


class Ready(Wire):
    """The database answers."""

    status: Literal["ready"]
