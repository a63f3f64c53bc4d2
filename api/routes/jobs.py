"""/v1/fine_tuning/jobs: create (idempotent), list, retrieve, cancel, pause, resume, events
(openai-compat a.2). The checkpoint list lives in api/routes/checkpoints.py.

Each route parses, authorises (TenantDep), calls one service in store.jobs, commits, and only
then enqueues: the worker must find the committed row. An enqueue that fails (broker down)
does not fail the request: the job is queued in the database and the worker's sweeper sends
it again (store/runs.py).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse

from api.deps import ServicesDep, SessionDep, TenantDep
from store import jobs
from store.idempotency import HEADER as IDEMPOTENCY_HEADER

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


@router.post("")
def create_job(
    body: Annotated[dict[str, Any], Body()], services: ServicesDep, session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER)] = None,
    retry_count: Annotated[str | None, Header(alias="x-stainless-retry-count")] = None,
) -> JSONResponse:
    """Create a reinforcement fine-tuning job (`fine_tuning.jobs.create`)."""
    submitted = jobs.submit_job(session, services.settings, tenant.id, body,
                                idempotency_key=idempotency_key,
                                retry_count=_retry_count(retry_count))
    session.commit()
    if submitted.enqueue is not None:
        _enqueue(services, submitted.enqueue, submitted.queue)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else None
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


@router.get("")
def list_jobs(request: Request, session: SessionDep, tenant: TenantDep,
              after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 20) -> dict[str, Any]:
    """The tenant's jobs, newest first; `metadata[k]=v` keeps jobs whose metadata has k=v."""
    metadata = {key[len("metadata["):-1]: value
                for key, value in request.query_params.multi_items()
                if key.startswith("metadata[") and key.endswith("]")}
    found, has_more = jobs.list_jobs(session, tenant.id, after=after, limit=limit,
                                     metadata=metadata)
    return jobs.list_object(found, has_more)


@router.get("/{fine_tuning_job_id}")
def retrieve_job(fine_tuning_job_id: str, session: SessionDep,
                 tenant: TenantDep) -> dict[str, Any]:
    """One job (`fine_tuning.jobs.retrieve`)."""
    return jobs.job_object(jobs.get_job(session, tenant.id, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel")
def cancel_job(fine_tuning_job_id: str, session: SessionDep,
               tenant: TenantDep) -> dict[str, Any]:
    """Cancel a job that has not finished; cancelling a cancelled job changes nothing."""
    job = jobs.cancel_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    return jobs.job_object(job)


@router.post("/{fine_tuning_job_id}/pause")
def pause_job(fine_tuning_job_id: str, session: SessionDep,
              tenant: TenantDep) -> dict[str, Any]:
    """Pause a queued or running job; pausing a paused job changes nothing."""
    job = jobs.pause_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    return jobs.job_object(job)


@router.post("/{fine_tuning_job_id}/resume")
def resume_job(fine_tuning_job_id: str, services: ServicesDep, session: SessionDep,
               tenant: TenantDep) -> dict[str, Any]:
    """Queue a paused job again (it continues from its pause checkpoint); resuming a queued
    or running job changes nothing."""
    job, changed = jobs.resume_job(session, tenant.id, fine_tuning_job_id)
    session.commit()
    if changed:
        _enqueue(services, job.id, jobs.job_queue(job))
    return jobs.job_object(job)


@router.get("/{fine_tuning_job_id}/events")
def list_events(fine_tuning_job_id: str, session: SessionDep, tenant: TenantDep,
                after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 20) -> dict[str, Any]:
    """The job's events, newest first; `after` is an event id (walks toward older ones)."""
    events, has_more = jobs.list_job_events(session, tenant.id, fine_tuning_job_id,
                                            after=after, limit=limit)
    return jobs.events_list_object(events, has_more)
