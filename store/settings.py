"""Service settings, read from the environment (prefix PAEC_) or a .env file.

The embedded default needs no servers: a SQLite database and a local artifact folder under
`data_dir`. Production points `database_url` at Postgres and `broker_url` at Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting the API and the worker read; one docstring per field."""

    model_config = SettingsConfigDict(env_prefix="PAEC_", env_file=".env", extra="ignore")

    data_dir: Path = Path("var")
    """Root of the embedded default: the SQLite database, broker and artifacts live under it."""
    database_url: str | None = None
    """SQLAlchemy URL; None means SQLite at <data_dir>/paec.db."""
    broker_url: str | None = None
    """Celery broker URL; None means the server-free SQLite transport under data_dir."""
    artifacts_dir: Path | None = None
    """Where checkpoints and result files are stored; None means <data_dir>/artifacts."""
    models_dir: Path | None = None
    """Operator-provided model folders that jobs may name; None allows only built-ins."""
    allow_hub_models: bool = False
    """Whether jobs may name Hugging Face hub ids (the server then downloads them)."""
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Largest accepted dataset upload."""
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    """Largest accepted JSON request body (uploads have their own limit)."""
    max_attempts: int = Field(default=3, ge=1)
    """Times a job may be claimed by a worker before the sweeper fails it."""
    heartbeat_timeout_s: float = Field(default=300.0, gt=0)
    """A running job whose heartbeat is older than this is presumed dead and re-queued."""
    auth_cache_s: float = Field(default=5.0, ge=0)
    """Seconds a verified API key is trusted without a database query; a revoked key is
    refused at most this long after its revocation (0: check every request)."""
    allow_python_graders: bool = False
    """Whether jobs and grader dry-runs may use `python` graders. Each runs in a bubblewrap
    sandbox: a uid of its own, no network, a private read-only file system, its own PID
    namespace and rlimits (paec/grading/sandbox.py, docs/operations.md); where `bwrap` is missing or
    fails its start-up check, python graders are refused with the reason. Off by default, so
    that an operator opts in to running tenant code at all."""
    max_job_steps: int = Field(default=100_000, ge=1, le=1_000_000)
    """Largest number of training steps a job may ask for (TrainConfig allows 1,000,000)."""
    max_job_completions_per_step: int = Field(default=4096, ge=2)
    """Largest group_size x prompts_per_step (completions sampled per step) of a job."""
    max_job_new_tokens: int = Field(default=16_384, ge=1)
    """Largest max_new_tokens (completion length) of a job."""
    max_job_processes: int = Field(default=1, ge=1)
    """Largest num_processes (devices, one process each, on one worker host) a job may ask
    for. Set it to the most devices any of your workers owns (PAEC_WORKER_PROCESSES): a
    job that no running worker can take waits in its queue. 1 refuses multi-process jobs."""
    max_grader_run_chars: int = Field(default=65_536, ge=1)
    """Largest model_sample, and largest item as JSON, of a grader dry run (characters):
    text_similarity's work grows with the product of the two lengths."""
    grader_run_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds a grader dry run may grade before it answers reward 0 with timeout_error (a
    python grader's sandbox stops a sample after 10 s by itself)."""
    worker_dir: Path | None = None
    """A worker's scratch space (datasets, run folders, fetched checkpoints); None means
    <data_dir>/worker."""
    worker_device: str = "auto"
    """The device a worker trains on: cpu, cuda, cuda:N, or auto (cuda if available). Run one
    worker per GPU (CUDA_VISIBLE_DEVICES), each with concurrency 1."""
    worker_processes: int = Field(default=1, ge=1)
    """How many devices this worker owns (its GPUs: CUDA_VISIBLE_DEVICES lists them, and
    PAEC_WORKER_DEVICE is cuda or auto; or CPU processes): it takes jobs of 1 to this many
    processes (queues training[.gpu|.cpu].xN) and runs a multi-process one under torchrun,
    one rank per device, on this host."""
    worker_queues: str | None = None
    """Comma-separated queues a worker started without -Q consumes; None means by its device:
    training,training.gpu,evaluation on CUDA, training,training.cpu,evaluation otherwise."""
    sweep_interval_s: float = Field(default=30.0, gt=0)
    """How often each worker runs the sweeper (stale heartbeats, lost messages)."""
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    """How often a running job's heartbeat is written (independently of step length)."""
    resend_after_s: float = Field(default=120.0, gt=0)
    """A job queued for longer than this without a worker is sent to the queue again."""
    log_format: Literal["json", "plain"] = "json"
    """The API's log lines on stderr: json (one object per line: request id, method, escaped
    path, status, duration, traceback) or plain text (api/logs.py)."""
    stall_timeout_s: float = Field(default=1800.0, gt=0)
    """A running job or evaluation that makes no progress (no training step, checkpoint or
    batch of evaluated problems) for this long stops beating, so that the sweeper re-queues
    it: a hung step (a stuck CUDA call, a deadlock) does not keep it running forever."""
    keep_checkpoints: int = Field(default=3, ge=1)
    """Full-state checkpoints kept per job (the newest ones); older ones are deleted unless
    final, shared, or the model of an unfinished job or evaluation."""

    @field_validator("database_url", "broker_url")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank; leave it unset for the embedded default")
        return value

    @field_validator("worker_queues")
    @classmethod
    def _queue_list(cls, value: str | None) -> str | None:
        if value is not None and not all(name.strip() for name in value.split(",")):
            raise ValueError("must be queue names separated by commas, e.g. "
                             "training,training.gpu,evaluation; leave it unset to pick the "
                             "queues by the worker's device")
        return value

    @model_validator(mode="after")
    def _devices_of_a_multi_device_worker(self) -> Settings:
        # Rank r of a multi-process job trains on cuda:r (LOCAL_RANK); a worker pinned to one
        # GPU (cuda:N) cannot own several.
        if self.worker_processes > 1 and ":" in self.worker_device:
            raise ValueError(f"worker_device {self.worker_device!r} names one device, but "
                             f"worker_processes is {self.worker_processes}: use cuda (or auto) "
                             "and list the worker's GPUs in CUDA_VISIBLE_DEVICES")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'paec.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        """The Celery broker in force (kombu's SQLAlchemy transport on SQLite by default)."""
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_worker_dir(self) -> Path:
        """The worker scratch folder in force."""
        return self.worker_dir or self.data_dir / "worker"

    @property
    def resolved_spool_dir(self) -> Path:
        """Where the API spools uploads while it validates them: <data_dir>/uploads."""
        return self.data_dir / "uploads"

    @property
    def resolved_artifacts_dir(self) -> Path:
        """The artifact folder in force."""
        return self.artifacts_dir or self.data_dir / "artifacts"
