"""The API's own ASGI middleware: a request id on every response, the body-size limit, and
a last line of defence that turns an unhandled error into a 500 in the error envelope.

Pure ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps every
request in extra tasks and streams, which cost more than the rest of a status poll
(bench/polling.py).
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.settings import Settings

log = logging.getLogger("paec.api")


def envelope_body(message: str, type_: str, code: str) -> bytes:
    """An OpenAI error envelope as JSON bytes."""
    return json.dumps({"error": {"message": message, "type": type_, "param": None,
                                 "code": code}}).encode()


class _TooLarge(HTTPException):
    """A streamed request body went over the limit (an HTTPException, so that FastAPI's body
    parsing lets it through as a 413 rather than a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class RequestContext:
    """x-request-id (the client's, or a new one), the body limit, and the 500 envelope."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, path: str) -> int:
        if path.rstrip("/").endswith("/files"):
            return self.settings.max_upload_bytes + 64 * 1024  # multipart framing
        return self.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1") or f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        length = headers.get(b"content-length", b"")
        limit = self._limit(scope["path"])
        if length.isdigit() and int(length) > limit:
            await self._error(send, rid_header, 413,
                              f"request body of {int(length)} bytes is over the limit of "
                              f"{limit} bytes", "invalid_request_error", "payload_too_large")
            return
        started = False
        received = 0

        async def counted_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives, so that it
            # cannot be read whole into memory before the limit applies.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_id)
        except _TooLarge:
            if started:
                raise
            await self._error(send, rid_header, 413,
                              f"request body is over the limit of {limit} bytes",
                              "invalid_request_error", "payload_too_large")
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope["path"])
            if started:
                raise
            await self._error(send, rid_header, 500,
                              f"internal server error; the request id {rid} identifies it "
                              "in the server's log", "server_error", "internal_error")

    @staticmethod
    async def _error(send: Send, rid_header: tuple[bytes, bytes], status: int, message: str,
                     type_: str, code: str) -> None:
        body = envelope_body(message, type_, code)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-should-retry", b"false" if status < 500 else b"true"), rid_header]})
        await send({"type": "http.response.body", "body": body})
