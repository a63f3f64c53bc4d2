"""OpenAI's error envelope, which every error of the API is (docs/openai.md 3.11)."""

from __future__ import annotations

from pydantic import Field

from api.schemas.common import Wire


class ErrorObject(Wire):
    """What went wrong, and where."""

    message: str
    type: str = Field(description="`invalid_request_error` or `server_error`.")
    param: str | None = Field(description="The request field at fault, as a path "
                                          "(`method.reinforcement.hyperparameters.group_size`, "
                                          "`datasets[1]`, `training_file`); null when none.")
    code: str | None = Field(description="A machine-readable reason (`invalid_request`, "
                                         "`not_found`, `file_not_found`, ...).")


class ErrorEnvelope(Wire):
    """`{"error": {message, type, param, code}}`."""

    error: ErrorObject


ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
"""The content of an error response in /openapi.json (api/openapi.py adds the component)."""
