"""The edge (api/edge.py, api/middleware.py) over real HTTP on Postgres: NUL and lone
surrogates in path segments, query values and JSON bodies are a 400 naming the field, JSON
nested too deep is a 400, and a request with a body is authenticated before the body is
parsed."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from api.routes import ROUTERS

JSON = {"content-type": "application/json"}
MALFORMED = b'{"model": "x", '


def _invalid(r: httpx.Response, param: str | None) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_request", param), error
    assert r.headers["x-request-id"]
    return error


@pytest.mark.parametrize(("path", "param"), [
    ("/v1/fine_tuning/jobs/ftjob-1%00", "fine_tuning_job_id"),
    ("/v1/fine_tuning/jobs/%00/events", "fine_tuning_job_id"),
    ("/v1/files/file-%00", "file_id"),
    ("/api/jobs/ftjob-%00x/stream", "job_id"),
    ("/v1/no-such-route/%00", "path"),
])
def test_nul_in_a_path_segment_is_a_400_naming_the_path_parameter(
        http: httpx.Client, path: str, param: str) -> None:
    error = _invalid(http.get(path), param)
    assert "NUL" in error["message"]


@pytest.mark.parametrize(("path", "param"), [
    ("/v1/fine_tuning/jobs?after=ftjob-%00", "after"),
    ("/v1/files?purpose=fine-tune%00", "purpose"),
    ("/v1/files?after=%00&limit=2", "after"),
    ("/v1/fine_tuning/checkpoints/ckpt-1/permissions?project_id=proj%00", "project_id"),
    ("/v1/fine_tuning/jobs/ftjob-1/events?after=%00", "after"),
])
def test_nul_in_a_query_value_is_a_400_naming_the_query_parameter(
        http: httpx.Client, path: str, param: str) -> None:
    _invalid(http.get(path), param)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/fine_tuning/jobs", b'{"model": "builtin:x\\u0000", "training_file": "f"}', "model"),
    ("/v1/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "hyperparameters": '
                             b'{"model": "\\ud800"}}', "hyperparameters.model"),
    ("/v1/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "metadata": '
                             b'{"a": "b", "c": "\\udfff"}}', "metadata.c"),
    ("/v1/fine_tuning/jobs", b'{"model": "m", "metadata": {"k\\u0000": "v"}}', "metadata"),
    ("/v1/fine_tuning/jobs", b'{"model": "m", "method": {"type": "reinforcement", '
                             b'"reinforcement": {"grader": {"type": "string_check", '
                             b'"reference": "\\ud83d"}}}}',
     "method.reinforcement.grader.reference"),
    ("/api/evaluations", b'{"model": "m", "datasets": ["gsm8k", "x\\u0000"]}', "datasets.1"),
    ("/v1/fine_tuning/checkpoints/ckpt-1/permissions", b'{"project_ids": ["proj\\u0000"]}',
     "project_ids.0"),
    ("/v1/fine_tuning/alpha/graders/validate", b'"\\u0000"', None),
])
def test_nul_or_lone_surrogate_in_a_json_body_is_a_400_naming_its_json_path(
        http: httpx.Client, path: str, body: bytes, param: str | None) -> None:
    error = _invalid(http.post(path, content=body, headers=JSON), param)
    assert "NUL" in error["message"] or "surrogate" in error["message"]


def test_a_lone_surrogate_in_a_json_body_without_content_type_is_refused_too(
        http: httpx.Client) -> None:
    # FastAPI parses a body without Content-Type as JSON, so the edge checks it as well.
    _invalid(http.post("/v1/fine_tuning/jobs", content=b'{"model": "\\ud800"}'), "model")


@pytest.mark.parametrize("depth", [65, 200, 100_000])
def test_json_nested_deeper_than_64_levels_is_a_400(http: httpx.Client, depth: int) -> None:
    body = b'{"model": "m", "metadata": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    error = _invalid(http.post("/v1/fine_tuning/jobs", content=body, headers=JSON),
                     None if depth > 1000 else "metadata" + ".0" * (64 - 1))
    assert "nested deeper than 64" in error["message"]


def test_json_nested_64_levels_passes_the_edge(http: httpx.Client) -> None:
    body = b'{"model": "m", "metadata": ' + b"[" * 63 + b"]" * 63 + b"}"
    r = http.post("/v1/fine_tuning/jobs", content=body, headers=JSON)
    assert r.status_code == 400  # the route's own validation refuses it, not the edge
    assert "nested" not in r.json()["error"]["message"]


def test_malformed_json_with_a_valid_key_is_a_400(http: httpx.Client) -> None:
    error = _invalid(http.post("/v1/fine_tuning/jobs", content=MALFORMED, headers=JSON), None)
    assert error["message"].startswith("malformed JSON body")


def _post_routes() -> list[str]:
    paths = [re.sub(r"\{[^}]+\}", "x-1", route.path) for router in ROUTERS
             for route in router.routes
             if isinstance(route, APIRoute) and "POST" in (route.methods or ())]
    assert len(paths) >= 9  # jobs create/cancel/pause/resume, files, permissions, graders x2,
    return paths            # evaluations create/cancel


@pytest.mark.parametrize("authorization", [None, "Bearer paec-not-a-key", "Basic abc"])
def test_every_post_route_answers_401_before_parsing_a_malformed_body(
        server: str, authorization: str | None) -> None:
    headers = dict(JSON)
    if authorization is not None:
        headers["authorization"] = authorization
    for path in _post_routes():
        for content_type in ("application/json", "multipart/form-data; boundary=zz"):
            r = httpx.post(server + path, content=MALFORMED,
                           headers={**headers, "content-type": content_type})
            assert r.status_code == 401, (path, content_type, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_nul_in_the_path_without_a_key_is_a_401(server: str) -> None:
    r = httpx.get(server + "/v1/fine_tuning/jobs/%00")
    assert r.status_code == 401


def test_a_route_still_reads_a_body_that_passed_the_edge(http: httpx.Client) -> None:
    # The edge read the body first; the route must receive it whole.
    r = http.post("/v1/fine_tuning/alpha/graders/validate", json={"grader": {
        "type": "string_check", "name": "g", "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}", "operation": "eq"}})
    assert r.status_code == 200, r.text
    assert r.json()["grader"]["type"] == "string_check"


def _multipart(purpose: bytes, filename: bytes) -> tuple[bytes, dict[str, str]]:
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n" + purpose +
            b"\r\n--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" +
            filename + b"\"\r\nContent-Type: application/jsonl\r\n\r\n"
            b'{"prompt": "1 + 1?", "answer": "2"}\n\r\n--zz--\r\n')
    return body, {"content-type": "multipart/form-data; boundary=zz"}


@pytest.mark.parametrize(("purpose", "filename", "param"), [
    (b"fine-tune\x00", b"train.jsonl", "purpose"),
    (b"fine-tune", b"train\x00.jsonl", "file"),
])
def test_nul_in_an_upload_form_field_is_a_400_naming_the_field(
        http: httpx.Client, purpose: bytes, filename: bytes, param: str) -> None:
    body, headers = _multipart(purpose, filename)
    error = _invalid(http.post("/v1/files", content=body, headers=headers), param)
    assert "NUL" in error["message"]


def test_a_clean_upload_passes_the_form_scanner(http: httpx.Client) -> None:
    body, headers = _multipart(b"fine-tune", b"train.jsonl")
    r = http.post("/v1/files", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["filename"], r.json()["purpose"]) == ("train.jsonl", "fine-tune")
