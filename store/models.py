"""The service's tables, as typed SQLAlchemy 2 models.

Every user-visible object has an integer primary key `seq` (monotonic: the cursor of every
list, newest first) and a public string `id` in OpenAI's style (`file-...`, `ftjob-...`).
Events have no string column: their public id is `ftevent-<seq>`, so an event id doubles as a
resume cursor for the SSE stream. Metrics are keyed (job, name, step), token traces (job,
step, sample) and checkpoints (job, step), so that a replayed training step writes nothing
twice.

`migrations/` creates exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, utcnow

# SQLite only autoincrements an INTEGER PRIMARY KEY; BigInteger elsewhere.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Tenant(Base):
    """An organisation: owns files, jobs, checkpoints and evaluations; sees nothing else."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key of a tenant; only its sha256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class File(Base):
    """An uploaded dataset (or a result file the worker wrote)."""

    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_files_tenant_seq", "tenant_id", "seq"),)


class Job(Base):
    """A fine-tuning job: the source of truth for its state (Celery only carries its id)."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(512))
    """The base model as the user named it."""
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(32), index=True)
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The effective method object echoed to users (grader, resolved hyperparameters)."""
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The trainer settings (paec.config.training.TrainConfig keys) the worker runs, without the
    paths the worker resolves itself (model, data, output)."""
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """{code, message, param} once failed; None otherwise."""
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), default=None)
    result_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    total_steps: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0)
    """Last completed training step."""
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    """Times a worker claimed the job since it was created or last resumed by its user (the
    sweeper and the retry policy give up after settings.max_attempts)."""
    worker_id: Mapped[str | None] = mapped_column(String(255), default=None)
    """The worker holding the run, None when none does (a job never runs twice at once)."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    paused_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_jobs_tenant_seq", "tenant_id", "seq"),)


class Event(Base):
    """A job event; public id `ftevent-<seq>`. `key` de-duplicates replayed writes."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    key: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "key"),
        Index("ix_events_job_seq", "job_id", "seq"),
    )


class Metric(Base):
    """One value of one named metric at one training step of one job."""

    __tablename__ = "metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class JobTrace(Base):
    """The per-token trace of one sampled completion (`sample_index`) at one training step:
    {"tokens": [...], "entropy": [...], ...} (store.traces validates and bounds it, and keeps
    at most store.traces.MAX_TRACE_STEPS steps per job)."""

    __tablename__ = "job_traces"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The completion's position among the step's traces (`index` on the wire; `INDEX` is
    an SQL keyword)."""
    trace: Mapped[dict[str, Any]] = mapped_column(JSON)


class Checkpoint(Base):
    """A saved model (and, when `full_state`, everything needed to resume the run)."""

    __tablename__ = "checkpoints"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(512), unique=True)
    """`fine_tuned_model_checkpoint`: a model name usable as the base of a job or an eval."""
    storage_key: Mapped[str] = mapped_column(String(512))
    """The full-state archive (tar) in artifact storage: everything the trainer saved."""
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    model_storage_key: Mapped[str | None] = mapped_column(String(512), default=None)
    """The model-only archive (weights, configs, tokenizer, sidecar; a LoRA job's weights
    merged): what a user downloads. None for a checkpoint registered before it existed."""
    model_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    model_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    full_state: Mapped[bool] = mapped_column(Boolean)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "step"),
        Index("ix_checkpoints_job_seq", "job_id", "seq"),
    )


class CheckpointPermission(Base):
    """A checkpoint shared by its owner with another tenant (OpenAI's `checkpoint.permission`,
    whose "project" is a tenant here): that tenant may use the checkpoint as a model."""

    __tablename__ = "checkpoint_permissions"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                            index=True)
    """The tenant granted the checkpoint."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # Also the index of "is this checkpoint shared with that tenant" (store.model_names).
        UniqueConstraint("checkpoint_id", "project_id"),
        Index("ix_checkpoint_permissions_checkpoint_seq", "checkpoint_id", "seq"),
    )


class Evaluation(Base):
    """An evaluation of a model or checkpoint on datasets: avg@k, pass@k, maj@k."""

    __tablename__ = "evaluations"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(512))
    datasets: Mapped[list[Any]] = mapped_column(JSON)
    """File ids or built-in task names."""
    k: Mapped[int] = mapped_column(Integer)
    grader: Mapped[dict[str, Any]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Sampling settings (max_new_tokens, temperature, top_p, seed, size)."""
    status: Mapped[str] = mapped_column(String(32))
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(255), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_evaluations_tenant_seq", "tenant_id", "seq"),)


class IdempotencyKey(Base):
    """The first response to a POST carrying an `Idempotency-Key`, replayed for retries."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
