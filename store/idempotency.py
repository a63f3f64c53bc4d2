"""Idempotent creates: the first response to a POST is stored with its request's hash and
replayed to retries (Stripe's semantics; draft-ietf-httpapi-idempotency-key-header).

Two ways a retry is recognised (docs/openai.md 1):

- an `Idempotency-Key` header (at most 255 characters): the same key with the same body
  replays the first response; with another body it is a ConflictError
  (`idempotency_key_reused`). The key row is written in the transaction that creates the
  object, so two concurrent requests with one key create one object: the second one's insert
  waits for the first transaction and then fails on the primary key (`claim_key`).
- no key, but the official client's `x-stainless-retry-count` > 0: the client re-sends a
  POST whose response it did not get (timeout, 5xx), so every keyless create is recorded too
  (key `auto:<object id>`), and a retry replays the newest one with the same body from the
  last `RETRY_WINDOW`. A first attempt (count 0 or absent) always creates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.db import utcnow
from store.errors import ConflictError, InvalidRequestError, RetryLaterError
from store.models import IdempotencyKey

MAX_KEY_LENGTH = 255
AUTO_PREFIX = "auto:"
"""Prefix of the keys recorded for keyless creates (a user's own key may not use it)."""
RETRY_WINDOW = timedelta(minutes=10)
"""How far back a keyless retry looks for the create it repeats. The client retries within
seconds of a 5xx or a dropped connection; only a response slower than its 600 s timeout
falls outside the window (and then the retry creates, as without this de-duplication)."""
HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Replay:
    """A stored response to send again."""

    status_code: int
    body: dict[str, Any]


def request_hash(request: object) -> str:
    """sha256 of the request's canonical JSON (key order and whitespace do not matter)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str | None) -> str | None:
    """The header's value if it is a usable key (None when absent), else a 400."""
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(f"the {HEADER} header must be 1-{MAX_KEY_LENGTH} "
                                  f"characters, got {len(key)}", param=HEADER)
    if key.startswith(AUTO_PREFIX):
        raise InvalidRequestError(f"{HEADER} values starting with {AUTO_PREFIX!r} are "
                                  "reserved by the server", param=HEADER)
    return key


def _replay(row: IdempotencyKey, digest: str) -> Replay:
    if row.request_hash != digest:
        error = ConflictError(f"the {HEADER} {row.key!r} was already used with a different "
                              "request body; use a new key for a new request", param=HEADER)
        error.code = "idempotency_key_reused"
        raise error
    if row.status_code == 0:
        # Claimed but its response not yet recorded: only visible if a claim was ever
        # committed on its own (SQLite). Never replay status 0.
        raise RetryLaterError(f"a request with the {HEADER} {row.key!r} is still in "
                              "progress; retry shortly", param=HEADER)
    return Replay(row.status_code, row.response)


def find_replay(session: Session, tenant_id: str, key: str, digest: str) -> Replay | None:
    """The stored response of `key`, None when the key is new; ConflictError when it was used
    with another body."""
    row = session.get(IdempotencyKey, (tenant_id, key), populate_existing=True)
    return None if row is None else _replay(row, digest)


def claim_key(session: Session, tenant_id: str, key: str, digest: str) -> Replay | None:
    """Insert the key's row (its response is filled by `record`), or, when a concurrent
    request committed the same key first, return that request's response to replay.

    The insert runs in a savepoint: on Postgres it waits for a concurrent transaction holding
    the same key and fails on the primary key once that one commits; the savepoint rolls
    back only the insert, and the winner's row is then visible (read committed)."""
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_hash=digest,
                                       status_code=0, response={}, created_at=utcnow()))
    except IntegrityError:
        replay = find_replay(session, tenant_id, key, digest)
        if replay is None:  # the winner's row vanished (its tenant was deleted)
            raise
        return replay
    return None


def record(session: Session, tenant_id: str, key: str | None, digest: str, *,
           object_id: str, status_code: int, response: dict[str, Any]) -> None:
    """Store the response of a create: under the claimed `key`, or under `auto:<object_id>`
    for a keyless one."""
    if key is None:
        session.add(IdempotencyKey(tenant_id=tenant_id, key=AUTO_PREFIX + object_id,
                                   request_hash=digest, status_code=status_code,
                                   response=response, created_at=utcnow()))
    else:
        row = session.get(IdempotencyKey, (tenant_id, key))
        assert row is not None, "record() after claim_key()"
        row.status_code = status_code
        row.response = response
    session.flush()


def find_retried(session: Session, tenant_id: str, digest: str) -> Replay | None:
    """For a keyless retry: the newest create of the tenant with the same body within
    RETRY_WINDOW, None when there is none (then the retry creates)."""
    row = session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id,
               IdempotencyKey.key.startswith(AUTO_PREFIX, autoescape=True),
               IdempotencyKey.request_hash == digest,
               IdempotencyKey.created_at >= utcnow() - RETRY_WINDOW)
        .order_by(IdempotencyKey.created_at.desc()).limit(1))
    return None if row is None else Replay(row.status_code, row.response)
