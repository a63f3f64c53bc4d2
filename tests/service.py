"""Helpers for the service's tests: a migrated Postgres database of their own, a real uvicorn
server on a free port (in a thread of the test process), tenants with API keys."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import uvicorn
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from store.db import make_engine, make_sessionmaker, transaction
from store.tenants import create_key, create_tenant

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Overridable, so that two test sessions on one machine do not share queues.
REDIS_TEST_URL = os.environ.get("PAEC_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    """An unused TCP port on the loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alembic_config(url: str) -> Config:
    """The project's Alembic configuration, pointed at `url`."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextlib.contextmanager
def fresh_postgres(prefix: str = "paec_t") -> Iterator[str]:
    """A new, empty Postgres database (dropped afterwards); yields its SQLAlchemy URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    """`alembic upgrade head` on `url`."""
    command.upgrade(alembic_config(url), "head")


@contextlib.contextmanager
def migrated_sessions(prefix: str = "paec_t") -> Iterator[sessionmaker[Session]]:
    """Sessions on a new database of its own, built by the migrations (dropped afterwards):
    for a test module whose checks count rows that other modules' tests would add."""
    with fresh_postgres(prefix) as url:
        migrate(url)
        engine = make_engine(url)
        yield make_sessionmaker(engine)
        engine.dispose()


class ThreadedServer:
    """uvicorn serving `app` on a free loopback port from a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def new_tenant_key(url_or_sessions: str | sessionmaker[Session], name: str | None = None
                   ) -> tuple[str, str]:
    """A new tenant with one API key: (tenant id, secret)."""
    sessions = (make_sessionmaker(make_engine(url_or_sessions))
                if isinstance(url_or_sessions, str) else url_or_sessions)
    with transaction(sessions) as session:
        tenant = create_tenant(session, name or f"t-{secrets.token_hex(6)}")
        key = create_key(session, tenant)
    return key.tenant_id, key.secret


def make_file(sessions: sessionmaker[Session], tenant_id: str, *, rows: int = 2,
              storage_root: Path | None = None, content: bytes | None = None) -> str:
    """Arrange a processed dataset file row for `tenant_id` (and its bytes when
    `storage_root` is given); returns its id."""
    import hashlib

    from store import ids
    from store.models import File
    from store.storage import LocalStorage

    data = content if content is not None else b"".join(
        b'{"prompt": "What is %d + 1?", "answer": "%d"}\n' % (i, i + 1) for i in range(rows))
    file_id = ids.new_id(ids.FILE)
    key = f"files/{tenant_id}/{file_id}.jsonl"
    if storage_root is not None:
        LocalStorage(storage_root).put_bytes(key, data)
    with transaction(sessions) as session:
        session.add(File(id=file_id, tenant_id=tenant_id, filename="train.jsonl",
                         purpose="fine-tune", bytes=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), rows=rows,
                         status="processed", storage_key=key))
    return file_id


def make_job(sessions: sessionmaker[Session], tenant_id: str, *, status: str = "queued",
             training_file: str = "file-none", total_steps: int = 4, **fields: object) -> str:
    """Arrange a job row for `tenant_id` directly in the database; returns its id."""
    from store import ids
    from store.models import Job

    job_id = ids.new_id(ids.JOB)
    values: dict[str, object] = {
        "id": job_id, "tenant_id": tenant_id, "model": "builtin:smollm2-135m-instruct",
        "training_file": training_file, "status": status, "total_steps": total_steps,
        "method": {"type": "reinforcement", "reinforcement": {}}, "config": {"steps":
                                                                            total_steps},
        "seed": 0, **fields}
    with transaction(sessions) as session:
        session.add(Job(**values))
    return job_id


def load_script(path: Path, name: str) -> ModuleType:
    """A script outside the packages (bench/, scripts/), imported from its path as `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def wait_for_health(url: str, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Wait until the API process `proc` answers GET `url`/health. Raises RuntimeError, with
    what the process printed when its output is a pipe, once it has exited or after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url + "/health", timeout=1)
            return
        except httpx.TransportError:
            exited = proc.poll() is not None
            if exited or time.monotonic() > deadline:
                pipe = proc.stdout or proc.stderr
                out = pipe.read() if exited and pipe is not None else ""
                text = out.decode(errors="replace") if isinstance(out, bytes) else out
                raise RuntimeError(f"uvicorn at {url} did not start: {text}") from None
            time.sleep(0.1)
