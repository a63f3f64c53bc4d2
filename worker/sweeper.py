"""Recovery from dead workers and lost messages: `python -m worker.sweeper` once, or in the
background of every worker (worker.tasks starts it).

A sweep runs store.runs.sweep in one transaction, commits, and only then sends the jobs it
re-queued (and those queued too long: their message may have been lost with Redis) to the
queue, each on its own training queue (the device kind it asked for, store.jobs.job_queues).
Duplicated messages are harmless (claims are compare-and-set) but pile up in a queue no
worker consumes: a job or evaluation queued too long is sent again only
when its queue holds no message, i.e. when its previous message cannot still be waiting
there (a message taken by a worker that died is the heartbeat's business). A queue whose
length cannot be read is sent to as before.

It also removes expired files that nothing unfinished uses (store.files.purge_expired_files):
their rows in the sweep's transaction, their bytes after its commit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from store.db import transaction
from store.files import purge_expired_files
from store.jobs import job_queues
from store.queue import EVAL_QUEUE, EVALUATE_TASK, TRAIN_QUEUE, TRAIN_TASK
from store.runs import SweepResult, sweep, sweep_evaluations
from worker.runner import Context

log = logging.getLogger("paec.sweeper")


def waiting_messages(app: Any, queue: str) -> int | None:
    """Messages waiting in the broker's `queue` (0 for a queue never declared); None when
    the broker cannot say."""
    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            try:
                declared = channel.queue_declare(queue=queue, passive=True)
            except Exception as exc:
                if "not found" in str(exc).lower() or "no queue" in str(exc).lower():
                    return 0
                raise
            return int(declared.message_count)
    except Exception:
        log.warning("could not read the length of queue %s", queue, exc_info=True)
        return None


def sweep_once(ctx: Context, app: Any) -> SweepResult:
    """One sweep; returns what it did (`resent`: the jobs actually sent again)."""
    settings = ctx.settings
    with transaction(ctx.sessions) as session:
        result = sweep(session, heartbeat_timeout_s=settings.heartbeat_timeout_s,
                       max_attempts=settings.max_attempts,
                       resend_after_s=settings.resend_after_s)
        evaluations = sweep_evaluations(session, heartbeat_timeout_s=settings.heartbeat_timeout_s,
                                        max_attempts=settings.max_attempts,
                                        resend_after_s=settings.resend_after_s)
        queues = job_queues(session, result.to_enqueue)
        expired = purge_expired_files(session)
    for key in expired:  # after the commit: a failed one leaves the files whole
        ctx.storage.delete(key)
    lengths: dict[str, int | None] = {}

    def idle(queue: str) -> bool:
        # Read once per sweep, before this sweep sends anything.
        if queue not in lengths:
            lengths[queue] = waiting_messages(app, queue)
        return not lengths[queue]

    resent = [job_id for job_id in result.resent
              if idle(queues.get(job_id, TRAIN_QUEUE))]
    eval_resent = [e for e in evaluations.resent if idle(EVAL_QUEUE)]
    for job_id in result.requeued + resent:
        app.send_task(TRAIN_TASK, args=[job_id], queue=queues.get(job_id, TRAIN_QUEUE))
    for evaluation_id in evaluations.requeued + eval_resent:
        app.send_task(EVALUATE_TASK, args=[evaluation_id], queue=EVAL_QUEUE)
    result = dataclasses.replace(result, resent=resent)
    if result.requeued:
        log.warning("sweep: %s lost their worker (no heartbeat for %g s): queued again, to "
                    "resume from the newest checkpoint", result.requeued,
                    settings.heartbeat_timeout_s)
    if result.failed:
        log.warning("sweep: %s failed: no attempt left of %d", result.failed,
                    settings.max_attempts)
    if result.resent:
        # A job waiting behind another on a busy worker looks the same from here; a second
        # message is harmless (a job is claimed once), so this is not a warning.
        log.info("sweep: %s still queued after %g s and no message waits in their queue: "
                 "sent again (a job runs once, whatever the messages)", result.resent,
                 settings.resend_after_s)
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
    from worker.process import context

    print(sweep_once(context(), app))


if __name__ == "__main__":
    main()
