"""The broker is not the source of truth: Redis restarted empty mid-run loses nothing, and a
job submitted while the broker was down is sent again from the database's state."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.service import free_port, new_tenant_key
from tests.worker.conftest import Workers, job_row, serve, settings_from, wait_for
from tests.worker.test_worker import status, submit, upload


class PrivateRedis:
    """A redis-server of this test's own, without persistence: a restart empties it."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                                        capture_output=True).stdout.strip() == b"PONG",
                 timeout=20, what="redis to start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            redis.kill()


def test_redis_restarted_empty_mid_run_loses_nothing(
        private_redis: PrivateRedis, worker_env: dict[str, str],
        worker_sessions: sessionmaker[Session], tmp_path: Path) -> None:
    env = {**worker_env, "PAEC_BROKER_URL": private_redis.url, "PAEC_RESEND_AFTER_S": "3"}
    settings = settings_from(env)
    workers = Workers(env, tmp_path)
    _, key = new_tenant_key(worker_sessions)
    try:
        with serve(settings, key) as user:
            running = submit(user, upload(user), steps=16, checkpoint_every=0)
            workers.start()
            wait_for(lambda: job_row(worker_sessions, running).step >= 2, timeout=120,
                     what="two steps", log=workers.log)
            private_redis.kill()
            # submitted while the broker is down: accepted, queued in the database
            started = time.monotonic()
            waiting = submit(user, upload(user), steps=2)
            assert time.monotonic() - started < 20
            assert status(user, waiting) == "queued"
            private_redis.start()  # back, and empty: every message it held is gone
            for job_id in (running, waiting):
                wait_for(lambda j=job_id: status(user, j) in ("succeeded", "failed"),
                         timeout=180, what=f"{job_id} to finish", log=workers.log)
                assert status(user, job_id) == "succeeded", workers.log()
    finally:
        workers.stop_all()
    assert job_row(worker_sessions, running).attempt == 1  # it never stopped running
