"""Liveness and readiness over real HTTP: once through `uvicorn api.app:app` in its own
process (the command the container runs), the rest through the threaded test server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service import ROOT, free_port, wait_for_health


@pytest.fixture(scope="module")
def process_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("proc-data")
    env = {**os.environ, "PAEC_DATABASE_URL": pg_url, "PAEC_DATA_DIR": str(data),
           "PAEC_BROKER_URL": "redis://127.0.0.1:6379/14"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_health_answers_from_a_uvicorn_process(process_server: str) -> None:
    r = httpx.get(process_server + "/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": "0.1.0"}
    assert r.headers["x-request-id"].startswith("req_")


def test_ready_checks_the_database(process_server: str) -> None:
    r = httpx.get(process_server + "/ready")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})


def test_unknown_route_is_404_in_the_error_envelope(server: str) -> None:
    r = httpx.get(server + "/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert r.headers["x-should-retry"] == "false"


def test_a_request_id_sent_by_the_client_is_echoed(server: str) -> None:
    r = httpx.get(server + "/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_ready_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    from api.app import create_app
    from store.settings import Settings
    from tests.service import ThreadedServer

    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/14",
                        database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with ThreadedServer(create_app(settings)) as running:
        r = httpx.get(running.url + "/ready")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "unavailable"


def test_the_api_reference_is_served(server: str) -> None:
    # the README points users at /docs: the OpenAPI document must build (no warnings:
    # pytest treats a duplicate operation id as an error) and list the routes
    spec = httpx.get(server + "/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/v1/files", "/v1/fine_tuning/jobs", "/api/jobs/{job_id}/stream",
                 "/api/checkpoints/{checkpoint_id}/download", "/api/evaluations"):
        assert path in paths
    assert httpx.get(server + "/docs").status_code == 200


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(server: str) -> None:
    # no Content-Length: the limit applies while the body streams in, before any parsing
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "'
        for _ in range(64):
            yield b"x" * 65536  # 4 MiB in all, over the 1 MiB JSON limit
        yield b'"}'

    r = httpx.post(server + "/v1/fine_tuning/jobs", content=chunks(),
                   headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
