"""The API's routers, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import health

ROUTERS: list[APIRouter] = [health.router]
