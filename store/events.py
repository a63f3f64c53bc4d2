"""Job events: written by the API and the worker, listed newest-first (OpenAI), streamed
oldest-first (SSE). An event written with a `key` is written at most once per job, so a
replayed training step adds no duplicate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import ids
from store.db import unix, utcnow
from store.errors import InvalidRequestError
from store.models import Event

EVENT_ID_PATTERN = rf"^{ids.EVENT}[0-9]{{1,18}}$"
"""An event id (`ftevent-<seq>`), as store.ids.event_seq reads it: a list cursor."""
STREAM_CURSOR_PATTERN = rf"^({ids.EVENT}[0-9]{{1,18}})?$"
"""Where a stream resumes: after an event id, or (empty) from the first event."""
LEVELS = ("info", "warn", "error")
TYPES = ("message", "metrics")


def add_event(session: Session, job_id: str, message: str, *, level: str = "info",
              type_: str = "message", data: dict[str, Any] | None = None,
              key: str | None = None) -> None:
    """Append an event (nothing when an event with the same `key` exists for the job)."""
    values = {"job_id": job_id, "level": level, "type": type_, "message": message,
              "data": data, "key": key, "created_at": utcnow()}
    if key is None:
        session.add(Event(**values))
        session.flush()
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(Event).values(**values).on_conflict_do_nothing(
        index_elements=["job_id", "key"]))


def event_object(event: Event) -> dict[str, Any]:
    """The OpenAI `fine_tuning.job.event` object."""
    return {"object": "fine_tuning.job.event", "id": ids.event_id(event.seq),
            "created_at": unix(event.created_at), "level": event.level,
            "message": event.message, "type": event.type, "data": event.data}


def events_before(session: Session, job_id: str, *, after: str | None, limit: int
                  ) -> tuple[list[Event], bool]:
    """A page of events, newest first, older than the event `after` (OpenAI's cursor walks
    toward older events); returns (events, has_more)."""
    query = select(Event).where(Event.job_id == job_id)
    if after is not None:
        seq = ids.event_seq(after)
        if seq is None:
            raise InvalidRequestError(f"invalid event id {after!r}", param="after")
        query = query.where(Event.seq < seq)
    rows = list(session.scalars(query.order_by(Event.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_since(session: Session, job_id: str, *, after_seq: int, limit: int = 500
                 ) -> list[Event]:
    """Events newer than `after_seq`, oldest first (the SSE stream and its resume)."""
    return list(session.scalars(select(Event).where(Event.job_id == job_id,
                                                    Event.seq > after_seq)
                                .order_by(Event.seq).limit(limit)))
