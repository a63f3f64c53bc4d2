"""Native routes: a job's per-step metric series, as JSON for charts or CSV for downloads.

    GET /api/jobs/{job_id}/metrics?names=a,b&start=&end=&max_points=&format=json|csv
    GET /api/jobs/{job_id}/metrics/names

Not part of OpenAI's format (its events carry one step at a time); same Bearer keys and
error envelope as /v1. JSON is downsampled to `max_points` per name (default 1000, see
store.metrics for the method); CSV is full resolution unless `max_points` is given.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from api.deps import SessionDep, TenantDep
from api.schemas.metrics import CSV_DESCRIPTION, MetricNames, MetricSeries
from store.metrics import (
    DEFAULT_MAX_POINTS,
    MAX_POINTS_LIMIT,
    MAX_STEP,
    job_metric_names,
    job_series,
    series_csv,
    series_object,
)

router = APIRouter(tags=["metrics"])

def _names(raw: str | None) -> list[str] | None:
    # "a,b" and "a, b" alike; an empty list means "every name", as an absent one does.
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    return names or None


@router.get("/api/jobs/{job_id}/metrics", response_model=MetricSeries,
            response_model_exclude_unset=True, responses={200: {
                "description": "The series as JSON; " + CSV_DESCRIPTION,
                "content": {"text/csv": {"schema": {"type": "string"}}}}})
def get_job_metrics(job_id: str, session: SessionDep, tenant: TenantDep,
                    names: Annotated[str | None, Query(
                        description="Comma-separated names (default: every name the job "
                                    "logged).")] = None,
                    start: Annotated[int | None, Query(
                        ge=0, le=MAX_STEP, description="First step (inclusive).")] = None,
                    end: Annotated[int | None, Query(
                        ge=0, le=MAX_STEP, description="Last step (inclusive); not before "
                                                       "`start`.")] = None,
                    max_points: Annotated[int | None, Query(
                        ge=2, le=MAX_POINTS_LIMIT, description="Points per name (JSON "
                                                               f"default {DEFAULT_MAX_POINTS}; "
                                                               "CSV: all).")] = None,
                    format: Literal["json", "csv"] = "json") -> dict[str, Any] | Response:
    """Metric series of the caller's job: `{"object": "metrics", "job_id", "names",
    "series": {name: {"steps": [...], "values": [...]}}}`, or `step,name1,...` as text/csv."""
    if format == "json" and max_points is None:
        max_points = DEFAULT_MAX_POINTS
    series = job_series(session, tenant.id, job_id, _names(names), start_step=start,
                        end_step=end, max_points=max_points)
    if format == "csv":
        return Response(series_csv(series), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{job_id}-metrics.csv"'})
    return series_object(job_id, series)


@router.get("/api/jobs/{job_id}/metrics/names", response_model=MetricNames,
            response_model_exclude_unset=True)
def list_metric_names(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """`{"object": "list", "job_id", "data": [name, ...]}`, sorted."""
    return {"object": "list", "job_id": job_id,
            "data": job_metric_names(session, tenant.id, job_id)}
