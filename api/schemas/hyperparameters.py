"""The `method.reinforcement.hyperparameters` object as the schema describes it.

OpenAI's fields first (each may be "auto" or null: TrainConfig's default), then `device`,
then every TrainConfig field a job may set under its own name, typed as TrainConfig types it
(`group_size`, `max_new_tokens`, `paec: {...}`, `loss: {...}`, ...). The object is checked
by the trainer's own TrainConfig (store/hyperparameters.py), not here, so that what the API
accepts is what the trainer runs; the rules a schema cannot say are the server's: an OpenAI
name and its TrainConfig alias sent together (`batch_size` and `prompts_per_step`),
TrainConfig's cross-field checks, and the operator's limits on a job's size.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, RootModel, TypeAdapter

from store.hyperparameters import DEVICE_KEY, MAX_BATCH_SIZE, MAX_EPOCHS, job_defaults
from store.jobs import extension_fields
from store.queue import DEVICE_ANY, DEVICE_KINDS


def _auto_or(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [{"const": "auto"}, {"type": "null"}, schema], "default": "auto",
            "description": description}


OPENAI_FIELDS: dict[str, dict[str, Any]] = {
    "batch_size": _auto_or({"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                           "Prompts per step (TrainConfig.prompts_per_step)."),
    "learning_rate_multiplier": _auto_or({"type": "number", "exclusiveMinimum": 0},
                                         "A multiple of TrainConfig's default learning rate."),
    "n_epochs": _auto_or({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_EPOCHS},
                         "Passes over the training file: steps = ceil(n_epochs * rows / "
                         "batch_size)."),
    "eval_interval": _auto_or({"type": "integer", "minimum": 0},
                              "Steps between evaluations on the validation file (0: only at "
                              "the end)."),
    "eval_samples": _auto_or({"type": "integer", "minimum": 1},
                             "Samples per validation problem (TrainConfig.eval_k)."),
    "reasoning_effort": {"enum": ["default", None], "default": "default",
                         "description": "Only \"default\": the models trained here have no "
                                        "reasoning-effort setting (bound the completion "
                                        "length with max_new_tokens)."},
    "compute_multiplier": {"enum": ["auto", None], "default": "auto",
                           "description": "Only \"auto\": set the compute with steps, "
                                          "group_size and max_new_tokens."},
    DEVICE_KEY: {"enum": list(DEVICE_KINDS), "default": DEVICE_ANY,
                 "description": "The kind of worker to train on (an extension; routes the "
                                "job to that kind's queue)."},
}
"""OpenAI's fields (docs/openai.md 3.1) with the ranges this server accepts, and `device`."""


DESCRIPTION = (
    "OpenAI's fields (each \"auto\" or null for the default), `device`, and any TrainConfig "
    "field under its own name (`group_size`, `max_new_tokens`, `paec: {...}`, `loss: {...}`, "
    "...), checked by the trainer's own TrainConfig. An OpenAI name sent with its TrainConfig "
    "alias (`batch_size` and `prompts_per_step`), a value out of TrainConfig's bounds, or a "
    "job larger than this server trains (PAEC_MAX_JOB_*) is a 400 naming the field.")


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with its `$ref`s to `defs` replaced by what they name; an object of named
    fields (TrainConfig's nested sections) refuses other keys, as the server does."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _inline(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    out = {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def hyperparameters_schema() -> dict[str, Any]:
    """The JSON schema of the hyperparameters object."""
    properties = dict(OPENAI_FIELDS)
    defaults = job_defaults()
    for key, annotation in extension_fields().items():
        if key not in properties:
            schema = TypeAdapter(annotation).json_schema()
            properties[key] = _inline(schema, schema.get("$defs", {}))
            if key in defaults:
                properties[key]["default"] = defaults[key]
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": DESCRIPTION}


def _describe(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(hyperparameters_schema())


class Hyperparameters(RootModel[dict[str, Any]]):
    """`method.reinforcement.hyperparameters`, checked by TrainConfig (its schema is
    `hyperparameters_schema()`)."""

    model_config = ConfigDict(json_schema_extra=_describe)
