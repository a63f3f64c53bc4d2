"""The worker writes the trainer's token traces to job_traces (not to the events), where the
native route serves them: the callback alone on a real Postgres, then a tiny job trained by a
real `celery worker` process."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.models import Event, JobTrace
from tests.service import migrated_sessions
from tests.worker.conftest import Workers, wait_for
from tests.worker.test_runner import claimed
from tests.worker.test_worker import status, submit, upload
from worker.runner import DatabaseCallback


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with migrated_sessions("paec_wtraces") as made:
        yield made


def test_the_callback_stores_valid_traces_drops_invalid_ones_and_adds_no_event(
        sessions: sessionmaker[Session], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _, ctx, job = claimed(sessions, tmp_path)
    callback = DatabaseCallback(ctx, job)
    good = {"tokens": ["a", "b"], "entropy": [0.5, 1.0], "top_p_entropy": [math.nan] * 2,
            "mask": [math.nan] * 2}
    bad = {"tokens": ["a", "b"], "entropy": [0.5]}
    with caplog.at_level(logging.WARNING, logger="paec.worker"):
        callback.on_step_end(1, {"reward/mean": 0.5}, [good, bad])
    with sessions() as session:
        rows = session.execute(select(JobTrace.sample_index, JobTrace.trace)
                               .where(JobTrace.job_id == job.id)).all()
        messages = list(session.scalars(select(Event.message).where(Event.job_id == job.id)))
    assert [(i, t["mask"]) for i, t in rows] == [(0, [None, None])]
    assert not any("trace" in m.lower() for m in messages)
    assert any("1 trace(s) dropped" in r.getMessage() and "entropy" in r.getMessage()
               for r in caplog.records)


@pytest.mark.slow
def test_a_job_with_trace_samples_serves_its_traces_on_the_route(
        user: httpx.Client, workers: Workers) -> None:
    job_id = submit(user, upload(user), steps=3, trace_samples=2)
    workers.start()
    wait_for(lambda: status(user, job_id) in ("succeeded", "failed"), timeout=120,
             what="the job to finish", log=workers.log)
    assert status(user, job_id) == "succeeded", workers.log()
    steps = user.get(f"/api/jobs/{job_id}/traces/steps").json()
    assert steps["data"] == [1, 2, 3]
    body = user.get(f"/api/jobs/{job_id}/traces").json()
    assert body["step"] == 3 and [s["index"] for s in body["samples"]] == [0, 1]
    for sample in body["samples"]:
        n = len(sample["tokens"])
        assert 0 < n <= 6  # max_new_tokens of the tiny jobs
        assert all(len(sample[k]) == n for k in ("entropy", "top_p_entropy", "mask",
                                                 "nucleus_size", "top_two_gap"))
        assert all(isinstance(e, float) and e >= 0 for e in sample["entropy"])
    events = user.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
    assert not any(e["message"].startswith("Token trace") for e in events["data"])
