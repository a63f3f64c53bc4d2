"""One job on two processes: a job submitted over HTTP with `num_processes` 2 is run by a
real `celery worker` (PAEC_WORKER_PROCESSES=2, on the CPU) under torchrun, two real ranks in
a gloo group (worker.ranks); only rank 0 writes; a rank killed mid-run fails the attempt
and the job resumes from its checkpoint; a run whose ranks stop making progress is stopped
(every rank) and given up; and the launcher's own pieces: the wait that feeds the stall
clock, the stop of a process group, how the failure of an attempt is chosen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.models import Event
from store.settings import Settings
from tests.service import ThreadedServer, new_tenant_key
from tests.worker.conftest import (
    Workers,
    job_row,
    serve,
    settings_from,
    tenant_client,
    wait_for,
)
from tests.worker.test_worker import (
    metric_steps,
    pause_after_two_steps,
    status,
    submit,
    upload,
)
from worker.ranks import root_failure, stop, watch
from worker.runner import Heartbeat, JobFailure, TransientFailure

TWO: dict[str, Any] = {"num_processes": 2, "micro_batch_size": 2, "device": "cpu"}
"""Two ranks, a micro-batch each (4 rows a step: 2 prompts x 2 completions)."""


def two_process_settings(env: dict[str, str]) -> Settings:
    """The API's settings for these tests: jobs of up to 2 processes are accepted."""
    return settings_from(env).model_copy(update={"max_job_processes": 2})


@pytest.fixture(scope="module")
def two_api(worker_env: dict[str, str]) -> Iterator[str]:
    with ThreadedServer(create_app(two_process_settings(worker_env))) as running:
        yield running.url


@pytest.fixture
def two_user(two_api: str, worker_sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    with tenant_client(two_api, worker_sessions) as client:
        yield client


@pytest.fixture
def two_workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """Workers that own two (CPU) devices."""
    manager = Workers({**worker_env, "PAEC_WORKER_PROCESSES": "2"}, tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


def rank_pids(job_id: str) -> dict[int, int]:
    """{rank: pid} of the live rank processes of `job_id` (`python -m worker.ranks
    <worker dir>/jobs/<job id>/ranks`, RANK in their environment); torchrun's own process
    has the same command line but no RANK."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"worker.ranks" not in cmdline or not any(job_id.encode() in a for a in cmdline):
                continue
            env = dict(line.split(b"=", 1) for line in
                       (proc / "environ").read_bytes().split(b"\0") if b"=" in line)
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if b"RANK" in env and state != "Z":
            found[int(env[b"RANK"])] = int(proc.name)
    return found


def full_log(workers: Workers) -> str:
    return "".join(p.read_text(errors="replace") for p in workers.logs.glob("worker-*.log"))


def messages(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Event.message).where(Event.job_id == job_id)
                                    .order_by(Event.seq)))


@pytest.mark.slow
def test_a_two_process_job_is_trained_under_torchrun_and_recorded_once(
        two_user: httpx.Client, two_workers: Workers,
        worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(two_user, upload(two_user), steps=4, **TWO)
    two_workers.start(queues=None)  # default queues of a 2-device CPU worker
    wait_for(lambda: status(two_user, job_id) in ("succeeded", "failed"), timeout=150,
             what="the job to finish", log=two_workers.log)
    job = two_user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded", (job, two_workers.log())
    assert job["method"]["reinforcement"]["hyperparameters"]["num_processes"] == 2
    assert job["fine_tuned_model"].startswith("ft:tiny:") and job["trained_tokens"] > 0
    assert metric_steps(worker_sessions, job_id, "reward/mean") == [1, 2, 3, 4]
    said = messages(worker_sessions, job_id)
    assert sum(m.startswith("Training on 2 processes of ") for m in said) == 1, said
    for step in (1, 2, 3, 4):
        assert sum(m.startswith(f"Step {step}/4") for m in said) == 1, said
    assert sum(m.startswith("Checkpoint saved at step 2") for m in said) == 1, said
    assert said.count("The job has successfully completed") == 1
    ckpts = two_user.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [4, 2]
    # Rank 0 writes and logs each step once (a second writer would log it again, even
    # where the keyed rows hide its writes); it logs as rank 0.
    wait_for(lambda: f"job {job_id}: succeeded" in full_log(two_workers), timeout=30,
             what="the task's end", log=two_workers.log)
    log = full_log(two_workers)
    for step in (1, 2, 3, 4):
        lines = re.findall(rf"/rank 0\] job {job_id}: Step {step}/4, reward=", log)
        assert len(lines) == 1, log
    assert rank_pids(job_id) == {}  # every rank has exited


@pytest.mark.slow
def test_a_killed_rank_fails_the_attempt_and_the_job_resumes_from_its_checkpoint(
        two_user: httpx.Client, two_workers: Workers,
        worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(two_user, upload(two_user), steps=20, **TWO)
    two_workers.start(queues=None)
    wait_for(lambda: job_row(worker_sessions, job_id).step >= 3, timeout=150,
             what="three steps (a checkpoint at 2)", log=two_workers.log)
    ranks = rank_pids(job_id)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)  # mid-run: between or inside a step's collectives
    killed_at = job_row(worker_sessions, job_id).step
    assert killed_at < 20, "the job finished before the kill: make it longer"
    wait_for(lambda: status(two_user, job_id) in ("succeeded", "failed"), timeout=180,
             what="the resumed job to finish", log=two_workers.log)
    job = job_row(worker_sessions, job_id)
    assert job.status == "succeeded", two_workers.log()
    assert job.attempt == 2
    assert metric_steps(worker_sessions, job_id, "reward/mean") == list(range(1, 21))
    said = messages(worker_sessions, job_id)
    retried = [m for m in said if m.startswith("Transient error, retrying in")]
    assert len(retried) == 1 and "crashed or was killed" in retried[0], said
    assert any(m.startswith("Resuming from the checkpoint of step") for m in said), said
    assert sum(m.startswith("Training on 2 processes of ") for m in said) == 2, said
    # The worker recorded the crash itself: the sweeper had nothing to recover.
    assert not any("stopped answering" in m for m in said), said


@pytest.mark.slow
def test_pause_stops_every_rank_and_resume_continues_on_two_processes(
        two_user: httpx.Client, two_workers: Workers,
        worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(two_user, upload(two_user), steps=30, checkpoint_every=0, **TWO)
    two_workers.start(queues=None)
    paused_at = pause_after_two_steps(two_user, worker_sessions, job_id, two_workers,
                                      timeout=150)
    assert paused_at < 30
    wait_for(lambda: rank_pids(job_id) == {}, timeout=30, what="the ranks to exit")
    assert two_user.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    wait_for(lambda: status(two_user, job_id) == "succeeded", timeout=150,
             what="the resumed job", log=two_workers.log)
    assert metric_steps(worker_sessions, job_id, "reward/mean") == list(range(1, 31))
    said = messages(worker_sessions, job_id)
    assert f"Resuming from the checkpoint of step {paused_at}" in said, said
    assert job_row(worker_sessions, job_id).attempt == 1  # a pause spends no attempt


@pytest.mark.slow
def test_a_killed_worker_takes_its_ranks_with_it_and_the_job_resumes_on_another(
        two_user: httpx.Client, two_workers: Workers,
        worker_sessions: sessionmaker[Session]) -> None:
    job_id = submit(two_user, upload(two_user), steps=20, **TWO)
    first = two_workers.start(queues=None)
    wait_for(lambda: job_row(worker_sessions, job_id).step >= 3, timeout=150,
             what="three steps (a checkpoint at 2)", log=two_workers.log)
    assert sorted(rank_pids(job_id)) == [0, 1]
    first.send_signal(signal.SIGKILL)  # the Celery process: no finally, no cleanup
    first.wait()
    # torchrun gets SIGTERM as its parent dies, and each rank SIGKILL as torchrun does:
    # nothing keeps training (and writing) for a worker that is gone.
    wait_for(lambda: rank_pids(job_id) == {}, timeout=30, what="the orphaned ranks to end")
    stopped_at = job_row(worker_sessions, job_id).step
    assert stopped_at < 20, "the job finished before the kill: make it longer"
    time.sleep(2)
    assert job_row(worker_sessions, job_id).step == stopped_at  # no rank writes any more
    two_workers.start(queues=None)
    wait_for(lambda: status(two_user, job_id) in ("succeeded", "failed"), timeout=150,
             what="the job to resume on another worker", log=two_workers.log)
    job = job_row(worker_sessions, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2), two_workers.log()
    assert metric_steps(worker_sessions, job_id, "reward/mean") == list(range(1, 21))
    assert any("stopped answering; job re-queued" in m
               for m in messages(worker_sessions, job_id))


SLEEPY_GRADER = {"type": "python", "name": "sleepy",
                 "source": "import time\n\ndef grade(sample, item):\n    time.sleep(8)\n"
                           "    return 1.0\n"}
"""Three samples per rank and step (2 prompts x 3 completions over 2 ranks), 8 s each (the
sandbox's limit is 10): a first step of 24 s without progress."""


@pytest.mark.slow
def test_ranks_that_make_no_progress_are_stopped_and_the_job_given_up(
        worker_env: dict[str, str], worker_sessions: sessionmaker[Session],
        tmp_path: Path) -> None:
    env = {**worker_env, "PAEC_ALLOW_PYTHON_GRADERS": "true", "PAEC_STALL_TIMEOUT_S": "15",
           "PAEC_MAX_ATTEMPTS": "1", "PAEC_WORKER_PROCESSES": "2"}
    settings = two_process_settings(env).model_copy(update={"allow_python_graders": True})
    workers = Workers(env, tmp_path)
    _, key = new_tenant_key(worker_sessions)
    try:
        with serve(settings, key) as user:
            job_id = submit(user, upload(user), grader=SLEEPY_GRADER, steps=2, group_size=3,
                            **TWO)
            workers.start(queues=None)
            wait_for(lambda: sorted(rank_pids(job_id)) == [0, 1], timeout=60,
                     what="both ranks", log=workers.log)
            wait_for(lambda: any(m.startswith("No progress for")
                                 for m in messages(worker_sessions, job_id)),
                     timeout=60, what="the stall", log=workers.log)
            # The launcher stops torchrun and so every rank, at once (not when a step ends).
            wait_for(lambda: rank_pids(job_id) == {}, timeout=25, what="the ranks to end",
                     log=workers.log)
            wait_for(lambda: status(user, job_id) == "failed", timeout=60,
                     what="the sweeper to give the job up", log=workers.log)
            job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    finally:
        workers.stop_all()
    assert job["error"]["code"] == "worker_lost", job
    assert metric_steps(worker_sessions, job_id, "reward/mean") == []
    said = messages(worker_sessions, job_id)
    assert sum(m.startswith("No progress for") for m in said) == 1, said


# ---- the launcher's pieces, on real processes ----

def test_the_wait_feeds_the_stall_clock_from_the_progress_file(tmp_path: Path) -> None:
    """A child that touches the file every 0.2 s for 3 s is never stalled with a 1 s limit:
    the wait returns its exit code."""
    progress = tmp_path / "progress"
    code = ("import pathlib, time\nfor _ in range(15):\n"
            f"    pathlib.Path({str(progress)!r}).touch(); time.sleep(0.2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with Heartbeat(lambda: None, 0.1, stall_timeout=1.0) as heartbeat:
        assert watch(proc, progress, heartbeat) == 0
        assert not heartbeat.stalled


def test_a_stalled_wait_returns_and_stop_ends_the_process_group(tmp_path: Path) -> None:
    """A child (and its own child) that never touches the file: the wait gives up once the
    heartbeat stalls, and `stop` ends the whole group."""
    pid_file = tmp_path / "grandchild"
    code = ("import pathlib, subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    stalls: list[float] = []
    started = time.monotonic()
    with Heartbeat(lambda: None, 0.1, stall_timeout=1.0, on_stall=stalls.append) as beat:
        assert watch(proc, tmp_path / "progress", beat) is None
    assert beat.stalled and len(stalls) == 1 and time.monotonic() - started < 10
    grandchild = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(),
                              timeout=10, what="the grandchild"))
    assert alive(grandchild)
    stop(proc)
    assert proc.returncode == -signal.SIGTERM
    wait_for(lambda: not alive(grandchild), timeout=10, what="the grandchild to end")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent's wait does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def report(rank: int, at: float, kind: str, **fields: object) -> dict[str, object]:
    return {"rank": rank, "time": at, "kind": kind, "message": f"{kind} {rank}", **fields}


def test_the_earliest_report_that_is_not_a_lost_peer_is_the_failure() -> None:
    oom = report(1, 2.0, "failure", code="out_of_memory", param=None)
    failure = root_failure([report(0, 1.0, "peer"), oom,
                            report(0, 3.0, "transient")], 2, 1)
    assert isinstance(failure, JobFailure)
    assert (failure.code, failure.message) == ("out_of_memory", "failure 1")
    failure = root_failure([report(1, 1.0, "transient"), oom], 2, 1)
    assert isinstance(failure, TransientFailure) and str(failure) == "transient 1"


@pytest.mark.parametrize("reports", [[], [report(0, 1.0, "peer")]])
def test_a_crash_without_a_report_is_transient(reports: list[dict[str, object]]) -> None:
    failure = root_failure(reports, 2, 1)
    assert isinstance(failure, TransientFailure)
    assert "crashed or was killed" in str(failure) and "exit code 1" in str(failure)
    assert ("peer 0" in str(failure)) == bool(reports)
