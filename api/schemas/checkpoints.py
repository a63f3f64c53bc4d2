"""Checkpoints (docs/openai.md 3.4): OpenAI's `fine_tuning.job.checkpoint` and its list, with
this service's additions: the hash and size of each of its two archives (full state, model
only) and the download URL."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.common import Number, Wire


class Checkpoint(Wire):
    """A checkpoint: a model name for jobs and evaluations, and a tar archive to download."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"]
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Number] = Field(description="`step` and every numeric metric of that "
                                                   "step (rewards, entropies).")
    sha256: str = Field(description="Of the full-state archive (`download_url` with "
                                    "`?contents=full`); also its ETag.")
    bytes: int = Field(description="Size of the full-state archive.")
    model_sha256: str | None = Field(description="Of the model-only archive (`download_url`, "
                                                 "`?contents=model`, the default): weights, "
                                                 "configs, tokenizer, sidecar; also its ETag. "
                                                 "Null for a checkpoint registered before "
                                                 "model-only archives existed.")
    model_bytes: int | None = Field(description="Size of the model-only archive (null as "
                                                "`model_sha256`).")
    full_state: bool = Field(description="Whether the checkpoint holds the optimiser state (a "
                                         "job can resume from it).")
    download_url: str = Field(description="Serves the model-only archive; `?contents=full` the "
                                          "full-state one.")


class CheckpointList(Wire):
    """A page of a job's checkpoints, newest first."""

    object: Literal["list"]
    data: list[Checkpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool
