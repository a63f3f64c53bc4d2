"""The Celery application of the workers: `celery -A worker.celery_app worker -Q training`.

Settings for long GPU tasks (Celery docs, "Optimizing"): a task is acknowledged only when it
ends (acks_late) and re-delivered if its worker process dies (reject_on_worker_lost); each
process reserves one task at a time (prefetch 1), so a queued job is never stuck behind a
multi-hour one on a busy worker. Redis re-delivers an unacknowledged task only after its
visibility timeout (1 h by default), so recovery of a dead worker's job does not rely on it:
the sweeper (`worker.sweeper`) re-queues jobs from the database's heartbeats.

Queues: `training` and `evaluation` (store.queue), so that evaluation workers can run beside
a busy trainer. Run one training worker process per GPU (CUDA_VISIBLE_DEVICES=N,
concurrency 1, `--pool solo`); a CPU-only worker works the same way.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from store.queue import EVAL_QUEUE, EVALUATE_TASK, TRAIN_QUEUE, TRAIN_TASK
from store.settings import Settings


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app for `settings` (the environment's by default)."""
    settings = settings or Settings()
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+"):
        # The server-free broker of the embedded default: kombu's SQLAlchemy transport. Its
        # poll interval must be set on the class; as a transport option it reaches
        # create_engine and crashes the worker (measured, ../shared/docs/environment.md).
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
    return app


app = make_celery()
