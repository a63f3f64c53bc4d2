"""The API's own ASGI middleware: a request id on every response, the body-size limit, the
edge checks (authentication first for requests with a body, then hostile input), the access
log, and a last line of defence that turns an unhandled error into a 500 in the error
envelope (a 503 when the database is unavailable).

Pure ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps every
request in extra tasks and streams, which cost more than the rest of a status poll
(bench/polling.py). A status poll (a GET without `%00` in its URL) pays for two string scans
and one access-log record; only requests with a body pay for authentication here (the route
then reuses the tenant) and for a parse of their JSON.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Services
from api.edge import (
    EdgeProblem,
    FormScanner,
    check_json_body,
    check_path,
    check_query,
    is_json,
    multipart_boundary,
)
from api.logs import escape_path
from store.db import database_unavailable
from store.errors import AuthenticationError
from store.models import Tenant
from store.settings import Settings
from store.tenants import authenticate

log = logging.getLogger("paec.api")
access_log = logging.getLogger("paec.access")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose requests are authenticated before their body is read."""
PROTECTED = ("/v1/", "/api/")
"""Path prefixes of the routes that need a key (/health, /ready and /metrics do not)."""
MAX_REQUEST_ID = 128
"""Longest client-supplied x-request-id that is kept (a longer one is replaced)."""
UNAVAILABLE_MESSAGE = "the database is unavailable; retry shortly"
RETRY_AFTER_S = 1


def envelope_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """An OpenAI error envelope as JSON bytes."""
    return json.dumps({"error": {"message": message, "type": type_, "param": param,
                                 "code": code}}).encode()


class _TooLarge(HTTPException):
    """A streamed request body went over the limit (an HTTPException, so that FastAPI's body
    parsing lets it through as a 413 rather than a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class _Refusal(Exception):
    """An answer decided at the edge (401, 400, 413, 503), raised to leave the checks."""

    def __init__(self, status: int, message: str, type_: str, code: str,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type_, self.code, self.param = (
            status, message, type_, code, param)


def _unavailable() -> _Refusal:
    return _Refusal(503, UNAVAILABLE_MESSAGE, "server_error", "unavailable")


class FormRefusal(HTTPException):
    """A multipart body refused while the route's form parser reads it (an HTTPException, so
    that FastAPI's body parsing lets it through; api/errors.py renders its `problem`)."""

    def __init__(self, problem: EdgeProblem) -> None:
        super().__init__(400, problem.message)
        self.problem = problem


def _scanned(receive: Receive, scanner: FormScanner) -> Receive:
    """`receive`, with each chunk of a multipart body checked as it streams to the route; a
    NUL in a field is a FormRefusal."""

    async def scanned_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            problem = scanner.feed(message.get("body", b""))
            if problem is not None:
                raise FormRefusal(problem)
        return message

    return scanned_receive


class RequestContext:
    """x-request-id (the client's, or a new one), the body limit, the edge checks, the
    access log, and the 500/503 envelopes."""

    def __init__(self, app: ASGIApp, settings: Settings, services: Services) -> None:
        self.app = app
        self.settings = settings
        self.services = services

    def _limit(self, path: str) -> int:
        if path.rstrip("/").endswith("/files"):
            return self.settings.max_upload_bytes + 64 * 1024  # multipart framing
        return self.settings.max_body_bytes

    def _authenticate_sync(self, authorization: str | None) -> Tenant:
        with self.services.sessions() as session:
            return authenticate(session, authorization, cache_s=self.settings.auth_cache_s)

    async def _authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> None:
        """The tenant into `scope["state"]` (api/deps.py reuses it), else a 401 or 503."""
        raw = headers.get(b"authorization")
        try:
            tenant = await run_in_threadpool(
                self._authenticate_sync, None if raw is None else raw.decode("latin-1"))
        except AuthenticationError as exc:
            raise _Refusal(exc.status_code, exc.message, exc.error_type, exc.code) from None
        except Exception as exc:
            if database_unavailable(exc):
                raise _unavailable() from exc
            raise
        scope["state"]["tenant"] = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        if not rid or len(rid) > MAX_REQUEST_ID or not (rid.isascii() and rid.isprintable()):
            rid = f"req_{uuid.uuid4().hex}"  # a client's id is logged: printable ASCII only
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status: int | None = None
        limit = self._limit(scope["path"])
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
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            try:
                app_receive = await self._edge(scope, headers, limit, counted_receive)
            except _Refusal as refusal:
                status = refusal.status
                await self._error(send, rid_header, refusal)
                return
            if app_receive is None:
                return  # the client left while its body was read
            await self._run(scope, app_receive, send_with_id, send, rid_header, limit,
                            lambda: status)
        finally:
            self._log_access(scope, rid, status, begun)

    async def _edge(self, scope: Scope, headers: dict[bytes, bytes], limit: int,
                    receive: Receive) -> Receive | None:
        """Refuse what must not reach a route; the receive the app then reads from."""
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            raise _Refusal(413, f"request body of {int(length)} bytes is over the limit of "
                           f"{limit} bytes", "invalid_request_error", "payload_too_large")
        protected = scope["path"].startswith(PROTECTED)
        app_receive: Receive | None = receive
        body: bytes | None = None
        has_body = scope["method"] in BODY_METHODS
        content_type = headers.get(b"content-type", b"").decode("latin-1") if has_body else ""
        boundary = multipart_boundary(content_type) if has_body else None
        if has_body and boundary is None and is_json(content_type):
            # Read (and count: 413 over the limit) a JSON body whole, but parse it only
            # once the key is known to be valid.
            body, app_receive = await self._buffer(receive, limit)
            if app_receive is None:
                return None
        authenticated = False
        if protected and has_body:
            # Before the body is parsed: a request without a valid key learns nothing about
            # how its body would be parsed.
            await self._authenticate(scope, headers)
            authenticated = True
        problem = check_path(scope) or check_query(scope["query_string"])
        if problem is None and body is not None:
            problem = check_json_body(body)
        elif problem is None and has_body and boundary is not None:
            app_receive = _scanned(receive, FormScanner(boundary))
        if problem is not None:
            if protected and not authenticated:
                await self._authenticate(scope, headers)  # 401 before 400, as for bodies
            raise _Refusal(400, problem.message, "invalid_request_error", problem.code,
                           problem.param)
        return app_receive

    @staticmethod
    async def _buffer(receive: Receive, limit: int) -> tuple[bytes, Receive | None]:
        """The whole (size-limited) body, and a receive that hands it to the app again."""
        chunks: list[bytes] = []
        while True:
            try:
                message = await receive()
            except _TooLarge:
                raise _Refusal(413, f"request body is over the limit of {limit} bytes",
                               "invalid_request_error", "payload_too_large") from None
            if message["type"] != "http.request":
                return b"", None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return body, replay

    async def _run(self, scope: Scope, receive: Receive, send_with_id: Send, send: Send,
                   rid_header: tuple[bytes, bytes], limit: int,
                   status: Callable[[], int | None]) -> None:
        rid = scope["state"]["request_id"]
        try:
            await self.app(scope, receive, send_with_id)
        except _TooLarge:
            if status() is not None:
                raise
            await self._error(send_with_id, rid_header, _Refusal(
                413, f"request body is over the limit of {limit} bytes",
                "invalid_request_error", "payload_too_large"), add_id=False)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("database unavailable: %s: %s", type(exc).__name__, exc,
                            extra=self._fields(scope, rid))
                refusal = _unavailable()
            else:
                log.exception("unhandled error in %s %s", scope.get("method"),
                              escape_path(scope["path"]), extra=self._fields(scope, rid))
                refusal = _Refusal(500, f"internal server error; the request id {rid} "
                                   "identifies it in the server's log", "server_error",
                                   "internal_error")
            if status() is not None:
                raise
            await self._error(send_with_id, rid_header, refusal, add_id=False)

    @staticmethod
    def _fields(scope: Scope, rid: str) -> dict[str, object]:
        return {"request_id": rid, "method": scope.get("method"),
                "path": escape_path(scope["path"])}

    def _log_access(self, scope: Scope, rid: str, status: int | None, begun: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields = self._fields(scope, rid)
        fields["status"] = status  # None: the client left before an answer
        fields["duration_ms"] = round((time.perf_counter() - begun) * 1000, 3)
        access_log.info("%s %s %s", fields["method"], fields["path"], status, extra=fields)

    @staticmethod
    async def _error(send: Send, rid_header: tuple[bytes, bytes], refusal: _Refusal, *,
                     add_id: bool = True) -> None:
        body = envelope_body(refusal.message, refusal.type_, refusal.code, refusal.param)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"x-should-retry", b"false" if refusal.status < 500 else b"true")]
        if refusal.status == 503:
            headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        if add_id:
            headers.append(rid_header)
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})
