"""Native routes: per-token traces of a job's sampled completions, for the dashboard.

    GET /api/jobs/{job_id}/traces?step=N
    GET /api/jobs/{job_id}/traces/steps

Written by the worker when the job sets `trace_samples` (store.traces: validation, bounds,
and which steps are kept). Same Bearer keys and error envelope as /v1; another tenant's job
is a 404 naming `job_id`, a step without traces a 404 naming `step`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SessionDep, TenantDep
from api.schemas.traces import StepTraces, TraceSteps
from store.metrics import MAX_STEP
from store.traces import step_traces, trace_steps

router = APIRouter(tags=["traces"])


@router.get("/api/jobs/{job_id}/traces", response_model=StepTraces)
def get_job_traces(job_id: str, session: SessionDep, tenant: TenantDep,
                   step: Annotated[int | None, Query(
                       ge=0, le=MAX_STEP, description="The training step (default: the "
                                                      "newest step with traces).")] = None,
                   ) -> dict[str, Any]:
    """`{"object": "traces", "job_id", "step", "samples": [{"index", "tokens", "entropy",
    "top_p_entropy", "mask", "nucleus_size", "top_two_gap"}, ...]}`."""
    return step_traces(session, tenant.id, job_id, step)


@router.get("/api/jobs/{job_id}/traces/steps", response_model=TraceSteps)
def list_trace_steps(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """`{"object": "list", "job_id", "data": [step, ...]}`, ascending."""
    return {"object": "list", "job_id": job_id,
            "data": trace_steps(session, tenant.id, job_id)}
