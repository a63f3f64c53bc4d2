"""The SSE stream `GET /api/jobs/{id}/stream` over real HTTP: events written before and while
a client is connected, resumption with Last-Event-ID, and the final `end` event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.events import add_event
from store.models import Job
from tests.service import make_job

Sessions = sessionmaker[Session]


def _sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE messages as {field: value}; comments come back as {"comment": text}."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    if fields:
        yield fields


def _events(messages: Iterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    """The next `count` messages that carry an event (skipping retry advice and comments)."""
    out: list[dict[str, str]] = []
    for message in messages:
        if "event" in message:
            out.append(message)
            if len(out) == count:
                break
    return out


def _add(sessions: Sessions, job_id: str, *messages: str, type_: str = "message") -> None:
    with transaction(sessions) as session:
        for message in messages:
            data: dict[str, Any] | None = {"step": 1} if type_ == "metrics" else None
            add_event(session, job_id, message, type_=type_, data=data)


def _set_status(sessions: Sessions, job_id: str, status: str) -> None:
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_stream_sends_events_written_before_and_while_connected(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    _add(sessions, job_id, "before 1", "before 2")
    with http.stream("GET", f"/api/jobs/{job_id}/stream", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        messages = _sse(r.iter_lines())
        first = _events(messages, 2)
        _add(sessions, job_id, "while connected")
        _add(sessions, job_id, "step 1", type_="metrics")
        later = _events(messages, 2)
    got = first + later
    assert [json.loads(m["data"])["message"] for m in got] == [
        "before 1", "before 2", "while connected", "step 1"]
    assert [m["event"] for m in got] == ["message", "message", "message", "metrics"]
    data = json.loads(got[3]["data"])
    assert data["object"] == "fine_tuning.job.event"
    assert (data["type"], data["data"]) == ("metrics", {"step": 1})
    assert all(m["id"] == json.loads(m["data"])["id"] for m in got)
    seqs = [int(m["id"].removeprefix("ftevent-")) for m in got]
    assert seqs == sorted(seqs)


def test_reconnecting_with_last_event_id_sends_only_the_later_events(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    _add(sessions, job_id, "one", "two", "three", "four")
    with http.stream("GET", f"/api/jobs/{job_id}/stream", timeout=10) as r:
        seen = _events(_sse(r.iter_lines()), 2)
    _set_status(sessions, job_id, "succeeded")
    with http.stream("GET", f"/api/jobs/{job_id}/stream", timeout=10,
                     headers={"Last-Event-ID": seen[-1]["id"]}) as r:
        rest = [m for m in _sse(r.iter_lines()) if "event" in m]
    assert [m["event"] for m in rest] == ["message", "message", "end"]
    assert [json.loads(m["data"])["message"] for m in rest[:2]] == ["three", "four"]


def test_the_after_parameter_resumes_like_last_event_id(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="cancelled")
    _add(sessions, job_id, "one", "two")
    with http.stream("GET", f"/api/jobs/{job_id}/stream", timeout=10) as r:
        first = _events(_sse(r.iter_lines()), 1)[0]
    r2 = http.get(f"/api/jobs/{job_id}/stream", params={"after": first["id"]}, timeout=10)
    events = [m for m in _sse(iter(r2.text.splitlines())) if "event" in m]
    assert [json.loads(m["data"])["message"] for m in events[:-1]] == ["two"]
    assert json.loads(events[-1]["data"]) == {"job_id": job_id, "status": "cancelled"}


def test_stream_ends_with_an_end_event_once_the_job_succeeds(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    _add(sessions, job_id, "started")
    with http.stream("GET", f"/api/jobs/{job_id}/stream", timeout=10) as r:
        messages = _sse(r.iter_lines())
        assert json.loads(_events(messages, 1)[0]["data"])["message"] == "started"
        # The last event and the status change land together, as the worker commits them.
        with transaction(sessions) as session:
            add_event(session, job_id, "The job has successfully completed")
            session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
        rest = [m for m in messages if "event" in m]  # ends: the server closes the stream
    assert [m["event"] for m in rest] == ["message", "end"]
    assert json.loads(rest[0]["data"])["message"] == "The job has successfully completed"
    assert json.loads(rest[1]["data"]) == {"job_id": job_id, "status": "succeeded"}
    assert "id" not in rest[1]


def test_a_malformed_last_event_id_is_400(
        http: httpx.Client, sessions: Sessions, tenant: tuple[str, str]) -> None:
    job_id = make_job(sessions, tenant[0], status="running")
    r = http.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "nope"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Last-Event-ID"
