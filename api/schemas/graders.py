"""Graders: the grader object (docs/openai.md 3.9), and the bodies of
`/v1/fine_tuning/alpha/graders/validate` and `/run` (3.10).

A grader is a JSON object here, described in full for the reader (one shape per `type`) and
checked by the trainer's own code (paec.grading, through store.grading), so that what the API
accepts is what training runs. What the schema cannot say is the server's to check: that a
template names `sample` or `item` fields, that a `multi` formula names its graders and
parses, that a python `source` loads and defines `grade(sample, item)`, and the bounds on
nesting and size.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from api.schemas.common import JsonObject, Number, Wire
from store.grading import GRADER_CHARS, GRADER_DEPTH, SIMILARITY_METRICS, STRING_OPERATIONS

_TEMPLATE = {"type": "string", "description": "A template: literal text and "
                                              "`{{ sample.output_text }}`, "
                                              "`{{ sample.output_json.<key> }}`, "
                                              "`{{ item.<key> }}`."}
_NAME = {"type": "string", "description": "The grader's name (a `multi` formula names its "
                                          "graders by it)."}


def _shape(kind: str, description: str, required: tuple[str, ...],
           **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "title": kind, "description": description,
            "required": ["type", *required], "additionalProperties": False,
            "properties": {"type": {"const": kind}, "name": _NAME, **properties}}


GRADER_SHAPES = [
    _shape("string_check", "1.0 when the rendered input and reference compare as `operation` "
           "says (`like`: contains; `ilike`: contains, ignoring case), else 0.0.",
           ("name", "input", "reference", "operation"), input=_TEMPLATE, reference=_TEMPLATE,
           operation={"enum": list(STRING_OPERATIONS)}),
    _shape("text_similarity", "The similarity in [0, 1] of the rendered input and reference.",
           ("name", "input", "reference", "evaluation_metric"), input=_TEMPLATE,
           reference=_TEMPLATE, evaluation_metric={"enum": list(SIMILARITY_METRICS)}),
    _shape("math_verify", "1.0 when the sample's final answer equals the reference "
           "mathematically (math-verify), else 0.0 (an extension of OpenAI's graders).",
           ("name", "reference"), input={**_TEMPLATE, "default": "{{sample.output_text}}"},
           reference=_TEMPLATE),
    _shape("python", "`source` defines `grade(sample: dict, item: dict) -> float`; it runs in "
           "a sandbox.", ("name", "source"), source={"type": "string"},
           image_tag={"type": ["string", "null"],
                      "description": "Accepted and ignored (OpenAI's sandbox image)."}),
    _shape("multi", "Combines its graders' rewards with the `calculate_output` formula, which "
           "names them (`0.5 * exact + 0.5 * sim`).", ("name", "graders", "calculate_output"),
           calculate_output={"type": "string"},
           graders={"anyOf": [
               {"type": "object", "required": ["type"], "description": "One grader (newer "
                                                                       "SDKs send this)."},
               {"type": "object", "minProperties": 1, "additionalProperties": {
                   "type": "object"}, "description": "A map of name to grader."}]}),
]
"""One JSON schema per grader `type` the service runs (`score_model` and `label_model` need a
model server and are refused)."""


EXAMPLE_GRADER: dict[str, Any] = {
    "type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}", "operation": "eq"}


def _describe(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({"type": "object", "oneOf": GRADER_SHAPES, "description": (
        f"An OpenAI grader object. `multi` graders nest at most {GRADER_DEPTH} levels, and a "
        f"grader has at most {GRADER_CHARS} characters as JSON.")})


class Grader(RootModel[dict[str, Any]]):
    """A grader object, checked by paec.grading (its schema is `_describe`'s)."""

    model_config = ConfigDict(json_schema_extra=_describe)


class ValidateGraderRequest(BaseModel):
    """Body of `validate` (other keys are ignored, as they always were here)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"grader": EXAMPLE_GRADER}]})

    grader: Grader


class RunGraderRequest(BaseModel):
    """Body of `run`: the grader, the model's output, and the dataset row it answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"grader": EXAMPLE_GRADER, "model_sample": "42", "item": {"answer": "42"}}]})

    grader: Grader
    model_sample: str = Field(description="The model's output, graded as "
                                          "`sample.output_text`; at most "
                                          "PAEC_MAX_GRADER_RUN_CHARS characters.")
    item: JsonObject | None = Field(default=None, description="The dataset row "
                                                              "(`item.<key>`); {} when null.")


class ValidateGraderResponse(Wire):
    """The grader, echoed as the service stores it."""

    grader: JsonObject


class GraderErrors(Wire):
    """Why a grade is 0: OpenAI's flags (docs/openai.md 3.10), their details, and our
    `timeout_error`."""

    formula_parse_error: bool
    invalid_variable_error: bool
    model_grader_parse_error: bool
    model_grader_refusal_error: bool
    model_grader_server_error: bool
    model_grader_server_error_details: str | None
    other_error: bool
    python_grader_runtime_error: bool
    python_grader_runtime_error_details: str | None
    python_grader_server_error: bool
    python_grader_server_error_type: str | None
    sample_parse_error: bool
    truncated_observation_error: bool
    unresponsive_reward_error: bool
    timeout_error: bool = Field(description="The dry run took longer than "
                                            "PAEC_GRADER_RUN_TIMEOUT_S (an extension).")


class RunGraderMetadata(Wire):
    """What ran, how long it took, and what went wrong."""

    name: str
    type: str
    execution_time: float
    scores: dict[str, Number]
    token_usage: int | None
    sampled_model_name: str | None
    errors: GraderErrors
    error_details: str | None = Field(description="What went wrong, in words (an "
                                                  "extension).")


class RunGraderResponse(Wire):
    """OpenAI's RunGraderResponse: a failed grade is reward 0 with its flag set."""

    reward: Number
    sub_rewards: dict[str, Number]
    model_grader_token_usage_per_model: JsonObject
    metadata: RunGraderMetadata

