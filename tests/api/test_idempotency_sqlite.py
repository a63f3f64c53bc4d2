"""Idempotent creates on the embedded SQLite default, over real HTTP: 32 concurrent creates with
one Idempotency-Key make one job and every client gets a proper answer. The key's claim used
to commit on its own (pysqlite's SAVEPOINT outside a transaction), so the other requests
replayed its half-written row with HTTP status 0 and uvicorn dropped their connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.db import make_engine, make_sessionmaker
from store.models import IdempotencyKey, Job
from store.settings import Settings
from tests.service import REDIS_TEST_URL, ThreadedServer, make_file, migrate, new_tenant_key

CLIENTS = 32
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session], Path]]:
    """A server on a migrated SQLite database (the embedded default's database_url=None)."""
    settings = Settings(data_dir=tmp_path, broker_url=REDIS_TEST_URL,
                        artifacts_dir=tmp_path / "artifacts")
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with ThreadedServer(create_app(settings)) as running:
        yield running.url, make_sessionmaker(engine), settings.resolved_artifacts_dir
    engine.dispose()


def test_concurrent_creates_with_one_key_on_sqlite_all_get_the_one_job(
        sqlite_service: tuple[str, sessionmaker[Session], Path]) -> None:
    url, sessions, artifacts = sqlite_service
    tenant_id, key = new_tenant_key(sessions)
    training = make_file(sessions, tenant_id, rows=4, storage_root=artifacts)
    body = {"model": "builtin:smollm2-135m-instruct", "training_file": training,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER,
                "hyperparameters": {"n_epochs": 1, "batch_size": 2, "group_size": 4}}}}
    results: list[httpx.Response] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)

    def post() -> None:
        with httpx.Client(base_url=url, timeout=60, headers={
                "Authorization": f"Bearer {key}", "Idempotency-Key": "sqlite-race"}) as client:
            barrier.wait()
            try:
                results.append(client.post("/v1/fine_tuning/jobs", json=body))
            except httpx.TransportError as exc:  # the dropped connection of the bug
                failures.append(exc)

    threads = [threading.Thread(target=post) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(results) == CLIENTS
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 409, 503}, [r.text for r in results]
    ok = [r.json() for r in results if r.status_code == 200]
    assert ok and all(job == ok[0] for job in ok)
    for r in results:
        if r.status_code != 200:  # only ever "retry shortly", which the client then does
            assert r.headers["x-should-retry"] == "true", r.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)
                              .where(Job.tenant_id == tenant_id)) == 1
        row = session.get(IdempotencyKey, (tenant_id, "sqlite-race"))
        assert row is not None and row.status_code == 200
