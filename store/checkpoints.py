"""Checkpoints: a trainer checkpoint folder kept as two tar archives in artifact storage, and
its row (step, model name, each archive's key, size and sha256, metrics).

    full   everything the trainer saved, the training state (optimiser, scheduler, RNG, data
           cursor) included: what a job resumes from (`fetch_checkpoint`)
    model  the weights in the dtype they trained in, config, generation config, tokenizer
           and the sidecar rewritten for these files; no training state. A LoRA job's holds
           the merged weights (the worker merges them, paec.modeling.lora). It loads with
           plain `AutoModelForCausalLM.from_pretrained`: what a user downloads (issue 19:
           540 MB instead of 1.6 GB for the built-in model in float32)

The worker registers a checkpoint after each save (`register_checkpoint`, idempotent per
job and step, so a replayed step writes nothing twice) and fetches the newest full-state one
to resume (`latest_full_state_checkpoint`, `fetch_checkpoint`). The API lists them in
OpenAI's `fine_tuning.job.checkpoint` shape and serves either archive for download
(`checkpoint_archive`). A checkpoint registered before model-only archives existed has only
the full one: asking for its model archive is a 404 naming `contents`.

Retention: after each save the worker keeps the newest
`settings.keep_checkpoints` full-state checkpoints of the job and every one still of use
(`prune_checkpoints`); the others' rows are deleted and both their archives after the commit.

Names follow OpenAI's scheme, `ft:<base>:<org>:<suffix>:<job id>` for the fine-tuned model
and the same plus `:ckpt-step-<n>` for a checkpoint; both are model names a tenant may use
as the base of a job or an evaluation (store.model_names).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
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
from store.storage import CHUNK, ArtifactStorage, archive_directory, extract_archive, file_sha256

DEFAULT_SUFFIX = "paec"
MAX_BASE_CHARS = 256
"""The base-model part of a name is cut to this, so that a name stays within the 512
characters of its column whatever `local:` folder the job named."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")

# paec's checkpoint format (paec.training.checkpoint, paec.modeling.lora), which this
# torch-free package cannot import.
SIDECAR = "checkpoint.json"
TRAINING_STATE = "training_state.pt"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_EXCLUDED = frozenset({TRAINING_STATE, SIDECAR})
"""Files of a checkpoint folder the model-only archive leaves out (its sidecar is written
afresh for the files it holds)."""


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


class ArchiveContents(StrEnum):
    """Which archive of a checkpoint (module docstring)."""

    MODEL = "model"
    FULL = "full"


@dataclass(frozen=True)
class Archive:
    """One stored archive of a checkpoint."""

    key: str
    """Its key in artifact storage."""
    size: int
    """Its size in bytes."""
    sha256: str
    """The hex sha256 of its bytes (the download's ETag)."""


class ModelArchiveMissingError(NotFoundError):
    """The model-only archive of a checkpoint registered before there were any."""

    code = "model_archive_unavailable"


def checkpoint_key(job_id: str, step: int, upload: str,
                   contents: ArchiveContents = ArchiveContents.FULL) -> str:
    """Where one upload of an archive of the job's checkpoint at `step` is stored. Every
    upload has its own key (`upload`, a fresh id), so a writer never overwrites an archive
    that a row already points at: two workers that both believe they hold the job (one of
    them stale) may both upload step n, and the row keeps the winner's bytes and sha256."""
    tail = "" if contents is ArchiveContents.FULL else f"-{contents}"
    return f"checkpoints/{job_id}/step-{step:06d}-{upload}{tail}.tar"


def archive_keys(checkpoint: Checkpoint) -> list[str]:
    """The storage keys of the checkpoint's archives: what deleting it must delete."""
    model = checkpoint.model_storage_key
    return [checkpoint.storage_key] + ([model] if model is not None else [])


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    # JSON (and so Postgres) has no NaN or infinity; a diverged step must still register.
    return {str(k): v for k, v in metrics.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def _upload(storage: ArtifactStorage, key: str, source: Path, *,
            exclude: Collection[str] = (), extra: Mapping[str, bytes] | None = None
            ) -> Archive:
    with tempfile.TemporaryDirectory(prefix="paec-ckpt-") as tmp:
        archive = Path(tmp) / "checkpoint.tar"
        size, sha256 = archive_directory(source, archive, exclude=exclude, extra=extra)
        storage.put_file(key, archive)
    return Archive(key, size, sha256)


def model_sidecar(folder: Path, source: Path) -> bytes | None:
    """The sidecar of the model-only archive of the checkpoint `folder` whose files come from
    `source`: `folder`'s sidecar with `"contents": "model"` and the list, sizes and sha256s of
    the files that archive holds. None when `folder` has no sidecar (not a trainer's)."""
    if not (folder / SIDECAR).is_file():
        return None
    sidecar = json.loads((folder / SIDECAR).read_text())
    files = {}
    for item in sorted(p for p in source.rglob("*") if p.is_file()):
        name = item.relative_to(source).as_posix()
        if name not in MODEL_EXCLUDED:
            files[name] = {"sha256": file_sha256(item), "bytes": item.stat().st_size}
    sidecar.update(contents=str(ArchiveContents.MODEL), files=files)
    return json.dumps(sidecar, indent=2, sort_keys=True).encode()


def _upload_model(storage: ArtifactStorage, job_id: str, step: int, folder: Path,
                  model_folder: Path | None) -> Archive:
    source = folder if model_folder is None else Path(model_folder)
    sidecar = model_sidecar(folder, source)
    return _upload(storage, checkpoint_key(job_id, step, ids.new_id(""), ArchiveContents.MODEL),
                   source, exclude=MODEL_EXCLUDED,
                   extra=None if sidecar is None else {SIDECAR: sidecar})


def _upload_both(storage: ArtifactStorage, job_id: str, step: int, folder: Path,
                 model_folder: Path | None) -> tuple[Archive, Archive]:
    full = _upload(storage, checkpoint_key(job_id, step, ids.new_id("")), folder)
    try:
        model = _upload_model(storage, job_id, step, folder, model_folder)
    except BaseException:
        storage.delete(full.key)  # no archive without its row
        raise
    return full, model


def _restore_archives(session: Session, storage: ArtifactStorage, row: Checkpoint,
                      folder: Path, model_folder: Path | None) -> Checkpoint:
    """Upload again whichever archive of `row` is gone from storage (or never was: a row
    registered before model-only archives); the row follows the new bytes."""
    if not storage.exists(row.storage_key):
        full = _upload(storage, checkpoint_key(row.job_id, row.step, ids.new_id("")), folder)
        row.storage_key, row.size, row.sha256 = full.key, full.size, full.sha256
    if row.model_storage_key is None or not storage.exists(row.model_storage_key):
        model = _upload_model(storage, row.job_id, row.step, folder, model_folder)
        row.model_storage_key, row.model_size, row.model_sha256 = (model.key, model.size,
                                                                   model.sha256)
    session.flush()
    return row


def register_checkpoint(session: Session, storage: ArtifactStorage, job: Job, step: int,
                        folder: Path, *, full_state: bool, metrics: dict[str, Any],
                        model_folder: Path | None = None) -> Checkpoint:
    """Archive `folder` into storage twice (full state, model only) and record it as the
    job's checkpoint at `step`.

    The model-only archive holds `model_folder`'s files when given (a LoRA checkpoint's
    merged model, made by the worker), else `folder`'s, without the training state, and the
    sidecar rewritten for them (`model_sidecar`). A LoRA checkpoint needs `model_folder`:
    its adapter alone does not load with plain `from_pretrained` (ValueError).

    Idempotent per (job, step): a replayed step returns the existing row and writes nothing;
    if the row exists but an archive is gone, that archive is uploaded again (and the row's
    key, size and sha256 follow the new bytes). Does not commit.
    """
    existing = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id,
                                                       Checkpoint.step == step))
    if (existing is not None and existing.model_storage_key is not None
            and all(storage.exists(key) for key in archive_keys(existing))):
        return existing
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    if model_folder is None and (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{folder} holds a LoRA adapter: its model-only archive needs the "
                         "merged model (model_folder)")
    if existing is not None:
        return _restore_archives(session, storage, existing, folder, model_folder)
    full, model = _upload_both(storage, job.id, step, folder, model_folder)
    row = Checkpoint(id=ids.new_id(ids.CHECKPOINT), job_id=job.id, step=step,
                     model_name=checkpoint_model_name(job, step), storage_key=full.key,
                     size=full.size, sha256=full.sha256, model_storage_key=model.key,
                     model_size=model.size, model_sha256=model.sha256,
                     full_state=full_state, metrics=_clean_metrics(metrics),
                     created_at=utcnow())
    try:
        # A savepoint, so that losing a race with another writer of the same step leaves
        # the caller's transaction usable.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        for key in (full.key, model.key):  # the other writer's row and archives stand
            storage.delete(key)
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
    names the model of a job or evaluation that has not finished. Returns the storage keys
    of the deleted rows' archives (both of each); the caller deletes those after its commit
    (a failed commit leaves every checkpoint whole). Does not commit."""
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
        keys += archive_keys(row)
        session.delete(row)
    session.flush()
    return keys


def fetch_checkpoint(storage: ArtifactStorage, checkpoint: Checkpoint, target_dir: Path
                     ) -> Path:
    """Download the full-state archive, check its sha256 against the row, unpack it into
    `target_dir`; returns `target_dir`. CheckpointIntegrityError when the archive is missing
    or altered."""
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
    """OpenAI's `fine_tuning.job.checkpoint`, plus the archives' facts: `sha256` and `bytes`
    of the full-state one, `model_sha256` and `model_bytes` of the model-only one (None when
    the checkpoint has none), `full_state` and `download_url`. OpenAI's metric keys are SFT
    ones; ours carry `step` and every numeric metric the worker recorded (rewards,
    entropies)."""
    numeric = {k: v for k, v in checkpoint.metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"id": checkpoint.id, "object": "fine_tuning.job.checkpoint",
            "created_at": unix(checkpoint.created_at),
            "fine_tuned_model_checkpoint": checkpoint.model_name,
            "fine_tuning_job_id": checkpoint.job_id, "step_number": checkpoint.step,
            "metrics": {**numeric, "step": checkpoint.step},
            "sha256": checkpoint.sha256, "bytes": checkpoint.size,
            "model_sha256": checkpoint.model_sha256, "model_bytes": checkpoint.model_size,
            "full_state": checkpoint.full_state, "download_url": download_path(checkpoint.id)}


def checkpoint_archive(checkpoint: Checkpoint, contents: ArchiveContents) -> Archive:
    """The archive of the checkpoint that `contents` names. A checkpoint registered before
    model-only archives has only its full-state one: ModelArchiveMissingError (404) naming
    `contents`, which says to ask for `full` (it holds the model too)."""
    if contents is ArchiveContents.FULL:
        return Archive(checkpoint.storage_key, checkpoint.size, checkpoint.sha256)
    if (checkpoint.model_storage_key is None or checkpoint.model_size is None
            or checkpoint.model_sha256 is None):
        raise ModelArchiveMissingError(
            f"checkpoint {checkpoint.id} was registered before model-only archives existed; "
            "download its full-state archive with contents=full (the same model files plus "
            "training_state.pt)", param="contents")
    return Archive(checkpoint.model_storage_key, checkpoint.model_size,
                   checkpoint.model_sha256)


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
