"""Evaluations (native API): a model or checkpoint sampled k times on each problem of one or
more datasets, scored per dataset. The API creates and cancels them; a worker claims one
(compare-and-set), computes it and writes its results.

Lifecycle: `queued -> running -> succeeded | failed`, and `queued | running -> cancelled`.

The object the API returns:

    {"id": "eval-...", "object": "evaluation", "created_at": 1746679539,
     "model": "builtin:smollm2-135m-instruct" | "local:..." | "ft:...",
     "datasets": ["builtin:add", "file-..."], "k": 8, "grader": {...},
     "settings": {"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0, "size": 64,
                  "seed": 0},
     "status": "queued", "results": null, "error": null, "metadata": {...} | null,
     "started_at": null, "finished_at": null}

`results` (written by the worker through `finish_evaluation`, null until then) maps each
dataset, as named in `datasets`, to its scores; the metric keys carry the evaluation's k
(paec.grading.evaluation.evaluate_groups), e.g. for k = 8:

    {"builtin:add": {"avg@8": 0.41, "pass@8": 0.93, "maj@8": 0.55, "n": 64}}

avg@k: mean accuracy over all samples (the unbiased pass@1); pass@k: unbiased probability
that at least one of k samples is right; maj@k: the majority answer of the first k samples
is right; n: problems evaluated. A worker may add keys (e.g. `pass@1`); clients should
ignore those they do not know. `error` is `{code, message}` once failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from paec.data import BUILTIN_TASKS
from store import ids
from store.db import unix, utcnow
from store.errors import InvalidRequestError, InvalidTransitionError, NotFoundError
from store.files import FINE_TUNE, live_file
from store.grading import validate_grader_spec
from store.model_names import resolve_model_name
from store.models import Evaluation, File
from store.settings import Settings


class EvaluationStatus(StrEnum):
    """Status of an evaluation."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING)

DEFAULT_GRADER: dict[str, Any] = {"type": "math_verify", "name": "math_verify",
                                  "input": "{{sample.output_text}}",
                                  "reference": "{{item.answer}}"}
"""Mathematical equivalence of the sample's final answer and the item's `answer`."""


@dataclass(frozen=True)
class EvaluationSpec:
    """An evaluation as a request asks for it (api/schemas/evaluations.py checks its shape and
    bounds); `create_evaluation` checks the model, the datasets and the grader."""

    model: str
    """A model name resolve_model_name accepts for the tenant."""
    datasets: list[str]
    """File ids of the tenant's processed datasets, or built-in task names (`builtin:add`)."""
    k: int = 8
    """Samples per problem."""
    grader: dict[str, Any] | None = None
    """An OpenAI grader object; None means DEFAULT_GRADER."""
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    size: int = 64
    """Problems drawn from each built-in task (files are used whole)."""
    seed: int = 0
    metadata: dict[str, str] | None = None


def evaluation_object(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as the API returns it (module docstring)."""
    settings = dict(evaluation.settings)
    # Metadata rides in the settings column (the table has no column of its own).
    metadata = settings.pop("metadata", None)
    return {"id": evaluation.id, "object": "evaluation",
            "created_at": unix(evaluation.created_at), "model": evaluation.model,
            "datasets": list(evaluation.datasets), "k": evaluation.k,
            "grader": evaluation.grader, "settings": settings, "status": evaluation.status,
            "results": evaluation.results, "error": evaluation.error, "metadata": metadata,
            "started_at": unix(evaluation.started_at),
            "finished_at": unix(evaluation.finished_at)}


def evaluation_list_object(evaluations: list[Evaluation], has_more: bool) -> dict[str, Any]:
    """A page of evaluations in OpenAI's list envelope, with the first and last ids."""
    data = [evaluation_object(row) for row in evaluations]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def _check_dataset(session: Session, tenant_id: str, name: str, param: str) -> None:
    if name.startswith("builtin:"):
        if name not in BUILTIN_TASKS:
            raise InvalidRequestError(f"unknown built-in task {name!r}; the built-in tasks "
                                      f"are {', '.join(BUILTIN_TASKS)}", param=param)
        return
    # FOR SHARE, as for a job's files: the file cannot be deleted under a new evaluation.
    file = session.scalar(select(File).where(File.id == name, File.tenant_id == tenant_id,
                                            live_file())
                          .with_for_update(read=True))
    if file is None:
        err = InvalidRequestError(f"no file {name!r}: name one of your uploaded datasets "
                                  "or a built-in task (builtin:...)", param=param)
        err.code = "file_not_found"
        raise err
    if file.purpose != FINE_TUNE or file.status != "processed":
        raise InvalidRequestError(f"file {name!r} is not a processed dataset (purpose "
                                  f"{file.purpose!r}, status {file.status!r})", param=param)


def create_evaluation(session: Session, settings: Settings, tenant_id: str,
                      spec: EvaluationSpec) -> Evaluation:
    """Check `spec` for the tenant and add a queued evaluation (not committed; the
    caller enqueues it after the commit)."""
    resolve_model_name(session, settings, tenant_id, spec.model)
    seen: set[str] = set()
    for i, name in enumerate(spec.datasets):
        param = f"datasets[{i}]"
        if name in seen:  # results are keyed by dataset name
            raise InvalidRequestError(f"dataset {name!r} is listed twice", param=param)
        seen.add(name)
        _check_dataset(session, tenant_id, name, param)
    grader = (dict(DEFAULT_GRADER) if spec.grader is None
              else validate_grader_spec(spec.grader, settings, "grader"))
    if grader.get("type") != "math_verify":
        # avg@k, pass@k and maj@k compare final answers with each row's `answer` by
        # mathematical equivalence (paec.grading.evaluation), as the trainer's evaluation does; a
        # grader of another kind would be stored and silently ignored, so it is refused.
        raise InvalidRequestError(
            "evaluations score final answers against each row's `answer` by mathematical "
            "equivalence: only a math_verify grader (the default) is supported",
            param="grader.type")
    sampling: dict[str, Any] = {"max_new_tokens": spec.max_new_tokens,
                                "temperature": spec.temperature, "top_p": spec.top_p,
                                "size": spec.size, "seed": spec.seed}
    if spec.metadata is not None:
        sampling["metadata"] = dict(spec.metadata)
    evaluation = Evaluation(id=ids.new_id(ids.EVALUATION), tenant_id=tenant_id,
                            model=spec.model, datasets=list(spec.datasets), k=spec.k,
                            grader=grader, settings=sampling,
                            status=EvaluationStatus.QUEUED.value,
                            created_at=utcnow())
    session.add(evaluation)
    session.flush()
    return evaluation


def get_evaluation(session: Session, tenant_id: str, evaluation_id: str, *,
                   for_update: bool = False) -> Evaluation:
    """The tenant's evaluation (another tenant's answers exactly as a missing one: 404)."""
    query = select(Evaluation).where(Evaluation.id == evaluation_id,
                                     Evaluation.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    evaluation = session.scalar(query)
    if evaluation is None:
        raise NotFoundError(f"no evaluation {evaluation_id!r}", param="evaluation_id")
    return evaluation


def list_evaluations(session: Session, tenant_id: str, *, after: str | None, limit: int
                     ) -> tuple[list[Evaluation], bool]:
    """A page of the tenant's evaluations, newest first, older than the evaluation `after`;
    returns (evaluations, has_more)."""
    query = select(Evaluation).where(Evaluation.tenant_id == tenant_id)
    if after is not None:
        cursor = session.scalar(select(Evaluation.seq).where(Evaluation.id == after,
                                                             Evaluation.tenant_id == tenant_id))
        if cursor is None:
            raise InvalidRequestError(f"no evaluation {after!r}", param="after")
        query = query.where(Evaluation.seq < cursor)
    rows = list(session.scalars(query.order_by(Evaluation.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel_evaluation(session: Session, tenant_id: str, evaluation_id: str) -> Evaluation:
    """Cancel a queued or running evaluation; a cancelled one is returned as it is (so the
    client's retries are harmless); a finished one is a 409. A running worker sees the
    status at its next write (`finish_evaluation` leaves a cancelled row alone)."""
    evaluation = get_evaluation(session, tenant_id, evaluation_id, for_update=True)
    if evaluation.status == EvaluationStatus.CANCELLED:
        return evaluation
    if evaluation.status not in ACTIVE:
        raise InvalidTransitionError(f"an evaluation that is {evaluation.status} cannot be "
                                     "cancelled")
    evaluation.status = EvaluationStatus.CANCELLED.value
    evaluation.finished_at = utcnow()
    evaluation.worker_id = None
    session.flush()
    return evaluation


# ---- for the worker ----

def claim_evaluation(session: Session, evaluation_id: str, worker_id: str
                     ) -> Evaluation | None:
    """Take a queued evaluation for `worker_id` (queued -> running, attempt + 1) by one
    compare-and-set UPDATE, so that of two workers given the same id exactly one wins; None
    for the loser, or when the evaluation is no longer queued (cancelled, done, gone)."""
    now = utcnow()
    claimed = session.scalar(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id,
               Evaluation.status == EvaluationStatus.QUEUED.value)
        .values(status=EvaluationStatus.RUNNING.value, attempt=Evaluation.attempt + 1,
                worker_id=worker_id, started_at=now, heartbeat_at=now)
        .returning(Evaluation.seq))
    if claimed is None:
        return None
    return session.scalar(select(Evaluation).where(Evaluation.seq == claimed)
                          .execution_options(populate_existing=True))


def evaluation_status(session: Session, evaluation_id: str, worker_id: str) -> str | None:
    """The status of an evaluation `worker_id` holds (a user may have cancelled it), or None
    when the worker no longer holds it (cancelled, re-queued by the sweeper, deleted)."""
    return session.scalar(select(Evaluation.status).where(Evaluation.id == evaluation_id,
                                                          Evaluation.worker_id == worker_id))


def _settle(session: Session, evaluation_id: str, values: Mapping[str, Any],
            from_: tuple[EvaluationStatus, ...], worker_id: str | None) -> bool:
    # Only an active evaluation settles: a cancel that came first is not overwritten; and
    # only its holder settles it, so a worker that lost its claim (the sweeper re-queued
    # the evaluation, another worker runs it now) writes nothing.
    query = update(Evaluation).where(Evaluation.id == evaluation_id,
                                     Evaluation.status.in_([status.value for status in from_]))
    if worker_id is not None:
        query = query.where(Evaluation.worker_id == worker_id)
    done = session.scalar(query.values(**values, finished_at=utcnow(), worker_id=None)
                          .returning(Evaluation.seq))
    return done is not None


def finish_evaluation(session: Session, evaluation_id: str, results: dict[str, Any], *,
                      worker_id: str) -> bool:
    """Record the results (module docstring) of a running evaluation `worker_id` holds as
    succeeded; False (and nothing written) when it is no longer running or no longer held by
    that worker (cancelled meanwhile, or re-queued by the sweeper)."""
    return _settle(session, evaluation_id, {"status": EvaluationStatus.SUCCEEDED.value,
                                            "results": results, "error": None},
                   (EvaluationStatus.RUNNING,), worker_id)


def fail_evaluation(session: Session, evaluation_id: str, code: str, message: str, *,
                    worker_id: str | None) -> bool:
    """Mark a queued or running evaluation failed with `{code, message}`; `worker_id` None
    means any holder (a sweeper may fail one that never ran), else only that worker's. False
    when it is already finished or cancelled, or held by another worker."""
    return _settle(session, evaluation_id, {"status": EvaluationStatus.FAILED.value,
                                            "error": {"code": code, "message": message}},
                   ACTIVE, worker_id)
