"""One error hierarchy for the service: each class carries its HTTP status and its OpenAI
error `type` and `code`, so that one handler in the API renders them all."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a user."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error envelope {"error": {message, type, param, code}}."""
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


class InvalidRequestError(ServiceError):
    """The request is malformed or names something invalid."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class NotFoundError(ServiceError):
    """The object does not exist, or belongs to another tenant (never 403: no leak)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class InvalidTransitionError(ServiceError):
    """A job state change that the state machine does not allow."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "invalid_state"
