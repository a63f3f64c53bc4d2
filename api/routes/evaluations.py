"""Evaluations (native): score a model or checkpoint on datasets with avg@k, pass@k, maj@k.

    POST /api/evaluations                  body: api.schemas.evaluations.CreateEvaluationRequest
    GET  /api/evaluations                  ?after=<evaluation id>&limit=20, newest first
    GET  /api/evaluations/{evaluation_id}
    POST /api/evaluations/{evaluation_id}/cancel

The object and its `results` are described in store/evaluations.py. A worker computes the
results; the API only queues the evaluation, after the row is committed.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ServicesDep, SessionDep, TenantDep
from api.schemas.evaluations import CreateEvaluationRequest, Evaluation, EvaluationList
from store.evaluations import (
    cancel_evaluation,
    create_evaluation,
    evaluation_list_object,
    evaluation_object,
    get_evaluation,
    list_evaluations,
)

router = APIRouter(tags=["evaluations"])
log = logging.getLogger("paec.api")


@router.post("/api/evaluations", response_model=Evaluation, response_model_exclude_unset=True)
def create(body: CreateEvaluationRequest, tenant: TenantDep, session: SessionDep,
           services: ServicesDep) -> dict[str, Any]:
    """Queue an evaluation."""
    evaluation = create_evaluation(session, services.settings, tenant.id, body.spec())
    session.commit()
    try:
        services.queue.enqueue_evaluation(evaluation.id)
    except Exception:
        # The committed row stays queued, so a broker hiccup loses nothing; sending queued
        # rows again is the sweeper's work (worker/sweeper.py), not the request's.
        log.exception("could not enqueue evaluation %s; it stays queued", evaluation.id)
    return evaluation_object(evaluation)


@router.get("/api/evaluations", response_model=EvaluationList,
            response_model_exclude_unset=True)
def list_(tenant: TenantDep, session: SessionDep,
          after: Annotated[str | None, Query(
              min_length=1, description="The last evaluation id of the previous page.")] = None,
          limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """The tenant's evaluations, newest first."""
    rows, has_more = list_evaluations(session, tenant.id, after=after, limit=limit)
    return evaluation_list_object(rows, has_more)


@router.get("/api/evaluations/{evaluation_id}", response_model=Evaluation,
            response_model_exclude_unset=True)
def retrieve(evaluation_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """One evaluation."""
    return evaluation_object(get_evaluation(session, tenant.id, evaluation_id))


@router.post("/api/evaluations/{evaluation_id}/cancel", response_model=Evaluation,
             response_model_exclude_unset=True)
def cancel(evaluation_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """Cancel a queued or running evaluation (idempotent)."""
    evaluation = cancel_evaluation(session, tenant.id, evaluation_id)
    session.commit()
    return evaluation_object(evaluation)
