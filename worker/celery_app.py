"""The Celery application of the workers: `celery -A worker.celery_app worker`.

Settings for long GPU tasks (Celery docs, "Optimizing"): a task is acknowledged only when it
ends (acks_late) and re-delivered if its worker process dies (reject_on_worker_lost); each
process reserves one task at a time (prefetch 1), so a queued job is never stuck behind a
multi-hour one on a busy worker. Redis re-delivers an unacknowledged task only after its
visibility timeout (1 h by default), so recovery of a dead worker's job does not rely on it:
the sweeper (`worker.sweeper`) re-queues jobs from the database's heartbeats.

Queues (store.queue): `evaluation`, so that evaluation workers can run beside a busy trainer,
and the training queues of the device kinds: `training` (jobs that run anywhere),
`training.gpu` and `training.cpu`. A worker started without `-Q` consumes
`default_queues(settings)`: `training`, the queue of its own device kind (CUDA or CPU, from
PAEC_WORKER_DEVICE) and `evaluation`; PAEC_WORKER_QUEUES overrides that list, and an
explicit `-Q` overrides both. Run one training worker process per GPU
(CUDA_VISIBLE_DEVICES=N, concurrency 1, `--pool solo`); a CPU-only worker works the same way.
A worker that owns n devices (PAEC_WORKER_PROCESSES=n, CUDA_VISIBLE_DEVICES listing n GPUs)
also consumes the queues of jobs of 2 to n processes (`training.x2`, `training.gpu.x2`, ...)
and runs such a job under torchrun, one rank per device (worker.ranks).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_init

from store.queue import (
    DEVICE_CPU,
    DEVICE_GPU,
    EVAL_QUEUE,
    EVALUATE_TASK,
    TRAIN_QUEUE,
    TRAIN_TASK,
    worker_training_queues,
)
from store.settings import Settings

log = logging.getLogger("paec.worker")

# A worker's log is for people following jobs: no model-loading progress bars in it
# (huggingface_hub's, which transformers' follow). Set before transformers is imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def trains_on_cuda(device: str) -> bool:
    """Whether PAEC_WORKER_DEVICE `device` resolves to CUDA (as paec.training.trainer.resolve_device
    does: `auto` is CUDA when torch sees a GPU)."""
    name = device.strip()
    if name == "auto":
        import torch  # here, not at import: the API's tests import this module without a GPU

        return bool(torch.cuda.is_available())
    return name.split(":", 1)[0] == "cuda"


def default_queues(settings: Settings) -> list[str]:
    """The queues a worker consumes when started without `-Q`: PAEC_WORKER_QUEUES if set,
    else the training queues of the jobs that fit on it (`any` jobs and those of its device
    kind, of 1 to PAEC_WORKER_PROCESSES processes, the most first) and `evaluation`: a
    one-device CPU worker consumes training, training.cpu, evaluation."""
    if settings.worker_queues is not None:
        return [name.strip() for name in settings.worker_queues.split(",")]
    kind = DEVICE_GPU if trains_on_cuda(settings.worker_device) else DEVICE_CPU
    return [*worker_training_queues(kind, settings.worker_processes), EVAL_QUEUE]


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app for `settings` (the environment's by default)."""
    settings = settings or Settings()
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+"):
        # The server-free broker of the embedded default: kombu's SQLAlchemy transport. Its
        # poll interval must be set on the class; as a transport option it reaches
        # create_engine and crashes the worker (measured with the pinned kombu and SQLAlchemy).
        from kombu.transport import sqlalchemy as kombu_sqla

        kombu_sqla.Transport.polling_interval = 0.2
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("paec", broker=broker, include=["worker.tasks"])
    conf: dict[str, Any] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_routes": {TRAIN_TASK: {"queue": TRAIN_QUEUE},
                        EVALUATE_TASK: {"queue": EVAL_QUEUE}},
        "task_default_queue": TRAIN_QUEUE,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if broker.startswith("redis"):
        # Unacknowledged tasks come back after this long; recovery does not wait for it.
        conf["broker_transport_options"] = {"visibility_timeout": 6 * 3600}
    app.conf.update(conf)

    def select_default_queues(instance: Any = None, options: dict[str, Any] | None = None,
                              **_: Any) -> None:
        # celeryd_init runs before the worker applies -Q; Queues.select ignores an empty -Q,
        # so the selection made here stands unless the operator named queues.
        if getattr(instance, "app", None) is not app or (options or {}).get("queues"):
            return
        queues = default_queues(settings)
        instance.app.amqp.queues.select(queues)
        log.info("consuming %s (no -Q given)", ",".join(queues))

    # weak=False: the signal would otherwise drop this closure once make_celery returns.
    celeryd_init.connect(select_default_queues, weak=False)
    return app


app = make_celery()
