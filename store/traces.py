"""Per-token traces of sampled completions: stored per (job, step, sample), read by the
dashboard's native routes (`/api/jobs/{id}/traces`, `/api/jobs/{id}/traces/steps`).

The trainer reports the first `TrainConfig.trace_samples` completions of every step as
{"tokens": [str], "entropy": [float], "top_p_entropy": [float|null], "mask": [float|null],
"nucleus_size": [int|null], "top_two_gap": [float|null], "prompt": str, "advantage": float}
(lists of one length; the last four lists, the prompt and the advantage may be absent). The
worker writes them with `record_traces`, in the step's transaction.

Validation: a trace that is not that shape (a missing or non-list field, unequal lengths, a
value of another type, a token over `MAX_TOKEN_CHARS`, more than `MAX_TRACE_TOKENS` tokens or
`MAX_TRACE_BYTES` of JSON) is dropped and reported to the caller, which logs it; it never
fails the job. Non-finite numbers (the trainer's NaN where PAEC is off) become null, floats
keep `SIGNIFICANT_DIGITS` digits (shading a token needs no more, and it halves the bytes),
unknown keys are left out, and characters no text column can hold become U+FFFD.

Bounds: at most `MAX_SAMPLES_PER_STEP` samples and `MAX_STEP_BYTES` per step, and at most
`MAX_TRACE_STEPS` steps per job: at most about 400 MiB for a job at every limit, a few MB for a
usual one (4 samples of 1k tokens, ~60 kB each). 200 steps give a step picker a step per
0.5% of the run whatever its length, and a usual run (hundreds to a few thousand steps) a
trace every few steps.

Thinning keeps the stored steps spread over the whole run: with `first` the job's first
stored step and `newest` its newest, the stored steps are those on the grid first + k*stride
plus `newest` itself, where the stride is the smallest power of two that leaves at most
MAX_TRACE_STEPS - 1 grid points in [first, newest]. When the run outgrows the grid the stride
doubles and every other stored step is deleted, so early and late training stay covered,
evenly, by between half and all of the bound; the newest step is always there (a live
dashboard shows the step just trained). The rule depends on (first, newest) alone, so a
replayed step (a resumed job) stores nothing twice: rows are keyed (job, step, sample) and
inserted with ON CONFLICT DO NOTHING, the first write winning, as store.metrics does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.errors import InvalidRequestError, NotFoundError
from store.metrics import MAX_STEP, require_job
from store.models import JobTrace

MAX_TRACE_STEPS = 200
"""Steps with traces kept per job (see the module doc for why 200)."""
MAX_SAMPLES_PER_STEP = 64
"""Traces kept per step (TrainConfig allows up to 1024; a page shows a handful)."""
MAX_TRACE_TOKENS = 16_384
"""Tokens per trace: the service's default limit on max_new_tokens (max_job_new_tokens)."""
MAX_TOKEN_CHARS = 256
"""Characters per decoded token (one token decodes to a few characters)."""
MAX_PROMPT_CHARS = 4096
"""Characters of a trace's prompt that are kept (its end: what the completion continues)."""
MAX_TRACE_BYTES = 1 << 20
"""Bytes of one stored trace's JSON (~16k tokens at ~60 bytes each)."""
MAX_STEP_BYTES = 2 << 20
"""Bytes of one step's traces together (also the largest body of GET .../traces)."""
SIGNIFICANT_DIGITS = 6
"""Digits kept of every float."""

FLOAT_FIELDS = ("entropy", "top_p_entropy", "mask", "top_two_gap")
INT_FIELDS = ("nucleus_size",)
OPTIONAL_FIELDS = ("top_p_entropy", "mask", "nucleus_size", "top_two_gap")
"""Fields a trace may leave out (read back as nulls): the trainer adds them over time."""
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (Postgres refuses it in text and JSON) and lone surrogates (no UTF-8)."""
_MAX_INT = 2**31 - 1
_MAX_FLOAT_INT = 2**1023


class InvalidTrace(ValueError):
    """A trace that is not the documented shape; the message says why."""


@dataclass
class TraceWrite:
    """What `record_traces` did with a step's traces."""

    stored: list[int] = field(default_factory=list)
    """Sample indices written (or already there from an earlier write of the step)."""
    dropped: dict[int, str] = field(default_factory=dict)
    """Sample index -> why it was not stored (invalid, or over a bound): to be logged."""
    thinned: bool = False
    """Whether the step itself is off the job's grid (not stored; not an error)."""


def _number(value: object, *, integer: bool) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTrace(f"expected a number or null, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if integer:
        if value != int(value) or not 0 <= value <= _MAX_INT:
            raise InvalidTrace(f"expected an integer in [0, {_MAX_INT}], got {value!r:.40}")
        return int(value)
    if isinstance(value, int) and abs(value) > _MAX_FLOAT_INT:
        raise InvalidTrace("an integer too large for a float")
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _tokens(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidTrace(f"tokens must be a list, got {type(value).__name__}")
    if len(value) > MAX_TRACE_TOKENS:
        raise InvalidTrace(f"{len(value)} tokens, over the limit of {MAX_TRACE_TOKENS}")
    out = []
    for token in value:
        if not isinstance(token, str):
            raise InvalidTrace(f"tokens must be strings, got {type(token).__name__}")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidTrace(f"a token of {len(token)} characters (limit {MAX_TOKEN_CHARS})")
        out.append(_UNSTORABLE.sub("\ufffd", token))
    return out


def clean_trace(trace: object) -> dict[str, Any]:
    """The storable form of one trace (see the module doc); InvalidTrace saying why not."""
    if not isinstance(trace, Mapping):
        raise InvalidTrace(f"a trace must be an object, got {type(trace).__name__}")
    if "tokens" not in trace or "entropy" not in trace:
        raise InvalidTrace("a trace needs tokens and entropy")
    tokens = _tokens(trace["tokens"])
    out: dict[str, Any] = {"tokens": tokens}
    for name in (*FLOAT_FIELDS, *INT_FIELDS):
        value = trace.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, list) or len(value) != len(tokens):
            raise InvalidTrace(f"{name} must be a list of {len(tokens)} values (one per token)")
        try:
            out[name] = [_number(v, integer=name in INT_FIELDS) for v in value]
        except InvalidTrace as exc:
            raise InvalidTrace(f"{name}: {exc}") from None
    prompt = trace.get("prompt")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InvalidTrace(f"prompt must be a string, got {type(prompt).__name__}")
        # The prompt's tail is what the completion continues; a long one keeps its end.
        tail = prompt[-MAX_PROMPT_CHARS:]
        out["prompt"] = _UNSTORABLE.sub("\ufffd", tail)
    if trace.get("advantage") is not None:
        try:
            out["advantage"] = _number(trace["advantage"], integer=False)
        except InvalidTrace as exc:
            raise InvalidTrace(f"advantage: {exc}") from None
    size = len(json.dumps(out, separators=(",", ":")).encode())
    if size > MAX_TRACE_BYTES:
        raise InvalidTrace(f"{size} bytes of JSON, over the limit of {MAX_TRACE_BYTES}")
    return out


def clean_traces(traces: Sequence[object]) -> tuple[dict[int, dict[str, Any]],
                                                    dict[int, str]]:
    """({index: storable trace}, {index: why dropped}) under the per-step bounds."""
    kept: dict[int, dict[str, Any]] = {}
    dropped: dict[int, str] = {}
    budget = MAX_STEP_BYTES
    for index, trace in enumerate(traces):
        if index >= MAX_SAMPLES_PER_STEP:
            dropped[index] = f"over the limit of {MAX_SAMPLES_PER_STEP} traces per step"
            continue
        try:
            cleaned = clean_trace(trace)
        except InvalidTrace as exc:
            dropped[index] = str(exc)
            continue
        size = len(json.dumps(cleaned, separators=(",", ":")).encode())
        if size > budget:
            dropped[index] = f"over the step's budget of {MAX_STEP_BYTES} bytes"
            continue
        budget -= size
        kept[index] = cleaned
    return kept, dropped


def stride_for(first: int, newest: int) -> int:
    """The smallest power of two leaving at most MAX_TRACE_STEPS - 1 grid points in
    [first, newest] (the newest step is kept besides them)."""
    stride = 1
    while (newest - first) // stride + 1 > max(MAX_TRACE_STEPS - 1, 1):
        stride *= 2
    return stride


def record_traces(session: Session, job_id: str, step: int,
                  traces: Sequence[object]) -> TraceWrite:
    """Store the step's valid traces and thin the job's stored steps (see the module doc);
    never raises for a trace's content (what was dropped, and why, is in the result)."""
    kept, dropped = clean_traces(traces)
    result = TraceWrite(dropped=dropped)
    if not kept:
        return result
    first, newest = session.execute(select(func.min(JobTrace.step), func.max(JobTrace.step))
                                    .where(JobTrace.job_id == job_id)).one()
    if first is not None and step < first:  # only a replay, after its first write was dropped
        result.thinned = True
        return result
    first = step if first is None else first
    newest = step if newest is None else max(newest, step)
    stride = stride_for(first, newest)
    if step != newest and (step - first) % stride:
        result.thinned = True
        return result
    rows = [{"job_id": job_id, "step": step, "sample_index": i, "trace": t}
            for i, t in kept.items()]
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql"
              else sqlite.insert)
    session.execute(insert(JobTrace).values(rows).on_conflict_do_nothing(
        index_elements=["job_id", "step", "sample_index"]))
    session.execute(delete(JobTrace).where(
        JobTrace.job_id == job_id, JobTrace.step != newest,
        (JobTrace.step - first) % stride != 0).execution_options(synchronize_session=False))
    result.stored = list(kept)
    return result


def trace_steps(session: Session, tenant_id: str, job_id: str) -> list[int]:
    """The steps of the tenant's job that have traces, ascending (404 for anyone else's)."""
    require_job(session, tenant_id, job_id)
    return list(session.scalars(select(JobTrace.step).where(JobTrace.job_id == job_id)
                                .distinct().order_by(JobTrace.step)))


def _sample(index: int, trace: dict[str, Any]) -> dict[str, Any]:
    n = len(trace.get("tokens") or [])
    return {"index": index, "prompt": trace.get("prompt"), "advantage": trace.get("advantage"),
            "tokens": trace.get("tokens") or [],
            **{name: trace.get(name) or [None] * n for name in (*FLOAT_FIELDS, *INT_FIELDS)}}


def step_traces(session: Session, tenant_id: str, job_id: str, step: int | None
                ) -> dict[str, Any]:
    """`{"object": "traces", "job_id", "step", "samples": [...]}` of the tenant's job at
    `step` (its newest stored step when None); 404 for anyone else's job (naming job_id) and
    for a step without traces (naming step), 400 for a step out of range."""
    if step is not None and not 0 <= step <= MAX_STEP:
        raise InvalidRequestError(f"step must be in [0, {MAX_STEP}], got {str(step)[:40]}",
                                  param="step")
    require_job(session, tenant_id, job_id)
    if step is None:
        step = session.scalar(select(func.max(JobTrace.step))
                              .where(JobTrace.job_id == job_id))
        if step is None:
            raise NotFoundError(f"job {job_id!r} has no token traces (set the "
                                "trace_samples hyperparameter)", param="step")
    rows = session.execute(select(JobTrace.sample_index, JobTrace.trace)
                           .where(JobTrace.job_id == job_id, JobTrace.step == step)
                           .order_by(JobTrace.sample_index)).all()
    if not rows:
        raise NotFoundError(f"job {job_id!r} has no token traces at step {step} (GET "
                            ".../traces/steps lists the stored steps)", param="step")
    return {"object": "traces", "job_id": job_id, "step": step,
            "samples": [_sample(index, trace) for index, trace in rows]}
