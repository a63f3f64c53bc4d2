"""Routing by device kind and number of processes: the queue names, which queues a worker
consumes without -Q (`default_queues`), a real `celery worker` on the CPU started without -Q
that trains the jobs it may take and leaves a GPU job queued for a GPU worker, and jobs of
several processes sent to the queue of workers that own as many devices (or refused past the
operator's limit)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import pytest
import redis
import torch
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.db import transaction, utcnow
from store.hyperparameters import PARAM, job_processes, resolve_hyperparameters
from store.models import Job
from store.queue import (
    EVAL_QUEUE,
    TRAIN_CPU_QUEUE,
    TRAIN_GPU_QUEUE,
    TRAIN_QUEUE,
    CeleryQueue,
    training_queue,
    worker_training_queues,
)
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import ThreadedServer, make_job, new_tenant_key
from tests.worker.conftest import BROKER, Workers, job_row, settings_from, wait_for
from tests.worker.test_processes import TWO, two_process_settings
from tests.worker.test_worker import GRADER, status, submit, upload
from worker.celery_app import default_queues
from worker.runner import Context
from worker.sweeper import sweep_once

CPU_QUEUES = [TRAIN_QUEUE, TRAIN_CPU_QUEUE, EVAL_QUEUE]
GPU_QUEUES = [TRAIN_QUEUE, TRAIN_GPU_QUEUE, EVAL_QUEUE]


@pytest.mark.parametrize(("device", "expected"), [
    ("cpu", CPU_QUEUES), ("cuda", GPU_QUEUES), ("cuda:1", GPU_QUEUES), ("mps", CPU_QUEUES),
])
def test_a_worker_consumes_the_training_queue_of_its_device(device: str,
                                                            expected: list[str]) -> None:
    assert default_queues(Settings(worker_device=device)) == expected


def test_an_auto_worker_consumes_the_gpu_queue_only_when_torch_sees_a_gpu() -> None:
    expected = GPU_QUEUES if torch.cuda.is_available() else CPU_QUEUES
    assert default_queues(Settings(worker_device="auto")) == expected


@pytest.mark.parametrize(("kind", "processes", "queue"), [
    ("any", 1, "training"), ("gpu", 1, "training.gpu"), ("cpu", 1, "training.cpu"),
    ("any", 2, "training.x2"), ("gpu", 8, "training.gpu.x8"), ("cpu", 2, "training.cpu.x2"),
])
def test_a_job_s_queue_is_named_by_its_kind_and_its_processes(kind: str, processes: int,
                                                              queue: str) -> None:
    assert training_queue(kind, processes) == queue


@pytest.mark.parametrize(("kind", "processes"), [("tpu", 1), ("gpu", 0), ("gpu", True)])
def test_an_unknown_kind_or_a_count_below_one_has_no_queue(kind: str, processes: int) -> None:
    with pytest.raises(ValueError):
        training_queue(kind, processes)


@pytest.mark.parametrize(("device", "kind"), [("cpu", "cpu"), ("cuda", "gpu")])
def test_a_worker_that_owns_two_devices_also_takes_two_process_jobs(device: str,
                                                                    kind: str) -> None:
    queues = default_queues(Settings(worker_device=device, worker_processes=2))
    assert queues == ["training.x2", f"training.{kind}.x2", "training", f"training.{kind}",
                      EVAL_QUEUE]


def test_a_worker_takes_every_job_that_fits_on_its_devices() -> None:
    queues = worker_training_queues("gpu", 4)
    assert queues[:2] == ["training.x4", "training.gpu.x4"]
    assert {training_queue(k, n) for k in ("any", "gpu") for n in (1, 2, 3, 4)} == set(queues)
    assert not any("cpu" in q or "x5" in q for q in queues)


def test_a_multi_device_worker_cannot_be_pinned_to_one_gpu() -> None:
    with pytest.raises(ValueError, match="worker_processes"):
        Settings(worker_device="cuda:1", worker_processes=2)
    assert Settings(worker_device="cuda:1").worker_processes == 1


def test_the_processes_of_a_job_are_read_back_from_its_method() -> None:
    hyper = resolve_hyperparameters({"num_processes": 2, "batch_size": 4}, training_rows=8)
    assert hyper.processes == 2 and hyper.config["num_processes"] == 2
    method = {"type": "reinforcement", "reinforcement": {"hyperparameters": hyper.echo}}
    assert job_processes(method) == 2
    olds: list[object] = [{}, {"reinforcement": {"hyperparameters": {}}}, None,
                          {"reinforcement": {"hyperparameters": {"num_processes": "2"}}}]
    for old in olds:
        assert job_processes(old) == 1  # jobs from before the key, or unreadable: one


def test_worker_queues_setting_overrides_the_device() -> None:
    settings = Settings(worker_device="cuda", worker_queues=" evaluation , training.gpu")
    assert default_queues(settings) == [EVAL_QUEUE, TRAIN_GPU_QUEUE]


@pytest.mark.parametrize("value", ["", " ", "training,,evaluation"])
def test_a_blank_queue_name_is_an_invalid_setting(value: str) -> None:
    with pytest.raises(ValueError, match="worker_queues"):
        Settings(worker_queues=value)


def waiting_job_ids(queue: str) -> list[str]:
    """Job ids of the messages waiting in a Redis queue (kombu: a list of JSON envelopes
    whose body is the base64 of [args, kwargs, embed])."""
    found = []
    for raw in redis.Redis.from_url(BROKER).lrange(queue, 0, -1):
        args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        found.append(args[0])
    return found


def test_a_cpu_worker_without_q_trains_cpu_and_any_jobs_and_leaves_gpu_jobs_queued(
        user: httpx.Client, workers: Workers,
        worker_sessions: sessionmaker[Session]) -> None:
    file_id = upload(user)
    gpu_job = submit(user, file_id, steps=2, device="gpu")
    cpu_job = submit(user, file_id, steps=2, device="cpu")
    any_job = submit(user, file_id, steps=2)
    assert gpu_job in waiting_job_ids(TRAIN_GPU_QUEUE)
    workers.start(queues=None)  # the fixture's environment sets PAEC_WORKER_DEVICE=cpu
    try:
        wait_for(lambda: all(status(user, j) in ("succeeded", "failed")
                             for j in (cpu_job, any_job)),
                 timeout=180, what="the cpu and the any job to finish", log=workers.log)
        assert [status(user, j) for j in (cpu_job, any_job)] == ["succeeded"] * 2, workers.log()
        # The CPU worker never claimed the GPU job: no attempt, no worker, still waiting.
        row = job_row(worker_sessions, gpu_job)
        assert (row.status, row.attempt, row.worker_id) == ("queued", 0, None)
        assert gpu_job in waiting_job_ids(TRAIN_GPU_QUEUE)
    finally:
        # No GPU worker will come: cancel, so that later tests' sweepers leave it alone.
        user.post(f"/v1/fine_tuning/jobs/{gpu_job}/cancel")


def test_the_sweeper_re_sends_jobs_to_the_queue_of_their_device_kind(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session]) -> None:
    tenant_id, _ = new_tenant_key(worker_sessions)
    long_ago = utcnow() - timedelta(hours=1)

    def method(kind: str) -> dict[str, object]:
        return {"type": "reinforcement", "reinforcement": {"hyperparameters": {"device": kind}}}

    # A GPU job whose worker died (stale heartbeat) and a CPU job whose message was lost.
    dead = make_job(worker_sessions, tenant_id, status="running", method=method("gpu"),
                    worker_id="gone:1", attempt=1, heartbeat_at=long_ago, queued_at=long_ago)
    lost = make_job(worker_sessions, tenant_id, status="queued", method=method("cpu"),
                    queued_at=long_ago)
    settings = settings_from(worker_env)
    ctx = Context(settings=settings, sessions=worker_sessions,
                  storage=LocalStorage(settings.resolved_artifacts_dir), worker_id="test:0")
    # A job is sent again only to an empty queue (item 13b): start from empty ones.
    redis.Redis.from_url(BROKER).delete(TRAIN_CPU_QUEUE, TRAIN_GPU_QUEUE)
    try:
        result = sweep_once(ctx, CeleryQueue(BROKER).app)
        assert dead in result.requeued and lost in result.resent
        assert dead in waiting_job_ids(TRAIN_GPU_QUEUE)
        assert lost in waiting_job_ids(TRAIN_CPU_QUEUE)
        assert not {dead, lost} & set(waiting_job_ids(TRAIN_QUEUE))
    finally:
        # No worker here may train them: cancel, so that later sweeps leave them alone.
        with transaction(worker_sessions) as session:
            session.execute(update(Job).where(Job.id.in_([dead, lost]))
                            .values(status="cancelled", worker_id=None))


def test_a_job_whose_message_still_waits_is_not_sent_again(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session]) -> None:
    """A GPU job no worker consumes stays queued; each sweep past
    `resend_after_s` used to add one more message for it. Now a job is sent again only once
    its queue is empty, i.e. when its previous message cannot still be waiting there."""
    broker = redis.Redis.from_url(BROKER)
    broker.delete(TRAIN_GPU_QUEUE)
    tenant_id, _ = new_tenant_key(worker_sessions)
    method = {"type": "reinforcement", "reinforcement": {"hyperparameters": {"device": "gpu"}}}
    job_id = make_job(worker_sessions, tenant_id, status="queued", method=method)
    settings = settings_from(worker_env)
    ctx = Context(settings=settings, sessions=worker_sessions,
                  storage=LocalStorage(settings.resolved_artifacts_dir), worker_id="test:0")
    app = CeleryQueue(BROKER).app

    def sweep_after_a_long_wait() -> list[str]:
        with transaction(worker_sessions) as session:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(queued_at=utcnow() - timedelta(hours=1)))
        return sweep_once(ctx, app).resent

    try:
        assert job_id in sweep_after_a_long_wait()  # its message was lost: sent
        for _ in range(3):  # its message waits: nothing more
            assert job_id not in sweep_after_a_long_wait()
        assert waiting_job_ids(TRAIN_GPU_QUEUE) == [job_id]
        broker.delete(TRAIN_GPU_QUEUE)  # Redis lost it (restarted empty)
        assert job_id in sweep_after_a_long_wait()
        assert waiting_job_ids(TRAIN_GPU_QUEUE) == [job_id]
    finally:
        with transaction(worker_sessions) as session:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(status="cancelled", worker_id=None))
        broker.delete(TRAIN_GPU_QUEUE)


def test_a_job_past_the_process_limit_is_a_400_naming_num_processes(
        user: httpx.Client) -> None:
    """The default PAEC_MAX_JOB_PROCESSES is 1: a two-process job is refused, in the error
    envelope, naming the field."""
    body = {"model": "local:tiny", "training_file": upload(user),
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": {"num_processes": 2, "batch_size": 2}}}}
    r = user.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == f"{PARAM}.num_processes"
    assert error["type"] == "invalid_request_error"
    assert "PAEC_MAX_JOB_PROCESSES" in error["message"] and "at most 1" in error["message"]


def test_a_two_process_job_is_sent_to_the_queue_of_two_device_workers(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session]) -> None:
    _, key = new_tenant_key(worker_sessions)
    broker = redis.Redis.from_url(BROKER)
    queues = ("training.x2", "training.cpu.x2")
    with ThreadedServer(create_app(two_process_settings(worker_env))) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"},
            timeout=30) as user:
        file_id = upload(user)
        cpu = submit(user, file_id, steps=2, **TWO)
        anywhere = submit(user, file_id, steps=2, **{**TWO, "device": "any"})
        one = submit(user, file_id, steps=2, device="cpu")
        try:
            assert cpu in waiting_job_ids("training.cpu.x2")
            assert anywhere in waiting_job_ids("training.x2")
            assert one in waiting_job_ids(TRAIN_CPU_QUEUE)
            assert not {cpu, anywhere} & set(waiting_job_ids(TRAIN_CPU_QUEUE)
                                             + waiting_job_ids(TRAIN_QUEUE))
        finally:
            for job_id in (cpu, anywhere, one):  # no worker here: cancel them
                user.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
            broker.delete(*queues)


def test_the_sweeper_re_sends_a_two_process_job_to_its_queue(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session]) -> None:
    tenant_id, _ = new_tenant_key(worker_sessions)
    method = {"type": "reinforcement", "reinforcement": {"hyperparameters": {
        "device": "gpu", "num_processes": 2}}}
    job_id = make_job(worker_sessions, tenant_id, status="queued", method=method,
                      queued_at=utcnow() - timedelta(hours=1))
    settings = settings_from(worker_env)
    ctx = Context(settings=settings, sessions=worker_sessions,
                  storage=LocalStorage(settings.resolved_artifacts_dir), worker_id="test:0")
    broker = redis.Redis.from_url(BROKER)
    broker.delete("training.gpu.x2")
    try:
        assert job_id in sweep_once(ctx, CeleryQueue(BROKER).app).resent
        assert waiting_job_ids("training.gpu.x2") == [job_id]
    finally:
        with transaction(worker_sessions) as session:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(status="cancelled", worker_id=None))
        broker.delete("training.gpu.x2")
