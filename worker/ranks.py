"""One job on several processes: the worker's launcher and the ranks' entry point.

A job with `num_processes` n > 1 is claimed and prepared by the Celery process as any other
(`worker.runner.run_job`: the claim, the heartbeat, the data and the resume checkpoint in the
job's scratch folder); `launch` then runs it as n processes on this host, one device each:

    python -m torch.distributed.run --standalone --nproc-per-node=n -m worker.ranks FOLDER

in a process group of its own, and waits. FOLDER (`<job dir>/ranks`) holds what the ranks
and the launcher tell each other:

    launch.json        the job id, the claim's worker id, the TrainConfig, the resume folder
    progress           touched by rank 0 at every step, evaluation and checkpoint
    outcome.json       rank 0's story of a run that ended (succeeded, paused, cancelled, lost)
    failure-<r>.json   why rank r raised (a classified failure, or "lost a peer")

Rank 0 acts as the worker that holds the claim (the same worker id): it runs
`worker.runner.train` with a `DatabaseCallback`, so metrics, events, checkpoints, stop
requests and the job's success, pause or cancel go through the code of a one-process job.
The other ranks run a bare Trainer (it calls only rank 0's callbacks, and every rank gets
rank 0's stop requests). Stall detection stays the Celery process's: its `Heartbeat` beats
while the mtime of `progress` moves; once it declares a stall, the launcher stops torchrun
(and so every rank) and leaves the job to the sweeper, as a hung one-process run is.

When torchrun exits, the launcher decides from the database: a job still running and held
by this worker with no outcome from rank 0 failed this attempt. The failure recorded is the
earliest one a rank reported that is not a consequence of another rank's death (a user's
error, out of memory, a bug: as `worker.runner.classify` says); a crash without a report (a
rank killed by a signal, or by the kernel) is transient, so `record_failure` queues the job
again with the retry policy and the next attempt resumes from the newest full-state
checkpoint. Only the Celery process records failures; only rank 0 writes anything else.

Processes end together: torchrun stops every rank once one exits non-zero; it gets SIGTERM
when the Celery process dies, and each rank SIGKILL when torchrun dies (Linux's parent-death
signal), so no rank outlives the worker that holds its job.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from paec.config.training import TrainConfig
from paec.training.distributed import torchrun_command
from paec.training.trainer import Trainer, resolve_device
from store import runs
from store.db import transaction
from store.events import add_event
from store.hyperparameters import PARAM
from store.models import Job
from worker.process import context
from worker.runner import (
    Context,
    DatabaseCallback,
    Heartbeat,
    JobFailure,
    Outcome,
    TransientFailure,
    classify,
    record_failure,
    train,
)

log = logging.getLogger("paec.worker")

ROOT = Path(__file__).resolve().parents[1]
SPEC, PROGRESS, OUTCOME = "launch.json", "progress", "outcome.json"
POLL_S = 0.5
"""How often the launcher looks at torchrun and at rank 0's progress."""
STOP_GRACE_S = 15.0
"""After SIGTERM (torchrun then stops its ranks), how long before SIGKILL."""
PEER_GRACE_S = 5.0
"""A rank that lost a peer waits this long before it exits, so that the rank whose failure
caused it reports first (torchrun stops every rank once one exits)."""
PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer")
"""gloo's words for a collective whose peer process is gone (NCCL's are DistErrors)."""
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
"""Set by torchrun for the ranks; a worker started under a launcher must not pass its own."""
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


@dataclass(frozen=True)
class Launch:
    """What every rank reads: the job, who holds its claim, what to train, where from."""

    job_id: str
    worker_id: str
    config: dict[str, Any]
    """TrainConfig.to_dict() of the prepared job (local data, output and resume paths)."""
    resume: str | None

    def write(self, folder: Path) -> None:
        _write_json(folder / SPEC, dataclasses.asdict(self))

    @staticmethod
    def read(folder: Path) -> Launch:
        return Launch(**json.loads((folder / SPEC).read_text()))

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)

    @property
    def resume_from(self) -> Path | None:
        return None if self.resume is None else Path(self.resume)


def die_with_parent(sig: signal.Signals) -> None:
    """Have Linux send `sig` to this process when its parent ends (prctl PR_SET_PDEATHSIG;
    a no-op elsewhere). Safe between fork and exec: the function is looked up at import."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


# ---------------------------------------------------------------------- the Celery side


def launch(ctx: Context, job: Job, cfg: TrainConfig, resume: Path | None,
           heartbeat: Heartbeat) -> Outcome:
    """Run the prepared job as `cfg.num_processes` ranks under torchrun; returns what
    happened (the runner's `Launcher`)."""
    n = cfg.num_processes
    folder = ctx.job_dir(job.id) / "ranks"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _check_devices(cfg)
    Launch(job.id, ctx.worker_id, cfg.to_dict(),
           None if resume is None else str(resume)).write(folder)
    with transaction(ctx.sessions) as session:
        add_event(session, job.id, f"Training on {n} processes of {ctx.worker_id}, one device "
                  "each (torchrun)", key=f"processes:{job.attempt}")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    log.info("job %s: starting %d ranks", job.id, n)
    proc = subprocess.Popen(torchrun_command(n, ["-m", "worker.ranks", str(folder)]),
                            env=env, start_new_session=True,
                            preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    try:
        code = watch(proc, folder / PROGRESS, heartbeat)
    finally:
        stop(proc)
    if code is None:
        return Outcome("stalled: its processes were stopped; the sweeper re-queues the job")
    return conclude(ctx, job, n, code, folder)


def _check_devices(cfg: TrainConfig) -> None:
    """A job of n processes on CUDA needs n visible GPUs (rank r trains on cuda:r)."""
    device = resolve_device(cfg.device)
    seen = torch.cuda.device_count() if device.type == "cuda" else cfg.num_processes
    if seen < cfg.num_processes:
        log.error("this worker sees %d GPUs and was given a job of %d processes: check its "
                  "PAEC_WORKER_PROCESSES and CUDA_VISIBLE_DEVICES", seen, cfg.num_processes)
        raise TransientFailure(
            f"this worker sees {seen} GPU(s) and {PARAM}.num_processes is "
            f"{cfg.num_processes} (one GPU each): the job is re-queued for a worker that "
            "owns as many")


def watch(proc: subprocess.Popen[bytes], progress: Path, heartbeat: Heartbeat) -> int | None:
    """Wait for torchrun to exit while every move of `progress`'s mtime (rank 0's progress)
    restarts the heartbeat's stall clock; its exit code, or None once the heartbeat has
    declared a stall (it no longer beats: the run is given up)."""
    seen: int | None = None
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=POLL_S)
        with contextlib.suppress(FileNotFoundError):
            mtime = progress.stat().st_mtime_ns
            if mtime != seen:
                seen = mtime
                heartbeat.progress()
        if heartbeat.stalled:
            return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End torchrun's process group if it still runs: SIGTERM (torchrun stops its ranks),
    then SIGKILL (the ranks die with it: their parent-death signal)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)


def conclude(ctx: Context, job: Job, processes: int, code: int, folder: Path) -> Outcome:
    """How the run ended, from rank 0's outcome or else from the job's row: a job still
    running and held here failed this attempt (`root_failure`), recorded as any failure;
    one that the user paused or cancelled meanwhile is let go."""
    told = _read_json(folder / OUTCOME)
    if told is not None:
        return Outcome(str(told["status"]))
    with transaction(ctx.sessions) as session:
        status = session.scalar(select(Job.status).where(Job.id == job.id,
                                                         Job.worker_id == ctx.worker_id))
        if status is not None and status != runs.RUNNING:
            runs.release_job(session, job.id, ctx.worker_id, f"Job {status} while its "
                             f"training processes stopped (torchrun exit code {code})")
    if status is None:
        return Outcome("processes ended; the job is no longer held here")
    if status != runs.RUNNING:
        return Outcome(f"released ({status})")
    reports = [r for p in sorted(folder.glob("failure-*.json"))
               if (r := _read_json(p)) is not None]
    return record_failure(ctx, job, root_failure(reports, processes, code))


def root_failure(reports: list[dict[str, Any]], processes: int,
                 code: int) -> JobFailure | TransientFailure:
    """The failure of an attempt whose ranks stopped without an outcome: the earliest
    report that is not a lost peer (a failure's consequence on the other ranks), else a
    crash: transient, so that the job resumes from its newest checkpoint."""
    for report in sorted(reports, key=lambda r: float(r["time"])):
        if report["kind"] == "failure":
            return JobFailure(report["code"], report["message"], report["param"])
        if report["kind"] == "transient":
            return TransientFailure(report["message"])
    seen = "; ".join(f"rank {r['rank']}: {str(r['message'])[:200]}" for r in reports)
    return TransientFailure(
        f"a training process of this {processes}-process job crashed or was killed (torchrun "
        f"exit code {code}; its report in the worker's log names the rank)"
        + (f"; the others lost it ({seen})" if seen else ""))


# ---------------------------------------------------------------------- the ranks


def main(argv: list[str] | None = None) -> int:
    """A rank: `python -m worker.ranks FOLDER` under torchrun (RANK, WORLD_SIZE set)."""
    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    die_with_parent(signal.SIGKILL)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[%(asctime)s: %(levelname)s/rank {rank}] %(message)s")
    spec = Launch.read(folder)
    try:
        if rank == 0:
            return main_rank(spec, folder)
        with Trainer(spec.train_config, resume_from=spec.resume_from) as trainer:
            trainer.train()
        return 0
    except Exception as exc:
        report(folder, rank, exc)
        return 1


def main_rank(spec: Launch, folder: Path) -> int:
    """Rank 0: the job's run as a one-process job's, as the worker that holds its claim;
    its outcome for the launcher. Exits non-zero when the claim is gone before the start,
    so that torchrun stops the other ranks (they would wait for rank 0 to join)."""
    ctx = dataclasses.replace(context(), worker_id=spec.worker_id)
    with transaction(ctx.sessions) as session:
        job = session.scalars(select(Job).where(Job.id == spec.job_id,
                                                Job.worker_id == spec.worker_id)).one_or_none()
    if job is None:
        _write_json(folder / OUTCOME, {"status": "lost (the job was given to another worker "
                                                 "before its processes started)"})
        return 1
    callback = DatabaseCallback(ctx, job)
    callback.on_progress = (folder / PROGRESS).touch
    status = train(ctx, job, spec.train_config, spec.resume_from, callback)
    _write_json(folder / OUTCOME, {"status": status})
    return 0


def lost_a_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank is gone."""
    return isinstance(exc, torch.distributed.DistError) or (
        isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in PEER_SIGNS))


def report(folder: Path, rank: int, exc: Exception) -> None:
    """Write why this rank raised, classified as a one-process job's failure would be."""
    entry: dict[str, Any] = {"rank": rank, "time": time.time()}
    if lost_a_peer(exc):
        log.warning("lost another rank: %s: %s", type(exc).__name__, exc)
        entry |= {"kind": "peer", "message": f"{type(exc).__name__}: {exc}"}
        _write_json(folder / f"failure-{rank}.json", entry)
        time.sleep(PEER_GRACE_S)
        return
    failure = classify(exc)
    if isinstance(failure, TransientFailure):
        entry |= {"kind": "transient", "message": str(failure)}
    else:
        entry |= {"kind": "failure", "code": failure.code, "message": failure.message,
                  "param": failure.param}
    log.warning("failed: %s", entry["message"])
    _write_json(folder / f"failure-{rank}.json", entry)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically: the reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


if __name__ == "__main__":
    sys.exit(main())
