"""The `paec` CLI under test against the real service: a migrated Postgres database for the
session, the API served by uvicorn over real HTTP (Celery queue on a Redis database of its
own; no worker runs), and a fresh tenant per test. `paec(...)` runs the CLI in-process,
pointed at the server through PAEC_API_URL / PAEC_API_KEY, and returns its exit code and
what it printed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from client.cli import main
from store.db import make_engine, make_sessionmaker
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import REDIS_TEST_URL, ThreadedServer, fresh_postgres, migrate, new_tenant_key


@dataclass(frozen=True)
class Run:
    """What one CLI invocation did."""

    code: int
    out: str
    err: str


Paec = Callable[..., Run]


@pytest.fixture(scope="session")
def cli_pg_url() -> Iterator[str]:
    """A Postgres database built by the migrations, for the CLI's tests."""
    with fresh_postgres("paec_cli") as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def cli_settings(cli_pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the API under test."""
    data = tmp_path_factory.mktemp("paec-cli-data")
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    return Settings(data_dir=data, database_url=cli_pg_url, broker_url=REDIS_TEST_URL,
                    artifacts_dir=data / "artifacts", max_upload_bytes=2 * 1024 * 1024)


@pytest.fixture(scope="session")
def server(cli_settings: Settings) -> Iterator[str]:
    """Base URL of the API, served by uvicorn in a thread."""
    with ThreadedServer(create_app(cli_settings)) as running:
        yield running.url


@pytest.fixture(scope="session")
def sessions(cli_pg_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, for arranging and inspecting rows."""
    engine = make_engine(cli_pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def storage(cli_settings: Settings) -> LocalStorage:
    """The API's artifact storage (for arranging checkpoints)."""
    return LocalStorage(cli_settings.resolved_artifacts_dir)


@pytest.fixture
def tenant(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A fresh tenant: (tenant id, API key)."""
    return new_tenant_key(sessions)


@pytest.fixture
def paec(server: str, tenant: tuple[str, str], capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process as the fresh tenant."""
    monkeypatch.setenv("PAEC_API_URL", server)
    monkeypatch.setenv("PAEC_API_KEY", tenant[1])

    def run(*argv: str) -> Run:
        capsys.readouterr()  # drop what earlier steps printed
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
