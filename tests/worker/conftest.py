"""Real worker processes: a migrated Postgres database, Redis as the broker (a database
number of its own), the API served by uvicorn, and `celery worker` subprocesses running the
trainer on a tiny model that lives in the operator's models directory (`local:tiny`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from transformers import PreTrainedTokenizerBase

from api.app import create_app
from paec.modeling.loader import tiny_model
from store.db import make_engine, make_sessionmaker
from store.models import Job
from store.settings import Settings
from tests.service import ROOT, ThreadedServer, fresh_postgres, migrate, new_tenant_key

# Overridable, so that two test sessions on one machine do not share queues.
BROKER = os.environ.get("PAEC_TEST_BROKER_URL", "redis://127.0.0.1:6379/13")

# Small, fast jobs: a few tenths of a second per step on the tiny model.
TINY_HYPERPARAMETERS: dict[str, Any] = {
    "batch_size": 2, "group_size": 2, "max_new_tokens": 6, "micro_batch_size": 4,
    "learning_rate": 1e-3, "checkpoint_every": 2,
}


@pytest.fixture(scope="session")
def worker_env(tmp_path_factory: pytest.TempPathFactory,
               smollm2_tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, str]]:
    """The environment of the API and the workers: PAEC_* settings."""
    data = tmp_path_factory.mktemp("worker-data")
    models = data / "models"
    folder = models / "tiny"
    tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    redis.Redis.from_url(BROKER).flushdb()
    with fresh_postgres("paec_w") as url:
        migrate(url)
        yield {"PAEC_DATABASE_URL": url, "PAEC_BROKER_URL": BROKER, "PAEC_DATA_DIR": str(data),
               "PAEC_MODELS_DIR": str(models), "PAEC_WORKER_DEVICE": "cpu",
               "PAEC_HEARTBEAT_INTERVAL_S": "0.5", "PAEC_HEARTBEAT_TIMEOUT_S": "6",
               "PAEC_SWEEP_INTERVAL_S": "1", "PAEC_RESEND_AFTER_S": "30",
               "PAEC_CACHE_DIR": str(data / "cache")}


def settings_from(env: dict[str, str]) -> Settings:
    """Settings equal to what the processes read from `env`."""
    return Settings(database_url=env["PAEC_DATABASE_URL"], broker_url=env["PAEC_BROKER_URL"],
                    data_dir=Path(env["PAEC_DATA_DIR"]), models_dir=Path(env["PAEC_MODELS_DIR"]))


@pytest.fixture(scope="session")
def worker_sessions(worker_env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    """Sessions on the worker tests' database."""
    engine = make_engine(worker_env["PAEC_DATABASE_URL"])
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def api_url(worker_env: dict[str, str]) -> Iterator[str]:
    """The API, as users reach it."""
    with ThreadedServer(create_app(settings_from(worker_env))) as running:
        yield running.url


@contextlib.contextmanager
def tenant_client(url: str, sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    """An HTTP client of a fresh tenant of the API at `url`."""
    _, key = new_tenant_key(sessions)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def user(api_url: str, worker_sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    """An HTTP client of a fresh tenant."""
    with tenant_client(api_url, worker_sessions) as client:
        yield client


class Workers:
    """Starts and stops `celery worker` processes; their logs go to files."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env}
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Any] = []

    def start(self, queues: str | None = "training,evaluation") -> subprocess.Popen[bytes]:
        """A worker consuming `queues` (-Q); None starts it without -Q, on the queues that
        worker.celery_app.default_queues picks."""
        n = len(self.procs)
        log = open(self.logs / f"worker-{n}.log", "wb")  # noqa: SIM115  # closed in stop_all
        self.files.append(log)
        queue_args = [] if queues is None else ["-Q", queues]
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", *queue_args,
             "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
             "--hostname", f"w{n}-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:]
                         for p in sorted(self.logs.glob("worker-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.files:
            log.close()


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """A worker manager; every worker it started is stopped after the test."""
    manager = Workers(worker_env, tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


@contextlib.contextmanager
def serve(settings: Settings, key: str) -> Iterator[httpx.Client]:
    """The API built with `settings` (a test's own), served by uvicorn, and a client that
    holds the tenant key `key`."""
    with ThreadedServer(create_app(settings)) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"},
            timeout=30) as user:
        yield user


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str,
             log: Callable[[], str] | None = None) -> Any:
    """Poll `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()}" if log else ""))


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    """The job's row, fresh from the database."""
    with sessions() as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()
