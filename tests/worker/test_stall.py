"""A step that hangs: the heartbeat reports progress, not only that the
process lives; a run without progress for PAEC_STALL_TIMEOUT_S stops beating, the sweeper
re-queues it, and after PAEC_MAX_ATTEMPTS such attempts the job fails instead of staying
`running` forever. The hang is a real one: a python grader that sleeps (within the
sandbox's per-sample limit) on a real worker process."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.models import Event, Metric
from tests.service import new_tenant_key
from tests.worker.conftest import Workers, job_row, serve, settings_from, wait_for
from tests.worker.test_worker import status, submit, upload

SLEEPY_GRADER = {"type": "python", "name": "sleepy",
                 "source": "import time\n\ndef grade(sample, item):\n    time.sleep(3)\n"
                           "    return 1.0\n"}
"""Four samples a step, three seconds each: a step of twelve seconds without progress."""


def test_a_hung_step_is_given_up_re_queued_then_failed(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session],
        tmp_path: Path) -> None:
    env = {**worker_env, "PAEC_ALLOW_PYTHON_GRADERS": "true", "PAEC_STALL_TIMEOUT_S": "5",
           "PAEC_MAX_ATTEMPTS": "2"}
    settings = settings_from(env).model_copy(update={"allow_python_graders": True})
    workers = Workers(env, tmp_path)
    _, key = new_tenant_key(worker_sessions)
    try:
        with serve(settings, key) as user:
            job_id = submit(user, upload(user), grader=SLEEPY_GRADER, steps=2)
            workers.start()
            wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=240,
                     what="the hung job to be given up", log=workers.log)
            job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    finally:
        workers.stop_all()
    assert job["status"] == "failed", (job, workers.log())
    assert job["error"]["code"] == "worker_lost"
    assert job_row(worker_sessions, job_id).attempt == 2
    with worker_sessions() as session:
        messages = list(session.scalars(select(Event.message).where(Event.job_id == job_id)
                                        .order_by(Event.seq)))
        steps = list(session.scalars(select(Metric.step).where(Metric.job_id == job_id)))
    stalls = [m for m in messages if m.startswith("No progress for")]
    assert len(stalls) == 2, messages  # one per attempt
    assert any("stopped answering; job re-queued" in m for m in messages), messages
    assert steps == []  # a step that returned after its attempt was given up wrote nothing
