"""The `paec` CLI and SDK under test against the real service.

`paec(...)` runs the CLI in-process as a fresh tenant of the `server` of tests/conftest.py,
pointed at it through PAEC_API_URL / PAEC_API_KEY, and returns its exit code and what it
printed. No worker runs there: tests arrange what a worker would write (`add_step`,
`set_status`, `later`), and `proxy` is a connection that drops, as a flaky network does.

`live` is the service with a real `celery worker` training tiny models (`local:tiny`), the
fixtures of tests/worker/conftest.py: for the help examples and the SDK, which need jobs
that really ran. Its worker lives for one test module, so that it never consumes the queue
while another module's workers (tests/worker, same broker) do.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from client.cli import main
from store.db import transaction
from store.events import add_event
from store.metrics import record_metrics
from store.models import Job
from store.runs import step_event_data, step_message
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import free_port, new_tenant_key
from tests.worker.conftest import (  # noqa: F401  # fixtures, used by name
    Workers,
    api_url,
    worker_env,
    worker_sessions,
)


@dataclass(frozen=True)
class Run:
    """What one CLI invocation did."""

    code: int
    out: str
    err: str


Paec = Callable[..., Run]
Sessions = sessionmaker[Session]


# ---- arranging what a worker would write (the `server` runs none) ----

def step_metrics(step: int) -> dict[str, float]:
    return {"reward/mean": step / 10, "entropy": 1.0 + step / 100,
            "entropy/masked": 0.5 + step / 100, "paec/floor": 0.4}


def add_step(sessions: Sessions, job_id: str, step: int, total: int) -> None:
    """What the worker writes for one training step: metric rows and a metrics event."""
    metrics = step_metrics(step)
    with transaction(sessions) as session:
        record_metrics(session, job_id, step, metrics)
        add_event(session, job_id, step_message(step, total, metrics), type_="metrics",
                  data=step_event_data(step, total, metrics), key=f"step:{step}")
        session.execute(update(Job).where(Job.id == job_id).values(step=step))


def set_status(sessions: Sessions, job_id: str, status: str, message: str,
               error: dict[str, Any] | None = None) -> None:
    """The job's last event and its new status, committed together as the worker does."""
    with transaction(sessions) as session:
        add_event(session, job_id, message, level="error" if error else "info")
        session.execute(update(Job).where(Job.id == job_id).values(status=status, error=error))


def later(delay: float, action: Any, *args: Any) -> threading.Thread:
    """Run `action(*args)` after `delay` seconds in a thread (started)."""
    def run() -> None:
        time.sleep(delay)
        action(*args)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def method(**hyper: Any) -> dict[str, Any]:
    """A job's stored method whose effective hyperparameters are `hyper`."""
    return {"type": "reinforcement", "reinforcement": {"hyperparameters": hyper}}


class DroppingProxy:
    """A TCP proxy to the server that cuts the first event stream right after it carried
    an event, as a flaky network would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream, self.port, self.dropped = upstream_port, free_port(), False
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True
                             ).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True
                             ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        seen = b""
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
                seen = (seen + chunk)[-4096:]
                if (from_server and not self.dropped and b"text/event-stream" in seen
                        and b"id: ftevent" in seen):
                    self.dropped = True
                    break
        except OSError:
            pass
        for sock in (src, dst):
            # shutdown, not just close: the other pump blocks in recv on the same socket,
            # and a close alone sends no FIN while that call holds it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(server: str) -> Iterator[DroppingProxy]:
    running = DroppingProxy(int(server.rsplit(":", 1)[1]))
    yield running
    running.close()


# ---- running the CLI ----

@pytest.fixture
def storage(service_settings: Settings) -> LocalStorage:
    """The API's artifact storage (for arranging checkpoints)."""
    return LocalStorage(service_settings.resolved_artifacts_dir)


def runner(url: str, key: str, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process against `url` with `key`."""
    monkeypatch.setenv("PAEC_API_URL", url)
    monkeypatch.setenv("PAEC_API_KEY", key)

    def run(*argv: str) -> Run:
        capsys.readouterr()  # drop what earlier steps printed
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def paec(server: str, tenant: tuple[str, str], capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process as the fresh tenant."""
    return runner(server, tenant[1], capsys, monkeypatch)


@dataclass(frozen=True)
class Live:
    """The live service: its URL, and a tenant of the module's own."""

    url: str
    key: str
    workers: Workers


@pytest.fixture(scope="module")
def live(api_url: str, worker_env: dict[str, str],  # noqa: F811  # imported fixtures
         worker_sessions: sessionmaker[Session],  # noqa: F811
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The API with one `celery worker` (training and evaluation queues) for this module,
    and a tenant of the module's own."""
    workers = Workers(worker_env, Path(tmp_path_factory.mktemp("client-workers")))
    workers.start()
    try:
        yield Live(api_url, new_tenant_key(worker_sessions)[1], workers)
    finally:
        workers.stop_all()


@pytest.fixture
def live_paec(live: Live, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> Paec:
    """Run `paec ARGS...` in-process as the live module's tenant."""
    return runner(live.url, live.key, capsys, monkeypatch)
