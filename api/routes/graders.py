"""/v1/fine_tuning/alpha/graders: check a grader, and grade one sample with it, before a job
uses it (OpenAI `fine_tuning.alpha.graders.validate` and `.run`, docs/openai.md 3.10).

Both are plain `def` routes, so they run in a worker thread, never on the event loop; `run`
grades in store.grading's own small pool, with a time limit and bounded inputs. Graders that
need a main thread (math_verify's SIGALRM timeouts) grade in a child process there
(paec.grading.sandbox).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ServicesDep, TenantDep
from api.schemas.graders import (
    RunGraderRequest,
    RunGraderResponse,
    ValidateGraderRequest,
    ValidateGraderResponse,
)
from store.grading import run_grader, validate_grader_spec

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])


@router.post("/validate", response_model=ValidateGraderResponse,
             response_model_exclude_unset=True)
def validate(body: ValidateGraderRequest, tenant: TenantDep,
             services: ServicesDep) -> dict[str, Any]:
    """The grader, echoed, if the service would accept it in a job (400 naming the field
    otherwise)."""
    return {"grader": validate_grader_spec(body.grader.root, services.settings, "grader")}


@router.post("/run", response_model=RunGraderResponse, response_model_exclude_unset=True)
def run(body: RunGraderRequest, tenant: TenantDep, services: ServicesDep) -> dict[str, Any]:
    """Grade `model_sample` against `item`; a failed grade is reward 0 with its error flag,
    an input past PAEC_MAX_GRADER_RUN_CHARS a 400 naming `model_sample` or `item`."""
    return run_grader(body.grader.root, body.model_sample, body.item, services.settings)
