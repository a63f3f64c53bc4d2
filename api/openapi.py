"""What /openapi.json says beyond the routes' own signatures: the error envelope every
operation can answer with, and the bearer key the /v1 and /api routes need.

FastAPI documents a 422 "Validation Error" for every route with parameters, but this API
answers request validation with a 400 in OpenAI's envelope (api/app.py). So the schema
drops the 422 and documents, for every operation, the statuses the error handlers and the
middleware actually produce, each with the envelope's schema:

    400 invalid request    401 missing, wrong or revoked key    404 not found (also another
    tenant's object)    409 conflict (state, idempotency)    413 body over the limit
    503 database unavailable (retryable)

Request bodies of the routes that take `dict[str, Any]` stay loosely typed here; typed
request models are issue 16's.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_STATUSES = {
    "400": "Invalid request: the `param` names the field.",
    "401": "Missing, invalid or revoked API key.",
    "404": "No such object for this key (another tenant's object answers the same).",
    "409": "The object's state or an Idempotency-Key conflicts with the request.",
    "413": "The request body is over the server's limit.",
    "503": "The database is unavailable; retry (`x-should-retry: true`, `Retry-After`).",
}
"""Every status an operation can answer with besides its success, and what it means."""

ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}
"""OpenAI's error envelope, as every error handler writes it."""

_AUTHENTICATED = ("/v1/", "/api/")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def build_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with the errors and the security scheme added."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorEnvelope"] = ERROR_ENVELOPE
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer paec-...`."}
    for schemas in (components["schemas"],):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": description,
                                              "content": envelope})
            if path.startswith(_AUTHENTICATED):
                operation["security"] = [{"apiKey": []}]
    return schema


def install(app: FastAPI) -> None:
    """Serve `build_schema(app)` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
