"""Evaluations (native): the create request and the evaluation object (store/evaluations.py
describes the object and its `results`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, RootModel

from api.schemas.common import JsonObject, Number, Strict, Wire
from api.schemas.graders import GRADER_SHAPES
from store.evaluations import DEFAULT_GRADER, EvaluationSpec, EvaluationStatus
from store.jobs import MAX_SEED


def _describe(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(next(s for s in GRADER_SHAPES if s["title"] == "math_verify"))
    schema["description"] = ("A math_verify grader: avg@k, pass@k and maj@k compare final "
                             "answers with each row's `answer` by mathematical equivalence.")


class EvaluationGrader(RootModel[dict[str, Any]]):
    """A math_verify grader, checked by paec.grading (the only kind an evaluation scores
    with)."""

    model_config = ConfigDict(json_schema_extra=_describe)


class CreateEvaluationRequest(Strict):
    """The body of `POST /api/evaluations`; unknown keys are refused (400 naming the key)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "builtin:smollm2-135m-instruct", "datasets": ["builtin:add"], "k": 4,
        "size": 16, "metadata": {"run": "baseline"}}]})

    model: str = Field(min_length=1, max_length=512,
                       description="A model name, as a job's `model`.")
    datasets: list[str] = Field(min_length=1, max_length=8,
                                description="File ids of your processed datasets, or "
                                            "built-in tasks (`builtin:add`).")
    k: int = Field(default=8, ge=1, le=64, description="Samples per problem.")
    grader: EvaluationGrader | None = Field(default=None,
                                            description=f"Default: {DEFAULT_GRADER}.")
    max_new_tokens: int = Field(default=64, ge=1, le=2048)
    temperature: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1)
    size: int = Field(default=64, ge=1, le=4096,
                      description="Problems drawn from each built-in task (files are used "
                                  "whole).")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    def spec(self) -> EvaluationSpec:
        """What store.evaluations creates."""
        return EvaluationSpec(
            model=self.model, datasets=list(self.datasets), k=self.k,
            grader=None if self.grader is None else self.grader.root,
            max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            top_p=self.top_p, size=self.size, seed=self.seed, metadata=self.metadata)


class EvaluationSettings(Wire):
    """How the model was sampled."""

    max_new_tokens: int
    temperature: Number
    top_p: Number
    size: int
    seed: int


class Evaluation(Wire):
    """An evaluation; `results` maps each dataset to `{"avg@k", "pass@k", "maj@k", "n"}` once
    it succeeded, `error` is `{code, message}` once it failed."""

    id: str
    object: Literal["evaluation"]
    created_at: int
    model: str
    datasets: list[str]
    k: int
    grader: JsonObject
    settings: EvaluationSettings
    status: EvaluationStatus
    results: dict[str, dict[str, Number]] | None
    error: JsonObject | None
    metadata: dict[str, str] | None
    started_at: int | None
    finished_at: int | None


class EvaluationList(Wire):
    """A page of the tenant's evaluations, newest first."""

    object: Literal["list"]
    data: list[Evaluation]
    first_id: str | None
    last_id: str | None
    has_more: bool
