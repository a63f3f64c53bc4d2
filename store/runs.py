"""The worker's side of a job's life in the database: claim, heartbeat, progress, finish,
and the sweeper that recovers jobs whose worker died.

Every change of state is a compare-and-set UPDATE (`... WHERE id = ? AND status = ? AND
worker_id = ?`), so a job never runs twice at once and a worker that lost its claim (the
sweeper re-queued its job, or a user cancelled it) cannot overwrite what happened since.
Step writes are keyed (metrics by (job, name, step), events by a key such as `step:12`), so a
step replayed after a crash writes nothing twice. Nothing here commits: the task does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from store.db import utcnow
from store.events import add_event
from store.models import Evaluation, Job
from store.states import JobStatus

RUNNING = JobStatus.RUNNING.value
QUEUED = JobStatus.QUEUED.value
PAUSED = JobStatus.PAUSED.value


def _changed(session: Session, statement: Any) -> int:
    """Run an UPDATE; the number of rows it changed (0 when its WHERE no longer matched)."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass(frozen=True)
class RetryPolicy:
    """When a transient failure (database or broker hiccup) is retried: at most
    `max_retries` times, after `base_delay_s * factor**n` seconds, capped at `max_delay_s`."""

    max_retries: int = 3
    base_delay_s: float = 5.0
    factor: float = 2.0
    max_delay_s: float = 120.0

    def delay(self, retries_so_far: int) -> float:
        """Seconds to wait before retry number `retries_so_far + 1`."""
        return float(min(self.max_delay_s, self.base_delay_s * self.factor ** retries_so_far))

    def should_retry(self, retries_so_far: int) -> bool:
        """Whether another retry is allowed."""
        return retries_so_far < self.max_retries


def claim_job(session: Session, job_id: str, worker_id: str) -> Job | None:
    """queued -> running for `worker_id` (attempt + 1), or None when the job is not queued or
    another worker holds it. The caller commits at once."""
    now = utcnow()
    claimed = _changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED, Job.worker_id.is_(None))
        .values(status=RUNNING, worker_id=worker_id, attempt=Job.attempt + 1,
                heartbeat_at=now, started_at=now, updated_at=now))
    if claimed != 1:
        return None
    job = session.scalars(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True)).one()
    # Unkeyed: the compare-and-set above lets exactly one claim write it.
    add_event(session, job_id, f"Training started on {worker_id} (attempt {job.attempt})")
    return job


def heartbeat(session: Session, job_id: str, worker_id: str) -> str | None:
    """Touch the heartbeat of a job this worker holds; returns the job's status (a user may
    have cancelled or paused it), or None when the worker no longer holds the job."""
    now = utcnow()
    session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id)
                    .values(heartbeat_at=now).execution_options(synchronize_session=False))
    status = session.scalar(select(Job.status).where(Job.id == job_id,
                                                     Job.worker_id == worker_id))
    return status


def holds_job(session: Session, job_id: str, worker_id: str) -> bool:
    """Whether `worker_id` still holds the job (the sweeper has not given it to another
    worker, and it was not deleted). A worker checks it before writing a step's results or
    a checkpoint, so that a stale one stops instead of writing over its successor."""
    return session.scalar(select(Job.id).where(Job.id == job_id,
                                               Job.worker_id == worker_id)) is not None


def record_step(session: Session, job: Job, worker_id: str, step: int,
                metrics: dict[str, float]) -> None:
    """Per-step metric rows, the step counter and a `metrics` event (RFT-shaped data plus
    every metric), all keyed by the step."""
    from store.metrics import record_metrics  # the metrics module is the series' owner

    record_metrics(session, job.id, step, metrics)
    session.execute(update(Job).where(Job.id == job.id, Job.worker_id == worker_id)
                    .values(step=step, heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))
    add_event(session, job.id, step_message(step, job.total_steps, metrics), type_="metrics",
              data=step_event_data(step, job.total_steps, metrics), key=f"step:{step}")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def step_event_data(step: int, total_steps: int, metrics: dict[str, float]) -> dict[str, Any]:
    """The event `data` of a step: OpenAI's RFT shape (step, total_steps, scores, timing)
    with our metrics beside it under `metrics` (non-finite values as null)."""
    reward = _finite(metrics.get("reward/mean"))
    return {
        "step": step, "total_steps": total_steps,
        "train_mean_reward": reward,
        "scores": {"train_reward_mean": reward},
        "timing": {"step": {"sampling": _finite(metrics.get("time/sampling")),
                            "training": _finite(metrics.get("time/training")),
                            "full_iteration": _finite(metrics.get("time/step"))}},
        "entropy": {"full": _finite(metrics.get("entropy")),
                    "top_p": _finite(metrics.get("entropy/top_p")),
                    "masked": _finite(metrics.get("entropy/masked")),
                    "floor": _finite(metrics.get("paec/floor"))},
        "metrics": {k: _finite(v) for k, v in metrics.items()},
    }


def step_message(step: int, total_steps: int, metrics: dict[str, float]) -> str:
    """A human-readable line for the step's event."""
    parts = [f"Step {step}/{total_steps}"]
    for label, name in (("reward", "reward/mean"), ("entropy", "entropy"),
                        ("masked entropy", "entropy/masked"), ("floor", "paec/floor")):
        value = _finite(metrics.get(name))
        if value is not None:
            parts.append(f"{label}={value:.3f}")
    return ", ".join(parts)


def finish_job(session: Session, job_id: str, worker_id: str, *, fine_tuned_model: str,
               result_files: list[str], trained_tokens: int) -> bool:
    """running -> succeeded; False when the worker no longer holds a running job."""
    now = utcnow()
    done = _changed(
        session,
        update(Job).where(Job.id == job_id, Job.status == RUNNING, Job.worker_id == worker_id)
        .values(status=JobStatus.SUCCEEDED.value, worker_id=None, finished_at=now,
                updated_at=now, fine_tuned_model=fine_tuned_model, result_files=result_files,
                trained_tokens=trained_tokens))
    if done == 1:
        add_event(session, job_id, f"New fine-tuned model created: {fine_tuned_model}",
                  key="finished:model")
        add_event(session, job_id, "The job has successfully completed", key="finished")
    return done == 1


def fail_job(session: Session, job_id: str, worker_id: str | None, *, code: str, message: str,
             param: str | None = None) -> bool:
    """A non-terminal job -> failed with a structured error; `worker_id` None means the
    sweeper (any holder). False when the job was already terminal or held by another."""
    now = utcnow()
    query = update(Job).where(Job.id == job_id, Job.status.in_([QUEUED, RUNNING, PAUSED]))
    if worker_id is not None:
        query = query.where(Job.worker_id == worker_id)
    done = _changed(
        session,
        query.values(status=JobStatus.FAILED.value, worker_id=None, finished_at=now,
                     updated_at=now, error={"code": code, "message": message, "param": param}))
    if done == 1:
        add_event(session, job_id, f"The job failed: {message}", level="error", key="failed")
    return done == 1


def release_job(session: Session, job_id: str, worker_id: str, message: str) -> None:
    """Give up the claim after a pause or cancel (the status was set by the user)."""
    session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id)
                    .values(worker_id=None, updated_at=utcnow())
                    .execution_options(synchronize_session=False))
    add_event(session, job_id, message)


def requeue_job(session: Session, job_id: str, worker_id: str, message: str) -> bool:
    """running -> queued after a transient failure, so that a later attempt resumes."""
    now = utcnow()
    done = _changed(
        session,
        update(Job).where(Job.id == job_id, Job.status == RUNNING, Job.worker_id == worker_id)
        .values(status=QUEUED, worker_id=None, queued_at=now, updated_at=now))
    if done == 1:
        add_event(session, job_id, message, level="warn")
    return done == 1


def evaluation_heartbeat(session: Session, evaluation_id: str, worker_id: str) -> None:
    """Touch the heartbeat of an evaluation this worker runs."""
    session.execute(update(Evaluation)
                    .where(Evaluation.id == evaluation_id, Evaluation.worker_id == worker_id)
                    .values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False))


@dataclass(frozen=True)
class EvaluationSweep:
    """What `sweep_evaluations` found to send: `requeued` (their worker died) and `resent`
    (queued too long; the caller may skip those whose previous message still waits)."""

    requeued: list[str]
    resent: list[str]


def sweep_evaluations(session: Session, *, heartbeat_timeout_s: float, max_attempts: int,
                      resend_after_s: float, now: datetime | None = None) -> EvaluationSweep:
    """The evaluation side of `sweep`: a running evaluation whose worker stopped beating is
    queued again (failed after `max_attempts`); one queued for longer than `resend_after_s`
    is a candidate to send again. The caller sends them after the commit."""
    now = now or utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    send: list[str] = []
    for ev in session.scalars(select(Evaluation).where(Evaluation.status == RUNNING,
                                                       Evaluation.heartbeat_at < stale)
                              .with_for_update(skip_locked=True)).all():
        if ev.attempt >= max_attempts:
            ev.status, ev.worker_id, ev.finished_at = "failed", None, now
            ev.error = {"code": "worker_lost", "message": f"the worker stopped answering "
                        f"{ev.attempt} times; giving up after {max_attempts} attempts",
                        "param": None}
        else:
            ev.status, ev.worker_id = QUEUED, None
            send.append(ev.id)
    resend_before = now - timedelta(seconds=resend_after_s)
    waiting = list(session.scalars(select(Evaluation).where(
        Evaluation.status == QUEUED, Evaluation.created_at < resend_before,
        Evaluation.id.not_in(send)).with_for_update(skip_locked=True)))
    for ev in waiting:
        # created_at is the only clock of a queued evaluation: resend at most once per
        # interval by moving it (it orders nothing users see but the list, newest first,
        # which follows seq, not created_at)
        ev.created_at = now
    session.flush()
    return EvaluationSweep(requeued=send, resent=[ev.id for ev in waiting])


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: jobs to (re-)enqueue, jobs it failed, paused jobs it released."""

    requeued: list[str]
    resent: list[str]
    failed: list[str]
    released: list[str]

    @property
    def to_enqueue(self) -> list[str]:
        """Every job the caller must send to the queue after committing."""
        return self.requeued + self.resent


def sweep(session: Session, *, heartbeat_timeout_s: float, max_attempts: int,
          resend_after_s: float = 60.0, now: datetime | None = None) -> SweepResult:
    """Recover from dead workers and lost messages.

    - running with a heartbeat older than the timeout: the worker died. Re-queued (the next
      attempt resumes from the newest full-state checkpoint), or failed after `max_attempts`.
    - paused but still held with a stale heartbeat: the worker died writing the pause
      checkpoint; the claim is dropped so that resume works.
    - queued for longer than `resend_after_s`: its message may be lost (broker restarted,
      Redis flushed, queued while the broker was down); sent again. Claims are
      compare-and-set, so a duplicate message is harmless.
    """
    now = now or utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    requeued: list[str] = []
    failed: list[str] = []
    dead = session.scalars(select(Job).where(Job.status == RUNNING, Job.heartbeat_at < stale)
                           .with_for_update(skip_locked=True)).all()
    for job in dead:
        if job.attempt >= max_attempts:
            if fail_job(session, job.id, job.worker_id, code="worker_lost",
                        message=f"the worker stopped answering {job.attempt} times "
                                f"(last on {job.worker_id}); giving up after {max_attempts} "
                                "attempts"):
                failed.append(job.id)
            continue
        done = _changed(
            session,
            update(Job).where(Job.id == job.id, Job.status == RUNNING,
                              Job.worker_id == job.worker_id)
            .values(status=QUEUED, worker_id=None, queued_at=now, updated_at=now))
        if done == 1:
            add_event(session, job.id, f"Worker {job.worker_id} stopped answering; job "
                      f"re-queued (attempt {job.attempt} of {max_attempts} used)", level="warn")
            requeued.append(job.id)
    released = []
    for job in session.scalars(select(Job).where(Job.status == PAUSED,
                                                 Job.worker_id.is_not(None),
                                                 Job.heartbeat_at < stale)).all():
        session.execute(update(Job).where(Job.id == job.id, Job.worker_id == job.worker_id)
                        .values(worker_id=None).execution_options(synchronize_session=False))
        released.append(job.id)
    resend_before = now - timedelta(seconds=resend_after_s)
    resent = list(session.scalars(
        select(Job.id).where(Job.status == QUEUED, Job.worker_id.is_(None),
                             Job.queued_at < resend_before, Job.id.not_in(requeued))))
    if resent:
        session.execute(update(Job).where(Job.id.in_(resent)).values(queued_at=now)
                        .execution_options(synchronize_session=False))
    return SweepResult(requeued=requeued, resent=resent, failed=failed, released=released)
