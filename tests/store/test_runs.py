"""The worker's database protocol on a real Postgres: compare-and-set claims, keyed step
writes, the sweeper's recovery rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import runs
from store.db import transaction, utcnow
from store.models import Event, Job, Metric
from tests.service import make_job, migrated_sessions, new_tenant_key


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with migrated_sessions("paec_runs") as made:
        yield made


@pytest.fixture
def tenant_id(sessions: sessionmaker[Session]) -> str:
    return new_tenant_key(sessions)[0]


def get(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()


def test_only_one_of_many_concurrent_claims_wins(sessions: sessionmaker[Session],
                                                 tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id)
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        with transaction(sessions) as session:
            if runs.claim_job(session, job_id, f"w{i}") is not None:
                winners.append(f"w{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = get(sessions, job_id)
    assert len(winners) == 1
    assert (job.status, job.worker_id, job.attempt) == ("running", winners[0], 1)


def test_a_replayed_step_writes_nothing_twice(sessions: sessionmaker[Session],
                                              tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id)
    with transaction(sessions) as session:
        job = runs.claim_job(session, job_id, "w")
    assert job is not None
    for value in (0.5, 0.9):  # the replay brings other numbers: the first write stands
        with transaction(sessions) as session:
            runs.record_step(session, job, "w", 1, {"reward/mean": value, "loss/total": 1.0})
    with sessions() as session:
        rows = session.execute(select(Metric.name, Metric.value).where(
            Metric.job_id == job_id)).all()
        step_events = session.scalar(select(func.count()).select_from(Event).where(
            Event.job_id == job_id, Event.key == "step:1"))
    assert sorted(rows) == [("loss/total", 1.0), ("reward/mean", 0.5)]
    assert step_events == 1


def test_a_worker_that_lost_its_claim_cannot_finish_the_job(sessions: sessionmaker[Session],
                                                            tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id)
    with transaction(sessions) as session:
        runs.claim_job(session, job_id, "old")
    with transaction(sessions) as session:  # the user cancels meanwhile
        session.scalars(select(Job).where(Job.id == job_id)).one().status = "cancelled"
    with transaction(sessions) as session:
        done = runs.finish_job(session, job_id, "old", fine_tuned_model="ft:x",
                               result_files=[], trained_tokens=1)
    assert not done
    assert get(sessions, job_id).status == "cancelled"


def test_the_sweeper_requeues_a_dead_worker_s_job_then_fails_it_after_max_attempts(
        sessions: sessionmaker[Session], tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id)
    for attempt in (1, 2):
        with transaction(sessions) as session:
            assert runs.claim_job(session, job_id, f"w{attempt}") is not None
        later = utcnow() + timedelta(seconds=100)
        with transaction(sessions) as session:
            result = runs.sweep(session, heartbeat_timeout_s=30, max_attempts=2, now=later)
        if attempt == 1:
            assert job_id in result.requeued and job_id in result.to_enqueue
            job = get(sessions, job_id)
            assert (job.status, job.worker_id) == ("queued", None)
        else:
            assert job_id in result.failed
    job = get(sessions, job_id)
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "worker_lost"


def test_the_sweeper_leaves_a_beating_job_alone(sessions: sessionmaker[Session],
                                                tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id)
    with transaction(sessions) as session:
        runs.claim_job(session, job_id, "w")
    with transaction(sessions) as session:
        assert runs.heartbeat(session, job_id, "w") == "running"
        result = runs.sweep(session, heartbeat_timeout_s=30, max_attempts=3)
    assert job_id not in result.requeued and get(sessions, job_id).status == "running"


def test_the_sweeper_resends_a_job_queued_too_long_once_per_interval(
        sessions: sessionmaker[Session], tenant_id: str) -> None:
    job_id = make_job(sessions, tenant_id, queued_at=utcnow() - timedelta(seconds=600))
    with transaction(sessions) as session:
        first = runs.sweep(session, heartbeat_timeout_s=30, max_attempts=3, resend_after_s=60)
    with transaction(sessions) as session:
        second = runs.sweep(session, heartbeat_timeout_s=30, max_attempts=3, resend_after_s=60)
    assert job_id in first.resent and job_id not in second.resent


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    policy = runs.RetryPolicy(max_retries=3, base_delay_s=2, factor=3, max_delay_s=10)
    assert [policy.delay(n) for n in range(4)] == [2, 6, 10, 10]
    assert policy.should_retry(2) and not policy.should_retry(3)
