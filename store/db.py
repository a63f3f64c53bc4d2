"""Database plumbing: the declarative base, engines and sessions.

The same models and migrations run on Postgres (production, tests) and SQLite (the embedded
default). Only the request (API) or the task (worker) commits: service functions take a
`Session` and never call `commit` themselves unless they say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, MetaData, create_engine, event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# Stable constraint names, so that Alembic can drop what it created (SQLAlchemy docs,
# "Constraint Naming Conventions").
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table; timestamps are timezone-aware UTC."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (Postgres refuses it in text and json) and the surrogate code points (no UTF-8)."""


def unstorable(text: str) -> str | None:
    """What keeps `text` out of any text column ("a NUL character", "a lone surrogate
    (U+D800)"), or None when it can be stored."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    return "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` as aware UTC (SQLite returns naive datetimes for aware columns)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def unix(value: datetime | None) -> int | None:
    """Unix seconds, as the OpenAI objects carry them."""
    return None if value is None else int(as_utc(value).timestamp())


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and enforced foreign keys so that
    an API and a worker process can share one file."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "savepoint")
        def _begin_before_savepoint(connection: Connection, _name: str) -> None:
            # pysqlite begins a transaction only before INSERT/UPDATE/DELETE, so a SAVEPOINT
            # issued after mere SELECTs opened a transaction of its own, and RELEASE then
            # committed it: an idempotency key claimed in a savepoint was committed at once,
            # half written (status 0), and concurrent requests replayed it.
            # BEGIN IMMEDIATE first keeps the savepoint inside the request's
            # transaction; IMMEDIATE takes the write lock now (waiting up to the busy
            # timeout), so the transaction never has to upgrade a stale read snapshot.
            dbapi = connection.connection.dbapi_connection
            if dbapi is not None and not dbapi.in_transaction:
                dbapi.execute("BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip per checkout); stale connections are recycled instead, and
    # a request that meets a dead one fails once (a retryable 503) while the pool replaces
    # it.
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError,
               exc.DisconnectionError)
"""Errors that mean the database cannot be reached or is not answering (a dead server or
connection, a full pool, a locked SQLite file): the API answers them 503, retryable."""


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database is unavailable rather than the request wrong."""
    return isinstance(error, UNAVAILABLE)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects readable after commit (routes render them)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
