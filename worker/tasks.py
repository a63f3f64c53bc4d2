"""The Celery tasks: thin, they take an id and call the runner.

Failures are recorded on the job row by the runner; a task only re-raises for transient
errors that Celery should retry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from store.queue import EVALUATE_TASK, TRAIN_TASK
from worker import evaluation, sweeper
from worker.celery_app import app
from worker.process import context
from worker.ranks import launch
from worker.runner import run_job

log = logging.getLogger("paec.worker")


@app.task(name=TRAIN_TASK, bind=True, acks_late=True,  # type: ignore[untyped-decorator]
          reject_on_worker_lost=True)
def train_job(self: Any, job_id: str) -> str:
    """Run or resume the training job `job_id` (one of several processes under torchrun:
    worker.ranks); after a transient failure the job is queued again in the database and
    this task re-sends itself after the retry policy's delay."""
    outcome = run_job(context(), job_id, launch=launch)
    log.info("job %s: %s", job_id, outcome.status)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.status


@app.task(name=EVALUATE_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def evaluate(evaluation_id: str) -> str:
    """Run the evaluation `evaluation_id`."""
    outcome = evaluation.run_evaluation(context(), evaluation_id)
    log.info("evaluation %s: %s", evaluation_id, outcome)
    return outcome


_sweeping = threading.Event()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_sweeper(**_: Any) -> None:
    # Every worker sweeps; sweeps are idempotent (row locks with SKIP LOCKED, CAS updates).
    ctx = context()
    sweeper.start_background(ctx, app, stop=_sweeping)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_sweeper(**_: Any) -> None:
    _sweeping.set()
