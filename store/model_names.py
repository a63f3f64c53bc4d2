"""Which `model` names a tenant may use, and what each refers to.

Allowed: the built-in models (`builtin:<name>`), folders under the operator's models
directory (`local:<relative path>`), hub ids (`org/name`) when the operator enables them, and
the tenant's own fine-tuned models and checkpoints (`ft:...`), and those another tenant
shared with it (store.permissions). Nothing else: a tenant can never make the server read an
arbitrary path, and another tenant's unshared model answers exactly as a model that does not
exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.errors import InvalidRequestError
from store.models import Checkpoint, Job
from store.permissions import shared_checkpoint
from store.settings import Settings

# Kept in step with paec.modeling.loader.BUILTIN_MODELS (a worker test checks it) without importing
# torch here.
BUILTIN_MODELS = frozenset({"builtin:smollm2-135m-instruct"})
LOCAL_PREFIX = "local:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_LOCAL = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


class ModelKind(StrEnum):
    """Where a model comes from."""

    BUILTIN = "builtin"
    LOCAL = "local"
    HUB = "hub"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name. `source` is what the worker loads: the built-in name, the
    local folder, the hub id, or the checkpoint's id."""

    name: str
    kind: ModelKind
    source: str


def _not_found(name: str, why: str) -> InvalidRequestError:
    err = InvalidRequestError(f"model {name!r} is not available: {why}", param="model")
    err.code = "model_not_found"
    return err


def resolve_model_name(session: Session, settings: Settings, tenant_id: str, name: str
                       ) -> ModelRef:
    """The model `name` refers to for this tenant, or a 400 `model_not_found` saying why."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise _not_found(str(name)[:80], "expected a non-empty name of at most 512 characters")
    if name in BUILTIN_MODELS:
        return ModelRef(name, ModelKind.BUILTIN, name)
    if name.startswith("builtin:"):
        raise _not_found(name, f"the built-in models are {', '.join(sorted(BUILTIN_MODELS))}")
    if name.startswith("ft:"):
        return _fine_tuned(session, tenant_id, name)
    if name.startswith(LOCAL_PREFIX):
        return _local(settings, name)
    if _HUB_ID.match(name) and ".." not in name:
        if not settings.allow_hub_models:
            raise _not_found(name, "hub models are disabled on this server "
                                   "(the operator sets PAEC_ALLOW_HUB_MODELS=true)")
        return ModelRef(name, ModelKind.HUB, name)
    raise _not_found(name, "use a built-in model (builtin:...), a folder under the server's "
                           "models directory (local:<name>), or one of your fine-tuned models "
                           "(ft:...)")


def _local(settings: Settings, name: str) -> ModelRef:
    relative = name.removeprefix(LOCAL_PREFIX)
    if settings.models_dir is None:
        raise _not_found(name, "this server has no models directory (PAEC_MODELS_DIR)")
    if not _LOCAL.match(relative) or any(p in (".", "..") for p in relative.split("/")):
        raise _not_found(name, "a local model is a relative folder name under the models "
                               "directory, without '..'")
    root = Path(settings.models_dir).resolve()
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root) or not (folder / "config.json").is_file():
        raise _not_found(name, "no model folder of that name in the models directory")
    return ModelRef(name, ModelKind.LOCAL, str(folder))


def _fine_tuned(session: Session, tenant_id: str, name: str) -> ModelRef:
    checkpoint = session.scalar(
        select(Checkpoint).join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.model_name == name, Job.tenant_id == tenant_id))
    if checkpoint is not None:
        return ModelRef(name, ModelKind.CHECKPOINT, checkpoint.id)
    job = session.scalar(select(Job).where(Job.fine_tuned_model == name,
                                           Job.tenant_id == tenant_id))
    if job is not None:
        final = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id)
                               .order_by(Checkpoint.step.desc()).limit(1))
        if final is not None:
            return ModelRef(name, ModelKind.CHECKPOINT, final.id)
    # Another tenant's checkpoint only when its owner shared it with this tenant (a
    # fine-tuned model name counts when the newest checkpoint it stands for is shared).
    shared = shared_checkpoint(session, tenant_id, name)
    if shared is not None:
        return ModelRef(name, ModelKind.CHECKPOINT, shared.id)
    raise _not_found(name, "no fine-tuned model or checkpoint of yours, or shared with you, "
                           "has that name")
