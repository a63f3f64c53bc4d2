"""Hostile input over real HTTP: every one of these answered 500, grew the API's
memory or burned its CPU; each must now be a 400 in the OpenAI error envelope naming the
field (`param`; the line for dataset rows), leaving nothing half-written and the tenant's
later reads working."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.errors import param_of
from api.schemas.jobs import CreateFineTuningJobRequest
from store.models import File, Job
from store.settings import Settings
from tests.service import ThreadedServer, make_file, make_job

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
HYPER = "method.reinforcement.hyperparameters"


def job_request(training_file: str, grader: dict[str, Any] | None = None,
                hyper: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": "builtin:smollm2-135m-instruct", "training_file": training_file,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": grader or GRADER,
                "hyperparameters": hyper if hyper is not None else {"group_size": 4}}},
            **fields}


def nested_multi(depth: int) -> dict[str, Any]:
    """A `multi` grader `depth` levels deep, each level holding the next as `g`."""
    grader: dict[str, Any] = GRADER
    for _ in range(depth):
        grader = {"type": "multi", "name": "m", "graders": {"g": grader},
                  "calculate_output": "g"}
    return grader


def error_of(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def count(sessions: sessionmaker[Session], model: type[Job] | type[File], tenant_id: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)
                                  .where(model.tenant_id == tenant_id)) or 0)


def upload(http: httpx.Client, data: bytes) -> httpx.Response:
    return http.post("/v1/files", files={"file": ("train.jsonl", data)},
                     data={"purpose": "fine-tune"})


# ---- item 1: grader nesting ----

def test_grader_nested_300_deep_is_400_and_the_job_list_still_answers(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    file_id = make_file(sessions, tenant[0])
    error = error_of(http.post("/v1/fine_tuning/jobs",
                               json=job_request(file_id, nested_multi(300))))
    assert error["param"].startswith("method.reinforcement.grader.graders.g.graders.g")
    assert "nest" in error["message"]
    assert count(sessions, Job, tenant[0]) == 0
    assert http.get("/v1/fine_tuning/jobs").status_code == 200


def test_grader_dry_run_validate_refuses_deep_nesting_naming_the_path(
        http: httpx.Client) -> None:
    error = error_of(http.post("/v1/fine_tuning/alpha/graders/validate",
                               json={"grader": nested_multi(300)}))
    assert error["param"].startswith("grader.graders.g.graders.g")
    assert http.post("/v1/fine_tuning/alpha/graders/validate",
                     json={"grader": nested_multi(3)}).status_code == 200


def test_grader_with_too_many_sub_graders_is_400(http: httpx.Client) -> None:
    wide = {"type": "multi", "name": "m", "calculate_output": "g0",
            "graders": {f"g{i}": GRADER for i in range(200)}}
    error = error_of(http.post("/v1/fine_tuning/alpha/graders/validate",
                               json={"grader": wide}))
    assert error["param"].startswith("grader.graders")


# ---- item 2 and 5: dataset rows ----

def test_dataset_row_nested_5000_deep_is_a_row_error(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    good = json.dumps({"prompt": "1 + 1?", "answer": "2"}).encode()
    deep = b'{"prompt": "x", "answer": "1", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    error = error_of(upload(http, good + b"\n" + deep + b"\n"))
    assert (error["code"], error["param"]) == ("invalid_file", "file")
    assert "line 2" in error["message"] and "nest" in error["message"]
    assert count(sessions, File, tenant[0]) == 0


def test_dataset_row_with_a_lone_surrogate_is_a_row_error_naming_the_field(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    row = b'{"messages": [{"role": "user", "content": "hi \\ud800"}], "answer": "1"}'
    error = error_of(upload(http, row + b"\n"))
    assert (error["code"], error["param"]) == ("invalid_file", "file")
    assert "line 1: messages[0].content" in error["message"]
    assert count(sessions, File, tenant[0]) == 0


# ---- item 3: integers that reach the database ----

def test_steps_past_the_database_integer_are_400(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    file_id = make_file(sessions, tenant[0])
    for steps in (2**31, 10**20, 1e20):
        error = error_of(http.post("/v1/fine_tuning/jobs",
                                   json=job_request(file_id, hyper={"steps": steps})))
        assert error["param"] == f"{HYPER}.steps", steps
    assert count(sessions, Job, tenant[0]) == 0
    assert http.get("/v1/fine_tuning/jobs").status_code == 200


def test_metric_range_past_the_database_integer_is_400(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    job_id = make_job(sessions, tenant[0])
    for param in ("start", "end"):
        error = error_of(http.get(f"/api/jobs/{job_id}/metrics", params={param: 2**31}))
        assert error["param"] == param
        error = error_of(http.get(f"/api/jobs/{job_id}/metrics", params={param: 10**30}))
        assert error["param"] == param


# ---- item 4: metadata ----

def test_metadata_with_nul_is_400_and_the_metadata_filter_still_answers(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    file_id = make_file(sessions, tenant[0])
    for metadata in ({"k": "a\u0000b"}, {"k\u0000": "v"}):
        error = error_of(http.post("/v1/fine_tuning/jobs",
                                   json=job_request(file_id, metadata=metadata)))
        # The request middleware may refuse the NUL first, naming the field in its own way.
        assert str(error["param"]).startswith("metadata")
    assert count(sessions, Job, tenant[0]) == 0
    assert http.get("/v1/fine_tuning/jobs", params={"metadata[k]": "v"}).status_code == 200


@pytest.mark.parametrize(("metadata", "param"), [
    ({"k": "a\u0000b"}, "metadata.k"), ({"k\u0000": "v"}, "metadata"),
    ({"k": "\ud800"}, "metadata.k"), ({"\udfff": "v"}, "metadata")])
def test_metadata_that_no_text_column_can_store_is_refused_by_the_request_model(
        metadata: dict[str, str], param: str) -> None:
    # The typed request's own check, called directly: over HTTP the request middleware may
    # refuse a NUL or a lone surrogate in any JSON body before it gets here. A bad value is
    # named by its key, a bad key by its object, as the middleware names them.
    body = job_request("file-x", metadata=metadata)
    with pytest.raises(ValidationError) as info:
        CreateFineTuningJobRequest.model_validate(body)
    assert param_of(info.value.errors()[0]["loc"]) == param


# ---- item 6: bounds of the hyperparameters ----

def test_absurd_hyperparameters_are_400_naming_the_field(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    file_id = make_file(sessions, tenant[0])
    for key, value in (("group_size", 10**9), ("max_new_tokens", 10**9),
                       ("micro_batch_size", 10**9), ("eval_samples", 10**9),
                       ("trace_samples", 10**9), ("update_epochs", 10**9),
                       ("lora_rank", 10**9), ("warmup_steps", 1e30),
                       ("learning_rate_multiplier", 1e308)):
        error = error_of(http.post("/v1/fine_tuning/jobs",
                                   json=job_request(file_id, hyper={key: value})))
        assert error["param"] == f"{HYPER}.{key}", (key, error)
    assert count(sessions, Job, tenant[0]) == 0


def test_job_over_the_operators_limits_is_400_naming_the_field(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    file_id = make_file(sessions, tenant[0])
    for hyper, param in (({"steps": 100_001}, "steps"),
                         ({"group_size": 1024, "batch_size": 256}, "group_size"),
                         ({"max_new_tokens": 100_000}, "max_new_tokens")):
        error = error_of(http.post("/v1/fine_tuning/jobs",
                                   json=job_request(file_id, hyper=hyper)))
        assert error["param"] == f"{HYPER}.{param}"
        assert "PAEC_MAX_JOB_" in error["message"]
    assert count(sessions, Job, tenant[0]) == 0


# ---- item 7: a flood of bad rows ----

def test_upload_of_many_bad_rows_keeps_the_first_errors_and_a_count(
        http: httpx.Client, tenant: tuple[str, str], sessions: sessionmaker[Session]) -> None:
    rows = 300_000
    data = b"x\n" * rows
    # The server runs in this process (a uvicorn thread): tracemalloc sees what it keeps.
    # Keeping every RowError was about 250 bytes a row (75 MB here).
    tracemalloc.start()
    try:
        r = upload(http, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = error_of(r)
    assert error["code"] == "invalid_file"
    assert f"{rows} error(s) in {rows} row(s)" in error["message"]
    assert f"... and {rows - 50} more" in error["message"]
    assert "line 1:" in error["message"] and "line 50:" in error["message"]
    assert "line 51:" not in error["message"]
    assert peak < 20 * 1024 * 1024, peak
    assert count(sessions, File, tenant[0]) == 0


# ---- item 8: the grader dry run's work ----

def test_grader_run_inputs_over_the_limit_are_400(http: httpx.Client) -> None:
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": "fuzzy_match",
              "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
    big = "a" * 200_000
    error = error_of(http.post("/v1/fine_tuning/alpha/graders/run",
                               json={"grader": grader, "model_sample": big,
                                     "item": {"answer": "a"}}))
    assert error["param"] == "model_sample"
    error = error_of(http.post("/v1/fine_tuning/alpha/graders/run",
                               json={"grader": grader, "model_sample": "a",
                                     "item": {"answer": big}}))
    assert error["param"] == "item"
    ok = http.post("/v1/fine_tuning/alpha/graders/run",
                   json={"grader": grader, "model_sample": "abc", "item": {"answer": "abc"}})
    assert ok.status_code == 200 and ok.json()["reward"] == 1.0


def test_grader_run_past_its_time_limit_is_reward_0_with_the_timeout_flags(
        service_settings: Settings, api_key: str) -> None:
    settings = service_settings.model_copy(update={"grader_run_timeout_s": 0.01})
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": "fuzzy_match",
              "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
    # Within PAEC_MAX_GRADER_RUN_CHARS, but about 0.3 s of LCS: past a 10 ms limit.
    body = {"grader": grader, "model_sample": "ab" * 30_000, "item": {"answer": "ba" * 30_000}}
    with ThreadedServer(create_app(settings)) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {api_key}"},
            timeout=30) as client:
        r = client.post("/v1/fine_tuning/alpha/graders/run", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    errors = result["metadata"]["errors"]
    assert result["reward"] == 0.0
    assert (errors["timeout_error"], errors["unresponsive_reward_error"]) == (True, True)
    assert "PAEC_GRADER_RUN_TIMEOUT_S" in result["metadata"]["error_details"]
