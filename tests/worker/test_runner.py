"""The runner's failure handling on a real Postgres, without a worker process: every error
becomes a structured code, and transient ones are retried by the policy, then given up."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from paec.errors import (
    AnchorMismatch,
    ConfigError,
    DatasetError,
    GraderError,
    ModelNotFoundError,
    RowError,
    SandboxError,
)
from store import runs
from store.db import transaction
from store.models import Job
from store.settings import Settings
from store.storage import LocalStorage
from tests.service import make_job, migrated_sessions, new_tenant_key
from worker.runner import Context, JobFailure, TransientFailure, classify, record_failure


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with migrated_sessions("paec_runner") as made:
        yield made


@pytest.mark.parametrize(("error", "code", "param"), [
    (DatasetError("bad", [RowError(2, "prompt", "missing")]), "invalid_training_file",
     "training_file"),
    (GraderError("grader.reference", "no such variable"), "invalid_grader",
     "method.reinforcement.grader"),
    (SandboxError("grade is not defined"), "invalid_grader", "method.reinforcement.grader"),
    (ModelNotFoundError("'x' is not a model folder"), "model_not_found", "model"),
    (MemoryError(), "out_of_memory", None),
    (torch.OutOfMemoryError("CUDA out of memory"), "out_of_memory", None),
    (ConfigError("TrainConfig.steps must be >= 1", param="steps"), "invalid_hyperparameters",
     "method.reinforcement.hyperparameters"),
    (AnchorMismatch("anchor_steps changed"), "invalid_hyperparameters",
     "method.reinforcement.hyperparameters"),
    (RuntimeError("boom"), "internal_error", None),
])
def test_errors_become_structured_codes(error: Exception, code: str, param: str | None) -> None:
    failure = classify(error)
    assert isinstance(failure, JobFailure)
    assert (failure.code, failure.param) == (code, param)
    assert failure.message  # the cause is in the message, never a bare "task failed"


@pytest.mark.parametrize("error", [
    ValueError("shape mismatch in a loss"), TypeError("unsupported operand"),
    KeyError("step"), FileNotFoundError("/tmp/model/config.json"),
])
def test_a_bug_of_ours_is_an_internal_error_with_an_id_in_the_log(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    """A ValueError from inside the library is not the user's invalid hyperparameter: it is
    an internal error, and the id in its message finds the traceback in the worker's log."""
    with caplog.at_level(logging.ERROR, logger="paec.worker"):
        failure = classify(error)
    assert isinstance(failure, JobFailure)
    assert (failure.code, failure.param) == ("internal_error", None)
    error_id = re.search(r"err_[0-9a-f]{32}", failure.message)
    assert error_id is not None, failure.message
    logged = [r for r in caplog.records if error_id.group() in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[1] is error


def test_a_database_error_is_transient() -> None:
    assert isinstance(classify(OperationalError("SELECT 1", {}, Exception("gone"))),
                      TransientFailure)


def test_transient_failures_are_retried_with_backoff_then_given_up(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    tenant_id, _ = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id)
    ctx = Context(settings=Settings(data_dir=tmp_path), sessions=sessions,
                  storage=LocalStorage(tmp_path), worker_id="w",
                  retry=runs.RetryPolicy(max_retries=2, base_delay_s=3, factor=2))
    delays = []
    for _ in range(3):
        with transaction(sessions) as session:
            job = runs.claim_job(session, job_id, "w")
        assert job is not None
        outcome = record_failure(ctx, job, TransientFailure("database unavailable"))
        delays.append(outcome.retry_in)
    with sessions() as session:
        row = session.scalars(select(Job).where(Job.id == job_id)).one()
    assert delays == [3.0, 6.0, None]  # two retries, then the job fails
    assert row.status == "failed" and row.error is not None
    assert row.error["code"] == "transient_error"
    assert "gave up after 2 retries" in row.error["message"]


def claimed(sessions: sessionmaker[Session], tmp_path: Path,
            worker_id: str = "w") -> tuple[str, Context, Job]:
    """A new tenant's job, claimed by `worker_id`: (tenant id, the worker's context, job)."""
    tenant_id, _ = new_tenant_key(sessions)
    job_id = make_job(sessions, tenant_id)
    ctx = Context(settings=Settings(data_dir=tmp_path), sessions=sessions,
                  storage=LocalStorage(tmp_path / "artifacts"), worker_id=worker_id)
    with transaction(sessions) as session:
        job = runs.claim_job(session, job_id, worker_id)
    assert job is not None
    return tenant_id, ctx, job


def test_a_job_paused_during_its_final_save_is_not_finished_and_leaves_no_result_file(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    from store.models import File
    from worker.runner import finish

    tenant_id, ctx, job = claimed(sessions, tmp_path)
    job_id = job.id
    with transaction(sessions) as session:  # the user pauses while the trainer saves
        session.scalars(select(Job).where(Job.id == job_id)).one().status = "paused"
    assert finish(ctx, job) is False
    with sessions() as session:
        row = session.scalars(select(Job).where(Job.id == job_id)).one()
        files = session.scalars(select(File).where(File.tenant_id == tenant_id)).all()
    assert row.status == "paused" and row.fine_tuned_model is None
    assert files == []
    assert not list((tmp_path / "artifacts").rglob("*.csv"))


def test_a_running_job_is_finished_with_its_result_file(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    from worker.runner import finish

    _, ctx, job = claimed(sessions, tmp_path)
    assert finish(ctx, job) is True
    with sessions() as session:
        row = session.scalars(select(Job).where(Job.id == job.id)).one()
    assert row.status == "succeeded" and len(row.result_files) == 1
    assert len(list((tmp_path / "artifacts").rglob("*.csv"))) == 1


def test_a_worker_that_lost_its_claim_writes_nothing_more_and_stops(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    from paec.training.callbacks import StopRequest
    from store.models import Checkpoint, Event, Metric
    from worker.runner import DatabaseCallback

    _, ctx, job = claimed(sessions, tmp_path, "stale")
    job_id = job.id
    callback = DatabaseCallback(ctx, job)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    def written() -> tuple[int, int, int]:
        with sessions() as session:
            return tuple(len(session.scalars(select(t).where(t.job_id == job_id)).all())
                         for t in (Metric, Checkpoint, Event))  # type: ignore[return-value]

    callback.on_step_end(1, {"reward/mean": 0.5}, [])  # held: written
    callback.on_checkpoint(1, folder, {"metrics": {}})
    metrics, checkpoints, events = written()
    assert (metrics, checkpoints) == (1, 1) and callback.should_stop() is None

    # The sweeper gave the job to another worker (its heartbeat looked stale).
    with transaction(sessions) as session:
        session.scalars(select(Job).where(Job.id == job_id)).one().worker_id = "successor"
    callback.on_step_end(2, {"reward/mean": 0.7}, [])
    callback.on_checkpoint(2, folder, {"metrics": {}})
    callback.on_eval(2, {"eval/avg@2": 0.5})
    assert written() == (metrics, checkpoints, events)  # nothing more from the stale worker
    # the full-state and the model-only archives of step 1, and nothing of step 2
    assert len(list((tmp_path / "artifacts").rglob("*.tar"))) == 2
    assert callback.lost and callback.should_stop() is StopRequest.CANCEL
