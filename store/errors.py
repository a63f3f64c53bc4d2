"""One error hierarchy for the service: each class carries its HTTP status and its OpenAI
error `type` and `code`, so that one handler in the API renders them all."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a user."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"
    retryable: bool | None = None
    """Sent as `x-should-retry` (honoured by the OpenAI client); None leaves it to the client."""

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
    retryable = False


class AuthenticationError(ServiceError):
    """No key, a malformed key, or a revoked one."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConflictError(ServiceError):
    """The request conflicts with the object's state and retrying will not help."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"
    retryable = False


class RetryLaterError(ServiceError):
    """The object is busy (e.g. a pause checkpoint is still being written); retry shortly.
    The OpenAI client retries 409s by itself; `retry_after_s` tells it when."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "busy"
    retryable = True
    retry_after_s: float = 1.0


class PayloadTooLargeError(ServiceError):
    """The body is over the configured limit."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class UnavailableError(ServiceError):
    """A dependency (database, broker) is down."""

    status_code = 503
    error_type = "server_error"
    code = "unavailable"
    retryable = True
