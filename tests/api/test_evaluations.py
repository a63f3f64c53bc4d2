"""Evaluations over real HTTP: create (and the Celery task that reaches Redis), list, retrieve,
cancel; every validation error names its field; a worker's claim is a compare-and-set."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store.checkpoints import register_checkpoint
from store.db import transaction
from store.evaluations import (
    DEFAULT_GRADER,
    claim_evaluation,
    fail_evaluation,
    finish_evaluation,
)
from store.models import Checkpoint, Evaluation, Job
from store.queue import EVAL_QUEUE, EVALUATE_TASK
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import REDIS_TEST_URL, make_file, make_job, new_tenant_key


def create(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/api/evaluations",
                     json={"model": "builtin:smollm2-135m-instruct",
                           "datasets": ["builtin:add"], **body})


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def checkpoint_of(sessions: sessionmaker[Session], settings: Settings, tenant_id: str,
                  folder: Path) -> Checkpoint:
    """A checkpoint of a new job of `tenant_id` (its archive holds `folder`)."""
    job_id = make_job(sessions, tenant_id, status="running")
    (folder / "config.json").write_text("{}")
    with transaction(sessions) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        return register_checkpoint(session, LocalStorage(settings.resolved_artifacts_dir),
                                   job, 1, folder, full_state=True, metrics={})


def queued_ids() -> list[str]:
    """The ids carried by the evaluation tasks waiting in the test broker's Redis list."""
    found = []
    for raw in redis.Redis.from_url(REDIS_TEST_URL).lrange(EVAL_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] != EVALUATE_TASK:
            continue
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.extend(args)
    return found


def test_create_queues_an_evaluation_with_the_defaults_and_sends_its_task(
        http: httpx.Client) -> None:
    r = create(http, metadata={"run": "baseline"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("eval-")
    assert {k: body[k] for k in ("object", "model", "datasets", "k", "grader", "status",
                                 "results", "error", "metadata", "finished_at")} == {
        "object": "evaluation", "model": "builtin:smollm2-135m-instruct",
        "datasets": ["builtin:add"], "k": 8, "grader": DEFAULT_GRADER, "status": "queued",
        "results": None, "error": None, "metadata": {"run": "baseline"}, "finished_at": None}
    assert body["settings"] == {"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0,
                                "size": 64, "seed": 0}
    assert http.get(f"/api/evaluations/{body['id']}").json() == body
    deadline = time.monotonic() + 5
    while body["id"] not in queued_ids():
        assert time.monotonic() < deadline, "the evaluation task never reached Redis"
        time.sleep(0.05)


def test_the_tenants_files_checkpoints_and_a_grader_are_accepted(
        http: httpx.Client, sessions: sessionmaker[Session], tenant: tuple[str, str],
        service_settings: Settings, tmp_path: Path) -> None:
    file_id = make_file(sessions, tenant[0])
    ckpt = checkpoint_of(sessions, service_settings, tenant[0], tmp_path)
    grader = {"type": "math_verify", "name": "equal",
              "input": "{{sample.output_text}}", "reference": "{{item.solution}}"}
    r = create(http, model=ckpt.model_name, datasets=[file_id, "builtin:chain_sum"], k=4,
               grader=grader, temperature=0.7, top_p=0.9, max_new_tokens=128, size=16,
               seed=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["datasets"], body["k"], body["grader"]) == (
        ckpt.model_name, [file_id, "builtin:chain_sum"], 4, grader)
    assert body["settings"] == {"max_new_tokens": 128, "temperature": 0.7, "top_p": 0.9,
                                "size": 16, "seed": 3}


@pytest.mark.parametrize(("body", "param"), [
    ({"k": 0}, "k"),
    ({"k": 65}, "k"),
    ({"k": "8"}, "k"),
    ({"datasets": []}, "datasets"),
    ({"temperature": 0}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 4096}, "max_new_tokens"),
    ({"size": 0}, "size"),
    ({"colour": "blue"}, "colour"),
    ({"datasets": ["builtin:nope"]}, "datasets[0]"),
    ({"datasets": ["builtin:add", "builtin:add"]}, "datasets[1]"),
    ({"datasets": ["builtin:add", "file-doesnotexist"]}, "datasets[1]"),
    ({"model": "builtin:gpt-9"}, "model"),
    ({"model": "local:../../etc"}, "model"),
    ({"model": "/etc/passwd"}, "model"),
    ({"grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                 "reference": "x", "operation": "regex"}}, "grader.operation"),
    ({"grader": {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                 "reference": "x", "operation": "eq"}}, "grader.type"),
], ids=["k-zero", "k-too-big", "k-string", "no-datasets", "temperature-zero", "top-p-above-1",
        "too-many-tokens", "size-zero", "unknown-key", "unknown-task", "duplicate-dataset",
        "missing-file", "unknown-builtin-model", "local-traversal", "absolute-path",
        "bad-grader", "not-math-verify"])
def test_an_invalid_request_is_400_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                                    param: str) -> None:
    assert error_of(create(http, **body))["param"] == param


def test_another_tenants_file_answers_like_a_missing_one(
        http: httpx.Client, sessions: sessionmaker[Session]) -> None:
    other_tenant, _ = new_tenant_key(sessions)
    foreign = make_file(sessions, other_tenant)
    error = error_of(create(http, datasets=["builtin:add", foreign]))
    assert (error["param"], error["code"]) == ("datasets[1]", "file_not_found")


def test_another_tenants_checkpoint_is_not_a_model_of_yours(
        http: httpx.Client, sessions: sessionmaker[Session], service_settings: Settings,
        tmp_path: Path) -> None:
    other_tenant, _ = new_tenant_key(sessions)
    ckpt = checkpoint_of(sessions, service_settings, other_tenant, tmp_path)
    error = error_of(create(http, model=ckpt.model_name))
    assert (error["param"], error["code"]) == ("model", "model_not_found")


def test_the_list_pages_newest_first(http: httpx.Client) -> None:
    made = [create(http, seed=i).json()["id"] for i in range(3)]
    first = http.get("/api/evaluations", params={"limit": 2}).json()
    assert [e["id"] for e in first["data"]] == [made[2], made[1]]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (made[2], made[1],
                                                                         True)
    rest = http.get("/api/evaluations", params={"limit": 2, "after": first["last_id"]}).json()
    assert ([e["id"] for e in rest["data"]], rest["has_more"]) == ([made[0]], False)


def test_another_tenant_cannot_see_or_cancel_an_evaluation(
        http: httpx.Client, server: str, sessions: sessionmaker[Session]) -> None:
    evaluation_id = create(http).json()["id"]
    _, key = new_tenant_key(sessions)
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}) as other:
        assert other.get(f"/api/evaluations/{evaluation_id}").status_code == 404
        assert other.post(f"/api/evaluations/{evaluation_id}/cancel").status_code == 404
        assert other.get("/api/evaluations").json()["data"] == []


def test_cancel_is_idempotent(http: httpx.Client) -> None:
    evaluation_id = create(http).json()["id"]
    first = http.post(f"/api/evaluations/{evaluation_id}/cancel")
    again = http.post(f"/api/evaluations/{evaluation_id}/cancel")
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == again.json()["status"] == "cancelled"
    assert again.json()["finished_at"] == first.json()["finished_at"] is not None


def test_a_finished_evaluation_cannot_be_cancelled(http: httpx.Client,
                                                   sessions: sessionmaker[Session]) -> None:
    evaluation_id = create(http).json()["id"]
    results = {"builtin:add": {"avg@8": 0.25, "pass@8": 0.75, "maj@8": 0.5, "n": 64}}
    with transaction(sessions) as session:
        assert claim_evaluation(session, evaluation_id, "worker-a") is not None
        assert finish_evaluation(session, evaluation_id, results, worker_id="worker-a")
    r = http.post(f"/api/evaluations/{evaluation_id}/cancel")
    assert r.status_code == 409
    body = http.get(f"/api/evaluations/{evaluation_id}").json()
    assert (body["status"], body["results"]) == ("succeeded", results)


def test_a_worker_cannot_overwrite_a_cancel(http: httpx.Client,
                                            sessions: sessionmaker[Session]) -> None:
    evaluation_id = create(http).json()["id"]
    with transaction(sessions) as session:
        assert claim_evaluation(session, evaluation_id, "worker-a") is not None
    http.post(f"/api/evaluations/{evaluation_id}/cancel")
    with transaction(sessions) as session:
        assert not finish_evaluation(session, evaluation_id, {"builtin:add": {"n": 1}},
                                     worker_id="worker-a")
        assert not fail_evaluation(session, evaluation_id, "oom", "out of memory",
                                   worker_id="worker-a")
    body = http.get(f"/api/evaluations/{evaluation_id}").json()
    assert (body["status"], body["results"], body["error"]) == ("cancelled", None, None)


def test_a_failure_is_recorded_with_its_code(http: httpx.Client,
                                             sessions: sessionmaker[Session]) -> None:
    evaluation_id = create(http).json()["id"]
    with transaction(sessions) as session:
        claim_evaluation(session, evaluation_id, "worker-a")
        assert fail_evaluation(session, evaluation_id, "oom", "out of memory",
                               worker_id="worker-a")
    body = http.get(f"/api/evaluations/{evaluation_id}").json()
    assert (body["status"], body["error"]) == ("failed", {"code": "oom",
                                                          "message": "out of memory"})


def test_of_two_concurrent_claims_exactly_one_wins(http: httpx.Client,
                                                    sessions: sessionmaker[Session]) -> None:
    evaluation_id = create(http).json()["id"]
    outcome: dict[str, object] = {}
    with sessions() as first:
        won = claim_evaluation(first, evaluation_id, "worker-a")  # row locked, uncommitted

        def second_claim() -> None:
            with transaction(sessions) as session:
                outcome["second"] = claim_evaluation(session, evaluation_id, "worker-b")

        thread = threading.Thread(target=second_claim)
        thread.start()
        time.sleep(0.3)  # the second UPDATE now waits on the first one's row lock
        first.commit()
        thread.join(timeout=10)
    assert won is not None and (won.status, won.attempt, won.worker_id) == ("running", 1,
                                                                            "worker-a")
    assert outcome == {"second": None}
    body = http.get(f"/api/evaluations/{evaluation_id}").json()
    assert body["status"] == "running" and body["started_at"] is not None


def test_a_worker_that_lost_its_claim_cannot_finish_or_fail_the_evaluation(
        http: httpx.Client, sessions: sessionmaker[Session]) -> None:
    """worker-a's heartbeat went stale, the sweeper re-queued the
    evaluation and worker-b claimed it; worker-a's late results are not written."""
    evaluation_id = create(http).json()["id"]
    with transaction(sessions) as session:
        assert claim_evaluation(session, evaluation_id, "worker-a") is not None
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                        .values(status="queued", worker_id=None))  # what the sweeper does
        assert claim_evaluation(session, evaluation_id, "worker-b") is not None
    with transaction(sessions) as session:
        assert not finish_evaluation(session, evaluation_id, {"builtin:add": {"n": 1}},
                                     worker_id="worker-a")
        assert not fail_evaluation(session, evaluation_id, "oom", "out of memory",
                                   worker_id="worker-a")
    body = http.get(f"/api/evaluations/{evaluation_id}").json()
    assert (body["status"], body["results"], body["error"]) == ("running", None, None)
    with transaction(sessions) as session:
        assert finish_evaluation(session, evaluation_id, {"builtin:add": {"n": 1}},
                                 worker_id="worker-b")
    assert http.get(f"/api/evaluations/{evaluation_id}").json()["status"] == "succeeded"
