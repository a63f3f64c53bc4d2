"""Checkpoints (openai-compat a.3.4): OpenAI's `fine_tuning.job.checkpoint` and its list, with
this service's additions (the archive's hash, size and download URL)."""

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
    sha256: str = Field(description="Of the archive; also its ETag.")
    bytes: int
    full_state: bool = Field(description="Whether the archive holds the optimiser state (a job "
                                         "can resume from it).")
    download_url: str


class CheckpointList(Wire):
    """A page of a job's checkpoints, newest first."""

    object: Literal["list"]
    data: list[Checkpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool
