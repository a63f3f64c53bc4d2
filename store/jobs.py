"""Fine-tuning jobs as the OpenAI API shows them (docs/openai.md 2-4): create (idempotent),
read, list, cancel, pause, resume, and the job object.

Only `method.type = "reinforcement"` is supported. A request's shape (its fields, their
types and bounds) is checked by the API's typed request (api/schemas/jobs.py), which hands
`create_job` a `JobSpec`; what needs the database or the trainer is checked here: the model
name, the datasets, the grader (paec.grading) and the hyperparameters (TrainConfig, through
store.hyperparameters), each a 400 naming the field. A job is created `queued` at once (its
files were validated in full at upload) with its trainer settings resolved and stored: the
worker runs `Job.config` and fills in the model, data, output and grader from the row.

A user's state change is a compare-and-set UPDATE (`... WHERE status = <the status we
read>`), because the worker changes the same row concurrently (store/runs.py); a lost race
is re-read and decided again. Nothing here commits, and nothing here enqueues: the route
commits and then enqueues the job ids it is handed, on the queue of the job's device kind and
number of processes (`job_queue`; both live in the job's `method` echo, so the row needs no
column for them).
"""

from __future__ import annotations

import dataclasses
import secrets
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from paec.config.training import TrainConfig
from store import idempotency, ids
from store.db import unix, unstorable, utcnow
from store.errors import (
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
    RetryLaterError,
)
from store.events import add_event, event_object, events_before
from store.files import FINE_TUNE, get_file
from store.grading import validate_grader_spec
from store.hyperparameters import (
    DEVICE_KEY,
    USER_KEYS,
    JobLimits,
    job_processes,
    resolve_hyperparameters,
)
from store.model_names import resolve_model_name
from store.models import Event, File, Job
from store.queue import DEVICE_ANY, DEVICE_KINDS, TRAIN_QUEUE, training_queue
from store.settings import Settings
from store.states import JobStatus, check_transition

MAX_SEED = 2_147_483_647
"""OpenAI's range of `seed`: 0 to 2**31 - 1."""
MAX_METADATA = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
"""OpenAI's bounds of `metadata`: 16 pairs, keys of 1-64 characters, values of at most 512."""
SUFFIX_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_LIST = 100
_CAS_TRIES = 5


@dataclass(frozen=True)
class JobSpec:
    """A job as a request asks for it (CreateFineTuningJobRequest), its shape already checked
    by the API; `create_job` checks the rest."""

    model: str
    training_file: str
    grader: dict[str, Any]
    """`method.reinforcement.grader`, as sent."""
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    """`method.reinforcement.hyperparameters`, as sent (None: all defaults)."""
    seed: int | None = None
    """None: a random one."""
    suffix: str | None = None
    metadata: dict[str, str] | None = None


def _invalid(param: str | None, message: str, code: str | None = None) -> InvalidRequestError:
    error = InvalidRequestError(message, param=param)
    if code is not None:
        error.code = code
    return error


def extension_fields() -> dict[str, Any]:
    """{name: annotation} of the TrainConfig fields a job may set under their own names in
    `method.reinforcement.hyperparameters` (store.hyperparameters.USER_KEYS), for the API's
    schema to describe."""
    hints = typing.get_type_hints(TrainConfig)
    return {key: hints[key] for key in USER_KEYS}


# ---- the job object ----

def job_object(job: Job) -> dict[str, Any]:
    """The OpenAI `fine_tuning.job`, plus `step`, `total_steps`, `attempt` and
    `user_provided_suffix` (lenient clients keep extra keys)."""
    method = job.method or {}
    hyper = (method.get("reinforcement") or {}).get("hyperparameters") or {}
    error = None
    if job.status == JobStatus.FAILED:
        raw = job.error or {}
        error = {"code": str(raw.get("code") or "failed"),
                 "message": str(raw.get("message") or "the job failed"),
                 "param": raw.get("param")}
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": unix(job.created_at),
        "model": job.model, "organization_id": job.tenant_id, "status": job.status,
        "error": error, "fine_tuned_model": job.fine_tuned_model,
        "finished_at": unix(job.finished_at),
        "hyperparameters": {key: hyper.get(key) for key in
                            ("batch_size", "learning_rate_multiplier", "n_epochs")},
        "result_files": list(job.result_files or []), "seed": job.seed,
        "trained_tokens": job.trained_tokens, "training_file": job.training_file,
        "validation_file": job.validation_file, "estimated_finish": None,
        "integrations": None, "metadata": job.metadata_, "method": method,
        "user_provided_suffix": job.suffix, "step": job.step, "total_steps": job.total_steps,
        "attempt": job.attempt,
    }


def list_object(jobs: list[Job], has_more: bool) -> dict[str, Any]:
    """The OpenAI list envelope (`has_more` always present: the client pages until it is
    false, docs/openai.md 1)."""
    return {"object": "list", "data": [job_object(j) for j in jobs], "has_more": has_more,
            "first_id": jobs[0].id if jobs else None, "last_id": jobs[-1].id if jobs else None}


# ---- routing ----

def device_kind(method: object) -> str:
    """The device kind a job asked for, from its stored `method` (the echo of
    method.reinforcement.hyperparameters.device); "any" for jobs created before the key
    existed (or anything unreadable: such a job still runs somewhere)."""
    if not isinstance(method, Mapping):
        return DEVICE_ANY
    reinforcement = method.get("reinforcement")
    hyper = reinforcement.get("hyperparameters") if isinstance(reinforcement, Mapping) else None
    kind = hyper.get(DEVICE_KEY) if isinstance(hyper, Mapping) else None
    return kind if isinstance(kind, str) and kind in DEVICE_KINDS else DEVICE_ANY


def job_queue(job: Job) -> str:
    """The training queue the job is sent to (store.queue.training_queue of its kind and
    its number of processes)."""
    return training_queue(device_kind(job.method), job_processes(job.method))


def job_queues(session: Session, job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: its training queue} for the given jobs (the sweeper's re-sends); ids with
    no row are left out."""
    wanted = list(dict.fromkeys(job_ids))
    if not wanted:
        return {}
    rows = session.execute(select(Job.id, Job.method).where(Job.id.in_(wanted)))
    return {job_id: training_queue(device_kind(method), job_processes(method))
            for job_id, method in rows}


# ---- create ----

def _dataset(session: Session, tenant_id: str, file_id: str, param: str) -> File:
    """A processed dataset of the tenant (locked against deletion until the commit)."""
    try:
        file = get_file(session, tenant_id, file_id, param=param, for_share=True)
    except NotFoundError:
        raise _invalid(param, f"{param} {file_id!r}: no such file", "file_not_found") from None
    if file.purpose != FINE_TUNE or file.status != "processed" or not file.rows:
        raise _invalid(param, f"{param} {file_id!r} is not a processed fine-tune dataset "
                       f"(purpose {file.purpose!r}, status {file.status!r})", "invalid_file")
    return file


def create_job(session: Session, settings: Settings, tenant_id: str, spec: JobSpec) -> Job:
    """Insert the job `spec` asks for, queued, with its events.

    Raises InvalidRequestError naming the field (`param`) for an unknown model
    (`model_not_found`), a missing or foreign file (`file_not_found`), an invalid grader or
    hyperparameter."""
    model = resolve_model_name(session, settings, tenant_id, spec.model)
    training = _dataset(session, tenant_id, spec.training_file, "training_file")
    validation = (None if spec.validation_file is None else
                  _dataset(session, tenant_id, spec.validation_file, "validation_file"))
    grader = validate_grader_spec(spec.grader, settings, "method.reinforcement.grader")
    hyper = resolve_hyperparameters(spec.hyperparameters,
                                    training_rows=int(training.rows or 0),
                                    limits=JobLimits.from_settings(settings))
    now = utcnow()
    job = Job(id=ids.new_id(ids.JOB), tenant_id=tenant_id, model=model.name,
              training_file=training.id,
              validation_file=None if validation is None else validation.id,
              status=check_transition(JobStatus.VALIDATING_FILES, JobStatus.QUEUED).value,
              method={"type": "reinforcement",
                      "reinforcement": {"grader": grader, "hyperparameters": hyper.echo}},
              config=hyper.config, total_steps=hyper.total_steps,
              seed=secrets.randbelow(MAX_SEED + 1) if spec.seed is None else spec.seed,
              suffix=spec.suffix, metadata_=spec.metadata, result_files=[], step=0,
              attempt=0, created_at=now, queued_at=now, updated_at=now)
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job {job.id}", key="created")
    for file, what in ((training, "training"), (validation, "validation")):
        if file is not None:
            add_event(session, job.id, f"Validated {what} file {file.id} ({file.rows} rows)",
                      key=f"validated:{what}")
    for i, warning in enumerate(hyper.warnings):
        add_event(session, job.id, f"Warning: {warning}", level="warn", key=f"warning:{i}")
    add_event(session, job.id, "Job queued", key="queued")
    return job


@dataclass(frozen=True)
class Submitted:
    """The response to a create: new, or replayed for a retry."""

    status_code: int
    body: dict[str, Any]
    replayed: bool
    enqueue: str | None
    """The job id to enqueue once the transaction commits (None for a replay)."""
    queue: str = TRAIN_QUEUE
    """The training queue to send `enqueue` to (the job's device kind's)."""


def submit_job(session: Session, settings: Settings, tenant_id: str, spec: JobSpec, *,
               idempotency_key: str | None = None, retry_count: int = 0) -> Submitted:
    """`create_job`, de-duplicated (store.idempotency): a request with a used
    `idempotency_key`, or a keyless client retry (`retry_count` > 0) of a recent identical
    create, gets the first response back instead of a second job."""
    key = idempotency.check_key(idempotency_key)
    digest = idempotency.request_hash(dataclasses.asdict(spec))
    if key is not None:
        replay = (idempotency.find_replay(session, tenant_id, key, digest)
                  or idempotency.claim_key(session, tenant_id, key, digest))
    elif retry_count > 0:
        replay = idempotency.find_retried(session, tenant_id, digest)
    else:
        replay = None
    if replay is not None:
        return Submitted(replay.status_code, replay.body, replayed=True, enqueue=None)
    job = create_job(session, settings, tenant_id, spec)
    body = job_object(job)
    idempotency.record(session, tenant_id, key, digest, object_id=job.id, status_code=200,
                       response=body)
    return Submitted(200, body, replayed=False, enqueue=job.id, queue=job_queue(job))


# ---- read ----

def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, freshly read; NotFoundError for a missing or another tenant's."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
                         .execution_options(populate_existing=True))
    if job is None:
        raise NotFoundError(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    return job


def list_jobs(session: Session, tenant_id: str, *, after: str | None = None,
              limit: int = 20, metadata: Mapping[str, str] | None = None
              ) -> tuple[list[Job], bool]:
    """A page of the tenant's jobs, newest first, older than the job `after`, whose metadata
    has every given pair; returns (jobs, has_more)."""
    if not 1 <= limit <= MAX_LIST:
        raise _invalid("limit", f"limit must be in [1, {MAX_LIST}], got {limit}")
    query = select(Job).where(Job.tenant_id == tenant_id)
    if any(unstorable(text) for pair in (metadata or {}).items() for text in pair):
        return [], False  # no stored metadata holds one (see _check_metadata); Postgres
        # would refuse the query itself
    for key, value in (metadata or {}).items():
        query = query.where(Job.metadata_[key].as_string() == value)
    if after is not None:
        cursor = session.scalar(select(Job.seq).where(Job.id == after,
                                                      Job.tenant_id == tenant_id))
        if cursor is None:
            raise _invalid("after", f"no fine-tuning job {after!r} to list after")
        query = query.where(Job.seq < cursor)
    jobs = list(session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)))
    return jobs[:limit], len(jobs) > limit


def list_job_events(session: Session, tenant_id: str, job_id: str, *, after: str | None = None,
                    limit: int = 20) -> tuple[list[Event], bool]:
    """A page of the tenant's job's events, newest first, older than the event `after`;
    returns (events, has_more)."""
    if not 1 <= limit <= MAX_LIST:
        raise _invalid("limit", f"limit must be in [1, {MAX_LIST}], got {limit}")
    job = get_job(session, tenant_id, job_id)
    return events_before(session, job.id, after=after, limit=limit)


def events_list_object(events: list[Event], has_more: bool) -> dict[str, Any]:
    """The OpenAI list envelope of `fine_tuning.job.event`s."""
    return {"object": "list", "data": [event_object(e) for e in events], "has_more": has_more}


# ---- state changes ----

def _change(session: Session, tenant_id: str, job_id: str, *, target: JobStatus,
            done: frozenset[JobStatus], verb: str, event: str,
            values: Callable[[], dict[str, Any]],
            check: Callable[[Job], None] | None = None) -> tuple[Job, bool]:
    """Move the job to `target` by compare-and-set; (job, changed). A job already in a state
    of `done` is returned unchanged (a repeated call is harmless); a state the machine does
    not allow to become `target` is an InvalidTransitionError."""
    for _ in range(_CAS_TRIES):
        job = get_job(session, tenant_id, job_id)
        current = JobStatus(job.status)
        if current in done:
            return job, False
        try:
            check_transition(current, target)
        except InvalidTransitionError as exc:
            raise InvalidTransitionError(f"cannot {verb} job {job.id}: it is {current} "
                                         f"({exc})") from None
        if check is not None:
            check(job)
        where = [Job.id == job.id, Job.status == current.value]
        if target == JobStatus.QUEUED:  # a worker still holding the job must let go first
            where.append(Job.worker_id.is_(None))
        result = session.execute(update(Job).where(*where)
                                 .values(status=target.value, updated_at=utcnow(), **values())
                                 .execution_options(synchronize_session=False))
        if cast(CursorResult[Any], result).rowcount == 1:
            add_event(session, job.id, event)
            return get_job(session, tenant_id, job_id), True
    raise RetryLaterError(f"job {job_id} is changing state right now; retry")


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Any non-terminal job -> cancelled (a running worker sees it within a step); a
    cancelled job is returned unchanged."""
    job, _ = _change(session, tenant_id, job_id, target=JobStatus.CANCELLED,
                     done=frozenset({JobStatus.CANCELLED}), verb="cancel",
                     event="Job cancelled", values=lambda: {"finished_at": utcnow()})
    return job


def pause_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """A queued or running job -> paused (a running worker checkpoints and lets go); a paused
    job is returned unchanged."""
    job, _ = _change(session, tenant_id, job_id, target=JobStatus.PAUSED,
                     done=frozenset({JobStatus.PAUSED}), verb="pause",
                     event="Job paused", values=lambda: {"paused_at": utcnow()})
    return job


def _resumable(job: Job) -> None:
    if job.status != JobStatus.PAUSED:
        raise InvalidTransitionError(f"cannot resume job {job.id}: it is {job.status}, and "
                                     "only a paused job can be resumed")
    if job.worker_id is not None:
        raise RetryLaterError(f"job {job.id} is still saving its pause checkpoint; retry in "
                              "a moment")


def resume_job(session: Session, tenant_id: str, job_id: str) -> tuple[Job, bool]:
    """A paused job -> queued; (job, whether to enqueue it after the commit). A queued or
    running job is returned unchanged; RetryLaterError while the worker that paused it is
    still writing its checkpoint."""
    return _change(session, tenant_id, job_id, target=JobStatus.QUEUED,
                   done=frozenset({JobStatus.QUEUED, JobStatus.RUNNING}), verb="resume",
                   event="Job resumed",
                   # A resume starts a fresh failure budget: the sweeper and the retry
                   # policy count attempts lost to dead workers and transient errors, and
                   # the claims that follow a user's pauses are neither.
                   values=lambda: {"queued_at": utcnow(), "attempt": 0},
                   check=_resumable)
