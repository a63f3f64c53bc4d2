"""Fine-tuning jobs (docs/openai.md 3.1, 3.2): the create request and the job object.

The request is OpenAI's CreateFineTuningJobRequest as this server accepts it: unknown fields
are refused (a 400 naming the field, as OpenAI does), `method.type` must be "reinforcement"
(a request without `method` asks for OpenAI's default, supervised, and is refused naming
`method.type`), and the deprecated top-level `hyperparameters` and `integrations` must be
empty. The grader and the hyperparameters are checked by the trainer's own code in
store.jobs, which also resolves the model and the files.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from api.schemas.common import JsonObject, Number, Strict, Wire
from api.schemas.graders import EXAMPLE_GRADER, Grader
from api.schemas.hyperparameters import Hyperparameters
from store.db import unstorable
from store.hyperparameters import PARAM as HYPERPARAMETERS
from store.jobs import (
    MAX_METADATA,
    MAX_METADATA_KEY,
    MAX_METADATA_VALUE,
    MAX_SEED,
    SUFFIX_PATTERN,
    JobSpec,
)
from store.states import JobStatus

OPENAI_DEFAULT_METHOD = {"type": "supervised"}
"""What OpenAI trains when a request names no method."""
EXAMPLE_FILE = "file-abc123"
"""The training file of the schema's example request (the fuzz test makes one by this id)."""
EXAMPLE_REQUEST = {
    "model": "builtin:smollm2-135m-instruct", "training_file": EXAMPLE_FILE,
    "method": {"type": "reinforcement", "reinforcement": {
        "grader": EXAMPLE_GRADER,
        "hyperparameters": {"n_epochs": 1, "batch_size": 2, "group_size": 4,
                            "paec": {"top_p": 0.9}}}},
    "suffix": "math-v1", "metadata": {"experiment": "baseline"}}


def _storable(text: str) -> str:
    # Postgres text and jsonb cannot hold NUL, and a lone surrogate is no UTF-8: stored, either
    # one made every later `metadata[k]=v` list of the tenant a 500.
    if unstorable(text):
        raise PydanticCustomError("unstorable", "must not contain NUL characters or lone "
                                                "surrogates")
    return text


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY),
                        AfterValidator(_storable)]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE),
                          AfterValidator(_storable)]


class ReinforcementMethod(Strict):
    """`method.reinforcement`."""

    grader: Grader
    hyperparameters: Hyperparameters | None = None


class FineTuneMethod(Strict):
    """`method`: reinforcement fine-tuning only."""

    type: Literal["reinforcement"]
    reinforcement: ReinforcementMethod

    @field_validator("type", mode="before")
    @classmethod
    def _supported(cls, kind: object) -> object:
        if kind != "reinforcement":
            raise PydanticCustomError(
                "unsupported_method", "{kind} is not supported: this service trains with "
                "reinforcement fine-tuning only (method.type = \"reinforcement\")",
                {"kind": repr(kind)})
        return kind


def _describe_request(schema: dict[str, Any]) -> None:
    # `method` is required as this server reads it, though OpenAI defaults it.
    schema["required"] = [*schema.get("required", []), "method"]
    schema["properties"]["method"].pop("default", None)
    schema["examples"] = [EXAMPLE_REQUEST]


class CreateFineTuningJobRequest(Strict):
    """The body of `POST /v1/fine_tuning/jobs`: OpenAI's CreateFineTuningJobRequest as this
    server accepts it. Unknown fields are refused; `method.type` must be "reinforcement" (a
    request without `method` asks for OpenAI's default, supervised, and is refused naming
    `method.type`); the deprecated top-level `hyperparameters` and `integrations` must be
    empty."""

    model_config = ConfigDict(json_schema_extra=_describe_request)

    model: str = Field(min_length=1, description="A model name: `builtin:...`, `local:...`, "
                                                 "or a fine-tuned model or checkpoint of "
                                                 "yours or shared with you (`ft:...`).")
    training_file: str = Field(min_length=1, description="A processed `fine-tune` file.")
    validation_file: str | None = Field(default=None, min_length=1)
    method: FineTuneMethod = Field(default=OPENAI_DEFAULT_METHOD, validate_default=True)
    hyperparameters: JsonObject | None = Field(
        default=None, json_schema_extra={"maxProperties": 0, "deprecated": True},
        description=f"Deprecated by OpenAI and not supported: send {HYPERPARAMETERS}.")
    suffix: str | None = Field(default=None, pattern=SUFFIX_PATTERN)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="Generated when absent.")
    integrations: list[JsonObject] | None = Field(
        default=None, json_schema_extra={"maxItems": 0},
        description="Not supported (follow a job with its events, metrics and stream).")
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None,
                                                               max_length=MAX_METADATA)

    @field_validator("method", mode="before")
    @classmethod
    def _null_is_default(cls, method: object) -> object:
        return OPENAI_DEFAULT_METHOD if method is None else method

    @field_validator("hyperparameters")
    @classmethod
    def _deprecated(cls, value: JsonObject | None) -> JsonObject | None:
        if value:
            raise PydanticCustomError("unsupported", "the top-level hyperparameters object is "
                                      "deprecated and not supported; send them in "
                                      f"{HYPERPARAMETERS}")
        return value

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[JsonObject] | None) -> list[JsonObject] | None:
        if value:
            raise PydanticCustomError("unsupported", "integrations (e.g. wandb) are not "
                                      "supported; follow a job with its events, metrics and "
                                      "/api/jobs/{id}/stream")
        return value

    def spec(self) -> JobSpec:
        """What store.jobs creates."""
        reinforcement = self.method.reinforcement
        hyper = reinforcement.hyperparameters
        return JobSpec(model=self.model, training_file=self.training_file,
                       validation_file=self.validation_file, grader=reinforcement.grader.root,
                       hyperparameters=None if hyper is None else hyper.root, seed=self.seed,
                       suffix=self.suffix, metadata=self.metadata)


class JobError(Wire):
    """Why a failed job failed; null on every other job."""

    code: str
    message: str
    param: str | None


class JobHyperparameters(Wire):
    """OpenAI's summary of the effective hyperparameters."""

    batch_size: int | None
    learning_rate_multiplier: Number | None
    n_epochs: Number | None


class JobReinforcement(Wire):
    """The effective grader and hyperparameters (every extension with its value)."""

    grader: JsonObject | None = None
    hyperparameters: JsonObject | None = None


class JobMethod(Wire):
    """The job's method, with its effective settings."""

    type: str
    reinforcement: JobReinforcement | None = None


class FineTuningJob(Wire):
    """`fine_tuning.job`, plus `user_provided_suffix`, `step`, `total_steps`, `attempt`."""

    id: str
    object: Literal["fine_tuning.job"]
    created_at: int
    model: str
    organization_id: str
    status: JobStatus
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: JobHyperparameters
    result_files: list[str]
    seed: int
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[JsonObject] | None
    metadata: dict[str, str] | None
    method: JobMethod
    user_provided_suffix: str | None
    step: int = Field(description="Training steps done.")
    total_steps: int
    attempt: int = Field(description="Tries the job has had (a worker lost counts one).")


class FineTuningJobList(Wire):
    """A page of the tenant's jobs, newest first."""

    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool
    first_id: str | None
    last_id: str | None
