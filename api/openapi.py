"""What /openapi.json says beyond the routes' own signatures: the error envelope every
operation can answer with, and the bearer key the /v1 and /api routes need.

Request and response bodies come from the routes' typed models (api/schemas). FastAPI
documents a 422 "Validation Error" for every route with parameters, but this API answers
request validation with a 400 in OpenAI's envelope (api/errors.py). So the schema drops the
422 and documents, for every operation, the statuses the error handlers and the middleware
actually produce, each with the envelope's schema:

    400 invalid request    401 missing, wrong or revoked key    404 not found (also another
    tenant's object)    409 conflict (state, idempotency)    413 body over the limit
    503 database unavailable (retryable)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api.schemas.common import not_null
from api.schemas.errors import ERROR_CONTENT, ErrorEnvelope
from api.schemas.events import StreamEnd

ERROR_STATUSES = {
    "400": "Invalid request: the `param` names the field.",
    "401": "Missing, invalid or revoked API key.",
    "404": "No such object for this key (another tenant's object answers the same).",
    "409": "The object's state or an Idempotency-Key conflicts with the request.",
    "413": "The request body is over the server's limit.",
    "503": "The database is unavailable; retry (`x-should-retry: true`, `Retry-After`).",
}
"""Every status an operation can answer with besides its success, and what it means."""

UNROUTED_MODELS: tuple[type[BaseModel], ...] = (ErrorEnvelope, StreamEnd)
"""Models that no route's signature names: the error envelope, and the data of the stream's
`end` event."""

_AUTHENTICATED = ("/v1/", "/api/")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _add_components(components: dict[str, Any]) -> None:
    schemas = components.setdefault("schemas", {})
    for model in UNROUTED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer paec-...`."}


def _document_operation(path: str, operation: dict[str, Any]) -> None:
    """The error statuses, the security scheme, and parameters that are never null."""
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status, description in ERROR_STATUSES.items():
        responses.setdefault(status, {"description": description, "content": ERROR_CONTENT})
    if path.startswith(_AUTHENTICATED):
        operation["security"] = [{"apiKey": []}]
    for parameter in operation.get("parameters", []):
        if "schema" in parameter:
            parameter["schema"] = not_null(parameter["schema"])


def build_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with the errors and the security scheme added."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    _add_components(schema.setdefault("components", {}))
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _document_operation(path, item[method])
    return schema


def install(app: FastAPI) -> None:
    """Serve `build_schema(app)` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
