"""Job events (docs/openai.md 3.3): the list under /v1 and the messages of the SSE stream."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.common import JsonObject, Wire


class FineTuningJobEvent(Wire):
    """`fine_tuning.job.event`; a `metrics` event's `data` follows OpenAI's RFT shape (`step`,
    `total_steps`, `scores`, ...) with this service's metrics alongside."""

    object: Literal["fine_tuning.job.event"]
    id: str = Field(description="`ftevent-<n>`, increasing: a cursor and an SSE id.")
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: JsonObject | None


class FineTuningJobEventList(Wire):
    """A page of a job's events, newest first."""

    object: Literal["list"]
    data: list[FineTuningJobEvent]
    has_more: bool


STREAM_DESCRIPTION = """Server-Sent Events, oldest first: `message` and `metrics` events carry a
fine_tuning.job.event, as the events list returns it, with its id as the SSE id; once the job
is terminal and every event was sent, `end` carries `{"job_id", "status"}` and the stream
ends; `error` carries the error envelope if the key is revoked meanwhile. `: keep-alive`
comments fill silences; `retry:` advises the reconnection delay. Reconnect with
`Last-Event-ID` (or `?after=`) to continue after an event."""

_COMPONENT = "#/components/schemas/"
STREAM_EVENT_SCHEMA = {
    "type": "object", "title": "StreamEvent", "description": "One Server-Sent Event.",
    "properties": {
        "event": {"enum": ["message", "metrics", "end", "error"]},
        "id": {"type": "string", "pattern": "^ftevent-[0-9]+$",
               "description": "The event's id, on `message` and `metrics` events."},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "anyOf": [{"$ref": _COMPONENT + "FineTuningJobEvent"},
                      {"$ref": _COMPONENT + "StreamEnd"},
                      {"$ref": _COMPONENT + "ErrorEnvelope"}]}},
        "retry": {"type": "integer", "minimum": 0},
    },
}
"""The schema of each event of the stream (OpenAPI 3.1 describes an event stream by its
events)."""


class StreamEnd(Wire):
    """The data of the stream's last event, `end`."""

    job_id: str
    status: str
