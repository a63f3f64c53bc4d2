"""Tenants and their API keys. Keys are random, shown once, and stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import ids
from store.db import utcnow
from store.errors import AuthenticationError, InvalidRequestError, NotFoundError
from store.models import ApiKey, Tenant

KEY_PREFIX = "paec-"


def hash_key(secret: str) -> str:
    """The stored form of a key: its sha256 (keys are 32 random bytes, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A freshly created key; `secret` is never stored and cannot be shown again."""

    id: str
    tenant_id: str
    secret: str


def create_tenant(session: Session, name: str) -> Tenant:
    """A new tenant called `name` (unique)."""
    if not name or len(name) > 128:
        raise InvalidRequestError("tenant name must be 1-128 characters", param="name")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise InvalidRequestError(f"tenant {name!r} already exists", param="name")
    tenant = Tenant(id=ids.new_id(ids.TENANT), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if absent."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    return tenant if tenant is not None else create_tenant(session, name)


def create_key(session: Session, tenant: Tenant, name: str = "default") -> NewKey:
    """A new API key for `tenant`."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=ids.new_id(ids.API_KEY), tenant_id=tenant.id, name=name,
                 key_hash=hash_key(secret), prefix=secret[:12])
    session.add(key)
    session.flush()
    return NewKey(id=key.id, tenant_id=tenant.id, secret=secret)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key; requests with it are refused from now on."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"no API key {key_id!r}", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


_verified: dict[str, tuple[float, str, str]] = {}
"""key hash -> (expiry on the monotonic clock, tenant id, tenant name): keys verified lately."""


def authenticate(session: Session, authorization: str | None, *, cache_s: float = 0.0
                 ) -> Tenant:
    """The tenant of an `Authorization: Bearer <key>` header, else AuthenticationError.

    With `cache_s` > 0 a key verified in the last `cache_s` seconds is trusted without a
    query (a status poll then costs one query, not two); a revoked key is refused at most
    `cache_s` seconds after its revocation. Refusals are never cached.
    """
    if not authorization:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
    digest = hash_key(secret.strip())
    now = time.monotonic()
    hit = _verified.get(digest)
    if hit is not None and hit[0] > now:
        return Tenant(id=hit[1], name=hit[2])
    row = session.execute(
        select(Tenant, ApiKey.revoked_at).join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if row is None or row[1] is not None:
        _verified.pop(digest, None)
        raise AuthenticationError("invalid or revoked API key", code="invalid_api_key")
    tenant: Tenant = row[0]
    if cache_s > 0:
        if len(_verified) > 10_000:  # bounded: drop everything rather than track age
            _verified.clear()
        _verified[digest] = (now + cache_s, tenant.id, tenant.name)
    return tenant
