"""The task queue between the API and the workers.

Postgres holds the truth; the queue only carries ids. The API enqueues after its transaction
commits. `TaskQueue` is the interface; `CeleryQueue` sends Celery tasks by name (the worker
package defines them), so the API needs neither the worker's code nor torch.

Routing: a training job asks for a device kind (`any`, `gpu` or `cpu`; the
`device` hyperparameter) and is sent to the queue of that kind: `training` (any worker),
`training.gpu` (only workers that train on CUDA) or `training.cpu` (only CPU workers).
Every worker consumes `training` plus the queue of its own kind (worker.celery_app).

A job of several processes (the `num_processes` hyperparameter, n > 1: one device each,
on one host) goes to the queue of its kind with `.x<n>` appended: `training.x2`,
`training.gpu.x4`, `training.cpu.x2`. A worker that owns n devices
(PAEC_WORKER_PROCESSES) consumes the queues of every job that fits on it, 1 to n processes,
so one-process queue names are unchanged and a one-device worker sees no new queue.
"""

from __future__ import annotations

from typing import Any, Protocol

TRAIN_TASK = "paec.train_job"
EVALUATE_TASK = "paec.evaluate"
TRAIN_QUEUE = "training"
"""Training jobs that run on any worker (device kind `any`, the default)."""
TRAIN_GPU_QUEUE = "training.gpu"
"""Training jobs that must run on a CUDA worker (device kind `gpu`)."""
TRAIN_CPU_QUEUE = "training.cpu"
"""Training jobs that must run on a CPU worker (device kind `cpu`)."""
EVAL_QUEUE = "evaluation"

DEVICE_ANY = "any"
DEVICE_GPU = "gpu"
DEVICE_CPU = "cpu"
DEVICE_KINDS = (DEVICE_ANY, DEVICE_GPU, DEVICE_CPU)
"""The device kinds a job may ask for, default first."""
_TRAINING_QUEUES = {DEVICE_ANY: TRAIN_QUEUE, DEVICE_GPU: TRAIN_GPU_QUEUE,
                    DEVICE_CPU: TRAIN_CPU_QUEUE}


def training_queue(device_kind: str, processes: int = 1) -> str:
    """The queue of training jobs that ask for `device_kind` (one of DEVICE_KINDS) and
    `processes` devices: `training.gpu`, or `training.gpu.x4` for 4 processes. An unknown
    kind or a count below 1 is a ValueError (requests are validated before they get
    here)."""
    try:
        queue = _TRAINING_QUEUES[device_kind]
    except KeyError:
        raise ValueError(f"unknown device kind {device_kind!r}; expected one of "
                         + ", ".join(DEVICE_KINDS)) from None
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    return queue if processes == 1 else f"{queue}.x{processes}"


def worker_training_queues(device_kind: str, processes: int) -> list[str]:
    """The training queues of a worker of `device_kind` (gpu or cpu) that owns `processes`
    devices: those of every job that fits on it, `any` jobs and its own kind's, the most
    processes first (`training.x2`, `training.gpu.x2`, `training`, `training.gpu`)."""
    if device_kind == DEVICE_ANY:
        raise ValueError("a worker is a gpu or a cpu worker, not 'any'")
    return [training_queue(kind, n) for n in range(processes, 0, -1)
            for kind in (DEVICE_ANY, device_kind)]


class TaskQueue(Protocol):
    """What the API needs from the queue."""

    def enqueue_job(self, job_id: str, queue: str) -> None:
        """Ask a training worker to run (or resume) the job, on the job's training queue
        (`training_queue` of its device kind and number of processes)."""

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        """Ask an evaluation worker to run the evaluation."""


class CeleryQueue:
    """Sends tasks by name to a Celery broker (Redis in production, SQLite by default)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery  # imported here: only processes that enqueue need it

        self.app: Any = Celery("paec-client", broker=broker_url)
        self.app.conf.broker_connection_retry_on_startup = False

    def enqueue_job(self, job_id: str, queue: str) -> None:
        self.app.send_task(TRAIN_TASK, args=[job_id], queue=queue)

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        self.app.send_task(EVALUATE_TASK, args=[evaluation_id], queue=EVAL_QUEUE)
