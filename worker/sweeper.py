"""Recovery from dead workers and lost messages: `python -m worker.sweeper` once, or in the
background of every worker (worker.tasks starts it).

A sweep runs store.runs.sweep in one transaction, commits, and only then sends the jobs it
re-queued (and those queued too long: their message may have been lost with Redis) to the
queue, each on its own training queue (the device kind it asked for, store.jobs.job_queues).
Duplicated messages are harmless: claims are compare-and-set.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from store.db import transaction
from store.jobs import job_queues
from store.queue import EVAL_QUEUE, EVALUATE_TASK, TRAIN_QUEUE, TRAIN_TASK
from store.runs import SweepResult, sweep, sweep_evaluations
from worker.runner import Context

log = logging.getLogger("paec.sweeper")


def sweep_once(ctx: Context, app: Any) -> SweepResult:
    """One sweep; returns what it did."""
    settings = ctx.settings
    with transaction(ctx.sessions) as session:
        result = sweep(session, heartbeat_timeout_s=settings.heartbeat_timeout_s,
                       max_attempts=settings.max_attempts,
                       resend_after_s=settings.resend_after_s)
        evaluations = sweep_evaluations(session, heartbeat_timeout_s=settings.heartbeat_timeout_s,
                                        max_attempts=settings.max_attempts,
                                        resend_after_s=settings.resend_after_s)
        queues = job_queues(session, result.to_enqueue)
    for job_id in result.to_enqueue:
        app.send_task(TRAIN_TASK, args=[job_id], queue=queues.get(job_id, TRAIN_QUEUE))
    for evaluation_id in evaluations:
        app.send_task(EVALUATE_TASK, args=[evaluation_id], queue=EVAL_QUEUE)
    if result.requeued or result.failed or result.resent:
        log.warning("sweep: requeued %s, resent %s, failed %s", result.requeued,
                    result.resent, result.failed)
    return result


def start_background(ctx: Context, app: Any, *, stop: threading.Event) -> threading.Thread:
    """Sweep every `sweep_interval_s` until `stop` is set."""
    def loop() -> None:
        while not stop.wait(ctx.settings.sweep_interval_s):
            try:
                sweep_once(ctx, app)
            except Exception:
                log.warning("sweep failed; retrying at the next interval", exc_info=True)

    thread = threading.Thread(target=loop, name="sweeper", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """Run one sweep with the environment's settings."""
    from worker.celery_app import app
    from worker.tasks import context

    print(sweep_once(context(), app))


if __name__ == "__main__":
    main()
