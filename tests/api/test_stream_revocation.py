"""An SSE stream whose key is revoked while it runs ends within the auth cache window, with an
`event: error` carrying the 401 envelope, over real HTTP on Postgres."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.events import add_event
from store.models import ApiKey
from store.settings import Settings
from store.tenants import hash_key, revoke_key
from tests.service import make_job, new_tenant_key


def test_revoking_the_key_ends_an_open_stream_with_an_error_event(
        server: str, sessions: sessionmaker[Session], service_settings: Settings) -> None:
    tenant_id, secret = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id, status="running")
    with transaction(sessions) as session:
        add_event(session, job_id, "before the revocation")
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("GET", f"{server}/api/jobs/{job_id}/stream", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        event = ""
        for line in lines:
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "message":
                break  # the stream runs: its first event arrived
        with transaction(sessions) as session:
            key_id = session.scalar(select(ApiKey.id).where(
                ApiKey.key_hash == hash_key(secret)))
            assert key_id is not None
            revoke_key(session, key_id)
        revoked_at = time.monotonic()
        for line in lines:  # until the server ends the response (or long past the window)
            if time.monotonic() - revoked_at > 20:
                break
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
        ended_after = time.monotonic() - revoked_at
    assert events and events[-1] == ("error", {"error": {
        "message": "invalid or revoked API key", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}})
    # Within the cache window and a poll (0.5 s), with slack for a loaded machine.
    assert ended_after < service_settings.auth_cache_s + 3.0
