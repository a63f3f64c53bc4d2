"""/v1/fine_tuning/jobs: create (idempotent), list, retrieve, cancel, pause, resume, events
(docs/openai.md 2). The checkpoint list lives in api/routes/checkpoints.py.

Each route parses a typed request (api/schemas/jobs.py), authorises (TenantDep), calls one
service in store.jobs, commits, and only then enqueues: the worker must find the committed
row. An enqueue that fails (broker down) does not fail the request: the job is queued in the
database and the worker's sweeper sends it again (store/runs.py).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ServicesDep, SessionDep, TenantDep
from api.schemas.events import FineTuningJobEventList
from api.schemas.jobs import CreateFineTuningJobRequest, FineTuningJob, FineTuningJobList
from store import jobs
from store.errors import InvalidRequestError
from store.events import EVENT_ID_PATTERN
from store.idempotency import HEADER as IDEMPOTENCY_HEADER
from store.idempotency import MAX_KEY_LENGTH

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])
log = logging.getLogger("paec.api.jobs")


def _enqueue(services: ServicesDep, job_id: str, queue: str) -> None:
    try:
        services.queue.enqueue_job(job_id, queue)
    except Exception as exc:  # any broker failure: the sweeper re-sends queued jobs
        log.warning("could not enqueue job %s (%s: %s); it stays queued in the database and "
                    "the sweeper will send it", job_id, type(exc).__name__, exc)


def _retry_count(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0


@router.post("", response_model=FineTuningJob, response_model_exclude_unset=True)
def create_job(
    body: CreateFineTuningJobRequest, services: ServicesDep, session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(
        alias=IDEMPOTENCY_HEADER, min_length=1, max_length=MAX_KEY_LENGTH,
        description="Makes the create idempotent: the same key with the same body answers "
                    "the first response again (`Idempotent-Replayed: true`); with another "
                    "body, a 409. Not blank, and not starting with `auto:`.")] = None,
    retry_count: Annotated[str | None, Header(
        alias="x-stainless-retry-count",
        description="Sent by the official client: a retry (> 0) of a recent identical "
                    "create without a key answers that create again.")] = None,
) -> JSONResponse:
    """Create a reinforcement fine-tuning job (`fine_tuning.jobs.create`)."""
    submitted = jobs.submit_job(session, services.settings, tenant.id, body.spec(),
                                idempotency_key=idempotency_key,
                                retry_count=_retry_count(retry_count))
    session.commit()
    if submitted.enqueue is not None:
        _enqueue(services, submitted.enqueue, submitted.queue)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else None
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


def _metadata_filter(request: Request) -> dict[str, str]:
    """The `metadata[k]=v` filters of the query: each key once, with a string value (not an
    object: `metadata[a][b]`)."""
    pairs = [(key[len("metadata["):-1], value)
             for key, value in request.query_params.multi_items()
             if key.startswith("metadata[") and key.endswith("]")]
    filters = dict(pairs)
    if len(filters) < len(pairs) or any("[" in key or "]" in key for key in filters):
        raise InvalidRequestError("metadata filters are metadata[k]=v, each key k once",
                                  param="metadata")
    return filters


# `metadata[k]=v` filters are any number of query keys: described here, read from the request.
_METADATA_FILTER = {"parameters": [{
    "name": "metadata", "in": "query", "required": False, "style": "deepObject",
    "explode": True, "schema": {"type": "object", "additionalProperties": {"type": "string"}},
    "description": "`metadata[k]=v` keeps the jobs whose metadata has k = v (every pair "
                   "given)."}]}


@router.get("", response_model=FineTuningJobList, response_model_exclude_unset=True,
            openapi_extra=_METADATA_FILTER)
def list_jobs(request: Request, session: SessionDep, tenant: TenantDep,
              after: Annotated[str | None, Query(
                  min_length=1, description="The last job id of the previous page.")] = None,
              limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 20) -> dict[str, Any]:
    """The tenant's jobs, newest first; `metadata[k]=v` keeps jobs whose metadata has k=v."""
    found, has_more = jobs.list_jobs(session, tenant.id, after=after, limit=limit,
                                     metadata=_metadata_filter(request))
    return jobs.list_object(found, has_more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob,
            response_model_exclude_unset=True)
def retrieve_job(fine_tuning_job_id: str, session: SessionDep,
                 tenant: TenantDep) -> dict[str, Any]:
    """One job (`fine_tuning.jobs.retrieve`)."""
    return jobs.job_object(jobs.get_job(session, tenant.id, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJob,
             response_model_exclude_unset=True)
def cancel_job(fine_tuning_job_id: str, session: SessionDep,
               tenant: TenantDep) -> dict[str, Any]:
    """Cancel a job that has not finished; cancelling a cancelled job changes nothing."""
    job = jobs.cancel_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    return jobs.job_object(job)


@router.post("/{fine_tuning_job_id}/pause", response_model=FineTuningJob,
             response_model_exclude_unset=True)
def pause_job(fine_tuning_job_id: str, session: SessionDep,
              tenant: TenantDep) -> dict[str, Any]:
    """Pause a queued or running job; pausing a paused job changes nothing."""
    job = jobs.pause_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    return jobs.job_object(job)


@router.post("/{fine_tuning_job_id}/resume", response_model=FineTuningJob,
             response_model_exclude_unset=True)
def resume_job(fine_tuning_job_id: str, services: ServicesDep, session: SessionDep,
               tenant: TenantDep) -> dict[str, Any]:
    """Queue a paused job again (it continues from its pause checkpoint); resuming a queued
    or running job changes nothing."""
    job, changed = jobs.resume_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    if changed:
        _enqueue(services, job.id, jobs.job_queue(job))
    return jobs.job_object(job)


@router.get("/{fine_tuning_job_id}/events", response_model=FineTuningJobEventList,
            response_model_exclude_unset=True)
def list_events(fine_tuning_job_id: str, session: SessionDep, tenant: TenantDep,
                after: Annotated[str | None, Query(
                    pattern=EVENT_ID_PATTERN, description="An event id of the previous page: "
                                                          "list older events.")] = None,
                limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 20) -> dict[str, Any]:
    """The job's events, newest first; `after` is an event id (walks toward older ones)."""
    events, has_more = jobs.list_job_events(session, tenant.id, fine_tuning_job_id,
                                            after=after, limit=limit)
    return jobs.events_list_object(events, has_more)
