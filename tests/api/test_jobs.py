"""/v1/fine_tuning/jobs over real HTTP (httpx) on a real Postgres and a real Celery queue in
Redis: creation and its events, the queue message, bad input that leaves no row, the job
object's shape, idempotent creation (keys, concurrent keys, keyless client retries), and the
state changes' edges. The official client's view is in test_openai_client.py."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.db import transaction
from store.models import IdempotencyKey, Job
from store.queue import TRAIN_CPU_QUEUE, TRAIN_GPU_QUEUE, TRAIN_QUEUE
from store.settings import Settings
from tests.service import REDIS_TEST_URL, ThreadedServer, make_file, make_job, new_tenant_key

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
JOB_FIELDS = {"id", "object", "created_at", "model", "organization_id", "status", "error",
              "fine_tuned_model", "finished_at", "hyperparameters", "result_files", "seed",
              "trained_tokens", "training_file", "validation_file", "estimated_finish",
              "integrations", "metadata", "method"}


def job_request(training_file: str, **fields: Any) -> dict[str, Any]:
    hyper = fields.pop("hyperparameters", {"n_epochs": 1, "batch_size": 2, "group_size": 4})
    return {"model": "builtin:smollm2-135m-instruct", "training_file": training_file,
            "method": {"type": "reinforcement",
                       "reinforcement": {"grader": GRADER, "hyperparameters": hyper}},
            **fields}


def job_count(sessions: sessionmaker[Session], tenant_id: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)
                                  .where(Job.tenant_id == tenant_id)) or 0)


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()


def queued_job_ids(queue: str = TRAIN_QUEUE) -> list[str]:
    """Job ids in the Celery messages waiting in Redis (kombu keeps a queue as a list of
    JSON envelopes whose body is the base64 of [args, kwargs, embed])."""
    found = []
    for raw in redis.Redis.from_url(REDIS_TEST_URL).lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        found.append(args[0])
    return found


@pytest.fixture
def tenant_id(tenant: tuple[str, str]) -> str:
    return tenant[0]


@pytest.fixture
def training_file(sessions: sessionmaker[Session], tenant_id: str) -> str:
    return make_file(sessions, tenant_id, rows=4)


def create(http: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    return http.post("/v1/fine_tuning/jobs", json=body, headers=headers)


# ---- create ----

def test_a_created_job_is_queued_with_its_events(http: httpx.Client, training_file: str,
                                                 sessions: sessionmaker[Session],
                                                 tenant_id: str) -> None:
    validation = make_file(sessions, tenant_id, rows=3)
    r = create(http, job_request(training_file, validation_file=validation))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "queued"
    events = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()
    assert [e["message"] for e in events["data"] if e["level"] == "info"] == [
        "Job queued", f"Validated validation file {validation} (3 rows)",
        f"Validated training file {training_file} (4 rows)",
        f"Created fine-tuning job {job['id']}"]
    assert events["has_more"] is False


def test_a_job_too_short_for_the_anchor_says_so_in_a_warn_event(
        http: httpx.Client, training_file: str) -> None:
    # 4 rows, 2 a step, one epoch: 2 steps, while the anchor measures the first 4.
    job = create(http, job_request(training_file)).json()
    events = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    warned = [e for e in events if e["level"] == "warn"]
    assert len(warned) == 1
    assert warned[0]["message"].startswith("Warning: steps (2) <= paec.anchor_steps (4)")
    assert "never acts" in warned[0]["message"]
    fixed = create(http, job_request(training_file, hyperparameters={
        "n_epochs": 1, "batch_size": 2, "paec": {"anchor_steps": 1}})).json()
    events = http.get(f"/v1/fine_tuning/jobs/{fixed['id']}/events").json()["data"]
    assert [e for e in events if e["level"] == "warn"] == []


def test_a_created_job_is_sent_to_the_training_queue(http: httpx.Client,
                                                     training_file: str) -> None:
    job = create(http, job_request(training_file)).json()
    assert job["id"] in queued_job_ids()


def test_a_job_is_sent_to_the_queue_of_the_device_kind_it_asks_for(
        http: httpx.Client, training_file: str) -> None:
    hyper = {"n_epochs": 1, "batch_size": 2}
    gpu = create(http, job_request(training_file, hyperparameters={**hyper, "device": "gpu"}))
    cpu = create(http, job_request(training_file, hyperparameters={**hyper, "device": "cpu"}))
    default = create(http, job_request(training_file, hyperparameters=hyper))
    assert gpu.json()["method"]["reinforcement"]["hyperparameters"]["device"] == "gpu"
    assert default.json()["method"]["reinforcement"]["hyperparameters"]["device"] == "any"
    # The queues are shared by the session's tests: look for these three jobs only.
    ours = {r.json()["id"] for r in (gpu, cpu, default)}
    by_queue = {q: ours & set(queued_job_ids(q))
                for q in (TRAIN_QUEUE, TRAIN_GPU_QUEUE, TRAIN_CPU_QUEUE)}
    assert by_queue == {TRAIN_QUEUE: {default.json()["id"]},
                        TRAIN_GPU_QUEUE: {gpu.json()["id"]},
                        TRAIN_CPU_QUEUE: {cpu.json()["id"]}}


def test_an_unknown_device_kind_is_a_400_that_leaves_no_job(
        http: httpx.Client, training_file: str, sessions: sessionmaker[Session],
        tenant_id: str) -> None:
    r = create(http, job_request(training_file, hyperparameters={"device": "cuda:0"}))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "method.reinforcement.hyperparameters.device"
    assert job_count(sessions, tenant_id) == 0


def test_the_job_object_has_every_field_the_client_requires(http: httpx.Client,
                                                            training_file: str,
                                                            tenant_id: str) -> None:
    job = create(http, job_request(training_file, suffix="math-v1",
                                   metadata={"exp": "a"})).json()
    assert set(job) >= JOB_FIELDS
    assert job["object"] == "fine_tuning.job"
    assert job["organization_id"] == tenant_id
    assert (job["error"], job["fine_tuned_model"], job["finished_at"]) == (None, None, None)
    assert (job["result_files"], job["trained_tokens"]) == ([], None)
    assert job["hyperparameters"] == {"batch_size": 2, "learning_rate_multiplier": 1,
                                      "n_epochs": 1}
    assert job["total_steps"] == 2  # ceil(1 epoch * 4 rows / 2 prompts per step)
    assert job["metadata"] == {"exp": "a"}
    assert job["user_provided_suffix"] == "math-v1"
    assert job["method"]["reinforcement"]["grader"] == GRADER


def test_a_seed_is_generated_when_absent_and_kept_when_given(http: httpx.Client,
                                                             training_file: str) -> None:
    generated = create(http, job_request(training_file)).json()["seed"]
    assert isinstance(generated, int) and 0 <= generated <= 2_147_483_647
    assert create(http, job_request(training_file, seed=7)).json()["seed"] == 7


def test_the_job_row_holds_the_config_the_worker_runs(http: httpx.Client, training_file: str,
                                                      sessions: sessionmaker[Session]) -> None:
    job = create(http, job_request(training_file, hyperparameters={
        "steps": 3, "group_size": 4, "paec": {"quantile": 0.7}})).json()
    row = job_row(sessions, job["id"])
    assert (row.total_steps, row.config["steps"], row.config["group_size"]) == (3, 3, 4)
    assert row.config["paec"]["quantile"] == 0.7
    assert not {"model", "train_data", "grader", "seed", "output_dir"} & set(row.config)


@pytest.mark.parametrize(("body", "param", "code"), [
    (lambda f: {**job_request(f), "training_files": [f]}, "training_files", None),
    (lambda f: job_request(f, hyperparameters={"paec": {"top_p": 1.5}}),
     "method.reinforcement.hyperparameters.paec.top_p", None),
    (lambda f: job_request(f, hyperparameters={"batch_size": 0}),
     "method.reinforcement.hyperparameters.batch_size", None),
    (lambda f: {**job_request(f), "model": "gpt-4o-mini"}, "model", "model_not_found"),
    (lambda f: {**job_request(f), "model": "local:../../etc"}, "model", "model_not_found"),
    (lambda f: {**job_request(f), "model": "/etc/passwd"}, "model", "model_not_found"),
    (lambda f: {**job_request(f), "training_file": "file-doesnotexist"}, "training_file",
     "file_not_found"),
    (lambda f: job_request(f, validation_file="file-nope"), "validation_file",
     "file_not_found"),
    (lambda f: {**job_request(f), "method": {"type": "supervised", "supervised": {}}},
     "method.type", None),
    (lambda f: {k: v for k, v in job_request(f).items() if k != "method"}, "method.type",
     None),
    (lambda f: {**job_request(f), "method": {"type": "reinforcement", "reinforcement": {}}},
     "method.reinforcement.grader", None),
    (lambda f: {**job_request(f), "method": {"type": "reinforcement", "reinforcement": {
        "grader": {**GRADER, "operation": "regex"}}}},
     "method.reinforcement.grader.operation", None),
    (lambda f: job_request(f, integrations=[{"type": "wandb", "wandb": {"project": "p"}}]),
     "integrations", None),
    (lambda f: job_request(f, suffix="has space"), "suffix", None),
    (lambda f: job_request(f, seed=2**31), "seed", None),
    (lambda f: job_request(f, metadata={str(i): "v" for i in range(17)}), "metadata", None),
    (lambda f: job_request(f, metadata={"k": "v" * 513}), "metadata.k", None),
    (lambda f: job_request(f, hyperparameters={"reasoning_effort": "high"}),
     "method.reinforcement.hyperparameters.reasoning_effort", None),
    (lambda f: {**job_request(f), "hyperparameters": {"n_epochs": 2}}, "hyperparameters", None),
])
def test_bad_input_is_a_400_naming_the_field_and_leaves_no_job(
        http: httpx.Client, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session], body: Any, param: str, code: str | None) -> None:
    r = create(http, body(training_file))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    if code is not None:
        assert error["code"] == code
    assert error["message"]
    assert job_count(sessions, tenant_id) == 0


def test_malformed_json_is_a_400_and_leaves_no_job(http: httpx.Client, tenant_id: str,
                                                   sessions: sessionmaker[Session]) -> None:
    r = http.post("/v1/fine_tuning/jobs", content=b'{"model": ',
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]["message"]
    assert job_count(sessions, tenant_id) == 0


def test_another_tenants_file_answers_exactly_like_a_missing_one(
        http: httpx.Client, training_file: str, sessions: sessionmaker[Session],
        tenant_id: str) -> None:
    other, _ = new_tenant_key(sessions)
    foreign = make_file(sessions, other)
    missing = "file-" + "x" * 24
    foreign_error = create(http, job_request(foreign)).json()["error"]
    missing_error = create(http, job_request(missing)).json()["error"]
    foreign_error["message"] = foreign_error["message"].replace(foreign, "<id>")
    missing_error["message"] = missing_error["message"].replace(missing, "<id>")
    assert foreign_error == missing_error
    assert job_count(sessions, tenant_id) == 0


def test_the_job_is_created_even_when_the_broker_is_down(
        service_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    tenant_id, key = new_tenant_key(sessions)
    training = make_file(sessions, tenant_id)
    settings = service_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with ThreadedServer(create_app(settings)) as running:
        r = httpx.post(running.url + "/v1/fine_tuning/jobs", json=job_request(training),
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert job_row(sessions, r.json()["id"]).status == "queued"


# ---- idempotency ----

def test_the_same_idempotency_key_replays_the_first_response(
        http: httpx.Client, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    first = create(http, body, **{"Idempotency-Key": "k-1"})
    again = create(http, body, **{"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert job_count(sessions, tenant_id) == 1


def test_concurrent_requests_with_one_key_create_one_job(
        server: str, api_key: str, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        with httpx.Client(base_url=server, timeout=60,
                          headers={"Authorization": f"Bearer {api_key}"}) as client:
            barrier.wait()
            results.append(create(client, body, **{"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
    assert len({json.dumps(r.json(), sort_keys=True) for r in results}) == 1
    assert job_count(sessions, tenant_id) == 1


def test_a_reused_key_with_another_body_is_a_non_retryable_409(
        http: httpx.Client, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session]) -> None:
    create(http, job_request(training_file), **{"Idempotency-Key": "k-2"})
    r = create(http, job_request(training_file, seed=1), **{"Idempotency-Key": "k-2"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert r.headers["x-should-retry"] == "false"
    assert job_count(sessions, tenant_id) == 1


def test_a_key_longer_than_255_characters_is_a_400(http: httpx.Client, training_file: str,
                                                   tenant_id: str,
                                                   sessions: sessionmaker[Session]) -> None:
    r = create(http, job_request(training_file), **{"Idempotency-Key": "k" * 256})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"
    assert job_count(sessions, tenant_id) == 0


def test_a_failed_create_does_not_burn_its_key(http: httpx.Client, training_file: str,
                                               tenant_id: str,
                                               sessions: sessionmaker[Session]) -> None:
    bad = job_request(training_file, seed=-1)
    assert create(http, bad, **{"Idempotency-Key": "k-3"}).status_code == 400
    r = create(http, job_request(training_file), **{"Idempotency-Key": "k-3"})
    assert r.status_code == 200
    assert job_count(sessions, tenant_id) == 1


def test_a_keyless_client_retry_replays_instead_of_creating_again(
        http: httpx.Client, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    first = create(http, body, **{"x-stainless-retry-count": "0"})
    retry = create(http, body, **{"x-stainless-retry-count": "1"})
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert job_count(sessions, tenant_id) == 1
    assert queued_job_ids().count(first.json()["id"]) == 1  # a replay enqueues nothing


def test_two_first_attempts_with_one_body_create_two_jobs(
        http: httpx.Client, training_file: str, tenant_id: str,
        sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    ids = {create(http, body, **{"x-stainless-retry-count": "0"}).json()["id"],
           create(http, body).json()["id"]}
    assert len(ids) == 2
    assert job_count(sessions, tenant_id) == 2


def test_a_retry_replays_the_newest_identical_create(http: httpx.Client, training_file: str,
                                                     sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    create(http, body)
    newest = create(http, body).json()
    retry = create(http, body, **{"x-stainless-retry-count": "2"}).json()
    assert retry["id"] == newest["id"]


def test_a_retry_older_than_the_window_creates(http: httpx.Client, training_file: str,
                                               tenant_id: str,
                                               sessions: sessionmaker[Session]) -> None:
    body = job_request(training_file)
    create(http, body)
    with transaction(sessions) as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id)
                        .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 11)))
    create(http, body, **{"x-stainless-retry-count": "1"})
    assert job_count(sessions, tenant_id) == 2


# ---- state changes and reads ----

def test_resume_while_the_pause_checkpoint_is_written_is_a_retryable_409(
        http: httpx.Client, sessions: sessionmaker[Session], tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, status="paused", worker_id="w-1")
    r = http.post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    assert r.status_code == 409
    assert r.headers["x-should-retry"] == "true"
    assert "retry-after-ms" in r.headers
    assert job_row(sessions, job_id).status == "paused"


def test_resuming_a_paused_job_queues_and_enqueues_it(http: httpx.Client,
                                                      sessions: sessionmaker[Session],
                                                      tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, status="paused")
    r = http.post(f"/v1/fine_tuning/jobs/{job_id}/resume",
                  headers={"Content-Type": "application/json"})
    assert r.json()["status"] == "queued"
    assert job_id in queued_job_ids()
    messages = [e["message"] for e in
                http.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]]
    assert messages == ["Job resumed"]


def test_a_resumed_job_goes_back_to_the_queue_of_its_device_kind(
        http: httpx.Client, sessions: sessionmaker[Session], tenant_id: str) -> None:
    method = {"type": "reinforcement",
              "reinforcement": {"grader": GRADER, "hyperparameters": {"device": "gpu"}}}
    job_id = make_job(sessions, tenant_id, status="paused", method=method)
    assert http.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    assert job_id in queued_job_ids(TRAIN_GPU_QUEUE)
    assert job_id not in queued_job_ids(TRAIN_QUEUE)


def test_cancelling_a_running_job_sets_finished_at(http: httpx.Client,
                                                   sessions: sessionmaker[Session],
                                                   tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, status="running", worker_id="w-1")
    job = http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    assert job["status"] == "cancelled"
    assert isinstance(job["finished_at"], int)


def test_resuming_a_cancelled_job_is_a_non_retryable_409(http: httpx.Client,
                                                         sessions: sessionmaker[Session],
                                                         tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, status="cancelled")
    r = http.post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "invalid_state"
    assert r.headers["x-should-retry"] == "false"


def test_a_failed_job_shows_its_error_object(http: httpx.Client,
                                             sessions: sessionmaker[Session],
                                             tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, status="failed",
                      error={"code": "worker_lost", "message": "gone"})
    job = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["error"] == {"code": "worker_lost", "message": "gone", "param": None}


def test_listing_after_an_unknown_job_is_a_400(http: httpx.Client) -> None:
    r = http.get("/v1/fine_tuning/jobs", params={"after": "ftjob-nope"})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "after")


def test_a_list_limit_over_100_is_a_400(http: httpx.Client) -> None:
    r = http.get("/v1/fine_tuning/jobs", params={"limit": 101})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "limit")
