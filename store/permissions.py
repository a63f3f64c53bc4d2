"""Checkpoint permissions: the owner of a checkpoint shares it with other tenants, which may
then use its name as the `model` of their own jobs and evaluations (store.model_names).

OpenAI's `checkpoint.permission` grants a checkpoint to a "project"; here a project is a
tenant (`org-...`). A checkpoint is named as a model is: by its `fine_tuned_model_checkpoint`
name, or by a job's `fine_tuned_model`, which stands for that job's newest checkpoint (the
one store.model_names loads for it). Only the owner may grant, list or revoke; to anyone else
the checkpoint answers exactly as a missing one (404). Revoking stops new jobs and
evaluations of the grantee from naming the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import ids
from store.db import unix, utcnow
from store.errors import InvalidRequestError, NotFoundError
from store.models import Checkpoint, CheckpointPermission, Job, Tenant

MAX_PROJECTS = 100
"""Project ids one request may grant."""


class Order(StrEnum):
    """The order of a permission list (by creation)."""

    ASCENDING = "ascending"
    DESCENDING = "descending"


def _named(session: Session, name: str, owner_id: str | None) -> Checkpoint | None:
    # The checkpoint a model name stands for, as store.model_names resolves it: the
    # checkpoint of that name, else the newest checkpoint of the job whose fine-tuned model
    # has that name. Two queries, so that each uses its own index.
    by_name = select(Checkpoint).join(Job, Job.id == Checkpoint.job_id).where(
        Checkpoint.model_name == name)
    if owner_id is not None:
        by_name = by_name.where(Job.tenant_id == owner_id)
    checkpoint = session.scalar(by_name)
    if checkpoint is not None or not name.startswith("ft:"):
        return checkpoint
    job = select(Job.id).where(Job.fine_tuned_model == name)
    if owner_id is not None:
        job = job.where(Job.tenant_id == owner_id)
    job_id = session.scalar(job.limit(1))
    if job_id is None:
        return None
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id)
                          .order_by(Checkpoint.step.desc()).limit(1))


def owned_checkpoint(session: Session, tenant_id: str, name: str) -> Checkpoint:
    """The tenant's checkpoint called `name` (a checkpoint name or a fine-tuned model name);
    404 when there is none, or when it is another tenant's."""
    checkpoint = _named(session, name, tenant_id)
    if checkpoint is None:
        raise NotFoundError(f"no fine-tuned model checkpoint {name!r}",
                            param="fine_tuned_model_checkpoint")
    return checkpoint


def shared_checkpoint(session: Session, tenant_id: str, name: str) -> Checkpoint | None:
    """The checkpoint called `name` if its owner shared it with the tenant, else None."""
    checkpoint = _named(session, name, None)
    if checkpoint is None:
        return None
    granted = session.scalar(select(CheckpointPermission.seq).where(
        CheckpointPermission.checkpoint_id == checkpoint.id,
        CheckpointPermission.project_id == tenant_id))
    return checkpoint if granted is not None else None


def _invalid_project(i: int, message: str) -> InvalidRequestError:
    err = InvalidRequestError(message, param=f"project_ids[{i}]")
    err.code = "invalid_project"
    return err


def create_permissions(session: Session, tenant_id: str, name: str,
                       project_ids: Sequence[str]) -> list[CheckpointPermission]:
    """Share the tenant's checkpoint `name` with each tenant of `project_ids`; returns one
    permission per distinct id, in request order. Granting again returns the existing
    permission. 400 (param `project_ids[i]`) for an id that is no tenant or is the caller;
    nothing is granted then. Does not commit."""
    checkpoint = owned_checkpoint(session, tenant_id, name)
    wanted = list(dict.fromkeys(project_ids))
    if not wanted:
        raise InvalidRequestError("project_ids must name at least one project",
                                  param="project_ids")
    known = set(session.scalars(select(Tenant.id).where(Tenant.id.in_(wanted))))
    for i, project_id in enumerate(project_ids):
        if project_id == tenant_id:
            raise _invalid_project(i, "a checkpoint cannot be shared with its own project "
                                      f"{project_id!r}")
        if project_id not in known:
            raise _invalid_project(i, f"no project {project_id!r}")
    return [_grant(session, checkpoint.id, project_id) for project_id in wanted]


def _existing(session: Session, checkpoint_id: str, project_id: str
              ) -> CheckpointPermission | None:
    return session.scalar(select(CheckpointPermission).where(
        CheckpointPermission.checkpoint_id == checkpoint_id,
        CheckpointPermission.project_id == project_id))


def _grant(session: Session, checkpoint_id: str, project_id: str) -> CheckpointPermission:
    existing = _existing(session, checkpoint_id, project_id)
    if existing is not None:
        return existing
    row = CheckpointPermission(id=ids.new_id(ids.CHECKPOINT_PERMISSION),
                               checkpoint_id=checkpoint_id, project_id=project_id,
                               created_at=utcnow())
    try:
        # A savepoint, so that losing a race with a concurrent grant of the same pair
        # leaves the caller's transaction usable; the winner's row is the answer.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        winner = _existing(session, checkpoint_id, project_id)
        if winner is None:
            raise
        return winner
    return row


def list_permissions(session: Session, tenant_id: str, name: str, *, after: str | None,
                     limit: int, order: Order, project_id: str | None
                     ) -> tuple[list[CheckpointPermission], bool]:
    """A page of the permissions of the tenant's checkpoint `name` in creation `order`,
    after the permission `after`, only those of `project_id` when given; returns
    (permissions, has_more). 404 for another tenant's checkpoint."""
    checkpoint = owned_checkpoint(session, tenant_id, name)
    query = select(CheckpointPermission).where(
        CheckpointPermission.checkpoint_id == checkpoint.id)
    if project_id is not None:
        query = query.where(CheckpointPermission.project_id == project_id)
    ascending = order is Order.ASCENDING
    if after is not None:
        cursor = session.scalar(select(CheckpointPermission.seq).where(
            CheckpointPermission.id == after,
            CheckpointPermission.checkpoint_id == checkpoint.id))
        if cursor is None:
            raise InvalidRequestError(f"no permission {after!r} on checkpoint {name}",
                                      param="after")
        query = query.where(CheckpointPermission.seq > cursor if ascending
                            else CheckpointPermission.seq < cursor)
    seq = CheckpointPermission.seq
    rows = list(session.scalars(query.order_by(seq.asc() if ascending else seq.desc())
                                .limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_permission(session: Session, tenant_id: str, name: str, permission_id: str
                      ) -> CheckpointPermission:
    """Revoke a permission of the tenant's checkpoint `name`; returns the deleted row. 404
    for another tenant's checkpoint and for a permission that is not (or no longer) one of
    the checkpoint's. Does not commit."""
    checkpoint = owned_checkpoint(session, tenant_id, name)
    permission = session.scalar(select(CheckpointPermission).where(
        CheckpointPermission.id == permission_id,
        CheckpointPermission.checkpoint_id == checkpoint.id))
    if permission is None:
        raise NotFoundError(f"no permission {permission_id!r} on checkpoint {name}",
                            param="permission_id")
    session.delete(permission)
    session.flush()
    return permission


def permission_object(permission: CheckpointPermission) -> dict[str, Any]:
    """OpenAI's `checkpoint.permission`."""
    return {"id": permission.id, "object": "checkpoint.permission",
            "created_at": unix(permission.created_at), "project_id": permission.project_id}


def permission_list_object(permissions: Sequence[CheckpointPermission], has_more: bool
                           ) -> dict[str, Any]:
    """OpenAI's list envelope of permissions, with the first and last ids."""
    data = [permission_object(row) for row in permissions]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def deleted_object(permission: CheckpointPermission) -> dict[str, Any]:
    """OpenAI's answer to a permission delete."""
    return {"id": permission.id, "object": "checkpoint.permission", "deleted": True}
