"""Fine-tuning jobs as the OpenAI API shows them (openai-compat a.2-a.5): create (idempotent),
read, list, cancel, pause, resume, and the job object.

Only `method.type = "reinforcement"` is supported. A job is created `queued` at once (its
files were validated in full at upload) with its trainer settings resolved and stored: the
worker runs `Job.config` and fills in the model, data, output and grader from the row.

A user's state change is a compare-and-set UPDATE (`... WHERE status = <the status we
read>`), because the worker changes the same row concurrently (store/runs.py); a lost race
is re-read and decided again. Nothing here commits, and nothing here enqueues: the route
commits and then enqueues the job ids it is handed, on the queue of the job's device kind
(`job_queue`; the kind lives in the job's `method` echo, so the row needs no column for it).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

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
from store.hyperparameters import DEVICE_KEY, JobLimits, resolve_hyperparameters
from store.hyperparameters import PARAM as HYPERPARAMETERS
from store.model_names import resolve_model_name
from store.models import Event, File, Job
from store.queue import DEVICE_ANY, DEVICE_KINDS, TRAIN_QUEUE, training_queue
from store.settings import Settings
from store.states import JobStatus, check_transition

REQUEST_KEYS = ("model", "training_file", "validation_file", "method", "hyperparameters",
                "suffix", "seed", "integrations", "metadata")
"""The fields of OpenAI's CreateFineTuningJobRequest (a.3.1); anything else is refused."""
MAX_SEED = 2_147_483_647
MAX_METADATA = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_LIST = 100
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CAS_TRIES = 5


def _invalid(param: str | None, message: str, code: str | None = None) -> InvalidRequestError:
    error = InvalidRequestError(message, param=param)
    if code is not None:
        error.code = code
    return error


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
    false, a.1)."""
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
    """The training queue the job is sent to (store.queue.training_queue of its kind)."""
    return training_queue(device_kind(job.method))


def job_queues(session: Session, job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: its training queue} for the given jobs (the sweeper's re-sends); ids with
    no row are left out."""
    wanted = list(dict.fromkeys(job_ids))
    if not wanted:
        return {}
    rows = session.execute(select(Job.id, Job.method).where(Job.id.in_(wanted)))
    return {job_id: training_queue(device_kind(method)) for job_id, method in rows}


# ---- create ----

def _check_top_level(request: Mapping[str, Any]) -> None:
    for key in request:
        if key not in REQUEST_KEYS:
            raise _invalid(str(key), f"unknown field {key!r}; a fine-tuning job accepts "
                           + ", ".join(REQUEST_KEYS) + " (extensions go in "
                           f"{HYPERPARAMETERS})")
    for key in ("model", "training_file"):
        if not isinstance(request.get(key), str) or not request[key]:
            raise _invalid(key, f"{key} is required and must be a non-empty string")
    if request.get("validation_file") is not None and not isinstance(
            request["validation_file"], str):
        raise _invalid("validation_file", "validation_file must be a file id or null")
    if request.get("hyperparameters") not in (None, {}):
        raise _invalid("hyperparameters", "the top-level hyperparameters object is "
                       f"deprecated and not supported; send them in {HYPERPARAMETERS}")
    suffix = request.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not _SUFFIX.match(suffix)):
        raise _invalid("suffix", "suffix must be 1-64 characters of letters, digits, '_' "
                       f"and '-', got {suffix!r}")
    seed = request.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                             or not 0 <= seed <= MAX_SEED):
        raise _invalid("seed", f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if request.get("integrations") not in (None, []):
        raise _invalid("integrations", "integrations (e.g. wandb) are not supported; follow "
                       "a job with its events, metrics and /v1/fine_tuning/jobs/{id}/stream")
    _check_metadata(request.get("metadata"))


def _check_metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise _invalid("metadata", "metadata must be an object of string keys and values")
    if len(metadata) > MAX_METADATA:
        raise _invalid("metadata", f"metadata has {len(metadata)} pairs; at most "
                       f"{MAX_METADATA} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise _invalid("metadata", f"metadata keys must be 1-{MAX_METADATA_KEY} "
                           f"characters, got {str(key)[:80]!r}")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise _invalid(f"metadata.{key}", f"metadata values must be strings of at most "
                           f"{MAX_METADATA_VALUE} characters")
        # Postgres text and jsonb cannot hold NUL, and a lone surrogate is no UTF-8: stored,
        # either one made every later `metadata[k]=v` list of the tenant a 500 (issue 15).
        for what, text in (("keys", key), ("values", value)):
            if unstorable(text):
                raise _invalid("metadata", f"metadata {what} must not contain NUL characters "
                               f"or lone surrogates, got {text[:80]!r}")


def _reinforcement(method: object) -> Mapping[str, Any]:
    """The `method.reinforcement` object, after checking the method's shape."""
    if not isinstance(method, Mapping):
        raise _invalid("method.type", "method is required: only "
                       '{"type": "reinforcement", "reinforcement": {"grader": {...}}} '
                       "is supported")
    kind = method.get("type")
    if kind != "reinforcement":
        raise _invalid("method.type", f"method.type {kind!r} is not supported: this service "
                       "trains with reinforcement fine-tuning only (method.type = "
                       "\"reinforcement\")")
    for key in method:
        if key not in ("type", "reinforcement"):
            raise _invalid(f"method.{key}", f"unknown field method.{key} for a reinforcement "
                           "job")
    body = method.get("reinforcement")
    if not isinstance(body, Mapping):
        raise _invalid("method.reinforcement", "method.reinforcement must be an object with "
                       "a grader")
    for key in body:
        if key not in ("grader", "hyperparameters"):
            raise _invalid(f"method.reinforcement.{key}", f"unknown field "
                           f"method.reinforcement.{key}; accepted: grader, hyperparameters")
    if "grader" not in body:
        raise _invalid("method.reinforcement.grader", "method.reinforcement.grader is "
                       "required")
    return body


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


def create_job(session: Session, settings: Settings, tenant_id: str,
               request: Mapping[str, Any]) -> Job:
    """Validate a CreateFineTuningJobRequest and insert the job, queued, with its events.

    Raises InvalidRequestError naming the field (`param`) for anything invalid: unknown
    fields, an unsupported method, an invalid grader or hyperparameter, an unknown model
    (`model_not_found`), a missing or foreign file (`file_not_found`)."""
    if not isinstance(request, Mapping):
        raise _invalid(None, "the request body must be a JSON object")
    _check_top_level(request)
    reinforcement = _reinforcement(request.get("method"))
    model = resolve_model_name(session, settings, tenant_id, request["model"])
    training = _dataset(session, tenant_id, request["training_file"], "training_file")
    validation = (None if request.get("validation_file") is None else
                  _dataset(session, tenant_id, request["validation_file"], "validation_file"))
    grader = validate_grader_spec(reinforcement["grader"], settings,
                                  "method.reinforcement.grader")
    hyper = resolve_hyperparameters(reinforcement.get("hyperparameters"),
                                    training_rows=int(training.rows or 0),
                                    limits=JobLimits.from_settings(settings))
    seed = request.get("seed")
    now = utcnow()
    job = Job(id=ids.new_id(ids.JOB), tenant_id=tenant_id, model=model.name,
              training_file=training.id,
              validation_file=None if validation is None else validation.id,
              status=check_transition(JobStatus.VALIDATING_FILES, JobStatus.QUEUED).value,
              method={"type": "reinforcement",
                      "reinforcement": {"grader": grader, "hyperparameters": hyper.echo}},
              config=hyper.config, total_steps=hyper.total_steps,
              seed=secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
              suffix=request.get("suffix"), metadata_=request.get("metadata"),
              result_files=[], step=0, attempt=0, created_at=now, queued_at=now,
              updated_at=now)
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job {job.id}", key="created")
    for file, what in ((training, "training"), (validation, "validation")):
        if file is not None:
            add_event(session, job.id, f"Validated {what} file {file.id} ({file.rows} rows)",
                      key=f"validated:{what}")
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


def submit_job(session: Session, settings: Settings, tenant_id: str,
               request: Mapping[str, Any], *, idempotency_key: str | None = None,
               retry_count: int = 0) -> Submitted:
    """`create_job`, de-duplicated (store.idempotency): a request with a used
    `idempotency_key`, or a keyless client retry (`retry_count` > 0) of a recent identical
    create, gets the first response back instead of a second job."""
    key = idempotency.check_key(idempotency_key)
    digest = idempotency.request_hash(request)
    if key is not None:
        replay = (idempotency.find_replay(session, tenant_id, key, digest)
                  or idempotency.claim_key(session, tenant_id, key, digest))
    elif retry_count > 0:
        replay = idempotency.find_retried(session, tenant_id, digest)
    else:
        replay = None
    if replay is not None:
        return Submitted(replay.status_code, replay.body, replayed=True, enqueue=None)
    job = create_job(session, settings, tenant_id, request)
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
