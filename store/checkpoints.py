"""Checkpoints: a trainer checkpoint folder kept as ONE tar archive in artifact storage, and
its row (step, model name, size, sha256, metrics).

The worker registers a checkpoint after each save (`register_checkpoint`, idempotent per
job and step, so a replayed step writes nothing twice) and fetches the newest full-state one
to resume (`latest_full_state_checkpoint`, `fetch_checkpoint`). The API lists them in
OpenAI's `fine_tuning.job.checkpoint` shape and serves the archive for download.

Retention: after each save the worker keeps the newest
`settings.keep_checkpoints` full-state checkpoints of the job and every one still of use
(`prune_checkpoints`); the others' rows are deleted and their archives after the commit.

Names follow OpenAI's scheme, `ft:<base>:<org>:<suffix>:<job id>` for the fine-tuned model
and the same plus `:ckpt-step-<n>` for a checkpoint; both are model names a tenant may use
as the base of a job or an evaluation (store.model_names).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import ids
from store.db import unix, utcnow
from store.errors import InvalidRequestError, NotFoundError, ServiceError
from store.models import Checkpoint, CheckpointPermission, Evaluation, Job
from store.states import TERMINAL
from store.storage import CHUNK, ArtifactStorage, archive_directory, extract_archive

DEFAULT_SUFFIX = "paec"
MAX_BASE_CHARS = 256
"""The base-model part of a name is cut to this, so that a name stays within the 512
characters of its column whatever `local:` folder the job named."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


class CheckpointIntegrityError(ServiceError):
    """A checkpoint archive that is missing from storage or whose bytes do not match the
    sha256 recorded when it was registered."""

    status_code = 500
    error_type = "server_error"
    code = "checkpoint_corrupt"


def _base_name(model: str) -> str:
    # A job trained from one of our own models (`ft:<base>:...`) keeps the original base,
    # as OpenAI names models fine-tuned from fine-tuned models.
    if model.startswith("ft:"):
        model = model.split(":")[1]
    for prefix in ("builtin:", "local:"):
        model = model.removeprefix(prefix)
    return _UNSAFE.sub("-", model)[:MAX_BASE_CHARS] or "model"


def fine_tuned_model_name(job: Job) -> str:
    """`ft:<base>:<tenant id>:<suffix or 'paec'>:<job id>`: the job's model once it succeeds."""
    suffix = _UNSAFE.sub("-", job.suffix) if job.suffix else DEFAULT_SUFFIX
    return f"ft:{_base_name(job.model)}:{job.tenant_id}:{suffix}:{job.id}"


def checkpoint_model_name(job: Job, step: int) -> str:
    """The `fine_tuned_model_checkpoint` name of the job's checkpoint at `step`."""
    return f"{fine_tuned_model_name(job)}:ckpt-step-{step}"


def checkpoint_key(job_id: str, step: int, upload: str) -> str:
    """Where one upload of the archive of the job's checkpoint at `step` is stored. Every
    upload has its own key (`upload`, a fresh id), so a writer never overwrites an archive
    that a row already points at: two workers that both believe they hold the job (one of
    them stale) may both upload step n, and the row keeps the winner's bytes and sha256."""
    return f"checkpoints/{job_id}/step-{step:06d}-{upload}.tar"


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    # JSON (and so Postgres) has no NaN or infinity; a diverged step must still register.
    return {str(k): v for k, v in metrics.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def register_checkpoint(session: Session, storage: ArtifactStorage, job: Job, step: int,
                        folder: Path, *, full_state: bool, metrics: dict[str, Any]
                        ) -> Checkpoint:
    """Archive `folder` into storage and record it as the job's checkpoint at `step`.

    Idempotent per (job, step): a replayed step returns the existing row and writes nothing;
    if the row exists but its archive is gone, the archive is uploaded again (and the row's
    size and sha256 follow the new bytes). Does not commit.
    """
    existing = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id,
                                                       Checkpoint.step == step))
    if existing is not None and storage.exists(existing.storage_key):
        return existing
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    key = checkpoint_key(job.id, step, ids.new_id(""))
    with tempfile.TemporaryDirectory(prefix="paec-ckpt-") as tmp:
        archive = Path(tmp) / "checkpoint.tar"
        size, sha256 = archive_directory(Path(folder), archive)
        storage.put_file(key, archive)
    if existing is not None:
        existing.storage_key, existing.size, existing.sha256 = key, size, sha256
        session.flush()
        return existing
    row = Checkpoint(id=ids.new_id(ids.CHECKPOINT), job_id=job.id, step=step,
                     model_name=checkpoint_model_name(job, step), storage_key=key, size=size,
                     sha256=sha256, full_state=full_state, metrics=_clean_metrics(metrics),
                     created_at=utcnow())
    try:
        # A savepoint, so that losing a race with another writer of the same step leaves
        # the caller's transaction usable.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        storage.delete(key)  # the other writer's row and archive stand; ours go
        winner = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id,
                                                         Checkpoint.step == step))
        if winner is None:
            raise
        return winner
    return row


def latest_full_state_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    """The job's newest checkpoint that can resume training (None when there is none)."""
    return session.scalar(select(Checkpoint)
                          .where(Checkpoint.job_id == job_id, Checkpoint.full_state)
                          .order_by(Checkpoint.step.desc()).limit(1))


def prune_checkpoints(session: Session, job: Job, keep: int) -> list[str]:
    """Delete the job's full-state checkpoints older than its `keep` newest ones, except
    those still of use: the final one (the job's last step, its fine-tuned model), any not
    full-state (an export, kept on purpose), one shared with another tenant, and one that
    names the model of a job or evaluation that has not finished. Returns the deleted rows'
    storage keys; the caller deletes those after its commit (a failed commit leaves every
    checkpoint whole). Does not commit."""
    rows = list(session.scalars(select(Checkpoint)
                                .where(Checkpoint.job_id == job.id, Checkpoint.full_state)
                                .order_by(Checkpoint.step.desc())))
    old = [row for row in rows[keep:] if row.step != job.total_steps]
    if not old:
        return []
    names = [row.model_name for row in old]
    shared = set(session.scalars(select(CheckpointPermission.checkpoint_id).where(
        CheckpointPermission.checkpoint_id.in_([row.id for row in old]))))
    in_use = set(session.scalars(select(Job.model).where(
        Job.model.in_(names), Job.status.not_in([str(s) for s in TERMINAL]))))
    in_use |= set(session.scalars(select(Evaluation.model).where(
        Evaluation.model.in_(names),
        or_(Evaluation.status == "queued", Evaluation.status == "running"))))
    keys = []
    for row in old:
        if row.id in shared or row.model_name in in_use:
            continue
        keys.append(row.storage_key)
        session.delete(row)
    session.flush()
    return keys


def fetch_checkpoint(storage: ArtifactStorage, checkpoint: Checkpoint, target_dir: Path
                     ) -> Path:
    """Download the archive, check its sha256 against the row, unpack it into `target_dir`;
    returns `target_dir`. CheckpointIntegrityError when the archive is missing or altered."""
    target_dir = Path(target_dir)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paec-fetch-", dir=target_dir.parent) as tmp:
        local = Path(tmp) / "checkpoint.tar"
        digest = hashlib.sha256()
        try:
            with storage.open(checkpoint.storage_key) as src, open(local, "wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError as exc:
            raise CheckpointIntegrityError(
                f"checkpoint {checkpoint.id} (step {checkpoint.step}): its archive "
                f"{checkpoint.storage_key} is missing from storage") from exc
        if digest.hexdigest() != checkpoint.sha256:
            raise CheckpointIntegrityError(
                f"checkpoint {checkpoint.id} (step {checkpoint.step}): archive sha256 "
                f"{digest.hexdigest()} does not match the recorded {checkpoint.sha256}")
        # Unpacked beside the target and renamed into place: a process that sees the folder
        # sees all of it (worker processes of one machine share their model cache).
        unpacked = Path(tmp) / "unpacked"
        extract_archive(local, unpacked)
        if target_dir.exists() and not any(target_dir.iterdir()):
            target_dir.rmdir()
        try:
            os.replace(unpacked, target_dir)
        except OSError:
            if not target_dir.is_dir():  # not another process's complete copy: a real error
                raise
    return target_dir


# ---- the API's view ----

def download_path(checkpoint_id: str) -> str:
    """The native route that serves a checkpoint's archive."""
    return f"/api/checkpoints/{checkpoint_id}/download"


def checkpoint_object(checkpoint: Checkpoint) -> dict[str, Any]:
    """OpenAI's `fine_tuning.job.checkpoint`, plus `sha256`, `bytes`, `full_state` and
    `download_url`. OpenAI's metric keys are SFT ones; ours carry `step` and every numeric
    metric the worker recorded (rewards, entropies)."""
    numeric = {k: v for k, v in checkpoint.metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"id": checkpoint.id, "object": "fine_tuning.job.checkpoint",
            "created_at": unix(checkpoint.created_at),
            "fine_tuned_model_checkpoint": checkpoint.model_name,
            "fine_tuning_job_id": checkpoint.job_id, "step_number": checkpoint.step,
            "metrics": {**numeric, "step": checkpoint.step},
            "sha256": checkpoint.sha256, "bytes": checkpoint.size,
            "full_state": checkpoint.full_state, "download_url": download_path(checkpoint.id)}


def checkpoint_list_object(checkpoints: list[Checkpoint], has_more: bool) -> dict[str, Any]:
    """OpenAI's list envelope of checkpoints, with the first and last ids."""
    data = [checkpoint_object(row) for row in checkpoints]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def _tenant_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFoundError(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    return job


def list_job_checkpoints(session: Session, tenant_id: str, job_id: str, *,
                         after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
    """A page of the job's checkpoints, newest first, older than the checkpoint `after`;
    returns (checkpoints, has_more). Another tenant's job is a 404."""
    job = _tenant_job(session, tenant_id, job_id)
    query = select(Checkpoint).where(Checkpoint.job_id == job.id)
    if after is not None:
        cursor = session.scalar(select(Checkpoint.seq).where(Checkpoint.id == after,
                                                             Checkpoint.job_id == job.id))
        if cursor is None:
            raise InvalidRequestError(f"no checkpoint {after!r} in job {job_id}",
                                      param="after")
        query = query.where(Checkpoint.seq < cursor)
    rows = list(session.scalars(query.order_by(Checkpoint.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_checkpoint(session: Session, tenant_id: str, checkpoint_id: str) -> Checkpoint:
    """The tenant's checkpoint (another tenant's answers exactly as a missing one: 404)."""
    checkpoint = session.scalar(
        select(Checkpoint).join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.id == checkpoint_id, Job.tenant_id == tenant_id))
    if checkpoint is None:
        raise NotFoundError(f"no checkpoint {checkpoint_id!r}", param="checkpoint_id")
    return checkpoint
