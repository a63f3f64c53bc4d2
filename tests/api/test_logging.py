"""The API's log output (api/logs.py), read from real servers: JSON lines by default, one access
record per request with its request id, method, escaped path, status and duration; the 500
handler's record carries the request id the client was given and the traceback; a `%0A` in a
path cannot forge a line; the plain format says the same on one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from store.settings import Settings
from tests.service import ROOT, ThreadedServer, free_port, wait_for_health

FORGED = '/v1/nothing%0A{"level":"ERROR","message":"forged"}%0D%1B[31m'
ESCAPED = "/v1/nothing%0A%7B%22level%22:%22ERROR%22,%22message%22:%22forged%22%7D%0D%1B%5B31m"


def _uvicorn_stderr(pg_url: str, data: str, requests: list[tuple[str, dict[str, str]]]
                    ) -> tuple[list[httpx.Response], str]:
    """Run `uvicorn api.app:app` as the container does (default log settings), send the
    requests, stop it, and return the responses and everything it wrote to stderr."""
    port = free_port()
    env = {**os.environ, "PAEC_DATABASE_URL": pg_url, "PAEC_DATA_DIR": data,
           "PAEC_BROKER_URL": "redis://127.0.0.1:6379/14"}
    env.pop("PAEC_LOG_FORMAT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    responses = []
    try:
        wait_for_health(url, proc)
        responses = [httpx.get(url + path, headers=headers) for path, headers in requests]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    return responses, err


def test_a_uvicorn_process_logs_json_lines_with_the_request_fields(
        pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    (ok, forged), err = _uvicorn_stderr(
        pg_url, str(tmp_path_factory.mktemp("log-data")),
        [("/health", {"x-request-id": "req_log_test_1"}), (FORGED, {})])
    assert (ok.status_code, forged.status_code) == (200, 404)
    records = [json.loads(line) for line in err.splitlines()]  # every line is one object
    access = [r for r in records if r["logger"] == "paec.access"]
    health = next(r for r in access if r["request_id"] == "req_log_test_1")
    assert (health["method"], health["path"], health["status"]) == ("GET", "/health", 200)
    assert health["level"] == "INFO" and health["duration_ms"] >= 0
    assert {"time", "message"} <= health.keys()
    bad = next(r for r in access if r["request_id"] == forged.headers["x-request-id"])
    assert (bad["path"], bad["status"]) == (ESCAPED, 404)
    assert not any("forged" in r["message"] and r["logger"] != "paec.access" for r in records)
    assert "\x1b" not in err and "\r" not in err
    assert any(r["logger"] == "uvicorn.error" for r in records)  # start-up, same format


def _failing_app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get("/v1/test-only/boom")
    def boom() -> None:
        raise RuntimeError("kaboom for the log test")

    return app


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_a_500_logs_its_request_id_with_the_traceback(
        service_settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    with ThreadedServer(_failing_app(service_settings)) as running:
        capfd.readouterr()
        r = httpx.get(running.url + "/v1/test-only/boom")
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    assert rid in r.json()["error"]["message"]
    records = [rec for rec in _lines(capfd.readouterr().err) if rec.get("request_id") == rid]
    error = next(rec for rec in records if rec["level"] == "ERROR")
    assert error["logger"] == "paec.api"
    assert error["path"] == "/v1/test-only/boom"
    assert error["exception"].startswith("Traceback")
    assert "RuntimeError: kaboom for the log test" in error["exception"]
    access = next(rec for rec in records if rec["logger"] == "paec.access")
    assert access["status"] == 500


def test_the_plain_format_writes_one_escaped_line_per_request(
        service_settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    settings = service_settings.model_copy(update={"log_format": "plain"})
    with ThreadedServer(create_app(settings)) as running:
        capfd.readouterr()
        r = httpx.get(running.url + FORGED, headers={"x-request-id": "req_plain_1"})
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "req_plain_1" in line]
    assert len(lines) == 1, err
    assert r.status_code == 404
    assert f"INFO paec.access GET {ESCAPED} 404 request_id=req_plain_1 method=GET " \
           f"path={ESCAPED} status=404 duration_ms=" in lines[0]
    assert "forged" not in err.replace(ESCAPED, "")


@pytest.mark.parametrize("sent", ["req\tforged=1", "r\u00e9q", "x" * 129])
def test_a_client_request_id_that_is_not_short_printable_ascii_is_replaced(
        server: str, sent: str) -> None:
    # The id is echoed and logged: it must not carry control characters into the log.
    r = httpx.get(server + "/health", headers={b"x-request-id": sent.encode("latin-1")})
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-request-id"] != sent
