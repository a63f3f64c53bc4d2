"""Turn a queued job row into a finished training run.

    claim (compare-and-set) -> build the TrainConfig from the row -> fetch the newest
    full-state checkpoint if this is a later attempt -> run paec's Trainer with a callback
    that writes metrics, events, checkpoints and the heartbeat -> succeed, pause, cancel or
    fail with a structured error.

The Celery task (`worker.tasks`) only passes the job id; everything else comes from the
database, which is the source of truth. A job of several processes: `worker.ranks`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from paec.config.training import TrainConfig
from paec.errors import (
    ConfigError,
    DatasetError,
    EngineError,
    GraderError,
    ModelNotFoundError,
    PAECError,
    SandboxError,
)
from paec.modeling.lora import is_lora_checkpoint, merge_lora_checkpoint
from paec.training.callbacks import Callback, StopRequest

# torch is imported when the worker starts, not inside a claimed job's heartbeat window
from paec.training.trainer import Trainer
from store import runs
from store.checkpoints import (
    fetch_checkpoint,
    fine_tuned_model_name,
    latest_full_state_checkpoint,
    prune_checkpoints,
    register_checkpoint,
)
from store.db import database_unavailable, transaction
from store.events import add_event
from store.files import copy_file_to, create_result_file
from store.metrics import metrics_csv, record_metrics
from store.model_names import ModelKind, resolve_model_name
from store.models import Checkpoint, Job, Metric
from store.settings import Settings
from store.storage import LocalStorage
from store.traces import record_traces

log = logging.getLogger("paec.worker")


@dataclass
class Context:
    """What a runner needs: settings, sessions, storage, and who it is."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: LocalStorage
    worker_id: str
    retry: runs.RetryPolicy = field(default_factory=runs.RetryPolicy)
    """When a transient failure is retried (the task re-sends itself after the delay)."""

    def job_dir(self, job_id: str) -> Path:
        """A job's scratch folder on this worker (data, resume checkpoint, run folder)."""
        return self.settings.resolved_worker_dir / "jobs" / job_id


@dataclass(frozen=True)
class Outcome:
    """How a run ended, for the task: `retry_in` seconds when the task must be sent again."""

    status: str
    retry_in: float | None = None


class JobFailure(Exception):
    """A permanent failure with the code, message and param the user will see."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class TransientFailure(Exception):
    """A failure worth retrying (the database or the broker blinked)."""


FAILURES: tuple[tuple[type[PAECError], str | None], ...] = (
    (ConfigError, "method.reinforcement.hyperparameters"),
    (DatasetError, "training_file"),
    (GraderError, "method.reinforcement.grader"),
    (SandboxError, "method.reinforcement.grader"),
    (ModelNotFoundError, "model"),
    (EngineError, "method.reinforcement.hyperparameters.rollout_engine"),
)
"""The library's errors of the user's input (or of the engine it asked for), with the request
field each is about; the code is the error class's own (`paec.errors`)."""


def classify(exc: BaseException) -> JobFailure | TransientFailure:
    """Map an exception from a run to what the user sees (never a bare "task failed"): the
    user's input errors by the table above, a blinking database as transient, running out of
    memory as such, and anything else as an internal error whose id is in the worker's log
    (a bug of ours is never reported as the user's mistake)."""
    if isinstance(exc, JobFailure | TransientFailure):
        return exc
    if isinstance(exc, OperationalError):
        return TransientFailure(f"database unavailable: {exc.orig or exc}")
    name = type(exc).__name__
    for cls, param in FAILURES:
        if isinstance(exc, cls):
            return JobFailure(cls.code, str(exc), param)
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return JobFailure("out_of_memory", f"{name}: the run did not fit in the device's "
                          "memory; lower micro_batch_size, group_size or max_new_tokens, or "
                          "enable gradient_checkpointing", None)
    error_id = f"err_{uuid.uuid4().hex}"
    log.error("internal error %s: %s", error_id, name, exc_info=exc)
    return JobFailure("internal_error", f"internal error {error_id} ({name}: {exc}); the id "
                      "identifies it in the worker's log")


class DatabaseCallback(Callback):
    """The trainer's way out into the database: metrics, events, checkpoints, stop requests.

    The status a user set (cancelled, paused) is read back with every heartbeat: a stop is
    seen before the next step, i.e. within one training step. Every step, evaluation and
    checkpoint is progress (`on_progress`, the heartbeat's stall clock); after a stall
    (`stalled`) the run is given up: nothing more is written and the next `should_stop` ends
    it.
    """

    GRADER_FAILURE_STEPS = 3
    """A grader that errs on every sample of this many consecutive steps fails the job (a
    few errors are zero rewards plus a counter; a grader that never works is a bug to report,
    not a run to finish)."""

    def __init__(self, ctx: Context, job: Job) -> None:
        self.ctx, self.job = ctx, job
        self.lost = False  # the claim was taken away (sweeper) or the job deleted
        self.on_progress: Callable[[], None] = lambda: None
        self._failing_steps = 0

    def stalled(self, seconds: float) -> None:
        """The heartbeat stopped after `seconds` without progress: say
        so in the job's events and write nothing more; the sweeper re-queues the job once
        its heartbeat is stale (the attempt counts), and a step that ever returns stops."""
        self.lost = True
        with transaction(self.ctx.sessions) as session:
            if runs.holds_job(session, self.job.id, self.ctx.worker_id):
                add_event(session, self.job.id,
                          f"No progress for {seconds:.0f} s on {self.ctx.worker_id} (limit "
                          f"PAEC_STALL_TIMEOUT_S={self.ctx.settings.stall_timeout_s:g}); this "
                          "attempt is given up and the job will be re-queued", level="error",
                          key=f"stalled:{self.job.attempt}")

    def status(self) -> str | None:
        """The job's status as the user set it, read with a heartbeat (None: not ours)."""
        with transaction(self.ctx.sessions) as session:
            return runs.heartbeat(session, self.job.id, self.ctx.worker_id)

    def _holds(self, session: Session) -> bool:
        """Whether this worker still holds the job; if not, nothing more is written and the
        next `should_stop` ends the run (the job's new holder writes its own steps)."""
        if not self.lost and not runs.holds_job(session, self.job.id, self.ctx.worker_id):
            log.warning("job %s: claim lost; its results are no longer written here",
                        self.job.id)
            self.lost = True
        return not self.lost

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.on_progress()
        with transaction(self.ctx.sessions) as session:
            if not self._holds(session):
                return
            runs.record_step(session, self.job, self.ctx.worker_id, step, metrics)
            if traces:
                self._write_traces(session, step, traces)
        log.info("job %s: %s, %.3g s", self.job.id,
                 runs.step_message(step, self.job.total_steps, metrics),
                 metrics.get("time/step", 0.0))
        # Samples without an answer (sample_parse_error) are the model's fault, not the
        # grader's: an untrained model may write no number for many steps.
        failing = (metrics.get("grader/error_rate", 0.0) >= 1.0
                   and metrics.get("grader/sample_parse_errors", 0.0) == 0.0)
        self._failing_steps = self._failing_steps + 1 if failing else 0
        if self._failing_steps >= self.GRADER_FAILURE_STEPS:
            raise JobFailure("grader_error", f"the grader failed on every sample of "
                             f"{self._failing_steps} consecutive steps (last: step {step}); "
                             "dry-run it with POST /v1/fine_tuning/alpha/graders/run",
                             "method.reinforcement.grader")

    def _write_traces(self, session: Session, step: int,
                      traces: list[dict[str, Any]]) -> None:
        """The step's token traces into job_traces (not events: one per sample per step
        flooded the events list), in a savepoint: a trace is the dashboard's, never a reason
        to fail the step (an unavailable database still is: transient, retried)."""
        try:
            with session.begin_nested():
                written = record_traces(session, self.job.id, step, traces)
        except SQLAlchemyError as exc:
            if database_unavailable(exc):
                raise
            log.warning("job %s step %d: traces not stored: %s", self.job.id, step, exc)
            return
        if written.dropped:
            reasons = "; ".join(f"{i}: {why}" for i, why in list(written.dropped.items())[:3])
            log.warning("job %s step %d: %d trace(s) dropped (%s)", self.job.id, step,
                        len(written.dropped), reasons)

    def on_checkpoint(self, step: int, path: Path, sidecar: dict[str, Any]) -> None:
        self.on_progress()
        # A LoRA checkpoint is an adapter: its model-only archive holds the merged model,
        # made from the saved folder on a fresh copy of the base (issue 19), beside it.
        with tempfile.TemporaryDirectory(prefix=".merged-", dir=path.parent) as tmp:
            merged = (merge_lora_checkpoint(path, Path(tmp) / "model",
                                            dtype=_trained_dtype(self.job))
                      if is_lora_checkpoint(path) else None)
            with transaction(self.ctx.sessions) as session:
                if not self._holds(session):
                    return
                ckpt = register_checkpoint(session, self.ctx.storage, self.job, step, path,
                                           full_state=True, model_folder=merged,
                                           metrics=dict(sidecar.get("metrics") or {}))
                add_event(session, self.job.id, f"Checkpoint saved at step {step}: {ckpt.id}",
                          data={"checkpoint": ckpt.id, "step": step}, key=f"checkpoint:{step}")
                # Retention: the newest full-state ones and those still of use stay; the
                # others' rows go in this transaction, their archives (both) after it.
                pruned = prune_checkpoints(session, self.job,
                                           self.ctx.settings.keep_checkpoints)
        for key in pruned:
            self.ctx.storage.delete(key)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.on_progress()
        with transaction(self.ctx.sessions) as session:
            if not self._holds(session):
                return
            record_metrics(session, self.job.id, step, metrics)
            summary = ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))
            add_event(session, self.job.id, f"Evaluation at step {step}: {summary}",
                      type_="metrics", data={"step": step, "eval": metrics},
                      key=f"eval:{step}")

    def should_stop(self) -> StopRequest | None:
        if self.lost:  # after a stall: reading the status would beat again
            return StopRequest.CANCEL
        status = self.status()
        if status is None:
            self.lost = True
            return StopRequest.CANCEL
        if status == "cancelled":
            return StopRequest.CANCEL
        if status == "paused":
            return StopRequest.PAUSE
        return None


class Heartbeat:
    """Writes the heartbeat every `interval` seconds from a thread, so that a long step (or
    a slow model load) is not mistaken for a dead worker; but only while the run makes
    progress. A run that calls `progress()` (a step, a checkpoint, a batch of problems)
    beats; one that has not for `stall_timeout` seconds (a stuck CUDA call, a deadlock, a
    grader that never returns) is hung: the heartbeat calls `on_stall` once and stops
    beating, so that the sweeper re-queues the work."""

    def __init__(self, beat: Callable[[], object], interval: float, *,
                 stall_timeout: float | None = None,
                 on_stall: Callable[[float], object] | None = None) -> None:
        self._beat, self._interval = beat, interval
        self._stall_timeout, self._on_stall = stall_timeout, on_stall
        self._last_progress = time.monotonic()
        self.stalled = False
        """Set once the stall limit passed (the heartbeat has stopped for good)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def progress(self) -> None:
        """The run moved on: restart the stall clock."""
        self._last_progress = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            idle = time.monotonic() - self._last_progress
            if self._stall_timeout is not None and idle > self._stall_timeout:
                self.stalled = True
                log.error("no progress for %.0f s (limit %g s): heartbeat stopped", idle,
                          self._stall_timeout)
                if self._on_stall is not None:
                    try:
                        self._on_stall(idle)
                    except Exception:
                        log.warning("could not record the stall", exc_info=True)
                return
            try:
                self._beat()
            except Exception:  # a missed beat is retried; the sweeper tolerates a few
                log.warning("heartbeat failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


Launcher = Callable[[Context, Job, TrainConfig, Path | None, Heartbeat], Outcome]


def run_job(ctx: Context, job_id: str, *, launch: Launcher | None = None) -> Outcome:
    """Run (or resume) a job to its end; returns what happened, for the task. A job of several
    processes runs under `launch` (worker.ranks.launch), else here as one process."""
    with transaction(ctx.sessions) as session:
        job = runs.claim_job(session, job_id, ctx.worker_id)
    if job is None:
        return Outcome("not claimed (not queued, or another worker holds it)")
    workdir = ctx.job_dir(job.id)
    callback = DatabaseCallback(ctx, job)
    try:
        # The heartbeat covers everything after the claim: fetching data and checkpoints and
        # loading the model can take longer than the sweeper's timeout.
        heartbeat = Heartbeat(callback.status, ctx.settings.heartbeat_interval_s,
                              stall_timeout=ctx.settings.stall_timeout_s,
                              on_stall=callback.stalled)
        callback.on_progress = heartbeat.progress
        with heartbeat:
            cfg, resume = prepare(ctx, job, workdir)
            if cfg.num_processes > 1 and launch is not None:
                return launch(ctx, job, cfg, resume, heartbeat)
            return Outcome(train(ctx, job, cfg, resume, callback))
    except BaseException as exc:
        log.warning("job %s stopped by %s", job.id, type(exc).__name__, exc_info=True)
        outcome = record_failure(ctx, job, classify(exc))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: after recording what we could
        return outcome
    finally:
        # Everything worth keeping is in the database and artifact storage; a later attempt
        # or a resume fetches its checkpoint from there.
        shutil.rmtree(workdir, ignore_errors=True)


def record_failure(ctx: Context, job: Job, failure: JobFailure | TransientFailure) -> Outcome:
    """Fail the job with its structured error, or queue it again after a transient one (the
    retry policy's delay, counted by the job's attempts); if even that cannot be written (the
    database is down), the job stays `running` and the sweeper re-queues it once its
    heartbeat is stale."""
    retries = job.attempt - 1
    try:
        with transaction(ctx.sessions) as session:
            if isinstance(failure, TransientFailure) and ctx.retry.should_retry(retries):
                delay = ctx.retry.delay(retries)
                runs.requeue_job(session, job.id, ctx.worker_id,
                                 f"Transient error, retrying in {delay:.0f} s: {failure}")
                return Outcome("requeued", retry_in=delay)
            if isinstance(failure, TransientFailure):
                failure = JobFailure("transient_error", f"{failure} (gave up after "
                                     f"{retries} retries)")
            log.error("job %s failed: %s", job.id, failure.message)
            runs.fail_job(session, job.id, ctx.worker_id, code=failure.code,
                          message=failure.message, param=failure.param)
            return Outcome(f"failed: {failure.code}")
    except Exception:
        log.exception("could not record the failure of job %s; the sweeper will recover it",
                      job.id)
        return Outcome("failure not recorded")


def prepare(ctx: Context, job: Job, workdir: Path) -> tuple[TrainConfig, Path | None]:
    """The TrainConfig of the job, with local paths; and the checkpoint to resume from."""
    workdir.mkdir(parents=True, exist_ok=True)
    with transaction(ctx.sessions) as session:
        model = resolve_model_name(session, ctx.settings, job.tenant_id, job.model)
        train_path = workdir / "train.jsonl"
        copy_file_to(session, ctx.storage, job.tenant_id, job.training_file, train_path)
        validation: Path | None = None
        if job.validation_file:
            validation = workdir / "validation.jsonl"
            copy_file_to(session, ctx.storage, job.tenant_id, job.validation_file,
                         validation)
        resume_ckpt = latest_full_state_checkpoint(session, job.id)
        base_ckpt = (session.scalar(select(Checkpoint).where(Checkpoint.id == model.source))
                     if model.kind is ModelKind.CHECKPOINT else None)
    source = model.source if base_ckpt is None else str(checkpoint_model(ctx, base_ckpt,
                                                                          job.model))
    resume: Path | None = None
    if resume_ckpt is not None:
        resume = workdir / "resume" / f"step-{resume_ckpt.step:06d}"
        if not (resume / "checkpoint.json").is_file():
            shutil.rmtree(resume, ignore_errors=True)
            fetch_checkpoint(ctx.storage, resume_ckpt, resume)
    values = dict(job.config)
    values.update(model=source, train_data=str(train_path),
                  validation_data=str(validation) if validation else None,
                  output_dir=str(workdir / "run"), device=ctx.settings.worker_device,
                  seed=int(job.seed), grader=job.method["reinforcement"]["grader"],
                  allow_python_grader=ctx.settings.allow_python_graders)
    return TrainConfig.from_dict(values), resume


def train(ctx: Context, job: Job, cfg: TrainConfig, resume: Path | None,
          callback: DatabaseCallback) -> str:
    """Run the trainer and record how it ended (on a job of several processes: rank 0)."""
    if resume is not None:
        with transaction(ctx.sessions) as session:
            add_event(session, job.id, "Resuming from the checkpoint of step "
                      f"{resume.name.removeprefix('step-').lstrip('0') or '0'}")
    with Trainer(cfg, callbacks=[callback], resume_from=resume) as trainer:
        result = trainer.train()
    if callback.lost:  # another worker holds the job now and writes its story
        return "lost (the job was given to another worker)"
    if result.status == "completed" and finish(ctx, job):
        return "succeeded"
    with transaction(ctx.sessions) as session:
        if result.status == "paused":
            runs.release_job(session, job.id, ctx.worker_id,
                             f"Job paused at step {result.step}; resume continues from its "
                             "checkpoint")
            return "paused"
        runs.release_job(session, job.id, ctx.worker_id,
                         f"Job stopped at step {result.step}")
        return "cancelled"


def finish(ctx: Context, job: Job) -> bool:
    """Succeed the job with its model name, metrics CSV and token count, in one transaction;
    False (and nothing written) when the user paused or cancelled it during the final
    evaluation and save: the caller then lets the job go, so that a resume can start."""
    key = None
    try:
        with transaction(ctx.sessions) as session:
            csv = metrics_csv(session, job.id)
            result_file = create_result_file(session, ctx.storage, job.tenant_id,
                                             f"{job.id}-metrics.csv", csv.encode())
            key = result_file.storage_key
            done = runs.finish_job(session, job.id, ctx.worker_id,
                                   fine_tuned_model=fine_tuned_model_name(job),
                                   result_files=[result_file.id],
                                   trained_tokens=_trained_tokens(session, job))
            if not done:
                raise _NotOurs
        return True
    except _NotOurs:
        if key is not None:  # the row was rolled back; its bytes go too
            ctx.storage.delete(key)
        return False


class _NotOurs(Exception):
    """The job changed hands (paused, cancelled) before it could be finished."""


def checkpoint_model(ctx: Context, checkpoint: Checkpoint, name: str) -> Path:
    """The local model folder of a checkpoint used as a base model (a job's or an
    evaluation's), fetched from storage once per worker machine and kept as a cache."""
    folder = ctx.settings.resolved_worker_dir / "models" / checkpoint.id
    if not (folder / "config.json").is_file():
        fetch_checkpoint(ctx.storage, checkpoint, folder)
    if not (folder / "config.json").is_file():
        raise JobFailure("unsupported_model", f"{name} is a LoRA adapter; a fine-tuned LoRA "
                         "model cannot be loaded as a base model yet", "model")
    return folder


def _trained_dtype(job: Job) -> torch.dtype:
    """The dtype the job's model trains in, as the trainer loads it."""
    return torch.bfloat16 if job.config.get("dtype") == "bfloat16" else torch.float32


def _trained_tokens(session: Session, job: Job) -> int:
    """Completion tokens sampled for training: sum over steps of mean length x batch."""
    total = session.scalar(select(func.sum(Metric.value)).where(
        Metric.job_id == job.id, Metric.name == "completion/length_mean")) or 0.0
    batch = int(job.config.get("prompts_per_step", 1)) * int(job.config.get("group_size", 1))
    return round(float(total) * batch)
