"""A job submitted over HTTP is trained by a real `celery worker` process, and survives what
workers meet: SIGKILL mid-run, cancel, pause and resume, bad input."""

from __future__ import annotations

import io
import re
import signal
import tarfile
from pathlib import Path
from typing import Any

import httpx
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoModelForCausalLM

from store.models import Checkpoint, Event, Metric
from tests.worker.conftest import TINY_HYPERPARAMETERS, Workers, job_row, wait_for

ROWS = [{"prompt": f"What is {a} + {b}? Answer with just the number.", "answer": str(a + b)}
        for a in range(1, 5) for b in range(1, 4)]
# A random tiny model is never exactly right; fuzzy similarity varies within a group, so
# every step has advantages and an update (all-equal groups would skip it).
GRADER = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}


def upload(user: httpx.Client, rows: list[dict[str, Any]] | None = None) -> str:
    body = "".join(__import__("json").dumps(r) + "\n" for r in (rows or ROWS)).encode()
    r = user.post("/v1/files", files={"file": ("train.jsonl", body)},
                  data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def submit(user: httpx.Client, file_id: str, *, grader: dict[str, Any] | None = None,
           **hyperparameters: Any) -> str:
    body = {"model": "local:tiny", "training_file": file_id, "seed": 3,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": grader or GRADER,
                "hyperparameters": {**TINY_HYPERPARAMETERS, **hyperparameters}}}}
    r = user.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def status(user: httpx.Client, job_id: str) -> str:
    return str(user.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"])


def metric_steps(sessions: sessionmaker[Session], job_id: str, name: str) -> list[int]:
    with sessions() as session:
        return list(session.scalars(select(Metric.step).where(
            Metric.job_id == job_id, Metric.name == name).order_by(Metric.step)))


def test_a_job_submitted_over_http_is_trained_by_a_worker(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session],
        tmp_path: Path) -> None:
    job_id = submit(user, upload(user), steps=4)
    workers.start()
    wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=120,
             what="the job to finish", log=workers.log)
    job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded", (job, workers.log())
    assert job["fine_tuned_model"].startswith("ft:tiny:")
    assert job["trained_tokens"] > 0 and job["error"] is None
    assert metric_steps(worker_sessions, job_id, "reward/mean") == [1, 2, 3, 4]
    assert metric_steps(worker_sessions, job_id, "entropy") == [1, 2, 3, 4]
    # The worker's log shows the job training, one line a step, and no progress bars.
    log = workers.log()
    for step in (1, 4):
        assert re.search(rf"job {job_id}: Step {step}/4, reward=[-0-9.e]+, entropy=", log), log
    assert "Loading weights" not in log and "it/s]" not in log
    # the result file is the metrics CSV, downloadable like any file
    csv = user.get(f"/v1/files/{job['result_files'][0]}/content").text
    assert csv.splitlines()[0].startswith("step,") and len(csv.splitlines()) == 5
    events = user.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
    messages = [e["message"] for e in events["data"]]
    assert any(m.startswith("Step 4/4") for m in messages)
    assert "The job has successfully completed" in messages
    # checkpoints at steps 2 and 4; the last one downloads and loads with transformers
    ckpts = user.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [4, 2]
    archive = user.get(f"/api/checkpoints/{ckpts[0]['id']}/download")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(tmp_path / "ckpt", filter="data")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert isinstance(model.lm_head.weight, torch.Tensor)


def test_a_killed_worker_s_job_resumes_from_its_checkpoint_on_another(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(user, upload(user), steps=14)
    first = workers.start()

    def checkpointed() -> bool:
        with worker_sessions() as session:
            n = session.scalar(select(func.count()).select_from(Checkpoint)
                               .where(Checkpoint.job_id == job_id))
        return bool(n) and job_row(worker_sessions, job_id).step >= 3

    wait_for(checkpointed, timeout=120, what="a checkpoint", log=workers.log)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = job_row(worker_sessions, job_id).step
    assert killed_at < 14, "the job finished before the kill: make it longer"
    workers.start()
    wait_for(lambda: job_row(worker_sessions, job_id).status in ("succeeded", "failed"),
             timeout=180, what="the resumed job to finish", log=workers.log)
    job = job_row(worker_sessions, job_id)
    assert job.status == "succeeded", workers.log()
    assert job.attempt == 2
    # no gaps and no duplicates (the primary key forbids duplicates; count the steps)
    assert metric_steps(worker_sessions, job_id, "reward/mean") == list(range(1, 15))
    with worker_sessions() as session:
        messages = list(session.scalars(select(Event.message).where(Event.job_id == job_id)))
    assert any(m.startswith("Resuming from the checkpoint of step") for m in messages)
    assert sum(m.startswith("Step 5/14") for m in messages) == 1


def pause_after_two_steps(user: httpx.Client, sessions: sessionmaker[Session], job_id: str,
                          workers: Workers, *, timeout: float) -> int:
    """Pause the running job once it has made two steps; returns the step it paused at,
    after checking that its one checkpoint is of that step."""
    wait_for(lambda: job_row(sessions, job_id).step >= 2, timeout=timeout,
             what="two steps", log=workers.log)
    assert user.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["status"] == "paused"
    wait_for(lambda: job_row(sessions, job_id).worker_id is None, timeout=60,
             what="the pause checkpoint", log=workers.log)
    paused_at = job_row(sessions, job_id).step
    ckpts = user.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [paused_at]
    return paused_at


def test_pause_then_resume_continues_from_the_pause_checkpoint(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(user, upload(user), steps=12, checkpoint_every=0)
    workers.start()
    pause_after_two_steps(user, worker_sessions, job_id, workers, timeout=120)
    assert user.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    wait_for(lambda: status(user, job_id) == "succeeded", timeout=120,
             what="the resumed job", log=workers.log)
    assert metric_steps(worker_sessions, job_id, "reward/mean") == list(range(1, 13))
    # a user's pause and resume do not spend the job's failure budget
    assert job_row(worker_sessions, job_id).attempt == 1


def test_cancel_stops_the_run_within_a_step_and_keeps_what_was_written(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(user, upload(user), steps=200, checkpoint_every=0)
    workers.start()
    wait_for(lambda: job_row(worker_sessions, job_id).step >= 2, timeout=120,
             what="two steps", log=workers.log)
    assert user.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    wait_for(lambda: job_row(worker_sessions, job_id).worker_id is None, timeout=30,
             what="the worker to let go", log=workers.log)
    job = job_row(worker_sessions, job_id)
    assert job.status == "cancelled" and job.step < 200
    assert len(metric_steps(worker_sessions, job_id, "reward/mean")) == job.step


def test_a_grader_that_fails_on_every_sample_fails_the_job_with_its_code(
        user: httpx.Client, workers: Workers) -> None:
    # a template variable that the rows do not have: valid at submission, wrong per row
    grader = {**GRADER, "reference": "{{item.missing}}"}
    job_id = submit(user, upload(user), grader=grader, steps=10)
    workers.start()
    wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=120,
             what="the job to finish", log=workers.log)
    job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "grader_error"
    assert job["error"]["param"] == "method.reinforcement.grader"
    assert "every sample of 3 consecutive steps" in job["error"]["message"]


def test_a_dataset_that_went_bad_in_storage_fails_with_invalid_training_file(
        user: httpx.Client, workers: Workers, worker_sessions: sessionmaker[Session],
        worker_env: dict[str, str]) -> None:
    file_id = upload(user)
    job_id = submit(user, file_id, steps=2)
    stored = next(Path(worker_env["PAEC_DATA_DIR"]).rglob(f"{file_id}.jsonl"))
    stored.write_bytes(b'{"prompt": "fine", "answer": "1"}\n{"prompt": 7}\n')
    workers.start()
    wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=120,
             what="the job to finish", log=workers.log)
    error = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()["error"]
    assert error["code"] == "invalid_training_file" and error["param"] == "training_file"
    assert "line 2" in error["message"]
