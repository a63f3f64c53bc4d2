"""A job's per-token traces (native): `GET /api/jobs/{job_id}/traces` and its steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.common import Wire


class TraceSample(Wire):
    """One sampled completion, token by token; every list has one entry per token, null
    where the trainer had no value (PAEC off, or a field it did not report)."""

    index: int = Field(description="The completion's position among the step's samples.")
    prompt: str | None = Field(description="The prompt as the model saw it (chat template "
                                           "applied; its last 4,096 characters).")
    advantage: float | None = Field(description="The completion's advantage in the update.")
    tokens: list[str] = Field(description="The completion's tokens, decoded one by one.")
    entropy: list[float | None] = Field(
        description="Entropy of the full next-token distribution (nats).")
    top_p_entropy: list[float | None] = Field(
        description="Entropy of the top-p nucleus (nats).")
    mask: list[float | None] = Field(description="PAEC's mask weight of the token.")
    nucleus_size: list[int | None] = Field(description="Tokens in the top-p nucleus.")
    top_two_gap: list[float | None] = Field(
        description="log p1 - log p2, the log-probability gap between the two "
                    "likeliest tokens (null where only one token has mass).")


class StepTraces(Wire):
    """The traces of one training step of a job."""

    object: Literal["traces"]
    job_id: str
    step: int
    samples: list[TraceSample]


class TraceSteps(Wire):
    """The steps of a job that have traces, ascending (at most store.traces.MAX_TRACE_STEPS,
    spread over the run)."""

    object: Literal["list"]
    job_id: str
    data: list[int]
