"""Native route: a job's events as Server-Sent Events, the push view of the events list.

    GET /api/jobs/{job_id}/stream        (Last-Event-ID: ftevent-12, or ?after=ftevent-12)

Each message is `id: ftevent-<seq>`, `event: message|metrics`, `data:` the same JSON object
that `GET /v1/fine_tuning/jobs/{id}/events` returns, oldest first. A client that reconnects
with `Last-Event-ID` (browsers' EventSource do it by themselves) continues after that event.
Once the job is terminal and every event has been sent, a last `event: end` carries
`{"job_id", "status"}` and the response ends. The key is checked again on every poll (within
the auth cache window): once it is revoked, an `event: error` carries the 401's error
envelope and the response ends.

The database is polled every POLL_S with a fresh short session in a worker thread, so an open
stream holds neither a connection nor the event loop between polls. `: keep-alive` comments
every KEEPALIVE_S keep idle proxies from closing the connection, and make a write fail (so
the stream stops) soon after a client has gone; Starlette also cancels the stream when the
server reports the disconnect.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, SessionDep, TenantDep
from api.schemas.events import STREAM_DESCRIPTION, STREAM_EVENT_SCHEMA
from store.errors import AuthenticationError
from store.events import STREAM_CURSOR_PATTERN
from store.metrics import stream_poll, stream_start
from store.states import TERMINAL
from store.tenants import authenticate

router = APIRouter(tags=["stream"])

POLL_S = 0.5
"""Seconds between two polls of the database while nothing new arrived."""
KEEPALIVE_S = 15.0
"""Seconds of silence after which a `: keep-alive` comment is sent."""
RETRY_MS = 2000
"""The reconnection delay the stream advises (the SSE `retry:` field)."""
BATCH = 500
"""Events read per poll; a full batch is followed by another poll at once."""


class EventStream(StreamingResponse):
    """`text/event-stream` (FastAPI's own EventSourceResponse wants a generator route)."""

    media_type = "text/event-stream"


@dataclass(frozen=True)
class Key:
    """The stream's credentials, checked again while it runs."""

    authorization: str | None
    cache_s: float


def _message(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    # json.dumps never emits a newline by default, so `data` is one SSE line.
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _poll(sessions: sessionmaker[Session], key: Key, job_id: str, after_seq: int
          ) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    with sessions() as session:
        # The key again on every poll: a dictionary look-up while the auth cache trusts it,
        # one query once the cache expires, so a revoked key ends the stream within
        # auth_cache_s rather than when the job ends.
        authenticate(session, key.authorization, cache_s=key.cache_s)
        return stream_poll(session, job_id, after_seq, limit=BATCH)


async def _events(sessions: sessionmaker[Session], key: Key, job_id: str, after_seq: int
                  ) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while True:
        try:
            batch, status = await run_in_threadpool(_poll, sessions, key, job_id, after_seq)
        except AuthenticationError as exc:
            yield _message("error", exc.envelope())
            return
        for seq, obj in batch:
            yield _message(str(obj["type"]), obj, str(obj["id"]))
            after_seq = seq
        if batch:
            quiet_since = time.monotonic()
            if len(batch) == BATCH:
                continue
        if status in TERMINAL:
            yield _message("end", {"job_id": job_id, "status": status})
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_S)


@router.get("/api/jobs/{job_id}/stream", response_class=EventStream, responses={200: {
    "description": STREAM_DESCRIPTION,
    "content": {"text/event-stream": {"schema": STREAM_EVENT_SCHEMA}}}})
def stream_job_events(
    job_id: str, session: SessionDep, tenant: TenantDep, services: ServicesDep,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", pattern=STREAM_CURSOR_PATTERN,
        description="The last event id received: continue after it.")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    after: Annotated[str | None, Query(
        pattern=STREAM_CURSOR_PATTERN, description="As Last-Event-ID, which wins over it "
                                                   "(an EventSource repeats its URL).")] = None,
) -> EventStream:
    """The job's events as `text/event-stream`, oldest first, resumable with `Last-Event-ID`
    (or `?after=`); it ends after the job does."""
    after_seq = stream_start(session, tenant.id, job_id, last_event_id=last_event_id,
                             after=after)
    # The stream may run for hours: give the request's connection back to the pool now
    # instead of when the response ends (FastAPI closes yield dependencies after it).
    session.close()
    return EventStream(
        _events(services.sessions, Key(authorization, services.settings.auth_cache_s),
                job_id, after_seq), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
