"""The task queue between the API and the workers.

Postgres holds the truth; the queue only carries ids. The API enqueues after its transaction
commits. `TaskQueue` is the interface; `CeleryQueue` sends Celery tasks by name (the worker
package defines them), so the API needs neither the worker's code nor torch.
"""

from __future__ import annotations

from typing import Any, Protocol

TRAIN_TASK = "paec.train_job"
EVALUATE_TASK = "paec.evaluate"
TRAIN_QUEUE = "training"
EVAL_QUEUE = "evaluation"


class TaskQueue(Protocol):
    """What the API needs from the queue."""

    def enqueue_job(self, job_id: str) -> None:
        """Ask a training worker to run (or resume) the job."""

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        """Ask an evaluation worker to run the evaluation."""


class CeleryQueue:
    """Sends tasks by name to a Celery broker (Redis in production, SQLite by default)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery  # imported here: only processes that enqueue need it

        self.app: Any = Celery("paec-client", broker=broker_url)
        self.app.conf.broker_connection_retry_on_startup = False

    def enqueue_job(self, job_id: str) -> None:
        self.app.send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE)

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        self.app.send_task(EVALUATE_TASK, args=[evaluation_id], queue=EVAL_QUEUE)
